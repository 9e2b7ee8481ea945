"""Perception cost at 640x480 with every part on, and ingest + perception per frame.

Feeds the real-footage bag's frames (eval/real_bag.py: robot-camera, tree and pedestrian
video with real photographs as events) at their own 640x480 through the frame describer
as a text model's adapter does (working copy at ``image_max_side`` 384, the camera frame
for QR codes and text), one frame a bag second. Prints the frame time (mean, p95, worst),
each part's mean and worst run, the CPU time per frame (all threads), the host's load
average before and after (on a shared machine the wall-clock figures carry the others'
load), and, with ``--ingest``, the same frames through
the default model's session (perception + prefill), against the demo's frame period.

Usage: ``python -m ros2_infmllm.eval.bench.perception [--frames 120] [--ingest]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

#: the demo feeds one frame a second of wall time (scripts/demo.sh FRAME_RATE)
DEMO_FRAME_PERIOD_S = 1.0


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"mean_ms": float(ms.mean()), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max()), "frames": int(ms.size)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print its figures (and a JSON line)."""
    from ros2_infmllm.eval.real_bag import frames
    from ros2_infmllm.eval.real_imagery import install_for_cli
    from ros2_infmllm.models.frame_describer import FrameDescriber
    from ros2_infmllm.models.images import downscale
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120, help="bag seconds fed (from 0)")
    ap.add_argument("--ingest", action="store_true",
                    help="also feed the default model's session (loads it: ~30 s)")
    args = ap.parse_args(argv)
    root = install_for_cli()
    if root is None:
        return 2
    clip = []
    for t, rgb in frames(root):
        if t >= args.frames:
            break
        clip.append(rgb)
    load_before = os.getloadavg()
    describer = FrameDescriber()
    describer.describe(downscale(clip[0], 384), 0.0, "warm", full=clip[0])   # first shapes
    describer = FrameDescriber()
    took, cpu = [], []
    for t, rgb in enumerate(clip):
        t0, c0 = time.perf_counter(), time.process_time()
        describer.describe(downscale(rgb, 384), float(t), "bench", full=rgb)
        took.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    result = {"perception": _stats(took), "cpu": _stats(cpu),
              "size": list(clip[0].shape[1::-1]),
              "parts": {k: {"runs": c["runs"], "mean_ms": c["mean_s"] * 1e3,
                            "max_ms": c["max_s"] * 1e3}
                        for k, c in describer.costs().items()},
              "load_before": load_before, "load_after": os.getloadavg(),
              "cpus": os.cpu_count()}
    if args.ingest:
        from ros2_infmllm.engine import SessionConfig, build_session
        session = build_session(SessionConfig(device="cpu"))
        session.ingest_frame(clip[0], 0.0, "warm")
        session.reset()
        ingest = []
        for t, rgb in enumerate(clip):
            t0 = time.perf_counter()
            session.ingest_frame(rgb, 1.7e9 + t, "bench")
            ingest.append(time.perf_counter() - t0)
        result["ingest_with_perception"] = _stats(ingest)
    p = result["perception"]
    print(f"perception at {result['size'][0]}x{result['size'][1]}, all parts, "
          f"{p['frames']} frames: mean {p['mean_ms']:.0f} ms, p95 {p['p95_ms']:.0f} ms, "
          f"worst {p['max_ms']:.0f} ms (bars: mean <= 150, worst <= 500)")
    for name, c in result["parts"].items():
        print(f"  {name:8s} runs {c['runs']:4d}  mean {c['mean_ms']:7.1f} ms  "
              f"worst {c['max_ms']:7.1f} ms")
    c = result["cpu"]
    print(f"CPU time per frame (all threads; what a machine shared with nothing else spends): "
          f"mean {c['mean_ms']:.0f} ms, p95 {c['p95_ms']:.0f} ms, worst {c['max_ms']:.0f} ms")
    print(f"load average before {load_before[0]:.1f}, after {result['load_after'][0]:.1f} "
          f"on {result['cpus']} CPUs")
    if "ingest_with_perception" in result:
        i = result["ingest_with_perception"]
        print(f"ingest + perception (default model): mean {i['mean_ms']:.0f} ms, p95 "
              f"{i['p95_ms']:.0f} ms, worst {i['max_ms']:.0f} ms; the demo's frame period is "
              f"{DEMO_FRAME_PERIOD_S * 1e3:.0f} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
