"""The node process killed while a client waits; `ros2_infmllm.ros.launch --respawn` restarts it.

The client must get an answer or a clear failure (its own timeout), never hang past it,
and the respawned node must answer again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest
from harness import BASE_PARAMS, Client, NodeProcess

CLIENT_TIMEOUT = 20.0


def _children(pid: int) -> List[int]:
    """Direct and indirect child pids of `pid` (from /proc)."""
    kids: List[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                kids.append(int(entry.name))
                frontier.append(int(entry.name))
    return kids


def _node_pid(launcher_pid: int) -> int:
    for pid in _children(launcher_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"python" in cmd:
            return pid
    return -1


@pytest.fixture(scope="module")
def launched(domain_id, tmp_path_factory):
    """`python -m ros2_infmllm.ros.launch --respawn` with the tiny model."""
    pytest.importorskip("ros2_infmllm.ros.launch", reason="launch entry point not present")
    log = tmp_path_factory.mktemp("respawn") / "launch.log"
    params = dict(BASE_PARAMS)
    cmd = [sys.executable, "-m", "ros2_infmllm.ros.launch", "--respawn"]
    proc = NodeProcess(domain_id, params, command=cmd, log=log)
    yield proc
    proc.stop()


def test_node_killed_while_client_waits(launched, domain_id):
    client = Client(domain_id, "respawn_client")
    try:
        client.wait_ready(timeout=120, proc=launched)
        assert client.query("Warm up.", max_new_tokens=2).success
        node_pid = _node_pid(launched.pid)
        assert node_pid > 0, "no node child process under the launcher"
        outcome: dict = {}

        def ask() -> None:
            t0 = time.monotonic()
            try:
                res = client.query("Describe everything in great detail.", max_new_tokens=400,
                                   timeout=CLIENT_TIMEOUT)
                outcome["result"] = res
            except TimeoutError as exc:
                outcome["error"] = exc
            outcome["elapsed"] = time.monotonic() - t0

        waiter = threading.Thread(target=ask)
        waiter.start()
        time.sleep(1.0)
        os.kill(node_pid, signal.SIGKILL)
        waiter.join(CLIENT_TIMEOUT + 10)
        assert not waiter.is_alive(), "client hung past its timeout"
        assert outcome["elapsed"] <= CLIENT_TIMEOUT + 2.0
        if "result" in outcome:  # answered before the kill, or refused with a reason
            res = outcome["result"]
            assert res.success or res.message.strip()
        else:
            assert "no response" in str(outcome["error"]) or "not available" in str(
                outcome["error"])
        assert launched.alive(), "the launcher died with its node"
        t0 = time.monotonic()
        client.wait_ready(timeout=120, proc=launched)
        new_pid = _node_pid(launched.pid)
        assert new_pid > 0 and new_pid != node_pid, "node not respawned"
        res = client.query("Are you back?", max_new_tokens=2, timeout=60)
        assert res.success, res.message
        print(f"respawned and answering after {time.monotonic() - t0:.1f} s")
    finally:
        client.close()
