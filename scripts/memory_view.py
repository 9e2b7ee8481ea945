#!/usr/bin/env python3
"""Replay a bag offline into a session and save the memory view as a PNG.

    python scripts/memory_view.py --out docs/memory_view.png            # default model
    python scripts/memory_view.py --model tiny-test --frames 40 --out /tmp/v.png

Feeds the first ``--frames`` frames of the bag (all cameras, at most ``--rate`` per second
of bag time per camera), asks ``--question``, then draws what the memory holds
(ros2_infmllm/engine/memory_view.py): the same picture the node publishes on ~/memory_view.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ros2_infmllm.engine import SessionConfig, build_session  # noqa: E402
from ros2_infmllm.eval.bagio import decode_image, iter_frames  # noqa: E402
from ros2_infmllm.engine.memory_view import render  # noqa: E402


def main() -> int:
    """Replay the bag offline and write the memory-view picture."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bag", default=str(REPO / "data" / "sample_bag"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--rate", type=float, default=1.0, help="frames per bag second, per camera")
    ap.add_argument("--question", default="What was the number on the blue sign?")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    s = build_session(SessionConfig(model=args.model, device=args.device, budget=args.budget))
    last: dict = {}
    fed = 0
    for f in iter_frames(args.bag):
        if fed >= args.frames:
            break
        if f.stamp - last.get(f.topic, -1e9) < 1.0 / args.rate:
            continue
        last[f.topic] = f.stamp
        s.ingest_frame(decode_image(f.msgtype, f.msg), f.stamp, f.topic)
        fed += 1
    ans = s.ask(args.question, max_new_tokens=24)
    img = render(s.memory_map())
    cv2.imwrite(args.out, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    print(f"{fed} frames, answer {ans.text!r}, evidence {ans.evidence_stamps}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
