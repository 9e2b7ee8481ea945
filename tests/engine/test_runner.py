"""The ROS-free runner (engine/runner.py) driven without rclpy, around a fake session."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from ros2_infmllm.engine.runner import MAX_QUEUE, DroppedFrame, Question, Runner


class FakeSession:
    """Has the session methods the runner calls; records what it was fed."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.frames: list[tuple[str, float]] = []
        self.asked: list[str] = []
        self.gate = gate                 # ask waits for it (or for cancel)
        self.ingest_error: Exception | None = None
        self.resets = 0

    def ingest_frame(self, image, stamp, camera):
        if self.ingest_error is not None:
            raise self.ingest_error
        self.frames.append((camera, stamp))

    def ask(self, question, camera=None, max_new_tokens=64, on_token=None, cancel=None,
            enqueue_time=None):
        self.asked.append(question)
        if self.gate is not None:
            while not self.gate.wait(0.01):
                if cancel is not None and cancel.is_set():
                    return SimpleNamespace(text='', evidence_stamps=[], cancelled=True)
        if on_token is not None:
            on_token('ok')
        return SimpleNamespace(text=f'answer: {question}', evidence_stamps=[1.5],
                               cancelled=False)

    def reset(self):
        self.resets += 1
        self.frames.clear()

    def status(self):
        return SimpleNamespace(frames=len(self.frames), cache_tokens=10 * len(self.frames))


def _rgb(payload, max_side):
    """The test's decode: the payload is the frame's (height, width) or an exception."""
    if isinstance(payload, Exception):
        raise payload
    return np.zeros((*payload, 3), np.uint8)


def _wait(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.005)


@pytest.fixture
def made():
    """A started runner around a fake session, and what its callbacks saw; stopped after."""
    seen = {'answers': [], 'drops': [], 'errors': [], 'pending': []}
    runner = Runner(_rgb, frame_rate=1000.0, queue_size=4,
                    on_answer=seen['answers'].append,
                    on_drop=lambda *drop: seen['drops'].append(drop),
                    on_error=lambda key, text: seen['errors'].append(key),
                    on_pending=lambda qs: seen['pending'].append([q.question for q in qs]))
    runner.set_cameras(['a', 'b'])
    session = FakeSession()
    runner.start(session)
    yield runner, session, seen
    runner.stop('test over')


def test_questions_answered_in_order_and_reported(made):
    runner, session, seen = made
    questions = [Question(f'q{i}', '', 8) for i in range(3)]
    assert all(runner.submit(q) for q in questions)
    for q in questions:
        assert q.done.wait(5)
    assert session.asked == ['q0', 'q1', 'q2']
    assert [q.answer for q in questions] == ['answer: q0', 'answer: q1', 'answer: q2']
    assert all(q.success and q.evidence == [1.5] for q in questions)
    _wait(lambda: len(seen['answers']) == 3)
    assert seen['answers'] == questions
    assert seen['pending'][-1] == []              # the journal ends empty
    status = runner.status()
    assert status.questions_answered == 3 and status.queue_depth == 0
    assert status.last_latency_s > 0


def test_bounded_queue_callers_never_wait_and_stop_fails_what_is_queued():
    """While an answer blocks the worker, submit and offer return at once; a full queue
    refuses; stop cancels the answer in progress and fails the queued questions."""
    gate = threading.Event()
    runner = Runner(_rgb, queue_size=2)
    runner.set_cameras(['a'])
    runner.start(FakeSession(gate))
    first = Question('long one', '', 8)
    assert runner.submit(first)
    _wait(lambda: runner.status().queue_depth == 0)         # the worker took it
    t0 = time.perf_counter()
    queued = [Question('second', '', 8), Question('third', '', 8)]
    assert [runner.submit(q) for q in queued] == [True, True]
    assert not runner.submit(Question('fourth', '', 8))      # queue_size 2 waiting
    runner.offer('a', (4, 4), 1.0)
    assert time.perf_counter() - t0 < 0.5
    runner.stop('shutting down')
    assert first.done.is_set() and first.cancelled
    assert all(q.done.is_set() and not q.success and q.message == 'shutting down'
               for q in queued)
    assert runner.session is None and runner.status().session is None


