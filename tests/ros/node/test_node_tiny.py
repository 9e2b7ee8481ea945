"""The active node (tiny-test model) in another process: services, action, topics, load."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, List

import numpy as np
import pytest

from conftest import BASE_PARAMS, CAM_A, CAM_B, CAM_Z
from nodeproc import make_image, to_sec

LONG = 4000          # tokens of an answer long enough to be cancelled (tens of seconds)


@pytest.fixture(scope='module')
def node_params() -> Dict[str, Any]:
    """Allow long answers (the action and queue tests need a busy worker)."""
    return dict(BASE_PARAMS, max_new_tokens=LONG)


def _wait(pred, timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def _publish_frames(client, topic: str, n: int, start: float, period: float = 0.1) -> List[float]:
    pub = client.image_pub(topic)
    stamps = []
    for i in range(n):
        stamp = start + i * period
        pub.publish(make_image(stamp, seed=i))
        stamps.append(round(stamp, 6))
        time.sleep(0.12)
    return stamps


def _cam(d: Any, topic: str) -> Any:
    return next(c for c in d.cameras if c.camera == topic)


@pytest.fixture(scope='module')
def fed(client, node) -> List[float]:
    """Frames published on CAM_A until at least three were ingested; their stamps."""
    pub = client.image_pub(CAM_A)
    stamps: List[float] = []
    t0 = time.time()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stamp = t0 + 0.1 * len(stamps)
        pub.publish(make_image(stamp, seed=len(stamps)))
        stamps.append(stamp)
        time.sleep(0.15)
        if len(stamps) % 5 == 0 and _cam(client.describe(), CAM_A).frames_ingested >= 3:
            return stamps
    raise AssertionError(f'frames not ingested:\n{node.log_tail()}')


def test_query_round_trip_tiny(client, fed):
    res = client.query('What is in front of the camera?', max_new_tokens=6)
    assert res.success, res.message
    assert res.answer
    assert res.latency_s > 0
    assert res.evidence_stamps, 'the answer rests on no frame'
    for t in res.evidence_stamps:
        assert min(abs(to_sec(t) - s) for s in fed) < 1e-3, f'{to_sec(t)} was never published'


def test_answers_topic_receives_every_answer_tiny(client, fed):
    from ros2_infmllm_msgs.msg import Answer
    got: List[Any] = []
    sub = client.node.create_subscription(Answer, '/infmllm/answers', got.append, 50)
    try:
        time.sleep(1.0)                                    # discovery
        questions = [f'question number {i}?' for i in range(3)]
        answers = [client.query(q, max_new_tokens=4) for q in questions]
        assert all(a.success for a in answers)
        mine = lambda: [m for m in got if m.question in questions]  # noqa: E731
        _wait(lambda: len(mine()) >= 3, 10, 'three Answer messages')
        got = mine()
        assert [m.question for m in got] == questions
        assert [m.answer for m in got] == [a.answer for a in answers]
        assert all(m.cache_tokens > 0 and m.latency_s > 0 for m in got)
    finally:
        client.node.destroy_subscription(sub)


def test_answers_topic_keeps_recent_answers_for_late_subscribers_tiny(client, fed):
    """A subscriber that joins after an answer (transient local) still receives it."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from ros2_infmllm_msgs.msg import Answer
    question = 'asked before anyone listened?'
    res = client.query(question, max_new_tokens=4)
    assert res.success, res.message
    got: List[Any] = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = client.node.create_subscription(Answer, '/infmllm/answers', got.append, qos)
    try:
        late = _wait(lambda: [m for m in got if m.question == question], 10,
                     'the earlier answer on a late subscription')
        assert [m.answer for m in late] == [res.answer]
    finally:
        client.node.destroy_subscription(sub)


