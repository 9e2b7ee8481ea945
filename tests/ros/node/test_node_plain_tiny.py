"""INFMLLM_PLAIN_NODE=1: node.py runs as a plain node that configures and activates itself."""

from __future__ import annotations

from typing import Dict

import pytest


@pytest.fixture(scope='module')
def node_env() -> Dict[str, str]:
    """Force the plain-node fallback."""
    return {'INFMLLM_PLAIN_NODE': '1'}


@pytest.fixture(scope='module')
def autostart() -> bool:
    """A plain node has no lifecycle services to drive."""
    return False


def test_plain_node_answers_tiny(client, node):
    client.wait_ready(node)
    res = client.query('plain node?', max_new_tokens=3)
    assert res.success, res.message
    assert res.answer and res.latency_s > 0
    names = dict(client.node.get_service_names_and_types())
    assert '/infmllm/query' in names
    assert '/infmllm/change_state' not in names
    assert 'running as a plain node' in node.log_tail()
