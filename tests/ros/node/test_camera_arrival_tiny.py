"""Real camera frame sizes over DDS from other processes (issue 23), and loud failure.

The node runs with the environment the launch runner gives it (the shipped Fast DDS
profile); each publisher is `scripts/camera_bench.py publish` in its own process, with
or without that profile, at 30 Hz.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from conftest import BASE_PARAMS
from nodeproc import REPO

from ros2_infmllm.ros.launch import DDS_PROFILE_USER_ENVS, dds_environment

CAM = '/arrival_test/cam/image_raw'
BENCH = REPO / 'scripts' / 'camera_bench.py'


@pytest.fixture(scope='module')
def node_params() -> Dict[str, Any]:
    """One raw camera fed at the publishers' rate; a short stall time."""
    return dict(BASE_PARAMS, image_topics=[CAM], frame_rate=30.0, camera_stall_s=2.0)


@pytest.fixture(scope='module')
def node_env() -> Dict[str, str]:
    """The node's environment as `python -m ros2_infmllm.ros.launch` sets it."""
    env = dds_environment('', environ={})
    assert env, 'the shipped config/fastdds_large_frames.xml is missing'
    return env


def _publish(domain: int, size: str, seconds: float, profile: bool,
             qos: str = 'best_effort', must_match: bool = True) -> Dict[str, Any]:
    """Run a 30 Hz bgr8 publisher process; what it sent (JSON line)."""
    import json
    env = {k: v for k, v in os.environ.items() if k not in DDS_PROFILE_USER_ENVS}
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    if profile:
        env.update(dds_environment('', environ={}))
    out = subprocess.run(
        [sys.executable, str(BENCH), 'publish', CAM, '--size', size, '--encoding', 'bgr8',
         '--qos', qos, '--rate', '30', '--duration', str(seconds),
         '--match-timeout', '10' if must_match else '2'],
        env=env, capture_output=True, text=True, timeout=seconds + 60)
    assert out.returncode == 0, out.stderr[-2000:]
    sent = json.loads(out.stdout.strip().splitlines()[-1])
    assert sent['matched'] or not must_match, f'publisher never matched the node: {sent}'
    return sent


def _cam(client) -> Any:
    return next(c for c in client.describe().cameras if c.camera == CAM)


@pytest.mark.parametrize('size', ['640x480', '1280x720'])
def test_raw_bgr8_frames_from_another_process_arrive_and_are_ingested(client, node, domain,
                                                                      size):
    before = _cam(client)
    sent = _publish(domain, size, 3.0, profile=True)
    time.sleep(1.5)
    after = _cam(client)
    arrived = after.frames_received - before.frames_received
    ingested = after.frames_ingested - before.frames_ingested
    # DDS lost nothing; the benchmark's bar is 95 % arrived, but on a loaded 2-core CI
    # machine the node's callback thread can fall behind (without the fix 0-2 % arrive)
    assert after.frames_lost == before.frames_lost, (size, after)
    assert arrived >= 0.5 * sent['published'], (size, arrived, sent, node.log_tail())
    assert ingested >= 1, (size, after, node.log_tail())
    assert after.arrival_problem == '', after.arrival_message


class _Diagnostics:
    """Collect the node's /diagnostics status of CAM, with arrival times."""

    def __init__(self, client) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        self.client = client
        self.got: List[tuple] = []
        self._lock = threading.Lock()
        self.sub = client.node.create_subscription(DiagnosticArray, '/diagnostics',
                                                   self._on, 50)

    def _on(self, arr: Any) -> None:
        for s in arr.status:
            if s.name.endswith(f'camera {CAM}'):
                with self._lock:
                    self.got.append((time.time(), s))

    def first_warn(self, since: float) -> Optional[tuple]:
        from diagnostic_msgs.msg import DiagnosticStatus
        with self._lock:
            return next(((t, s) for t, s in self.got if t >= since
                         and s.level == DiagnosticStatus.WARN), None)

    def close(self) -> None:
        self.client.node.destroy_subscription(self.sub)


def _expect_warning(client, node, domain, size: str, profile: bool, codes: tuple,
                    must_match: bool = True) -> None:
    diag = _Diagnostics(client)
    try:
        t0 = time.time()
        sent = _publish(domain, size, 7.0, profile=profile, must_match=must_match)
        warn = diag.first_warn(t0)
    finally:
        diag.close()
    assert warn is not None, f'no WARN for {CAM} in /diagnostics\n{node.log_tail()}'
    values = {kv.key: kv.value for kv in warn[1].values}
    assert values['problem'] in codes, (values, warn[1].message)
    # the bar: within 5 s of the publisher's first frame
    assert warn[0] - sent['started_at'] <= 5.0, (warn[0] - sent['started_at'], sent)
    assert 'Fix' in warn[1].message, warn[1].message
    log = node.log_tail()
    assert f'{CAM}:' in log and warn[1].message[:40] in log, log


def test_frames_without_the_transport_fix_warn_within_5s(client, node, domain):
    # 720p bgr8 (2.7 MB) best effort from a publisher on Fast DDS's default transport
    _expect_warning(client, node, domain, '1280x720', profile=False,
                    codes=('frames_lost', 'no_frames'))
    assert _cam(client).frames_lost > 0


def test_incompatible_qos_publisher_warns(client, node, domain):
    assert client.set_params({'camera_qos.reliability': 'reliable'}).successful
    try:
        _expect_warning(client, node, domain, '64x48', profile=True,
                        codes=('qos_incompatible',), must_match=False)
        cam = _cam(client)
        assert cam.qos_incompatible > 0 and cam.arrival_problem in ('', 'qos_incompatible')
    finally:
        assert client.set_params({'camera_qos.reliability': 'best_effort'}).successful


def test_camera_qos_is_validated(client):
    res = client.set_params({'camera_qos.reliability': 'sometimes'})
    assert not res.successful and 'camera_qos.reliability' in res.reason
    res = client.set_params({'camera_stall_s': 0.0})
    assert not res.successful
