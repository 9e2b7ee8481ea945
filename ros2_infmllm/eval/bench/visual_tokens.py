"""``python -m ros2_infmllm.eval.bench.visual_tokens``: load time and CPU ingest of the VLM.

Prints the issue-39 latency figures of ``model: lite0-qwen2.5-0.5b``: the wall time of
building a session offline (LM from its converted copy, tower, checked projector), and the
per-frame ingest time (tower + projector + prefill of the frame chunk into a bounded
inf_mllm memory) over rendered held-out frames of the bags' size (160 x 120), after a few
warm-up frames. Measure on a quiet machine: other processes on the cores change both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build a session, ingest frames, print load seconds and ingest p50/p95/max (ms)."""
    ap = argparse.ArgumentParser(prog="python -m ros2_infmllm.eval.bench.visual_tokens",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100, help="timed frames")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--policy", default="inf_mllm")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    import cv2
    import torch

    from ros2_infmllm.engine import build_session
    from ros2_infmllm.eval.common import build_policy, session_config_for
    from ros2_infmllm.models.visual_tokens import NAME
    from ros2_infmllm.train.data import HELDOUT, scene
    frames = []
    for i in range(args.warmup + args.frames):
        rgb = scene(HELDOUT, i)[1]
        frames.append(cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA))
    config = session_config_for(build_policy(args.policy, args.budget, {}), model=NAME,
                                device=args.device, memory_log=False)
    t0 = time.perf_counter()
    session = build_session(config)
    load_s = time.perf_counter() - t0
    times = []
    for i, rgb in enumerate(frames):
        t = time.perf_counter()
        session.ingest_frame(rgb, 1_700_000_000.0 + i, "front")
        if i >= args.warmup:
            times.append(1000.0 * (time.perf_counter() - t))
    ms = np.array(times)
    print(json.dumps({"model": NAME, "device": args.device, "policy": args.policy,
                      "budget": args.budget, "torch_threads": torch.get_num_threads(),
                      "load_s": round(load_s, 2), "frames": len(times),
                      "ingest_ms_p50": round(float(np.percentile(ms, 50)), 1),
                      "ingest_ms_p95": round(float(np.percentile(ms, 95)), 1),
                      "ingest_ms_max": round(float(ms.max()), 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
