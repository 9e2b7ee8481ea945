"""A camera in its own process (so a test can kill it): generated frames at a rate and QoS.

Usage: ``camera_publisher.py TOPIC --rate 10 --qos best_effort|reliable [--depth N]
[--transient-local] [--duration S]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main() -> int:
    """Publish until killed or --duration passes."""
    p = argparse.ArgumentParser()
    p.add_argument("topic")
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--qos", choices=["best_effort", "reliable"], default="best_effort")
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--transient-local", action="store_true")
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    args = p.parse_args()

    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("camera_publisher")
    qos = QoSProfile(
        depth=args.depth,
        reliability=(ReliabilityPolicy.RELIABLE if args.qos == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if args.transient_local
                    else DurabilityPolicy.VOLATILE),
    )
    pub = node.create_publisher(Image, args.topic, qos)
    print(f"publishing {args.topic} qos={args.qos} depth={args.depth}", flush=True)
    start = time.monotonic()
    i = 0
    try:
        while time.monotonic() - start < args.duration:
            t = time.time()
            msg = Image()
            rgb = harness.scene(i, args.width, args.height)
            msg.height, msg.width = rgb.shape[:2]
            msg.encoding, msg.step = "rgb8", 3 * args.width
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t - int(t)) * 1e9)
            msg.data = rgb.tobytes()
            pub.publish(msg)
            i += 1
            time.sleep(1.0 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
