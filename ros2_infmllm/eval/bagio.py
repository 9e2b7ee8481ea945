"""Read camera frames out of rosbag2 bags (sqlite3 or mcap) with ``rosbags``, no ROS needed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from ros2_infmllm.ros.imaging import MAX_PIXELS, compressed_to_rgb, image_to_rgb

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
#: a ``max_side`` no accepted frame reaches (a side is at most its pixel count): no downscale
FULL_SIZE = MAX_PIXELS


@dataclass
class BagFrame:
    """One camera message: bag receive time, header stamp (both s) and raw message."""

    topic: str
    msgtype: str
    t_bag: float
    stamp: float
    msg: object
    rawdata: bytes


def decode_image(msgtype: str, msg) -> np.ndarray:
    """Decode a deserialised Image / CompressedImage message to RGB uint8 (h, w, 3).

    The node's decoding (``ros2_infmllm.ros.imaging``) at full size: the eval tools see the
    frames the node would see, before its downscale. Raises its FrameError (a ValueError).
    """
    if msgtype.endswith('CompressedImage'):
        return compressed_to_rgb(msg.format, msg.data, max_side=FULL_SIZE)
    return image_to_rgb(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                        bool(msg.is_bigendian), max_side=FULL_SIZE)


def camera_topics(bag: Path | str) -> dict:
    """Return {topic: msgtype} of the image topics in ``bag``."""
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as r:
        return {c.topic: c.msgtype for c in r.connections if c.msgtype in IMAGE_TYPES}


def bag_start(bag: Path | str) -> float:
    """Return the bag's start time in seconds (first message receive time)."""
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as r:
        return r.start_time / 1e9


def iter_frames(bag: Path | str, topics: Optional[Sequence[str]] = None
                ) -> Iterator[BagFrame]:
    """Yield the image messages of ``topics`` (all image topics if None) in time order."""
    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f'bag not found: {bag}')
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as r:
        conns = [c for c in r.connections if c.msgtype in IMAGE_TYPES
                 and (topics is None or c.topic in topics)]
        if not conns:
            have = sorted({c.topic for c in r.connections})
            raise ValueError(f'no image topics {list(topics or [])} in {bag}; has {have}')
        for conn, t_ns, raw in r.messages(connections=conns):
            msg = r.deserialize(raw, conn.msgtype)
            st = msg.header.stamp
            yield BagFrame(conn.topic, conn.msgtype, t_ns / 1e9,
                           st.sec + st.nanosec * 1e-9, msg, raw)
