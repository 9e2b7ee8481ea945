"""The memory log: what the frames still in memory show over time, as lines a small model reads.

Why: asked "what came first", "how many times", "when" or "is it still there", the 0.5B
default model cannot count or order the frame lines it holds, even with every frame in its
cache (issue 40: a count of 22 where 3 were seen, the wrong first object). Stated as events
(``22:14:40-22:14:46 red box (1st time)``) with counts beside them, counting and ordering
become reading. The log is built only from frames the memory still keeps (at least half
of a frame's tokens over layers and heads, :func:`remembered`), so what the eviction
dropped is missing from it as it is from the cache; it is shown with the question and
never enters the stream.

A frame line reads ``[cam NAME HH:MM:SS.s] THING on the left, THING; LIGHT; MOTION.``
(models/frame_describer.py); ``no change.`` repeats the frame before it. Things are the
comma-separated items of the first part without their place; ``dark`` light is one more
thing (the lights are out). QR text stays quoted as the frame line quoted it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..models.frame_describer import format_stamp

_TAG = re.compile(r"^\s*\[[^\]]*\]\s*")
_PLACE = re.compile(r"\s+(on the left|on the right|in the centre)$")
_NO_CHANGE = "no change."
#: the thing a dark frame shows, and how the log names its spells
DARK = "lights out (dark)"
#: a thing out of view for at most this long has not left (a marker the detector misses in
#: one frame, a box hidden by a passing blob)
MERGE_S = 5.0


def frame_things(line: str) -> frozenset[str] | None:
    """Return the things a frame line shows.

    None for ``no change.`` (the caller knows the frame before) and for a line with nothing
    after its tag (a vision model's frame: no words to read).

    ``"[cam c 22:14:40.0] red box on the left, ArUco marker 17 on the right; dark; still."``
    gives ``{"red box", "ArUco marker 17", DARK}``.
    """
    body = _TAG.sub("", line or "").strip()
    if body == _NO_CHANGE or not body:
        return None
    parts = [p.strip() for p in body.rstrip(".").split(";")]
    things = set()
    if parts and parts[0] and parts[0] != "nothing in view":
        for item in parts[0].split(", "):
            item = _PLACE.sub("", item.strip())
            if item:
                things.add(item)
    if len(parts) > 1 and parts[1] == "dark":
        things.add(DARK)
    return frozenset(things)


def remembered(kept: int, tokens: int, rows: int, share: float = 0.5) -> bool:
    """Whether a frame of ``tokens`` tokens counts as in memory with ``kept`` cached entries.

    ``kept`` sums its cached tokens over ``rows`` (layers x KV heads), as
    ``BoundedCache.sources_in_memory`` does.
    """
    return tokens > 0 and kept >= share * tokens * rows


@dataclass
class Spell:
    """One stretch of time a thing was in view (``end`` None: in view in the latest frame)."""

    thing: str
    start: float
    last: float
    end: float | None = None
    camera: str = ""


@dataclass
class MemoryLog:
    """Spells of things over the remembered frames, oldest first, and the latest frame."""

    spells: list[Spell] = field(default_factory=list)
    latest: float | None = None
    cameras: int = 0
    frames: int = 0

    def counts(self) -> dict[str, int]:
        """Spells per thing, in order of first appearance."""
        out: dict[str, int] = {}
        for s in self.spells:
            out[s.thing] = out.get(s.thing, 0) + 1
        return out

    def render(self) -> str:
        """Return the log as the model reads it: a line per spell, counts, what is in view."""
        if not self.spells:
            return "Memory log: nothing seen in the frames still in memory."
        lines = ["Memory log of the frames still in memory (time of day, oldest first):"]
        nth: dict[str, int] = {}
        for s in self.spells:
            nth[s.thing] = nth.get(s.thing, 0) + 1
            cam = f" (camera {s.camera})" if self.cameras > 1 else ""
            until = "now" if s.end is None else format_stamp(s.last)[:8]
            lines.append(f"{format_stamp(s.start)[:8]}-{until} {s.thing}{cam}, "
                         f"{_ordinal(nth[s.thing])} time")
        counts = self.counts()
        kinds: dict[str, int] = {}
        for thing, n in counts.items():
            kinds[_kind(thing)] = kinds.get(_kind(thing), 0) + n
        lines.append("Times seen: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + "; "
                     + ", ".join(f"all {k} {n}" for k, n in kinds.items()) + ".")
        now = [s.thing for s in self.spells if s.end is None]
        lines.append("In view now: " + (", ".join(now) if now else "nothing") + ".")
        return "\n".join(lines)

    def stamps(self, answer: str) -> list[float]:
        """Return the stamps of the frames whose time the answer names (``HH:MM:SS``).

        Spell starts and last frames seen, in log order.
        """
        said = set(re.findall(r"\d{2}:\d{2}:\d{2}", answer or ""))
        out = []
        for s in self.spells:
            for t in (s.start, s.last):
                if t is not None and format_stamp(t)[:8] in said and t not in out:
                    out.append(t)
        return out


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _kind(thing: str) -> str:
    """Return what a thing is, for counts by kind: ``boxes``, ``QR codes``, ``lights out``."""
    if thing == DARK:
        return "lights out"
    if thing.startswith("QR code"):
        return "QR codes"
    if thing.startswith("ArUco marker"):
        return "ArUco markers"
    last = thing.split()[-1]
    return last + ("es" if last.endswith(("x", "s", "ch")) else "s")


def build_log(frames: Iterable[tuple[float, str, frozenset[str] | None]],
              merge_s: float = MERGE_S) -> MemoryLog:
    """Build the log from remembered frames ``(stamp, camera, things)`` in any order.

    ``things`` None (a ``no change.`` frame whose previous frame is unknown) is skipped.
    Consecutive remembered frames are read as adjacent: what happened between them while
    they were evicted is not known, so a thing seen in both is one spell.
    """
    by_cam: dict[str, list] = {}
    for stamp, cam, things in frames:
        if things is not None:
            by_cam.setdefault(cam, []).append((float(stamp), things))
    spells: list[Spell] = []
    latest = None
    n = sum(len(seq) for seq in by_cam.values())
    for cam, seq in by_cam.items():
        seq.sort(key=lambda f: f[0])
        open_: dict[str, Spell] = {}
        closed: dict[str, Spell] = {}
        for stamp, things in seq:
            for thing in list(open_):
                if thing not in things:
                    spell = open_.pop(thing)
                    spell.end = stamp
                    closed[thing] = spell
            for thing in sorted(things):
                if thing in open_:
                    open_[thing].last = stamp
                    continue
                gone = closed.get(thing)
                if gone is not None and gone.end is not None and stamp - gone.end <= merge_s:
                    gone.end, gone.last = None, stamp          # it never left
                    open_[thing] = closed.pop(thing)
                    continue
                spell = Spell(thing, stamp, stamp, camera=cam)
                spells.append(spell)
                open_[thing] = spell
        latest = seq[-1][0] if latest is None else max(latest, seq[-1][0])
    spells.sort(key=lambda s: (s.start, s.thing))
    return MemoryLog(spells, latest, len(by_cam), n)


def log_for(frames: Mapping[int, tuple[float, str]], seen: Mapping[int, frozenset | None],
            live: Mapping[int, int], tokens: Mapping[int, int], rows: int) -> MemoryLog:
    """Build the log of the frames in memory (``frames`` id -> (stamp, camera)).

    ``seen`` maps a frame id to its things (:func:`frame_things`).

    ``live`` is the cache's entries per source, ``tokens`` each frame's chunk length,
    ``rows`` layers x KV heads.
    """
    keep: Sequence = [(stamp, cam, seen.get(sid)) for sid, (stamp, cam) in frames.items()
                      if remembered(live.get(sid, 0), tokens.get(sid, 0), rows)]
    return build_log(keep)