def test_describe_memory_fields_tiny(client, fed):
    d = client.describe()
    assert d.success, d.message
    assert d.policy == 'inf_mllm' and d.budget == 256 and d.model == 'tiny-test'
    params = json.loads(d.policy_params_json)
    assert params['budget'] == 256 and params['n_recent'] == 64 and params['n_sink'] == 4
    assert d.cache_tokens_per_layer and all(0 < t <= 256 for t in d.cache_tokens_per_layer)
    assert {c.camera for c in d.cameras} == {CAM_A, CAM_B, CAM_Z}
    assert d.frames_ingested >= 3
    assert len(d.frame_stamps) == len(d.frame_cameras) == len(d.frame_tokens) > 0
    for t, cam in zip(d.frame_stamps, d.frame_cameras):
        assert min(abs(to_sec(t) - s) for s in fed) < 1e-3
        assert cam == CAM_A
    assert d.device_memory_bytes > 0 and d.cache_bytes > 0
    assert d.device == 'cpu'


def test_diagnostics_at_1hz_tiny(client, fed):
    from diagnostic_msgs.msg import DiagnosticArray
    got: List[Any] = []
    sub = client.node.create_subscription(DiagnosticArray, '/diagnostics', got.append, 50)
    try:
        _wait(lambda: got, 10, 'first /diagnostics')
        first = len(got)
        time.sleep(4.0)
        n = len(got) - first
        assert 2 <= n <= 7, f'{n} diagnostics in 4 s'
    finally:
        client.node.destroy_subscription(sub)
    status = [s for s in got[-1].status if 'infmllm' in s.name][0]
    values = {kv.key: kv.value for kv in status.values}
    for key in ('cache_tokens', 'evicted_tokens', 'frames_fed', 'frames_dropped', 'queue_depth',
                'last_latency_s', 'device_memory_bytes', 'budget', 'questions_answered'):
        assert key in values, key
    assert int(values['frames_fed']) >= 3 and int(values['cache_tokens']) > 0


def _action_client(client):
    from rclpy.action import ActionClient
    from ros2_infmllm_msgs.action import Ask
    ac = ActionClient(client.node, Ask, '/infmllm/ask')
    assert ac.wait_for_server(timeout_sec=30)
    return ac, Ask


def _send_goal(ac, goal, feedback: List[Any]) -> Any:
    done = threading.Event()
    fut = ac.send_goal_async(goal, feedback_callback=lambda m: feedback.append(m.feedback))
    fut.add_done_callback(lambda _f: done.set())
    assert done.wait(30), 'goal not acknowledged'
    handle = fut.result()
    assert handle.accepted
    return handle


def _result(handle, timeout: float) -> Any:
    done = threading.Event()
    fut = handle.get_result_async()
    fut.add_done_callback(lambda _f: done.set())
    assert done.wait(timeout), 'no result'
    return fut.result()


def test_action_feedback_and_result_tiny(client, fed):
    ac, Ask = _action_client(client)
    feedback: List[Any] = []
    handle = _send_goal(ac, Ask.Goal(question='describe the scene', max_new_tokens=6), feedback)
    res = _result(handle, 60)
    from action_msgs.msg import GoalStatus
    assert res.status == GoalStatus.STATUS_SUCCEEDED
    assert res.result.success and res.result.latency_s > 0
    assert feedback and feedback[-1].tokens <= 6
    assert [f.tokens for f in feedback] == sorted(f.tokens for f in feedback)
    assert res.result.answer.startswith(feedback[-1].partial_answer.strip()[:1])


def test_action_cancel_stops_early_tiny(client, fed):
    from action_msgs.msg import GoalStatus
    ac, Ask = _action_client(client)
    feedback: List[Any] = []
    handle = _send_goal(ac, Ask.Goal(question='tell me everything', max_new_tokens=LONG),
                        feedback)
    _wait(lambda: len(feedback) >= 3, 30, 'three feedback messages')
    t0 = time.monotonic()
    done = threading.Event()
    handle.cancel_goal_async().add_done_callback(lambda _f: done.set())
    res = _result(handle, 30)
    assert time.monotonic() - t0 < 20
    assert res.status == GoalStatus.STATUS_CANCELED
    assert feedback[-1].tokens < LONG
    after = client.query('still there?', max_new_tokens=3)
    assert after.success, after.message


