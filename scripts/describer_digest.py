#!/usr/bin/env python3
"""Digest of what the frame describer writes for every frame of a bag.

The default model sees the cameras only through the describer's text, so an OpenCV or
numpy release that changes one line changes every score. ``scripts/upgrade_deps.py``
compares this digest between the locked and the upgraded environment; a user can run it
by hand after changing a package:

    python scripts/describer_digest.py --bag data/sample_bag --out /tmp/lines.txt
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ros2_infmllm.eval.bagio import decode_image, iter_frames
from ros2_infmllm.models.frame_describer import FrameDescriber


def describe_bag(bag: Path) -> list[str]:
    """Describe every frame of ``bag`` in bag order, one describer for all cameras."""
    describer = FrameDescriber()
    return [describer.describe(decode_image(f.msgtype, f.msg), f.stamp, f.topic)
            for f in iter_frames(bag)]


def main(argv: list[str] | None = None) -> int:
    """Print the frame count, distinct lines and sha256 of the bag's descriptions."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', type=Path, default=Path('data/sample_bag'))
    parser.add_argument('--out', type=Path, help='also write the lines to this file')
    args = parser.parse_args(argv)
    if not args.bag.exists():
        parser.error(f'no bag at {args.bag} (python -m ros2_infmllm.eval make-bag)')
    lines = describe_bag(args.bag)
    text = '\n'.join(lines) + '\n'
    if args.out:
        args.out.write_text(text)
    print(json.dumps({'bag': str(args.bag), 'frames': len(lines),
                      'distinct_lines': len(set(line.split('] ', 1)[-1] for line in lines)),
                      'sha256': hashlib.sha256(text.encode()).hexdigest()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
