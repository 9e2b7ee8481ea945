#!/usr/bin/env python3
"""Cost of memory snapshots: file size, save and restore time with a full memory.

For each budget a session of the model is filled through the public API (a few frames,
then long questions with one answer token each, until the memory holds its budget), then
saved and restored ``--repeat`` times into a second session of the same setup; the
restored session must answer a question exactly as the saved one (checked, not timed).

    python scripts/bench_snapshot.py                       # default model, CPU, 1024 4096
    python scripts/bench_snapshot.py --device cuda --budgets 1024,4096 --out F.json

Prints one JSON object per budget and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ros2_infmllm.engine import SessionConfig, build_session  # noqa: E402

_WORDS = ("red box left parcel gate blue marker seventeen forty two camera front rear "
          "light dim bright motion still person door shelf").split()


def _frame(i: int) -> np.ndarray:
    img = np.full((96, 128, 3), 30 + 7 * i % 200, dtype=np.uint8)
    img[20:60, 10 + 4 * i % 90:40 + 4 * i % 90, i % 3] = 230
    return img


def _fill(session, budget: int) -> int:
    """Frames then long questions until the memory holds ``budget`` tokens; questions used."""
    for i in range(8):
        session.ingest_frame(_frame(i), 1000.0 + i, "front")
    asked = 0
    while session.describe()["cache_tokens"] < budget and asked < 200:
        words = [_WORDS[(asked * 7 + j) % len(_WORDS)] for j in range(300)]
        session.ask("Remember: " + " ".join(words), max_new_tokens=1)
        asked += 1
    return asked


def bench(model: str, device: str, dtype: str, budget: int, repeat: int) -> dict:
    """Fill a session to ``budget``, time ``repeat`` saves and restores; one result row."""
    cfg = SessionConfig(model=model, device=device, dtype=dtype, budget=budget)
    a = build_session(cfg)
    asked = _fill(a, budget)
    d = a.describe()
    folder = tempfile.mkdtemp(prefix="bench_snapshot_")
    path = os.path.join(folder, "memory.safetensors")
    saves, copies, restores, size = [], [], [], 0
    for _ in range(repeat):
        info = a.save_memory(path)
        saves.append(info["total_s"])
        copies.append(info["copy_s"])
        size = int(info["bytes"])
    expected = a.ask("What did the front camera see?", max_new_tokens=8)
    b = build_session(cfg)
    for _ in range(repeat):
        t0 = time.perf_counter()
        b.restore_memory(path)
        restores.append(time.perf_counter() - t0)
    got = b.ask("What did the front camera see?", max_new_tokens=8)
    os.unlink(path)
    os.rmdir(folder)
    return {
        "model": d["model"]["name"], "device": d["model"]["device"],
        "dtype": d["model"]["dtype"], "budget": budget, "cache_tokens": d["cache_tokens"],
        "layers": len(d["memory"]["tokens_per_layer"]), "fill_questions": asked,
        "bytes": size, "kv_bytes_allocated": d["memory"]["kv_bytes_allocated"],
        "save_s_median": statistics.median(saves), "save_copy_s_median": statistics.median(copies),
        "restore_s_median": statistics.median(restores), "save_s": saves, "restore_s": restores,
        "identical_answer": (got.text, got.evidence_stamps)
        == (expected.text, expected.evidence_stamps),
        "load_average": os.getloadavg(),
    }


def main() -> int:
    """Benchmark each budget; print JSON rows and a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--budgets", default="1024,4096")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="", help="also write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        row = bench(args.model, args.device, args.dtype, budget, args.repeat)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| model | device | dtype | budget | tokens | file MB | save s | of it under the "
          "model lock s | restore s | same answer |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['device']} | {r['dtype']} | {r['budget']} | "
              f"{r['cache_tokens']} | {r['bytes'] / 1e6:.1f} | {r['save_s_median']:.3f} | "
              f"{r['save_copy_s_median']:.3f} | {r['restore_s_median']:.3f} | "
              f"{r['identical_answer']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["identical_answer"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