def test_reset_empties_memory_tiny(client, fed):
    res = client.reset()
    assert res.success, res.message
    d = client.describe()
    assert len(d.frame_stamps) == 0
    assert sum(d.cache_tokens_per_layer) == 0 or max(d.cache_tokens_per_layer) <= 8
    q = client.query('anything?', max_new_tokens=2)
    assert q.success and not q.evidence_stamps


def test_two_cameras_30hz_while_questions_none_lost_tiny(client, node):
    before = client.describe()
    pubs = [client.image_pub(CAM_A), client.image_pub(CAM_B)]
    stop = threading.Event()
    sent = [0, 0]

    def camera_loop() -> None:
        t0 = time.time() + 2.0          # newer than every earlier stamp, not in the future
        i = 0
        while not stop.is_set():
            for k, pub in enumerate(pubs):
                pub.publish(make_image(t0 + i / 30.0, seed=k))
                sent[k] += 1
            i += 1
            time.sleep(1 / 30.0)

    cams = threading.Thread(target=camera_loop, daemon=True)
    cams.start()
    results: Dict[int, Any] = {}

    def ask(i: int) -> None:
        results[i] = client.query(f'camera question {i}', max_new_tokens=4, timeout=120)

    try:
        time.sleep(1.0)
        askers = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in askers:
            t.start()
        for t in askers:
            t.join(150)
        time.sleep(1.0)
    finally:
        stop.set()
        cams.join(5)
    assert sorted(results) == list(range(6))
    assert all(r.success for r in results.values()), [r.message for r in results.values()]
    after = client.describe()
    for topic in (CAM_A, CAM_B):
        assert _cam(after, topic).frames_ingested > _cam(before, topic).frames_ingested, topic
        assert _cam(after, topic).frames_received > _cam(before, topic).frames_received
    assert node.alive()


def test_full_queue_refused_at_once_tiny(client):
    from action_msgs.msg import GoalStatus
    assert client.set_params({'query_queue_size': 1}).successful
    ac, Ask = _action_client(client)
    feedback: List[Any] = []
    handle = _send_goal(ac, Ask.Goal(question='long one', max_new_tokens=LONG), feedback)
    try:
        _wait(lambda: feedback, 30, 'the long answer to start')
        queued: Dict[str, Any] = {}
        t = threading.Thread(target=lambda: queued.setdefault(
            'r', client.query('queued', max_new_tokens=2, timeout=120)))
        t.start()
        _wait(lambda: client.describe().queue_depth == 1, 20, 'one queued question')
        t0 = time.monotonic()
        refused = client.query('one too many', max_new_tokens=2)
        assert time.monotonic() - t0 < 5
        assert not refused.success and 'queue full' in refused.message
    finally:
        handle.cancel_goal_async()
        assert client.set_params({'query_queue_size': 8}).successful
    assert _result(handle, 30).status == GoalStatus.STATUS_CANCELED
    t.join(60)
    assert queued['r'].success, 'an accepted question was lost'


def test_burst_larger_than_queue_every_request_answered_tiny(client, node):
    """24 requests at once (queue 8, default service QoS keeps 10): each gets a reply."""
    results: Dict[int, Any] = {}

    def ask(i: int) -> None:
        try:
            results[i] = client.query(f'burst {i}', max_new_tokens=2, timeout=90)
        except TimeoutError as exc:
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    lost = [i for i in range(24) if i not in results or isinstance(results[i], Exception)]
    assert not lost, f'requests without a reply: {lost}'
    refused = [r for r in results.values() if not r.success]
    assert all('queue full' in r.message for r in refused)
    assert len(refused) < 24
    assert node.alive()


