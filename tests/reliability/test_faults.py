"""Faults across processes (issue 8): model exceptions, simulated OOM, a camera that dies.

The node runs tests/reliability/instrumented_node.py: the real node and the real tiny
session, whose model forward raises when a test drops a control file (see that file).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from counters import drop_count, frames_ingested
from harness import CAM_GOOD, REPO, image_msg, ros_env, scene, wait_until

HERE = Path(__file__).resolve().parent


def _arm(control_dir: Path, stage: str, kind: str) -> Path:
    path = control_dir / f"{stage}.{kind}.{time.monotonic_ns()}"
    path.touch()
    return path


def _feed_until_ingested(client, pub, timeout: float = 30.0) -> int:
    """Publish good frames until the ingested counter moves; return the new count."""
    before = frames_ingested(client.describe())
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        pub.publish(image_msg(scene(i, 64, 48), client.now_msg()))
        i += 1
        time.sleep(0.2)
        now = frames_ingested(client.describe())
        if now > before:
            return now
    raise AssertionError("no frame ingested")


@pytest.fixture(scope="module")
def pub(client):
    """A publisher on the good camera."""
    p = client.image_publisher(CAM_GOOD, reliable=True)
    assert wait_until(lambda: p.get_subscription_count() > 0, 30)
    return p


@pytest.mark.parametrize("kind, words", [
    ("error", ("injected", "fault", "error", "fail")),
    ("oom", ("memory", "oom")),
    ("cuda_oom", ("memory", "oom")),
    ("cpu_oom", ("memory", "oom", "alloc")),
], ids=["exception", "torch_OutOfMemoryError", "cuda_oom_runtime_error", "cpu_oom"])
def test_fault_during_generation(node, client, pub, control_dir, kind, words):
    _feed_until_ingested(client, pub)
    rss0 = node.rss_bytes()
    armed = _arm(control_dir, "generate", kind)
    res = client.query("What do you see?", max_new_tokens=3, timeout=60)
    assert not armed.exists(), "fault was never reached (model not called?)"
    assert not res.success, "a failed generation was reported as success"
    assert any(w in res.message.lower() for w in words), res.message
    # the step's 128 MiB tensor must be freed: no reference kept to the failed step
    # (polled: the reply is sent from inside the node's except block, before it unwinds)
    assert wait_until(lambda: node.rss_bytes() < rss0 + 64 * 2**20, 10), (
        "step tensors kept after the fault")
    res2 = client.query("And now?", max_new_tokens=3, timeout=60)
    assert res2.success, f"node did not recover: {res2.message}\n{node.log_text()}"
    assert node.alive()


@pytest.mark.parametrize("kind", ["error", "oom", "cuda_oom"],
                         ids=["exception", "torch_OutOfMemoryError", "cuda_oom_runtime_error"])
def test_fault_during_ingest(node, client, pub, control_dir, kind):
    _feed_until_ingested(client, pub)
    rss0 = node.rss_bytes()
    errors0 = drop_count(client.describe(), "model_error")
    armed = _arm(control_dir, "ingest", kind)
    assert wait_until(lambda: (pub.publish(image_msg(scene(1, 64, 48), client.now_msg()))
                               or not armed.exists()), 30), "fault never reached"
    assert node.alive(), node.log_text()
    assert wait_until(lambda: drop_count(client.describe(), "model_error") > errors0, 10), (
        "failed frame not counted as model_error")
    assert wait_until(lambda: node.rss_bytes() < rss0 + 64 * 2**20, 10), (
        "step tensors kept after the fault")
    _feed_until_ingested(client, pub)  # keeps ingesting after the failed frame
    res = client.query("What do you see?", max_new_tokens=3, timeout=60)
    assert res.success, res.message


def test_repeated_oom_does_not_grow_memory(node, client, pub, control_dir):
    _feed_until_ingested(client, pub)
    client.query("warm up", max_new_tokens=2)
    rss0 = node.rss_bytes()
    for _ in range(4):
        _arm(control_dir, "generate", "oom")
        assert not client.query("What now?", max_new_tokens=2).success
    assert wait_until(lambda: node.rss_bytes() < rss0 + 64 * 2**20, 10)
    assert client.query("Still there?", max_new_tokens=2).success


def _camera(domain_id: int, topic: str, *qos_args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / "camera_publisher.py"), topic, "--rate", "10", *qos_args],
        cwd=str(REPO), env=ros_env(domain_id), stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT)


def test_camera_dies_and_returns_with_other_qos(node, client, domain_id):
    def ingested() -> int:
        return frames_ingested(client.describe())

    first = _camera(domain_id, CAM_GOOD, "--qos", "best_effort", "--depth", "1")
    try:
        n0 = ingested()
        assert wait_until(lambda: ingested() > n0 + 2, 40), "first camera not ingested"
    finally:
        first.kill()
        first.wait(10)
    time.sleep(1.0)
    second = _camera(domain_id, CAM_GOOD, "--qos", "reliable", "--depth", "20",
                     "--transient-local")
    try:
        n1 = ingested()
        assert wait_until(lambda: ingested() > n1 + 2, 40), (
            "frames from the camera restarted with reliable/transient-local QoS not ingested")
    finally:
        second.kill()
        second.wait(10)
    assert node.alive()
    res = client.query("What do you see?", max_new_tokens=2)
    assert res.success, f"{res.message}\n{node.log_text()}"
