#!/usr/bin/env python3
"""Cost of memory snapshots: file size, save and restore time with a full memory.

For each budget a session of the model is filled through the public API (a few frames,
then long questions with one answer token each, until the memory holds its budget), then
saved and restored ``--repeat`` times into a second session of the same setup; the
restored session must answer a question exactly as the saved one (checked, not timed).

    python scripts/bench_snapshot.py                       # default model, CPU, 1024 4096
    python scripts/bench_snapshot.py --device cuda --budgets 1024,4096 --out F.json
    python scripts/bench_snapshot.py --shape 7b --out F.json    # Llama-2-7B shape, CUDA

``--shape 7b`` builds a random-weight Llama-2-7B (the benchmarks' shape, from a config:
nothing is downloaded) in float16 on CUDA with the byte tokenizer of the tiny test model:
the snapshot's size and time depend on the cache's shape, not on the weights. That path
imports the engine, memory and models layers only (no ROS), so it runs where rclpy is
absent.

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
    """Frames then long questions until the memory holds ``budget`` tokens; questions used.

    A question stays below 480 tokens (the engine's chunk limit is 512): a byte-level
    tokenizer spends one token a character.
    """
    for i in range(8):
        session.ingest_frame(_frame(i), 1000.0 + i, "front")
    asked = 0
    while session.status().cache_tokens < budget and asked < 200:
        n = 300
        while True:
            words = [_WORDS[(asked * 7 + j) % len(_WORDS)] for j in range(n)]
            text = "Remember: " + " ".join(words)
            if session.adapter.text_chunk(text, "user").n_tokens <= 480 or n <= 10:
                break
            n //= 2
        session.ask(text, max_new_tokens=1)
        asked += 1
    return asked


def _sessions_7b(device: str, dtype: str, budget: int) -> tuple:
    """Two sessions on one random-weight Llama-2-7B-shape model (built once per process)."""
    import dataclasses

    from ros2_infmllm.engine import POLICY_KEYS, StreamingSession
    from ros2_infmllm.eval.bench.common import DTYPES, llama_model
    from ros2_infmllm.memory import POLICIES, make_policy, use_scoring_attention
    from ros2_infmllm.models.base import ModelAdapter
    from ros2_infmllm.models.tiny import byte_tokenizer
    if not _MODEL_7B:
        torch_dtype = DTYPES["float16" if dtype == "auto" else dtype]
        model = use_scoring_attention(llama_model("7b", device, torch_dtype))
        adapter = ModelAdapter(model, byte_tokenizer(), "llama-2-7b shape (random weights)")
        adapter.eos_token_ids = set()       # random weights: answers run to max_new_tokens
        _MODEL_7B.append(adapter)
    adapter = _MODEL_7B[0]
    # the node's policy defaults at this budget (n_recent at most budget / 4)
    cfg = SessionConfig(budget=budget, n_recent=min(SessionConfig.n_recent, budget // 4))
    names = {f.name for f in dataclasses.fields(POLICIES[cfg.policy])}

    def session() -> StreamingSession:
        policy = make_policy(cfg.policy, **{k: getattr(cfg, k) for k in POLICY_KEYS
                                            if k in names})
        return StreamingSession(adapter, policy, decode="eager")
    return session(), session()


_MODEL_7B: list = []


def bench(model: str, device: str, dtype: str, budget: int, repeat: int,
          shape: str = "") -> dict:
    """Fill a session to ``budget``, time ``repeat`` saves and restores; one result row."""
    if shape == "7b":
        a, b = _sessions_7b(device, dtype, budget)
    else:
        cfg = SessionConfig(model=model, device=device, dtype=dtype, budget=budget)
        a, b = build_session(cfg), None
    asked = _fill(a, budget)
    d = a.status()
    folder = tempfile.mkdtemp(prefix="bench_snapshot_")
    path = os.path.join(folder, "memory.safetensors")
    saves, copies, restores, size = [], [], [], 0
    for _ in range(repeat):
        info = a.save_memory(path)
        saves.append(info["total_s"])
        copies.append(info["copy_s"])
        size = int(info["bytes"])
    expected = a.ask("What did the front camera see?", max_new_tokens=8)
    b = b if b is not None else build_session(cfg)
    for _ in range(repeat):
        t0 = time.perf_counter()
        b.restore_memory(path)
        _sync(device)
        restores.append(time.perf_counter() - t0)
    got = b.ask("What did the front camera see?", max_new_tokens=8)
    os.unlink(path)
    os.rmdir(folder)
    return {
        "model": d.model["name"], "device": d.device,
        "dtype": d.model["dtype"], "budget": budget, "cache_tokens": d.cache_tokens,
        "layers": len(d.memory.tokens_per_layer), "fill_questions": asked,
        "bytes": size, "kv_bytes_allocated": d.memory.kv_bytes_allocated,
        "save_s_median": statistics.median(saves), "save_copy_s_median": statistics.median(copies),
        "restore_s_median": statistics.median(restores), "save_s": saves, "restore_s": restores,
        "identical_answer": (got.text, got.evidence_stamps)
        == (expected.text, expected.evidence_stamps),
        "load_average": os.getloadavg(),
        "device_name": _device_name(device), "rclpy_imported": "rclpy" in sys.modules,
    }


def _sync(device: str) -> None:
    """Wait for the device, so a restore's time includes its copies to the GPU."""
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    """GPU name for CUDA rows (figures depend on it), else ``cpu``."""
    import torch
    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") \
        else "cpu"


def main() -> int:
    """Benchmark each budget; print JSON rows and a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--shape", default="", choices=["", "7b"],
                    help="7b: random-weight Llama-2-7B shape instead of --model (CUDA)")
    ap.add_argument("--device", default="")
    ap.add_argument("--dtype", default="auto", help="auto: float32 on CPU, float16 on CUDA")
    ap.add_argument("--budgets", default="1024,4096")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="", help="also write the rows as JSON here")
    args = ap.parse_args()
    device = args.device or ("cuda" if args.shape == "7b" else "cpu")
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        row = bench(args.model, device, args.dtype, budget, args.repeat, args.shape)
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
