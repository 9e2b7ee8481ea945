"""Memory snapshots through the node (tiny-test model, real DDS, node in a child process).

Deactivate saves, configure restores (same answers as before the restart), a corrupted file
is refused with the node starting empty, the file moved aside and the refusal in
/diagnostics; ~/save_memory saves on request; snapshot parameters are validated; periodic
snapshots run while the memory changes.
"""

from __future__ import annotations

import glob
import os
import threading
import time

import pytest

from conftest import BASE_PARAMS, CAM_A
from nodeproc import NS, make_image

SNAP_DIR = f'/tmp/infmllm_snapshot_test_{os.getpid()}'
SNAP = f'{SNAP_DIR}/memory.safetensors'


@pytest.fixture(scope='module')
def node_params():
    """Snapshots on, no periodic save (the test decides when the memory is written)."""
    os.makedirs(SNAP_DIR, exist_ok=True)
    for f in glob.glob(f'{SNAP_DIR}/*'):
        os.unlink(f)
    return dict(BASE_PARAMS, **{'memory.snapshot_path': SNAP, 'memory.snapshot_period': 0.0})


class _Diagnostics:
    """Latest /diagnostics status values of the node."""

    def __init__(self, client):
        from diagnostic_msgs.msg import DiagnosticArray
        self.values = {}
        self.level = None
        self._lock = threading.Lock()
        client.node.create_subscription(DiagnosticArray, '/diagnostics', self._on, 10)

    def _on(self, msg):
        for st in msg.status:
            if st.name == f'{NS}: memory':
                with self._lock:
                    self.values = {kv.key: kv.value for kv in st.values}
                    self.level = st.level

    def wait(self, key, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if key in self.values and pred(self.values[key]):
                    return dict(self.values)
            time.sleep(0.1)
        raise AssertionError(f'diagnostics {key}: {self.values.get(key)!r}')


def _feed(client, n, start):
    pub = client.image_pub(CAM_A)
    time.sleep(0.5)
    for i in range(n):
        pub.publish(make_image(start + 0.2 * i, seed=i))
        time.sleep(0.15)


def _ask(client):
    out = []
    for q in ('what was seen first?', 'and last?'):
        r = client.query(q, max_new_tokens=6)
        assert r.success, r.message
        out.append((r.answer, [s.sec * 10**9 + s.nanosec for s in r.evidence_stamps]))
    return out


def test_snapshot_survives_reconfigure_and_bad_file_is_moved_aside(client, node):
    from diagnostic_msgs.msg import DiagnosticStatus
    diag = _Diagnostics(client)
    _feed(client, 12, 1000.0)
    deadline = time.monotonic() + 20
    while client.describe().frames_ingested < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.transition('deactivate'), node.log_tail()       # saves
    assert os.path.getsize(SNAP) > 0
    held = client.describe()
    expected = _ask(client)

    assert client.transition('cleanup') and client.transition('configure'), node.log_tail()
    restored = client.describe()
    assert restored.cache_tokens_per_layer == held.cache_tokens_per_layer
    assert [(s.sec, s.nanosec) for s in restored.frame_stamps] == \
        [(s.sec, s.nanosec) for s in held.frame_stamps]
    assert _ask(client) == expected
    assert 'restored' in node.log_tail() or 'memory restored' in node.log_tail()

    # corrupted on disk while the node was down: refused, started empty, moved aside
    assert client.transition('cleanup')
    data = bytearray(open(SNAP, 'rb').read())
    data[-5] ^= 0xFF
    open(SNAP, 'wb').write(bytes(data))
    assert client.transition('configure'), node.log_tail()
    d = client.describe()
    assert d.success and max(d.cache_tokens_per_layer or [0]) == 0 and not d.frame_stamps
    assert not os.path.exists(SNAP)
    moved = glob.glob(f'{SNAP}.bad-*')
    assert len(moved) == 1 and open(moved[0], 'rb').read() == bytes(data)
    values = diag.wait('snapshot_restore_error', lambda v: 'corrupt' in v)
    assert moved[0] in values['snapshot_restore_error']
    assert diag.level == DiagnosticStatus.WARN
    assert 'refused (corrupt)' in node.log_tail()

    # the service saves on request; the request names no path
    from std_srvs.srv import Trigger
    r = client.call(Trigger, f'{NS}/save_memory', Trigger.Request())
    assert r.success and SNAP in r.message, r.message
    assert os.path.getsize(SNAP) > 0
    diag.wait('snapshot_saves', lambda v: int(v) >= 1)
    assert client.transition('activate')


def test_snapshot_parameters_validated_and_periodic_save(client, node):
    bad = client.set_params({'memory.snapshot_path': '/nonexistent_dir_x/m.safetensors'})
    assert not bad.successful and 'does not exist' in bad.reason
    bad = client.set_params({'memory.snapshot_path': SNAP_DIR})
    assert not bad.successful and 'folder' in bad.reason
    bad = client.set_params({'memory.snapshot_period': -1.0})
    assert not bad.successful
    assert client.get_params(['memory.snapshot_period'])['memory.snapshot_period'] == 0.0

    diag = _Diagnostics(client)
    before = int(diag.wait('snapshot_saves', lambda v: True)['snapshot_saves'])
    assert client.set_params({'memory.snapshot_period': 0.5}).successful
    _feed(client, 8, 2000.0)
    diag.wait('snapshot_saves', lambda v: int(v) >= before + 2, timeout=20)
    # an unchanged memory is not written again
    assert client.set_params({'memory.snapshot_period': 0.2}).successful
    time.sleep(1.5)
    settled = int(diag.wait('snapshot_saves', lambda v: True)['snapshot_saves'])
    time.sleep(1.5)
    assert int(diag.wait('snapshot_saves', lambda v: True)['snapshot_saves']) == settled
    assert node.alive()


def test_memory_view_published_only_when_on_and_subscribed(client, node):
    from sensor_msgs.msg import Image
    got = []
    assert not client.set_params({'memory_view_rate': -1.0}).successful
    sub = client.node.create_subscription(Image, f'{NS}/memory_view', got.append, 5)
    _feed(client, 4, 3000.0)
    time.sleep(1.5)
    assert not got, 'memory view published while off'
    assert client.set_params({'memory_view_rate': 2.0}).successful
    deadline = time.monotonic() + 15
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(got) >= 2, node.log_tail()
    img = got[-1]
    assert img.encoding == 'rgb8' and img.width == 960 and img.height > 100
    assert len(img.data) == img.step * img.height
    assert client.set_params({'memory_view_rate': 0.0}).successful
    time.sleep(0.6)
    n = len(got)
    time.sleep(1.5)
    assert len(got) == n, 'memory view still published after memory_view_rate 0'
    client.node.destroy_subscription(sub)
