#!/usr/bin/env python3
"""Long fuzz run: the generated-input tests (tests/fuzz) at a scale of >= 10,000 cases.

    python scripts/fuzz.py                 # scale 13: about 12,000 cases, CPU, ~10-20 min
    python scripts/fuzz.py --scale 2 --out F.json

Runs pytest over tests/fuzz with INFMLLM_FUZZ_SCALE (every test's example count times
this; CI runs scale 1), then prints the cases per test, the total, and pytest's verdict
(any failure = a crash or an unclear error). Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    """Run the fuzz tests at the given scale; print and optionally save the case counts."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=13.0)
    ap.add_argument("--out", default="", help="also write the counts and verdict as JSON")
    args = ap.parse_args()
    counts = Path(tempfile.mkstemp(prefix="fuzz_counts_", suffix=".json")[1])
    env = dict(os.environ, INFMLLM_FUZZ_SCALE=str(args.scale), INFMLLM_FUZZ_COUNTS=str(counts))
    t0 = time.monotonic()
    rc = subprocess.call([str(REPO / "scripts" / "test.sh"), "tests/fuzz", "-q",
                          "-p", "no:cacheprovider"], cwd=REPO, env=env)
    cases = json.loads(counts.read_text() or "{}")
    counts.unlink()
    result = {"scale": args.scale, "cases": cases, "total": sum(cases.values()),
              "pytest_exit": rc, "seconds": round(time.monotonic() - t0, 1),
              "load_average": os.getloadavg()}
    for name, n in sorted(cases.items()):
        print(f"{name:20s} {n:7d}")
    print(f"{'total':20s} {result['total']:7d}   pytest exit {rc} "
          f"({'no crash' if rc == 0 else 'FAILURES'}) in {result['seconds']} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
