"""The memory log (engine/timeline.py): spells, counts, what is in view, and no trace left."""

from __future__ import annotations

import numpy as np

from ros2_infmllm.engine import SessionConfig, build_session
from ros2_infmllm.engine.timeline import (DARK, about_time, build_log, frame_things, log_for,
                                          remembered)

T0 = 80000.0      # 22:13:20 of a day


def test_frame_things_reads_items_light_and_no_change():
    line = "[cam c 22:14:40.0] red box on the left, ArUco marker 17 on the right; dark; still."
    assert frame_things(line) == {"red box", "ArUco marker 17", DARK}
    assert frame_things("[cam c 1] nothing in view; dim light; some motion.") == frozenset()
    assert frame_things("[cam c 1] no change.") is None
    assert frame_things("[cam c 22:14:40.0] ") is None


def test_spells_counts_order_and_now():
    """A box seen twice (a one-frame miss merged), a code once, the dark; counts and now."""
    seq = [(0, set()), (2, {"blue box"}), (4, {"blue box"}), (6, set()), (8, {"blue box"}),
           (10, set()), (20, {"QR code 'X'"}), (22, {DARK}), (24, set()), (40, {"blue box"}),
           (42, {"blue box", "yellow box"})]
    log = build_log([(T0 + t, "c", frozenset(s)) for t, s in seq])
    assert [(s.thing, s.start - T0) for s in log.spells] == [
        ("blue box", 2), ("QR code 'X'", 20), (DARK, 22), ("blue box", 40), ("yellow box", 42)]
    assert log.counts() == {"blue box": 2, "QR code 'X'": 1, DARK: 1, "yellow box": 1}
    text = log.render("How many times did the blue box appear?")
    assert "blue box: seen 2 times, first at 22:13:22, last at 22:14:02; still in view: yes." \
        in text
    assert "QR code" not in text                          # only what the question names
    text = log.render("How many boxes did you see?")
    assert "boxes: 3 in all, first blue box at 22:13:22, last yellow box at 22:14:02." in text
    text = log.render("Which box came right after the lights went out?")
    assert text.endswith(f"After {DARK} at 22:13:42, nearest first: blue box at 22:14:00, "
                         "yellow box at 22:14:02.")
    assert "seen 1 time, first at 22:13:42, last at 22:13:42; still in view: no." in text
    text = log.render("Which box came before the lights went out?")
    assert text.endswith(f"Before {DARK} at 22:13:42, nearest first: blue box at 22:13:22.")
    assert about_time("Is it still there?") and about_time("When did the truck leave?")
    assert not about_time("What is the gate code?")
    assert not about_time("Was the last frame dark?")      # the present, not a time
    assert log.stamps("At 22:13:42.") == [T0 + 22]


def test_only_remembered_frames_enter_the_log():
    """A frame with less than 40 % of its tokens cached is forgotten: its spell is missing."""
    frames = {1: (T0 + 1, "c"), 2: (T0 + 2, "c"), 3: (T0 + 30, "c")}
    seen = {1: frozenset({"red box"}), 2: frozenset(), 3: frozenset({"green box"})}
    tokens = {1: 10, 2: 10, 3: 10}
    rows = 4
    assert remembered(16, 10, rows) and not remembered(15, 10, rows)
    full = log_for(frames, seen, {1: 40, 2: 40, 3: 40}, tokens, rows)
    assert [s.thing for s in full.spells] == ["red box", "green box"]
    evicted = log_for(frames, seen, {1: 15, 2: 40, 3: 40}, tokens, rows)
    assert [s.thing for s in evicted.spells] == ["green box"]


def _frame(i: int) -> np.ndarray:
    img = np.full((48, 64, 3), 90, dtype=np.uint8)
    if i % 4 == 1:
        img[8:40, 4:30] = (210, 30, 30)       # a red box now and then
    return img


def test_tiny_memory_log_leaves_no_trace_in_the_stream():
    """Asked with the log, the stream keeps the same tokens as asked without it (tiny-test)."""
    kept, prompt = [], []
    for log_on in (True, False):
        s = build_session(SessionConfig(model="tiny-test", device="cpu", budget=4096,
                                        n_recent=64, window=8, memory_log=log_on))
        for i in range(8):
            s.ingest_frame(_frame(i), T0 + 2 * i, "front")
        ans = s.ask("When did you first see the red box?", max_new_tokens=1)
        assert ans.timings["new_tokens"] <= 1
        kept.append(s.status().cache_tokens)
        prompt.append(ans.timings["prompt_tokens"])
        if log_on:
            log = s._memory_log()
            assert [sp.thing for sp in log.spells][:1] == ["red box"]
    assert kept[0] == kept[1] and prompt[0] > prompt[1]      # shown, not kept
