"""Write the real-footage camera bag from packaged real imagery (Debian packages).

Real video and robot-camera sequences (ViSP's ``mbt/cube`` sequence, ``tree.avi``,
``vtest.avi``'s pedestrians) make the quiet stretches; real photographs (a bus with
``LEYLAND`` on it, three people on a sofa, a butterfly, a parking notice, a cat, a shop
sign, a dog) are the events between them, each shown for a few seconds. Questions
(``data/real_questions.yaml``) ask about them right after and minutes later, when their
frames are far beyond the memory's budget. The imagery is found or fetched by
:mod:`ros2_infmllm.eval.real_imagery`; nothing is downloaded from anywhere else.

Usage: ``python -m ros2_infmllm.eval.real_bag --out data/real_bag [--if-missing]``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ros2_infmllm.eval.eyes import read_image
from ros2_infmllm.eval.make_sample_bag import BAG_START_NS, CAMERA_TOPIC, prepare_bag_path

LABELME = "usr/share/doc/labelme-examples/examples/"
OPENCV = "usr/share/doc/opencv-doc/examples/"
VISP = "usr/share/visp-images-data/ViSP-images/"
CUBE = VISP + "mbt/cube/image{:04d}.pgm"       # 218 frames of a robot camera, 640x480 grey
TREE = OPENCV + "data/tree.avi"                # a tree in the wind (68 frames decode)
PEOPLE = OPENCV + "data/vtest.avi"             # 795 frames of pedestrians on a campus path


@dataclass(frozen=True)
class Segment:
    """Bag seconds [start, end) showing one source.

    ``kind`` is ``photo`` (one image held), ``cube`` (the ViSP sequence, frame ``first`` +
    second) or ``video`` (``path``'s frame ``first + step * second``).
    """

    start: int
    end: int
    kind: str
    path: str = ""
    first: int = 0
    step: int = 1


#: The timeline. Background stretches alternate the robot camera and the tree; each
#: event photo is held 8 s; the pedestrian clip is 30 s of real time at 1 frame/s.
TIMELINE = (
    Segment(0, 50, "cube", first=0),
    Segment(50, 58, "photo", LABELME + "semantic_segmentation/data_annotated/2011_000025.jpg"),
    Segment(58, 85, "video", TREE, first=0, step=2),
    Segment(85, 93, "photo", LABELME + "semantic_segmentation/data_annotated/2011_000006.jpg"),
    Segment(93, 120, "cube", first=50),
    Segment(120, 128, "photo", OPENCV + "data/butterfly.jpg"),
    Segment(128, 150, "video", TREE, first=20, step=2),
    Segment(150, 158, "photo", OPENCV + "text/scenetext01.jpg"),
    Segment(158, 180, "cube", first=77),
    Segment(180, 188, "photo", LABELME + "classification/data_annotated/0001.jpg"),
    Segment(188, 210, "video", TREE, first=0, step=3),
    Segment(210, 218, "photo", OPENCV + "text/scenetext03.jpg"),
    Segment(218, 240, "cube", first=99),
    Segment(240, 248, "photo", LABELME + "classification/data_annotated/0002.jpg"),
    Segment(248, 270, "video", TREE, first=40, step=1),
    Segment(270, 300, "video", PEOPLE, first=0, step=10),
    Segment(300, 345, "cube", first=121),
)
DURATION = TIMELINE[-1].end


class _Frames:
    """Reads the timeline's frames, keeping each video open once."""

    def __init__(self, root: Path, width: int, height: int) -> None:
        self.root, self.size = root, (width, height)
        self._videos: dict[str, tuple[cv2.VideoCapture, int]] = {}
        self._photos: dict[str, np.ndarray] = {}

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        """Scale and centre-crop to the bag's size (a camera has one size)."""
        w, h = self.size
        s = max(w / rgb.shape[1], h / rgb.shape[0])
        big = cv2.resize(rgb, (max(w, round(rgb.shape[1] * s)), max(h, round(rgb.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
        y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])

    def frame(self, seg: Segment, second: int) -> np.ndarray:
        """Return the RGB frame of ``seg`` at its ``second``-th second."""
        if seg.kind == "photo":
            if seg.path not in self._photos:
                self._photos[seg.path] = self._fit(read_image(self.root, seg.path))
            return self._photos[seg.path]
        if seg.kind == "cube":
            return self._fit(read_image(self.root, CUBE.format(seg.first + second)))
        return self._fit(self._video_frame(seg.path, seg.first + seg.step * second))

    def _video_frame(self, path: str, index: int) -> np.ndarray:
        """Frame ``index`` of a video, read forward (seeking is unreliable in these AVIs)."""
        cap, at = self._videos.get(path, (None, 0))
        if cap is None or index < at:
            cap, at = cv2.VideoCapture(str(self.root / path)), 0
        bgr = None
        while at <= index:
            ok, bgr = cap.read()
            if not ok:
                raise RuntimeError(f"cannot read frame {index} of {path}")
            at += 1
        self._videos[path] = (cap, at)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frames(root: Path, width: int = 640, height: int = 480):
    """Yield ``(bag second, RGB frame)`` for the whole timeline, one frame a second."""
    reader = _Frames(root, width, height)
    for seg in TIMELINE:
        for t in range(seg.start, seg.end):
            yield t, reader.frame(seg, t - seg.start)


def write_real_bag(out: Path | str, root: Path, width: int = 640, height: int = 480,
                   overwrite: bool = False) -> dict:
    """Write the bag (rosbag2 sqlite3, rgb8 Images on CAMERA_TOPIC at 1 Hz); a summary."""
    out = prepare_bag_path(out, overwrite)
    typestore = get_typestore(Stores.ROS2_KILTED)
    Image = typestore.types["sensor_msgs/msg/Image"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    count = 0
    with Writer(out, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection(CAMERA_TOPIC, Image.__msgtype__, typestore=typestore)
        for t, rgb in frames(root, width, height):
            ns = BAG_START_NS + t * 1_000_000_000
            msg = Image(header=Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=0),
                                      frame_id="camera"),
                        height=height, width=width, encoding="rgb8", is_bigendian=0,
                        step=width * 3, data=rgb.reshape(-1))
            writer.write(conn, ns, typestore.serialize_cdr(msg, Image.__msgtype__))
            count += 1
    return {"path": str(out), "duration_s": DURATION, "frames": count,
            "size": [width, height]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    from ros2_infmllm.eval.real_imagery import install_for_cli
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/real_bag")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--if-missing", action="store_true",
                    help="do nothing when the bag already exists")
    args = ap.parse_args(argv)
    if args.if_missing and (Path(args.out) / "metadata.yaml").exists():
        print(f"{args.out} exists")
        return 0
    root = install_for_cli()
    if root is None:
        return 2
    try:
        info = write_real_bag(args.out, root, args.width, args.height,
                              overwrite=args.overwrite or args.if_missing)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {info['path']}: {info['frames']} frames over {info['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
