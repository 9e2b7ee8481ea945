"""Read camera frames out of rosbag2 bags (sqlite3 or mcap) with ``rosbags``, no ROS needed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


@dataclass
class BagFrame:
    """One camera message: bag receive time, header stamp (both s) and raw message."""

    topic: str
    msgtype: str
    t_bag: float
    stamp: float
    msg: object
    rawdata: bytes


def _as_u8(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data, np.uint8).reshape(-1)


def decode_image(msgtype: str, msg) -> np.ndarray:
    """Decode a deserialised Image / CompressedImage message to RGB uint8 (h, w, 3).

    Why here: the eval tools must read bags without ROS; the node uses imaging.py.
    """
    if msgtype.endswith('CompressedImage'):
        buf = _as_u8(msg.data)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'cannot decode compressed image (format {msg.format!r})')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w, step, enc = int(msg.height), int(msg.width), int(msg.step), msg.encoding.lower()
    chans = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4, 'bgra8': 4}
    if enc not in chans:
        raise ValueError(f'unsupported image encoding {msg.encoding!r}')
    c = chans[enc]
    data = _as_u8(msg.data)
    if h <= 0 or w <= 0 or step < w * c or data.size < h * step:
        raise ValueError(f'bad image geometry {w}x{h} step {step} for {data.size} bytes')
    img = data[:h * step].reshape(h, step)[:, :w * c].reshape(h, w, c)
    if enc == 'bgr8':
        img = img[..., ::-1]
    elif enc == 'mono8':
        img = np.repeat(img, 3, axis=2)
    elif enc == 'rgba8':
        img = img[..., :3]
    elif enc == 'bgra8':
        img = img[..., 2::-1]
    return np.ascontiguousarray(img)


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
