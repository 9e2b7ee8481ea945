"""The short load test (scripts/load_test.py --short) as a CI test: nothing lost, all told why."""

from __future__ import annotations

import json
import subprocess
import sys

from harness import REPO, ros_env


def test_load_short(tmp_path, domain_id):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "load_test.py"), "--short", "--out", str(out)],
        cwd=str(REPO), env=ros_env(domain_id), capture_output=True, text=True, timeout=240)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["node_alive_at_end"], proc.stderr[-3000:]
    assert report["questions_lost"] == 0 and report["questions_never_returned"] == 0, report
    assert report["refused_without_reason"] == 0, report
    assert report["questions_accepted"] > 0, report
    assert report["frames_ingested"] > 0, report
    assert report["frames_published"] > report["frames_ingested"], report
    assert proc.returncode == 0, proc.stderr[-3000:]
