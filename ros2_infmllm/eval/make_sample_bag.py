"""Write the bundled sample camera bag (rosbag2, sqlite3 or mcap) from the seeded scene.

Usage: ``python -m ros2_infmllm.eval.make_sample_bag --out data/sample_bag``.
The bag is generated at set-up / demo time instead of being committed (it is tens of MB).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ros2_infmllm.eval.scenario import SCENES, SceneRenderer

#: Absolute time of the first message (fixed so that the bag is byte-for-byte repeatable).
BAG_START_NS = 1_700_000_000 * 1_000_000_000
CAMERA_TOPIC = '/camera/image_raw'
CAMERA2_TOPIC = '/camera2/image_raw/compressed'


def prepare_bag_path(out: Path | str, overwrite: bool) -> Path:
    """Return ``out`` as a Path free for a new bag (an old one removed only on ``overwrite``)."""
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f'{out} exists; pass overwrite=True / --overwrite')
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _stamp(typestore, ns: int):
    Time = typestore.types['builtin_interfaces/msg/Time']
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def write_sample_bag(out: Path | str, duration: Optional[float] = None, rate: float = 10.0,
                     width: int = 160, height: int = 120, seed: Optional[int] = None,
                     storage: str = 'sqlite3', second_camera: bool = True,
                     camera2_rate: float = 2.0, overwrite: bool = False,
                     progress: bool = False, scene: str = 'sample') -> dict:
    """Write a bundled scene's bag and return a summary (topics, message counts, start time).

    ``duration`` (s) defaults to the whole scene (``Scenario.duration``); a shorter one for
    quick tests simply leaves the later events out. ``seed`` defaults to the scene's.
    """
    if scene not in SCENES:
        raise ValueError(f'unknown scene {scene!r}; known: {sorted(SCENES)}')
    name, scene = scene, SCENES[scene]
    seed = scene.seed if seed is None else seed
    duration = scene.duration if duration is None else duration
    if rate <= 0 or duration <= 0:
        raise ValueError(f'rate and duration must be > 0 (got rate={rate}, '
                         f'duration={duration})')
    if storage not in ('sqlite3', 'mcap'):
        raise ValueError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
    out = prepare_bag_path(out, overwrite)
    typestore = get_typestore(Stores.ROS2_KILTED)
    Image = typestore.types['sensor_msgs/msg/Image']
    Compressed = typestore.types['sensor_msgs/msg/CompressedImage']
    Header = typestore.types['std_msgs/msg/Header']
    renderer = SceneRenderer(scene, width=width, height=height, seed=seed)
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    n_frames = int(round(duration * rate))
    period2 = int(round(rate / camera2_rate)) if second_camera else 0
    counts = {CAMERA_TOPIC: 0, CAMERA2_TOPIC: 0}
    steps = range(n_frames)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc='sample bag', unit='frame')
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        conn = writer.add_connection(CAMERA_TOPIC, Image.__msgtype__, typestore=typestore)
        conn2 = None
        if second_camera:
            conn2 = writer.add_connection(CAMERA2_TOPIC, Compressed.__msgtype__,
                                          typestore=typestore)
        for i in steps:
            t = i / rate
            ns = BAG_START_NS + int(round(t * 1e9))
            rgb = renderer.render(t, camera=0)
            msg = Image(header=Header(stamp=_stamp(typestore, ns), frame_id='camera'),
                        height=height, width=width, encoding='rgb8', is_bigendian=0,
                        step=width * 3, data=rgb.reshape(-1))
            writer.write(conn, ns, typestore.serialize_cdr(msg, Image.__msgtype__))
            counts[CAMERA_TOPIC] += 1
            if conn2 is not None and i % period2 == 0:
                rgb2 = renderer.render(t, camera=1)
                ok, jpg = cv2.imencode('.jpg', cv2.cvtColor(rgb2, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, 85])
                if not ok:
                    raise RuntimeError('JPEG encoding failed')
                msg2 = Compressed(header=Header(stamp=_stamp(typestore, ns),
                                                frame_id='camera2'),
                                  format='jpeg', data=np.asarray(jpg, np.uint8).reshape(-1))
                writer.write(conn2, ns, typestore.serialize_cdr(msg2, Compressed.__msgtype__))
                counts[CAMERA2_TOPIC] += 1
    return {'path': str(out), 'scene': name, 'storage': storage, 'start_s': BAG_START_NS / 1e9,
            'duration_s': duration, 'rate_hz': rate, 'size': [width, height],
            'seed': seed, 'counts': {k: v for k, v in counts.items() if v}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='data/sample_bag', help='output bag directory')
    ap.add_argument('--duration', type=float, default=None,
                    help='seconds of bag time (default: the whole scene)')
    ap.add_argument('--rate', type=float, default=10.0, help='camera rate in Hz')
    ap.add_argument('--width', type=int, default=160)
    ap.add_argument('--height', type=int, default=120)
    ap.add_argument('--seed', type=int, default=None, help="default: the scene's")
    ap.add_argument('--scene', choices=sorted(SCENES), default='sample')
    ap.add_argument('--storage', choices=['sqlite3', 'mcap'], default='sqlite3')
    ap.add_argument('--no-second-camera', action='store_true',
                    help='omit the JPEG camera on ' + CAMERA2_TOPIC)
    ap.add_argument('--overwrite', action='store_true')
    args = ap.parse_args(argv)
    try:
        info = write_sample_bag(args.out, duration=args.duration, rate=args.rate,
                                width=args.width, height=args.height, seed=args.seed,
                                storage=args.storage,
                                second_camera=not args.no_second_camera,
                                overwrite=args.overwrite, progress=True, scene=args.scene)
    except (FileExistsError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f"wrote {info['path']} ({info['storage']}): {info['counts']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
