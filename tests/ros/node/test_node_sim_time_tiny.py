"""use_sim_time: a replayed bag's frames (stamps on the bag's /clock) are ingested and cited.

The bag time lies far ahead of the wall clock: a node on wall time would drop every frame
as stamp_future, so the test fails unless the node follows /clock.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict

import pytest

from conftest import BASE_PARAMS, CAM_A
from nodeproc import make_image, to_sec

BAG_T0 = time.time() + 1_000_000.0      # far ahead of the wall clock


@pytest.fixture(scope='module')
def node_params() -> Dict[str, Any]:
    """Node on simulated time."""
    return dict(BASE_PARAMS, use_sim_time=True)


def test_sim_time_replay_ingested_and_cited_tiny(client, node):
    from rosgraph_msgs.msg import Clock
    clock_pub = client.node.create_publisher(Clock, '/clock', 10)
    cam = client.image_pub(CAM_A)
    stop = threading.Event()
    sent = []

    def replay() -> None:
        i = 0
        while not stop.is_set():
            t = BAG_T0 + 0.1 * i
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = int(t), int(round((t % 1) * 1e9))
            clock_pub.publish(clock)
            if i % 2 == 0:
                cam.publish(make_image(t, seed=i))
                sent.append(t)
            i += 1
            time.sleep(0.1)

    th = threading.Thread(target=replay, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            d = client.describe()
            if next(c for c in d.cameras if c.camera == CAM_A).frames_ingested >= 3:
                break
            time.sleep(0.3)
        res = client.query('what happened in the bag?', max_new_tokens=3)
    finally:
        stop.set()
        th.join(5)
    cam_stats = next(c for c in client.describe().cameras if c.camera == CAM_A)
    assert cam_stats.frames_ingested >= 3, (list(cam_stats.drop_reasons), node.log_tail())
    assert 'stamp_future' not in cam_stats.drop_reasons
    assert res.success and res.evidence_stamps
    for t in res.evidence_stamps:
        assert min(abs(to_sec(t) - s) for s in sent) < 1e-3
