"""Lifecycle transitions of the node (tiny-test model) driven through lifecycle_msgs."""

from __future__ import annotations

import time

import pytest

from conftest import CAM_A
from nodeproc import make_image


@pytest.fixture(scope='module')
def autostart() -> bool:
    """This module drives every transition itself."""
    return False


def _feed(client, n: int, start: float) -> None:
    pub = client.image_pub(CAM_A)
    for i in range(n):
        pub.publish(make_image(start + 0.1 * i, seed=i))
        time.sleep(0.12)


def _received(client) -> int:
    return next(c for c in client.describe().cameras if c.camera == CAM_A).frames_received


def test_lifecycle_transitions_tiny(client, node):
    assert client.state() == 'unconfigured'
    d = client.describe()
    assert not d.success and 'not loaded' in d.message
    refused = client.query('before configure?')
    assert not refused.success and 'not loaded' in refused.message

    assert client.transition('configure') and client.state() == 'inactive'
    assert client.describe().success
    assert client.query('inactive, empty memory?', max_new_tokens=2).success
    _feed(client, 5, time.time())
    assert _received(client) == 0, 'inactive node subscribed to cameras'

    assert client.transition('activate') and client.state() == 'active'
    time.sleep(1.0)
    _feed(client, 10, time.time())
    assert _received(client) > 0

    assert client.transition('deactivate') and client.state() == 'inactive'
    got = _received(client)
    _feed(client, 5, time.time() + 5)
    assert _received(client) == got, 'frames still received after deactivate'
    assert client.query('from memory?', max_new_tokens=2).success

    assert client.transition('cleanup') and client.state() == 'unconfigured'
    assert not client.describe().success
    refused = client.query('after cleanup?')
    assert not refused.success and 'not loaded' in refused.message
    # model parameters may change while unloaded, and a bad one is still refused
    assert not client.set_params({'device': 'gpu0'}).successful
    assert client.set_params({'memory.budget': 300}).successful

    assert client.transition('configure') and client.transition('activate')
    assert client.state() == 'active'
    d = client.wait_ready(node)
    assert d.budget == 300
    assert client.query('back again?', max_new_tokens=2).success
    assert node.alive()
