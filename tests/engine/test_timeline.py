"""The memory log (engine/timeline.py): spells, counts, what is in view, and no trace left."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import torch

from ros2_infmllm.engine import SessionConfig, build_session
from ros2_infmllm.engine.session import StreamingSession
from ros2_infmllm.engine.timeline import (DARK, EVERYTHING, NOT, Seen, about_time, build_log,
                                          frame_things, kept_things, landmarks, log_for,
                                          thing_spans)

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
    log = build_log([(T0 + t, "c", Seen(frozenset(s))) for t, s in seq])
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
    assert text.endswith(f"\nRight after {DARK} at 22:13:42: blue box, at 22:14:00. "
                         "Later: yellow box at 22:14:02.")
    assert "seen 1 time" not in text                      # the anchor is in the order line
    text = log.render("Which box came before the lights went out?")
    assert text.endswith(f"Right before {DARK} at 22:13:42: blue box, at 22:13:22.")
    text = log.render("Is the yellow box still there?")
    assert text.endswith("\nyellow box: in view now: yes (last seen at 22:14:02).")
    text = log.render("Which QR code came after the yellow box?")
    assert text.endswith("Nothing after yellow box at 22:14:02.")
    assert about_time("Is it still there?") and about_time("When did the truck leave?")
    assert not about_time("What is the gate code?")
    assert not about_time("Was the last frame dark?")      # the present, not a time
    assert log.stamps("At 22:13:42.") == [T0 + 22]


def test_only_what_memory_keeps_enters_the_log():
    """A frame with no token left is forgotten; of a frame held in part, only the things
    whose own tokens are at least half kept are read."""
    line = "[cam c 22:14:40.0] red box on the left, ArUco marker 17 on the right; dark; still."
    chars = thing_spans(line)
    assert [line[a:b] for _, a, b in chars] == ["red box on the left",
                                                "ArUco marker 17 on the right", "dark"]
    assert [t for t, _, _ in chars] == ["red box", "ArUco marker 17", DARK]
    assert thing_spans("[cam c 1] no change.") is None
    frames = {1: (T0 + 1, "c"), 2: (T0 + 2, "c"), 3: (T0 + 30, "c")}
    spans = {1: [("red box", 10, 14), ("ArUco marker 17", 14, 20)], 2: [],
             3: [("green box", 40, 44)]}
    live = {1: 5, 2: 5, 3: 5}
    full = log_for(frames, spans, live, set(range(60)))
    assert [s.thing for s in full.spells] == ["ArUco marker 17", "red box", "green box"]
    part = log_for(frames, spans, live, set(range(10, 12)) | set(range(40, 44)))
    assert [s.thing for s in part.spells] == ["red box", "green box"]      # 2 of 4 kept
    gone = log_for(frames, spans, {1: 0, 2: 5, 3: 5}, set(range(60)))
    assert [s.thing for s in gone.spells] == ["green box"]
    assert kept_things(spans[1], set(range(11, 14))) == Seen(frozenset({"red box"}),
                                                             whole=False)
    assert kept_things(None, set()) is None


def test_a_frame_kept_in_part_ends_only_the_spells_it_says_ended():
    """The memory keeps a frame's words about one thing (a landmark): the things it no
    longer holds words for are unknown there, not gone; a kept ``gone:`` word, a kept
    light word or ``nothing in view`` does end a spell."""
    line = ("[cam c 22:14:40.0] red box on the left; normal light; still. "
            "gone: blue box, QR code 'A'.")
    chars = thing_spans(line)
    assert [(t, line[a:b]) for t, a, b in chars] == [
        ("red box", "red box on the left"), (NOT + DARK, "normal light"),
        (NOT + "blue box", "blue box"), (NOT + "QR code 'A'", "QR code 'A'")]
    empty = "[cam c 1] nothing in view; dark; still."
    assert [(t, empty[a:b]) for t, a, b in thing_spans(empty)] == [
        (NOT + EVERYTHING, "nothing in view"), (DARK, "dark")]
    blue, green = frozenset({"blue box"}), frozenset({"green box"})
    seq = [(0, Seen(blue | green)),
           (10, Seen(frozenset(), whole=False)),                  # only its tag is kept
           (20, Seen(frozenset(), frozenset({"blue box"}), whole=False)),
           (30, Seen(blue, whole=False)),
           (40, Seen(frozenset(), frozenset({EVERYTHING}), whole=False))]
    log = build_log([(T0 + t, "c", s) for t, s in seq])
    assert [(s.thing, s.start - T0, s.end - T0) for s in log.spells] == [
        ("blue box", 0, 20), ("green box", 0, 40), ("blue box", 30, 40)]


def test_landmarks_rank_first_sightings_then_returns_and_departures():
    """First sighting rank 0; a return and the gone words rank 1; the last mention rank 2;
    ``no change.`` frames say nothing new."""
    frames = [("c", [("red box", 0, 3), (NOT + DARK, 3, 5)]),
              ("c", None),
              ("c", [("red box", 10, 13), ("blue box", 13, 16)]),
              ("c", [("blue box", 20, 23), (NOT + "red box", 23, 25)]),
              ("c", [("red box", 30, 33), (NOT + "blue box", 33, 35)]),
              ("d", [("red box", 40, 43)])]                     # another camera's own first
    assert landmarks(frames) == [(0, 3, 0), (13, 16, 0), (10, 13, 2), (23, 25, 1),
                                 (30, 33, 1), (20, 23, 2), (33, 35, 1), (40, 43, 1)]


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


class _WordPieces:
    """Stand-in for a BPE tokenizer that joins a space to the word after it (" dark")."""

    @staticmethod
    def pieces(text: str) -> list[str]:
        return re.findall(r" ?[^ ]+| +", text)

    def encode(self, text: str, literal: bool = True) -> torch.Tensor:
        return torch.zeros((1, len(self.pieces(text))), dtype=torch.long)


def test_thing_spans_in_tokens_cover_their_words_when_spaces_join_the_next_word():
    """A one-word span (" dark") must not come out empty: the space before a word belongs
    to the word's token, so the span starts where the text before it ends, stripped."""
    session = SimpleNamespace(adapter=_WordPieces(),
                              cache=SimpleNamespace(layers=[SimpleNamespace(
                                  is_initialized=True, arrived=100)]))
    line = "[cam c 22:17:14.0] nothing in view; dark; still. gone: blue box."
    spans = StreamingSession._spans(session, line)
    words = _WordPieces.pieces(line)
    got = {t: "".join(words[lo - 100:hi - 100]).strip() for t, lo, hi in spans}
    assert got == {NOT + EVERYTHING: "nothing in view;", DARK: "dark;",
                   NOT + "blue box": "blue box."}
