"""Shared fixtures: one node process and one DDS client per test module, private domain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import BASE_PARAMS  # noqa: E402


@pytest.fixture(scope="module")
def domain_id() -> int:
    """Return a random ROS_DOMAIN_ID (1..200) for this module."""
    return harness.random_domain_id()


@pytest.fixture(scope="module")
def node_params() -> Dict[str, Any]:
    """Return the node's parameters for this module (override per module)."""
    return dict(BASE_PARAMS)


@pytest.fixture(scope="module")
def control_dir(tmp_path_factory) -> Path:
    """Return the fault-control directory the instrumented node watches."""
    return tmp_path_factory.mktemp("control")


@pytest.fixture(scope="module")
def node(domain_id, node_params, control_dir, tmp_path_factory):
    """Start one instrumented node process for the module; stop it afterwards."""
    pytest.importorskip(
        "ros2_infmllm_msgs",
        reason="interfaces not built: run ./setup.sh and `. install/setup.bash` first")
    log = tmp_path_factory.mktemp("log") / "node.log"
    proc = harness.NodeProcess(domain_id, node_params, control=control_dir, log=log)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(domain_id, node):
    """Return a DDS client on the module's domain, once the node answers describe_memory."""
    cli = harness.Client(domain_id)
    try:
        cli.wait_ready(timeout=120, proc=node)
        yield cli
    finally:
        cli.close()
