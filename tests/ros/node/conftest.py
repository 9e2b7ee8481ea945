"""One node process (tiny-test model) and one DDS client per test module, private domain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nodeproc  # noqa: E402

CAM_A = '/node_test/cam_a/image_raw'
CAM_B = '/node_test/cam_b/image_raw'
CAM_Z = '/node_test/cam_z/image_raw/compressed'

BASE_PARAMS: Dict[str, Any] = {
    'model': 'tiny-test', 'device': 'cpu', 'image_topics': [CAM_A, CAM_B, CAM_Z],
    'frame_rate': 10.0, 'max_new_tokens': 8, 'query_queue_size': 8, 'image_max_side': 64,
    'memory.budget': 256, 'memory.n_sink': 4, 'memory.n_recent': 64,
}


@pytest.fixture(scope='module')
def domain() -> int:
    """Random ROS_DOMAIN_ID for the module."""
    return nodeproc.random_domain()


@pytest.fixture(scope='module')
def node_params() -> Dict[str, Any]:
    """Start-up parameters (modules override this fixture)."""
    return dict(BASE_PARAMS)


@pytest.fixture(scope='module')
def node_env() -> Dict[str, str]:
    """Extra environment of the node process."""
    return {}


@pytest.fixture(scope='module')
def autostart() -> bool:
    """Drive the lifecycle node to active before the tests."""
    return True


@pytest.fixture(scope='module')
def node(domain, node_params, node_env, tmp_path_factory):
    """Start the node process of the module; stop it afterwards."""
    pytest.importorskip('ros2_infmllm_msgs',
                        reason='interfaces not built: run ./setup.sh, `. install/setup.bash`')
    log = tmp_path_factory.mktemp('node') / 'node.log'
    proc = nodeproc.NodeProc(domain, node_params, log, node_env)
    yield proc
    proc.stop()


@pytest.fixture(scope='module')
def client(domain, node, autostart):
    """DDS client; the node is active (configured + activated) when autostart is true."""
    cli = nodeproc.Client(domain)
    try:
        if autostart:
            from lifecycle_msgs.srv import GetState
            GetState  # noqa: B018 - the interfaces import
            assert cli.transition('configure'), node.log_tail()
            assert cli.transition('activate'), node.log_tail()
            cli.wait_ready(node)
        yield cli
    finally:
        cli.close()
