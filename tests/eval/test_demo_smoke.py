"""scripts/demo.sh in CI's smoke mode: both policies and the full-cache oracle, for real.

Offline (the engine fed at bag time, tiny-test model) so that it takes seconds; the DDS
path of the same replay is covered by test_eval_replay_dds_tiny.py.
"""
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_smoke_writes_side_by_side_table_and_png(tmp_path):
    env = dict(os.environ, DEMO_OUTDIR=str(tmp_path))
    proc = subprocess.run(['bash', str(REPO / 'scripts' / 'demo.sh'), '--offline', '--smoke'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert 'inf_mllm: far' in out and 'streaming_llm: far' in out and 'full (oracle)' in out
    res = json.loads((tmp_path / 'demo_sample_side_by_side.json').read_text())
    assert res['columns'] == ['inf_mllm', 'streaming_llm', 'full (oracle)']
    assert [r['id'] for r in res['rows']] == ['aruco_red_recent', 'qr_dock_recent']
    for row in res['rows']:
        assert row['seconds_back'] is not None
        assert all(row['answers'][c] is not None for c in res['columns'])
    png = tmp_path / 'demo_sample_side_by_side.png'
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b'\x89PNG'
    assert '| question | expected |' in (tmp_path / 'demo_sample_side_by_side.md').read_text()
