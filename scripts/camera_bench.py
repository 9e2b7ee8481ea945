#!/usr/bin/env python3
r"""Camera arrival benchmark: real camera frame sizes at 30 Hz from other processes over DDS.

For every size x encoding x publisher QoS, a publisher process sends frames at ``--rate``
for ``--duration`` seconds to a node process (tiny-test model unless ``--model``), and the
node's own counters say what arrived. Printed and written per run: frames published,
frames that reached the node's subscription callback (``frames_received``: before the
node's keep-the-newest drop), arrival share and rate, frames ingested and the node's
ingest rate, the node's CPU (share of one core) and RSS, the DDS sample-lost count and
the node's arrival warning (``arrival_problem``) with the seconds it took to appear.

Transport configurations (``--configs``, each with its own node process):

* ``default``: Fast DDS as the wheels ship it (no profile anywhere): the state before
  issue 23, and the "transport fix off" case whose warning must fire within 5 s;
* ``profile``: the shipped config/fastdds_large_frames.xml in the node (as the launch
  runner sets it) and in the publisher;
* ``reliable``: no profile, node ``camera_qos.reliability:=reliable`` (the QoS route;
  best-effort publishers then cannot match, so only reliable ones are run).

Usage::

    python scripts/camera_bench.py [--configs default,profile,reliable]
        [--sizes 640x480,1280x720,1920x1080] [--encodings bgr8,rgb8,mono8,jpeg]
        [--qos best_effort,reliable] [--rate 30] [--duration 20]
        [--out docs/results/camera_arrival]        # writes .json and .md

    python scripts/camera_bench.py publish TOPIC --size 640x480 --encoding bgr8 \\
        [--qos best_effort] [--rate 30] [--duration 20]   # the publisher alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests' / 'node'))
sys.path.insert(0, str(REPO))

RAW_TOPIC = '/bench/camera/image_raw'
JPEG_TOPIC = '/bench/camera/image_raw/compressed'
ENCODINGS = ('bgr8', 'rgb8', 'mono8', 'jpeg')
CONFIGS = ('default', 'profile', 'reliable')


# ----------------------------------------------------------------------------- publisher
def _frame(width: int, height: int, encoding: str) -> bytes:
    """One camera-like picture (gradient, shapes, sensor noise) in ``encoding``'s bytes."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(width * height)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    img = np.stack([x + 0 * y, 0.5 * (x + y), 255 - y + 0 * x], axis=2)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    cv2.circle(img, (width // 3, height // 2), height // 6, (40, 40, 230), -1)
    cv2.rectangle(img, (width // 2, height // 4), (width // 2 + width // 5, height // 2),
                  (30, 200, 60), -1)
    if encoding == 'jpeg':
        ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        return buf.tobytes()
    if encoding == 'rgb8':
        img = img[:, :, ::-1]
    elif encoding == 'mono8':
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(img).tobytes()


def publish(topic: str, width: int, height: int, encoding: str, qos: str, rate: float,
            duration: float, match_timeout: float = 10.0) -> Dict[str, Any]:
    """Publish one picture at ``rate`` for ``duration`` s (stamps now); what was sent."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = rclpy.create_node('camera_bench_publisher')
    profile = qos_profile_sensor_data if qos == 'best_effort' else QoSProfile(
        depth=5, reliability=ReliabilityPolicy.RELIABLE)
    data = _frame(width, height, encoding)
    if encoding == 'jpeg':
        msg = CompressedImage(format='jpeg')
        pub = node.create_publisher(CompressedImage, topic, profile)
    else:
        channels = 1 if encoding == 'mono8' else 3
        msg = Image(width=width, height=height, encoding=encoding, step=width * channels)
        pub = node.create_publisher(Image, topic, profile)
    msg.data = data
    msg.header.frame_id = 'bench_camera'
    t_wait = time.monotonic()
    while pub.get_subscription_count() == 0 and time.monotonic() - t_wait < match_timeout:
        time.sleep(0.02)
    matched_after = time.monotonic() - t_wait
    sent, start, started_at = 0, time.monotonic(), time.time()
    try:
        while time.monotonic() - start < duration:
            now = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int(now % 1 * 1e9)
            pub.publish(msg)
            sent += 1
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    finally:
        elapsed = time.monotonic() - start
        node.destroy_node()
        rclpy.try_shutdown()
    return {'published': sent, 'publish_s': round(elapsed, 3), 'bytes': len(data),
            'matched': matched_after < match_timeout,
            'matched_after_s': round(matched_after, 3), 'started_at': started_at}


# ----------------------------------------------------------------------------- node side
def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _rss_mib(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return 0.0


def _camera(client: Any, topic: str) -> Any:
    return next(c for c in client.describe(timeout=10.0).cameras if c.camera == topic)


def run_one(client: Any, node: Any, config: str, size: str, encoding: str, qos: str,
            rate: float, duration: float) -> Dict[str, Any]:
    """One publisher process against the running node; counters before and after."""
    width, height = (int(v) for v in size.split('x'))
    topic = JPEG_TOPIC if encoding == 'jpeg' else RAW_TOPIC
    env = dict(os.environ)
    env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    env.update(node_env(config))
    deadline = time.monotonic() + 15.0     # the last row's problem leaves the 5 s window
    while _camera(client, topic).arrival_problem and time.monotonic() < deadline:
        time.sleep(0.5)
    before = _camera(client, topic)
    cpu0, t0 = _cpu_seconds(node.proc.pid), time.monotonic()
    pub = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), 'publish', topic, '--size', size,
         '--encoding', encoding, '--qos', qos, '--rate', str(rate), '--duration',
         str(duration)], env=env, stdout=subprocess.PIPE, text=True)
    warned_after = None
    while pub.poll() is None:
        time.sleep(0.5)
        if warned_after is None:
            try:
                if _camera(client, topic).arrival_problem:
                    warned_after = round(time.monotonic() - t0, 1)
            except (TimeoutError, StopIteration):
                pass
    out = pub.stdout.read().strip().splitlines() if pub.stdout else []
    # a publisher that died prints nothing: its row says so (published 0, publisher_failed)
    sent = json.loads(out[-1]) if out else {'published': 0, 'publish_s': duration,
                                            'publisher_failed': True}
    time.sleep(1.5)                                   # frames in flight, the 1 Hz check
    after = _camera(client, topic)
    cpu = (_cpu_seconds(node.proc.pid) - cpu0) / max(1e-9, time.monotonic() - t0)
    received = after.frames_received - before.frames_received
    ingested = after.frames_ingested - before.frames_ingested
    span = max(1e-9, float(sent['publish_s']))
    return {
        'config': config, 'size': size, 'encoding': encoding, 'publisher_qos': qos,
        'frame_bytes': sent.get('bytes'), 'published': sent['published'],
        'arrived': received, 'arrival_share': round(received / max(1, sent['published']), 4),
        'arrival_hz': round(received / span, 2), 'ingested': ingested,
        'ingest_hz': round(ingested / span, 2),
        'lost_events': after.frames_lost - before.frames_lost,
        'qos_incompatible': after.qos_incompatible,
        'arrival_problem': after.arrival_problem or (
            'warned during the run' if warned_after is not None else ''),
        'warned_after_s': warned_after,
        'node_cpu_core_share': round(cpu, 3), 'node_rss_mib': round(_rss_mib(node.proc.pid), 1),
        'publisher_matched_after_s': sent.get('matched_after_s'),
        'publisher_failed': bool(sent.get('publisher_failed')),
    }


def node_env(config: str) -> Dict[str, str]:
    """Environment of the node and the publishers for a transport configuration."""
    from ros2_infmllm.ros.launch import dds_environment

    return dds_environment('' if config == 'profile' else 'none', environ={})


def bench(args: argparse.Namespace) -> Dict[str, Any]:
    """Every configuration, each with its own node; the rows."""
    import nodeproc

    rows: List[Dict[str, Any]] = []
    for config in args.configs:
        params = {'model': args.model, 'device': 'cpu', 'image_topics': [RAW_TOPIC, JPEG_TOPIC],
                  'frame_rate': args.rate, 'image_max_side': 384,
                  'camera_qos.reliability': 'reliable' if config == 'reliable' else 'best_effort'}
        domain = nodeproc.random_domain()
        log = Path(args.log_dir) / f'camera_bench_{config}.log'
        log.parent.mkdir(parents=True, exist_ok=True)
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
        node = nodeproc.NodeProc(domain, params, log, node_env(config))
        client = nodeproc.Client(domain, name='camera_bench_client')
        os.environ['ROS_DOMAIN_ID'] = str(domain)
        try:
            assert client.transition('configure'), node.log_tail()
            assert client.transition('activate'), node.log_tail()
            client.wait_ready(node)
            for size in args.sizes:
                for encoding in args.encodings:
                    for qos in args.qos:
                        if config == 'reliable' and qos != 'reliable':
                            continue
                        row = run_one(client, node, config, size, encoding, qos, args.rate,
                                      args.duration)
                        rows.append(row)
                        print(_line(row), flush=True)
        finally:
            client.close()
            node.stop()
    return {'rows': rows, 'rate_hz': args.rate, 'duration_s': args.duration,
            'model': args.model, 'host': platform.node(), 'cpus': os.cpu_count(),
            'load_before': args.load_before, 'load_after': os.getloadavg(),
            'command': ' '.join(sys.argv), 'when': time.strftime('%Y-%m-%d %H:%M:%S UTC',
                                                                 time.gmtime())}


def _line(row: Dict[str, Any]) -> str:
    return (f"{row['config']:8s} {row['size']:>9s} {row['encoding']:5s} "
            f"{row['publisher_qos']:11s} published {row['published']:4d} arrived "
            f"{row['arrived']:4d} ({100 * row['arrival_share']:5.1f} %, "
            f"{row['arrival_hz']:5.1f} Hz) ingested {row['ingest_hz']:5.1f} Hz  "
            f"cpu {row['node_cpu_core_share']:.2f}  rss {row['node_rss_mib']:.0f} MiB  "
            f"lost {row['lost_events']}  {row['arrival_problem'] or '-'}"
            + (f" (after {row['warned_after_s']} s)" if row['warned_after_s'] else ''))


def markdown(result: Dict[str, Any]) -> str:
    """Render the result as a Markdown table (docs/results)."""
    head = ('| transport | size | encoding | publisher QoS | published | arrived | share | '
            'arrival Hz | ingest Hz | node CPU (cores) | node RSS MiB | lost events | '
            'warning (after s) |')
    lines = [f"# Camera arrival benchmark ({result['when']})", '',
             f"`{result['command']}`", '',
             f"{result['rate_hz']:g} Hz for {result['duration_s']:g} s per row, node model "
             f"`{result['model']}` (frame_rate = publish rate), {result['cpus']} CPUs, load "
             f"average before {result['load_before'][0]:.2f}, after "
             f"{result['load_after'][0]:.2f}. *arrived* = frames that reached the node's "
             'subscription callback (before its keep-the-newest drop).', '',
             head, '|' + '---|' * (head.count('|') - 1)]
    for r in result['rows']:
        warn = r['arrival_problem'] or ''
        if warn and r['warned_after_s'] is not None:
            warn += f" ({r['warned_after_s']})"
        lines.append(
            f"| {r['config']} | {r['size']} | {r['encoding']} | {r['publisher_qos']} | "
            f"{r['published']} | {r['arrived']} | {100 * r['arrival_share']:.1f} % | "
            f"{r['arrival_hz']:.1f} | {r['ingest_hz']:.1f} | {r['node_cpu_core_share']:.2f} | "
            f"{r['node_rss_mib']:.0f} | {r['lost_events']} | {warn or '-'} |")
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: the benchmark, or ``publish`` (one publisher, used by the benchmark)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['publish']:
        p = argparse.ArgumentParser(prog='camera_bench.py publish')
        p.add_argument('topic')
        p.add_argument('--size', default='640x480')
        p.add_argument('--encoding', choices=ENCODINGS, default='bgr8')
        p.add_argument('--qos', choices=('best_effort', 'reliable'), default='best_effort')
        p.add_argument('--rate', type=float, default=30.0)
        p.add_argument('--duration', type=float, default=20.0)
        p.add_argument('--match-timeout', type=float, default=10.0,
                       help='seconds to wait for a subscription before publishing anyway')
        a = p.parse_args(argv[1:])
        w, h = (int(v) for v in a.size.split('x'))
        print(json.dumps(publish(a.topic, w, h, a.encoding, a.qos, a.rate, a.duration,
                                 a.match_timeout)), flush=True)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])

    def csv(text: str) -> List[str]:
        return [t.strip() for t in text.split(',') if t.strip()]

    p.add_argument('--configs', type=csv, default=list(CONFIGS))
    p.add_argument('--sizes', type=csv, default=['640x480', '1280x720', '1920x1080'])
    p.add_argument('--encodings', type=csv, default=list(ENCODINGS))
    p.add_argument('--qos', type=csv, default=['best_effort', 'reliable'])
    p.add_argument('--rate', type=float, default=30.0)
    p.add_argument('--duration', type=float, default=20.0)
    p.add_argument('--model', default='tiny-test')
    p.add_argument('--out', default=str(REPO / 'docs' / 'results' / 'camera_arrival'))
    p.add_argument('--log-dir', default='/tmp/camera_bench')
    args = p.parse_args(argv)
    for c in args.configs:
        if c not in CONFIGS:
            p.error(f'unknown config {c!r}; known: {", ".join(CONFIGS)}')
    args.load_before = os.getloadavg()
    result = bench(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.json').write_text(json.dumps(result, indent=1) + '\n')
    out.with_suffix('.md').write_text(markdown(result))
    print(f'wrote {out}.json and {out}.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