def test_newest_frame_per_camera_paced_and_cameras_in_turn():
    runner = Runner(_rgb, frame_rate=5.0)
    runner.set_cameras(['a', 'b'])
    session = FakeSession()
    runner.start(session)
    try:
        for i in range(3):                                    # two superseded before feeding
            runner.offer('a', (4, 4), 1.0 + i)
        runner.offer('b', (4, 4), 10.0)
        runner.set_feeding(True)
        _wait(lambda: len(session.frames) == 2)
        assert sorted(session.frames) == [('a', 3.0), ('b', 10.0)]
        t0 = time.monotonic()
        for n, stamp in ((3, 4.0), (4, 5.0)):    # at most one frame per 1/frame_rate s after
            runner.offer('a', (4, 4), stamp)
            _wait(lambda: len(session.frames) == n)
        assert time.monotonic() - t0 > 0.15
        stats = runner.status().cameras
        assert stats['a'].drops == {'superseded': 2} and stats['a'].ingested == 3
        assert stats['b'].ingested == 1 and stats['b'].dropped == 0
    finally:
        runner.stop('test over')


def test_not_feeding_holds_frames_back(made):
    runner, session, _ = made
    runner.offer('a', (4, 4), 1.0)
    time.sleep(0.2)
    assert session.frames == []
    runner.set_feeding(True)
    _wait(lambda: session.frames == [('a', 1.0)])


@pytest.mark.parametrize('payload, ingest_error, reason', [
    (DroppedFrame('unknown_encoding', 'yuv9'), None, 'unknown_encoding'),
    (OSError('broken'), None, 'decode_failed'),
    ((1, 300), None, 'too_small'),
    ((4, 4), ValueError('not a frame'), 'frame_rejected'),
    ((4, 4), RuntimeError('CUDA out of memory'), 'model_error'),
])
def test_each_drop_counted_with_its_reason(made, payload, ingest_error, reason):
    runner, session, seen = made
    session.ingest_error = ingest_error
    runner.set_feeding(True)
    runner.offer('b', payload, 1.0)
    _wait(lambda: runner.status().cameras['b'].dropped == 1)
    assert runner.status().cameras['b'].drops == {reason: 1}
    assert seen['drops'][0][:3] == ('b', reason, 1)
    assert bool(runner.status().model_error) == (reason == 'model_error')
    session.ingest_error = None
    runner.offer('b', (4, 4), 2.0)                 # the next good frame clears a model error
    _wait(lambda: runner.status().cameras['b'].ingested == 1)
    assert runner.status().model_error == ''


def test_caller_drops_counted_unknown_camera_ignored(made):
    runner, _, seen = made
    runner.count_drop('a', 'stamp_future', 'ahead')
    runner.count_drop('nope', 'stamp_future', 'ahead')
    runner.offer('nope', (4, 4), 1.0)
    assert runner.status().cameras['a'].drops == {'stamp_future': 1}
    assert set(runner.status().cameras) == {'a', 'b'}
    assert seen['drops'] == [('a', 'stamp_future', 1, 'ahead')]


def test_failed_answer_reported_worker_survives(made):
    runner, session, seen = made
    session.ask = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('boom'))
    q = Question('fails', '', 8)
    runner.submit(q)
    assert q.done.wait(5) and not q.success and q.message == 'model error: RuntimeError: boom'
    assert seen['errors'] == ['ask'] and runner.status().questions_failed == 1
    del session.ask                                # the class's ask again
    again = Question('works', '', 8)
    runner.submit(again)
    assert again.done.wait(5) and again.success


def test_rebuild_replaces_the_session_between_steps_and_reset_empties(made):
    runner, old, _ = made
    new = FakeSession()
    runner.rebuild(lambda: new)
    _wait(lambda: runner.session is new)
    runner.set_feeding(True)
    runner.offer('a', (4, 4), 1.0)
    _wait(lambda: new.frames == [('a', 1.0)])
    assert old.frames == [] and runner.status().session.frames == 1
    runner.reset()
    assert new.resets == 1 and runner.status().session.frames == 0


def test_chore_runs_every_period(made):
    runner, _, _ = made
    runs = []
    runner.every(0.05, lambda: runs.append(time.monotonic()))
    _wait(lambda: len(runs) >= 3)
    runner.every(0, lambda: runs.append(0.0))       # never
    n = len(runs)
    time.sleep(0.2)
    assert len(runs) <= n + 1


def test_requeued_questions_answered_first_and_max_queue():
    runner = Runner(_rgb, queue_size=1)
    replayed = [Question('from the journal', '', 8), Question('also', '', 8)]
    runner.requeue(replayed)                        # no limit for the journal's questions
    fresh = Question('new', '', 8)
    assert not runner.submit(fresh)                 # queue_size already waiting
    session = FakeSession()
    runner.start(session)
    try:
        assert all(q.done.wait(5) for q in replayed)
        assert session.asked == ['from the journal', 'also']
    finally:
        runner.stop('test over')
    assert MAX_QUEUE == 64