def _jpeg() -> bytes:
    import cv2
    ok, buf = cv2.imencode('.jpg', np.full((32, 32, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def test_bad_frames_dropped_with_reasons_tiny(client, node):
    from sensor_msgs.msg import CompressedImage, Image
    raw = client.image_pub(CAM_B)
    comp = client.image_pub(CAM_Z, compressed=True)
    time.sleep(1.0)
    base = time.time() + 20.0

    def img(i: int, **kw) -> Image:
        m = make_image(base + i)
        for k, v in kw.items():
            setattr(m, k, v)
        return m

    bad = [
        img(0, encoding='xyz42'),                                      # unknown encoding
        img(1, width=0, height=0, step=0, data=b''),                   # size 0
        img(2, step=32 * 3 + 7),                                       # step/data mismatch
        img(3, width=20000, height=20000, step=60000, data=b'\x00' * 16),   # huge header
    ]
    jpeg = _jpeg()
    corrupt = [jpeg[:len(jpeg) // 2], b'\xff\xd8\xff' + bytes(64) + b'\xff\xd9']
    # best effort QoS: repeat, counts only need to appear. Frames are decoded when the
    # worker takes them (frame_rate 10 Hz per camera): one that a newer one replaces
    # before is counted as superseded, so each waits 0.25 s for the worker
    # (stamps increase: the stamp is checked on arrival, before the decode)
    for k in range(3):
        for m in bad:
            raw.publish(m)
            time.sleep(0.25)
        for j, data in enumerate(corrupt):
            c = CompressedImage(format='jpeg', data=data)
            c.header.stamp = img(5 + 2 * k + j).header.stamp
            comp.publish(c)
            time.sleep(0.25)

    def reasons() -> Dict[str, int]:
        d = client.describe()
        out: Dict[str, int] = {}
        for c in d.cameras:
            for r, n in zip(c.drop_reasons, c.drop_counts):
                out[f'{c.camera}:{r}'] = n
        return out

    want = [f'{CAM_B}:unknown_encoding', f'{CAM_B}:empty', f'{CAM_B}:data_size',
            f'{CAM_B}:too_large']
    got = _wait(lambda: (lambda r: r if all(k in r for k in want)
                         and any(k.startswith(CAM_Z) for k in r) else None)(reasons()),
                20, 'every drop reason')
    z = {k.split(':', 1)[1] for k in got if k.startswith(CAM_Z)}
    assert z <= {'decode_failed', 'truncated'} and z, z
    assert node.alive()
    assert client.query('alive?', max_new_tokens=2).success
    assert 'frame dropped' in node.log_tail()


@pytest.mark.parametrize('values,needle', [
    ({'frame_rate': -1.0}, 'frame_rate'),
    ({'memory.policy': 'nonsense'}, 'memory.policy'),
    ({'memory.budget': 16, 'memory.n_sink': 4, 'memory.n_recent': 64}, 'memory'),
    ({'device': 'tpu'}, 'device'),
    ({'device': 'cpu:1'}, 'device'),
    ({'model': 'other-model'}, 'model'),
    ({'decode': 'fast'}, 'decode must be one of'),
    ({'decode': 'eager'}, 'decode cannot change'),
    ({'max_new_tokens': 8, 'memory.policy': 'nonsense'}, 'memory.policy'),
])
def test_bad_parameters_rejected_nothing_applied_tiny(client, node, values, needle):
    names = sorted(set(values) | {'max_new_tokens', 'memory.budget', 'frame_rate'})
    before = client.get_params(names)
    res = client.set_params(values)
    assert not res.successful
    assert needle in res.reason, res.reason
    assert client.get_params(names) == before
    d = client.describe()
    assert d.policy == 'inf_mllm' and d.budget == before['memory.budget']
    assert node.alive()


def test_memory_change_rebuilds_tiny(client):
    assert client.set_params({'memory.budget': 200}).successful
    try:
        d = _wait(lambda: (lambda d: d if d.budget == 200 else None)(client.describe()), 30,
                  'the rebuilt memory')
        assert json.loads(d.policy_params_json)['budget'] == 200
        assert client.query('after rebuild?', max_new_tokens=2).success
    finally:
        assert client.set_params({'memory.budget': 256}).successful
