"""The engine's persistence (engine/persistence.py) with the runner, tiny model, no ROS.

A memory that survives a restart is the engine's: the runner restores the snapshot and
replays the journal under the same limits as a fresh question, saves on request from any
thread, and stays answerable during a long answer (reset and stop cancel it).
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from ros2_infmllm.engine import SessionConfig, build_session
from ros2_infmllm.engine.persistence import Persistence, check_path, journal_path
from ros2_infmllm.engine.questions import Question, QuestionLimits
from ros2_infmllm.engine.runner import Runner
from ros2_infmllm.memory import snapshot

HOLD_S = 6.0            # how long an answer keeps the model after decoding


def _session():
    return build_session(SessionConfig(model="tiny-test", device="cpu", policy="inf_mllm",
                                       budget=96, n_recent=32, window=8))


def _frame(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[..., i % 3] = (40 + 30 * i) % 256
    return img


def _rgb(payload, max_side):
    return payload


def _runner(path: str, **kw) -> Runner:
    return Runner(_rgb, frame_rate=1000.0, store=Persistence(path, period=0.0), **kw)


class LongAnswers:
    """The tiny session, whose answers go on for HOLD_S under the model lock after decoding.

    Why: the random tiny model may end an answer early (an end token) and decodes fast;
    this keeps the model lock as a 512-token answer of a real model does (scripts/
    persistence_probe.py measures that one), checking ``cancel`` every 20 ms as the decode
    loop checks it before every step.
    """

    def __init__(self, session) -> None:
        self.session = session
        self.asking = threading.Event()

    def __getattr__(self, name):
        return getattr(self.session, name)

    def ask(self, question, camera=None, max_new_tokens=64, on_token=None, cancel=None,
            enqueue_time=None):
        with self.session.adapter.lock:
            self.asking.set()
            ans = self.session.ask(question, camera, max_new_tokens, on_token, cancel,
                                   enqueue_time)
            end = time.monotonic() + HOLD_S
            while time.monotonic() < end and not (cancel is not None and cancel.is_set()):
                time.sleep(0.02)
            ans.cancelled = ans.cancelled or (cancel is not None and cancel.is_set())
            self.asking.clear()
            return ans


def test_reset_save_and_stop_answer_within_two_seconds_of_a_long_answer(tmp_path):
    """~/reset, deactivate's save and the exit path never wait for a long answer."""
    path = str(tmp_path / "m.safetensors")
    runner = _runner(path, require_frames=True)
    session = LongAnswers(_session())
    runner.start(session)
    runner.set_cameras(["cam"])
    runner.set_feeding(True)
    timings = {}
    for n, action in enumerate(("reset", "deactivate", "stop")):
        before = runner.status().frames_ingested     # a long answer evicts every frame
        runner.offer("cam", _frame(n), 10.0 + n)
        deadline = time.monotonic() + 20
        while runner.status().frames_ingested == before and time.monotonic() < deadline:
            time.sleep(0.02)
        q = Question("Describe everything in great detail.", "", 8)
        assert runner.submit(q)
        assert session.asking.wait(30), f"{action}: the answer never started"
        t0 = time.monotonic()
        if action == "reset":
            runner.reset()
        elif action == "deactivate":
            runner.save_soon("deactivate").wait(1.5)
        else:
            runner.stop("exit", save_as="exit")
        timings[action] = time.monotonic() - t0
        assert q.done.wait(2 if action != "deactivate" else 30), action
        if action != "deactivate":
            assert q.cancelled, f"{action}: the answer was not cancelled"
    assert max(timings.values()) < 2.0, timings
    snapshot.read_snapshot(path, session.identity())        # the exit save is whole


