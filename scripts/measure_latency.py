#!/usr/bin/env python3
"""Measure the node's service and camera-callback latency across processes (real DDS).

Starts a tiny-test node (or attaches to a running one with --attach and --domain), then
measures, side by side in one run:

* ``~/describe_memory`` round trip over N calls, idle and while a long question is answered;
* camera-callback latency while that long question is answered: a frame is published and
  ``frames_received`` of describe_memory is polled until the node's callback counted it
  (publish -> callback done, upper bound: it includes one describe round trip);
* round trip of a short ``~/query`` (4 tokens);
* round trip of a 16-token ``~/query`` with no camera traffic and while a camera
  publishes 320x240 frames at ``--camera-hz`` (the node's Python threads handle every
  message while the model thread decodes: this is where GIL hand-offs show).

Usage::

    python scripts/measure_latency.py [--calls 100] [--out results/node_latency.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests' / 'ros' / 'node'))

import nodeproc  # noqa: E402

CAM = '/latency/cam/image_raw'


def _stats(values: List[float]) -> Dict[str, float]:
    arr = np.asarray(values, dtype=float) * 1000.0
    return {'n': int(arr.size), 'p50_ms': round(float(np.percentile(arr, 50)), 3),
            'p95_ms': round(float(np.percentile(arr, 95)), 3),
            'max_ms': round(float(arr.max()), 3), 'mean_ms': round(float(arr.mean()), 3)}


def describe_rtt(client: nodeproc.Client, calls: int, label: str) -> List[float]:
    """Time `calls` describe_memory round trips."""
    out = []
    for _ in tqdm(range(calls), desc=label, leave=False):
        t0 = time.perf_counter()
        client.describe()
        out.append(time.perf_counter() - t0)
    return out


def _received(client: nodeproc.Client) -> int:
    return next(c.frames_received for c in client.describe().cameras if c.camera == CAM)


def camera_latency(client: nodeproc.Client, frames: int, width: int, height: int) -> tuple:
    """Publish one frame at a time; time until the node's callback counted it, and losses.

    Sensor-data QoS is best effort: a frame not counted within 1 s is counted as lost.
    """
    pub = client.image_pub(CAM)
    out, lost = [], 0
    base = time.time()
    for i in tqdm(range(frames), desc='camera probe', leave=False):
        before = _received(client)
        t0 = time.perf_counter()
        pub.publish(nodeproc.make_image(base + 0.01 * i, width=width, height=height, seed=i))
        deadline = t0 + 1.0
        while time.perf_counter() < deadline:
            if _received(client) > before:
                out.append(time.perf_counter() - t0)
                break
        else:
            lost += 1
        time.sleep(0.03)
    return out, lost


def query_under_camera_load(client: nodeproc.Client, hz: float, queries: int) -> tuple:
    """16-token query round trips without camera traffic, then with ``hz`` camera frames/s."""
    def ask_all(label: str) -> List[float]:
        out = []
        for _ in tqdm(range(queries), desc=label, leave=False):
            t0 = time.perf_counter()
            res = client.query('what did the camera see?', max_new_tokens=16)
            out.append(time.perf_counter() - t0)
            if not res.success:
                raise RuntimeError(f'query failed: {res.message}')
        return out

    quiet = ask_all('query, no camera')
    pub = client.image_pub(CAM)
    stop = threading.Event()

    def pump() -> None:
        i, base = 0, time.time()
        while not stop.is_set():
            pub.publish(nodeproc.make_image(base + i / hz, width=320, height=240, seed=i % 8))
            i += 1
            time.sleep(1.0 / hz)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        time.sleep(2.0)
        loaded = ask_all(f'query, camera {hz:g} Hz')
    finally:
        stop.set()
        thread.join(timeout=5)
    return quiet, loaded


def start_long_question(client: nodeproc.Client, tokens: int) -> Any:
    """Send an ~/ask goal that keeps the worker generating; return its goal handle."""
    from rclpy.action import ActionClient
    from ros2_infmllm_msgs.action import Ask
    ac = ActionClient(client.node, Ask, '/infmllm/ask')
    if not ac.wait_for_server(timeout_sec=30):
        raise RuntimeError('action ~/ask not available')
    first = threading.Event()
    done = threading.Event()
    fut = ac.send_goal_async(Ask.Goal(question='describe everything in detail',
                                      max_new_tokens=tokens),
                             feedback_callback=lambda _m: first.set())
    fut.add_done_callback(lambda _f: done.set())
    if not done.wait(30) or not fut.result().accepted:
        raise RuntimeError('long question not accepted')
    if not first.wait(60):
        raise RuntimeError('long question produced no token')
    return fut.result()


def main(argv: List[str] | None = None) -> int:
    """Run the measurements, print them, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--calls', type=int, default=100, help='describe_memory calls per phase')
    ap.add_argument('--frames', type=int, default=50, help='camera probe frames')
    ap.add_argument('--width', type=int, default=320, help='probe frame width (rgb8)')
    ap.add_argument('--height', type=int, default=240, help='probe frame height')
    ap.add_argument('--queries', type=int, default=20, help='short queries')
    ap.add_argument('--model', default='tiny-test', help='model of the started node')
    ap.add_argument('--image-max-side', type=int, default=384,
                    help='image_max_side of the started node (its default)')
    ap.add_argument('--camera-hz', type=float, default=20.0,
                    help='camera rate of the loaded-query phase')
    ap.add_argument('--loaded-queries', type=int, default=5,
                    help='16-token queries per phase of the loaded-query test')
    ap.add_argument('--attach', action='store_true',
                    help='use a running node /infmllm (with camera topic %s) on --domain' % CAM)
    ap.add_argument('--domain', type=int, default=0, help='ROS_DOMAIN_ID (0 = random)')
    ap.add_argument('--out', default='', help='write the figures as JSON here')
    args = ap.parse_args(argv)
    if args.calls < 1 or args.frames < 1 or args.queries < 1:
        ap.error('--calls, --frames and --queries must be >= 1')
    domain = args.domain or nodeproc.random_domain()
    proc = None
    if not args.attach:
        log = Path('/tmp') / f'measure_latency_node_{domain}.log'
        proc = nodeproc.NodeProc(domain, {
            'model': args.model, 'device': 'cpu', 'image_topics': [CAM], 'frame_rate': 10.0,
            'max_new_tokens': 4000, 'image_max_side': args.image_max_side}, log)
    client = nodeproc.Client(domain, 'latency_probe')
    try:
        if proc is not None:
            if not (client.transition('configure') and client.transition('activate')):
                raise RuntimeError(f'node did not reach active:\n{proc.log_tail()}')
            client.wait_ready(proc)
        idle = describe_rtt(client, args.calls, 'describe idle')
        query = []
        for _ in tqdm(range(args.queries), desc='short query', leave=False):
            t0 = time.perf_counter()
            res = client.query('what do you see?', max_new_tokens=4)
            query.append(time.perf_counter() - t0)
            if not res.success:
                raise RuntimeError(f'query failed: {res.message}')
        quiet, loaded = query_under_camera_load(client, args.camera_hz, args.loaded_queries)
        handle = start_long_question(client, 4000)
        busy = describe_rtt(client, args.calls, 'describe busy')
        cams, lost = camera_latency(client, args.frames, args.width, args.height)
        still_busy = client.describe().queue_depth == 0      # goal still generating
        handle.cancel_goal_async()
        result = {
            'node': f'{args.model} on cpu (separate process, real DDS, localhost)',
            'host': platform.node(), 'python': platform.python_version(),
            'describe_memory_rtt_idle': _stats(idle),
            'describe_memory_rtt_while_answering': _stats(busy),
            'camera_callback_latency_while_answering': _stats(cams) if cams else {'n': 0},
            'camera_frames_lost_best_effort': lost,
            'camera_callback_note': f'publish of a {args.width}x{args.height} rgb8 frame until '
                                    'frames_received counted it (includes one describe round '
                                    'trip); lost = not counted within 1 s',
            'short_query_rtt_4_tokens': _stats(query),
            'query_rtt_16_tokens_no_camera': _stats(quiet),
            f'query_rtt_16_tokens_camera_{args.camera_hz:g}hz': _stats(loaded),
            'long_question_running': still_busy,
        }
    finally:
        client.close()
        if proc is not None:
            proc.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