def test_journal_replay_applies_the_limits_of_a_fresh_question(tmp_path):
    """A crafted journal: long question, huge max_new_tokens, too many rows, junk rows."""
    path = str(tmp_path / "m.safetensors")
    rows = [{"question": "x" * 100_000, "camera": "", "max_new_tokens": 8},
            {"question": "fine?", "camera": "c", "max_new_tokens": 100_000},
            {"question": "", "camera": "", "max_new_tokens": 4},
            {"question": 5, "max_new_tokens": 4}, "junk", None,
            {"question": "tokens as text", "max_new_tokens": "9"}]
    rows += [{"question": f"q{i}", "camera": "", "max_new_tokens": 0} for i in range(70)]
    with open(journal_path(path), "w") as f:
        json.dump(rows, f)
    store = Persistence(path)
    limits = QuestionLimits(max_chars=1000, max_new_tokens=64, queue_size=8)
    taken = store.read_journal(limits)
    assert len(taken) == 8
    assert taken[0].question == "fine?" and taken[0].max_new_tokens == 64
    assert all(len(q.question) <= 1000 and 1 <= q.max_new_tokens <= 64 for q in taken)
    st = store.status()
    assert st.journal_replayed == 8 and st.journal_refused == len(rows) - 8


def test_unreadable_journal_is_reported_not_raised(tmp_path):
    path = str(tmp_path / "m.safetensors")
    with open(journal_path(path), "wb") as f:
        f.write(b"[" * 100_000)
    store = Persistence(path)
    assert store.read_journal(QuestionLimits()) == []
    assert "unreadable" in store.status().journal_error


def test_a_file_that_is_not_a_snapshot_is_never_overwritten(tmp_path):
    """check_path refuses it, a save refuses it with the reason, the file is untouched."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert "not a memory snapshot" in check_path(str(notes))
    store = Persistence(str(notes))
    session = _session()
    ok, message = store.save(session, "service")
    assert not ok and "refusing to overwrite" in message
    assert notes.read_text() == "my notes\n"
    good = str(tmp_path / "m.safetensors")
    assert check_path(good) is None
    assert Persistence(good).save(session, "service")[0]
    assert check_path(good) is None and oct(os.stat(good).st_mode & 0o777) == "0o600"


def test_restart_restores_memory_and_answers_journal(tmp_path):
    """Save at stop, start a new runner on a new session: same frames, journal answered."""
    path = str(tmp_path / "m.safetensors")
    first = _runner(path, require_frames=True)
    s1 = _session()
    first.start(s1)
    first.set_cameras(["cam"])
    first.set_feeding(True)
    for i in range(4):
        first.offer("cam", _frame(i), 10.0 + i)
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while first.status().frames_ingested < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.set_feeding(False)
    time.sleep(0.5)                 # a frame being fed when feeding stopped is finished
    held = first.status().session.frames
    first.stop("restart", save_as="exit")
    with open(journal_path(path), "w") as f:     # as a killed process would leave it
        json.dump([{"question": "what was seen?", "camera": "", "max_new_tokens": 3}], f)
    answered = []
    second = _runner(path, require_frames=True, on_answer=answered.append)
    second.start(_session())
    try:
        assert second.status().session.frames == held
        deadline = time.monotonic() + 10
        while not answered and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [q.question for q in answered] == ["what was seen?"]
        assert answered[0].message != "no frames in memory yet"
    finally:
        second.stop("test over")


@pytest.mark.parametrize("frames", [0, 1])
def test_empty_memory_answer_says_so(frames):
    """No frame in memory: the answer says so and the model is not asked (no invention)."""
    got = []
    runner = Runner(_rgb, frame_rate=1000.0, require_frames=True, on_answer=got.append)
    runner.start(_session())
    try:
        if frames:
            runner.set_cameras(["cam"])
            runner.set_feeding(True)
            runner.offer("cam", _frame(0), 10.0)
            deadline = time.monotonic() + 10
            while runner.status().frames_ingested < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
        q = Question("What colour is the box?", "", 4)
        assert runner.submit(q) and q.done.wait(10)
        if frames:
            assert q.message != "no frames in memory yet"
        else:
            assert q.message == "no frames in memory yet" and "No frames" in q.answer
            assert not q.evidence and runner.status().questions_without_frames == 1
    finally:
        runner.stop("test over")
