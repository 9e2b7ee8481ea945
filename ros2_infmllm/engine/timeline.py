"""The memory log: what the frames still in memory show over time, as lines a small model reads.

Why: asked "what came first", "how many times", "when" or "is it still there", the 0.5B
default model cannot count or order the frame lines it holds, even with every frame in its
cache (issue 40: a count of 22 where 3 were seen, the wrong first object). Stated as events
(``22:14:40-22:14:46 red box (1st time)``) with counts beside them, counting and ordering
become reading. The log is built only from what the memory still keeps: of each frame
with tokens left in the cache, the things whose own words are at least half kept
(:func:`kept_things`), so what the eviction dropped is missing from it as it is from the
cache; it is shown with the question and
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
DARK = "dark (lights out)"
#: words that make a question one about time: only such a question is shown the log
_CUES = re.compile(r"\b(first|last(?! frame)|latest|earliest|how many|how often|times?|count|"
                   r"before|"
                   r"after|when|still|again|since|anymore|yet|order|earlier|later|until)\b",
                   re.IGNORECASE)
#: words that ask for the order of things (the log then lists them in order), and which way
_ORDER = re.compile(r"\b(before|after|then|next|previous|order|since|until|earlier|later)\b",
                    re.IGNORECASE)
_BEFORE = re.compile(r"\b(before|previous|until|earlier)\b", re.IGNORECASE)
#: words that ask whether a thing is in view now
_NOW = re.compile(r"\b(still|anymore|any more|now|yet)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
#: question words that name a kind of thing, by kind (see :func:`_kind`)
_KIND_WORDS = {"boxes": ("box", "boxes"), "patches": ("patch", "patches"),
               "QR codes": ("qr", "code", "codes"), "ArUco markers": ("marker", "markers"),
               "lights out": ("lights", "light", "dark")}
_STOP = frozenset("a an the is are was were of in on at to did do does you see saw seen it "
                  "there what which when how many times time first last still come came "
                  "show showed up appear appeared".split())


def about_time(question: str) -> bool:
    """Return whether ``question`` asks about time (first, last, how many, when, still...)."""
    return _CUES.search(question or "") is not None


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


#: said after a question shown with the log (the adapter's instruction alone did not hold)
LOG_INSTRUCTION = "Reply with the word, number or time only."
#: prefix of a span that says a thing is NOT in view (``gone: X`` events, a lit frame)
NOT = "-"
#: the thing ``nothing in view`` names as absent: every thing
EVERYTHING = "*"
_GONE = re.compile(r" gone: ([^.]*)\.")


def thing_spans(line: str) -> list[tuple[str, int, int]] | None:
    """Return each thing of a frame line with its character span ``[lo, hi)`` in ``line``.

    None where :func:`frame_things` gives None. Why spans: the memory may keep what a frame
    says about one thing and drop the rest (the tag, the light); a thing is remembered
    where its own words are (:func:`kept_things`). Spans whose thing starts with
    :data:`NOT` say what the frame shows is absent: each label of a ``gone:`` event, the
    light words of a frame that is not dark (``-dark (lights out)``), ``nothing in view``
    (``-*``). They let a frame the memory keeps only in part still end a spell.
    """
    if frame_things(line) is None:
        return None
    tag = _TAG.match(line or "")
    base = tag.end() if tag else 0
    body = line[base:]
    content, _, rest = body.partition(";")
    out = []
    pos = 0
    if content.strip() != "nothing in view":
        for item in content.split(", "):
            lo = base + pos
            thing = _PLACE.sub("", item.strip())
            if thing:
                out.append((thing, lo, lo + len(item)))
            pos += len(item) + 2
    else:
        lo = base + body.index("nothing in view")
        out.append((NOT + EVERYTHING, lo, lo + len("nothing in view")))
    light = rest.split(";")[0]
    lo = base + len(content) + 1 + (len(light) - len(light.lstrip()))
    if light.strip() == "dark":
        out.append((DARK, lo, lo + 4))
    elif light.strip():
        out.append((NOT + DARK, lo, lo + len(light.strip())))
    gone = _GONE.search(line)
    if gone:
        at = gone.start(1)
        for label in gone.group(1).split(", "):
            out.append((NOT + label, at, at + len(label)))
            at += len(label) + 2
    return out


@dataclass(frozen=True)
class Seen:
    """What one remembered frame tells: things in view, and things known absent.

    ``whole``: all of its words are kept, so a thing it does not name is not in view.
    """

    present: frozenset[str]
    absent: frozenset[str] = frozenset()
    whole: bool = True


def kept_things(spans: Sequence[tuple[str, int, int]] | None, kept: set[int],
                share: float = 0.5) -> Seen | None:
    """Return what a frame tells through the spans (absolute arrivals) the memory keeps.

    ``spans`` as :func:`thing_spans` gives, with token arrival indices instead of
    characters; ``kept`` the arrival indices the cache holds. A span counts when at least
    ``share`` of its tokens are kept; the frame is whole when every span counts.
    """
    if spans is None:
        return None
    present, absent = set(), set()
    whole = True
    for thing, lo, hi in spans:
        n = max(1, hi - lo)
        if sum(1 for a in range(lo, hi) if a in kept) >= share * n:
            (absent if thing.startswith(NOT) else present).add(thing.removeprefix(NOT))
        else:
            whole = False
    return Seen(frozenset(present), frozenset(absent), whole)


def landmarks(frames: Iterable[tuple[str, list[tuple[str, int, int]] | None]]
              ) -> list[tuple[int, int, int]]:
    """Return the token ranges a time question needs kept, ``(lo, hi, rank)``.

    ``frames``: ``(camera, spans)`` in arrival order, spans as :func:`thing_spans` gives
    with arrival indices (None: ``no change.``). Rank 0: the words of a thing's first
    sighting; 1: where it came again, and the ``gone:`` (or lit) words where it left;
    2: its last mention before it left. With those kept, the memory log
    (:func:`build_log`) still counts, orders and dates every spell after the frames in
    between were evicted.
    """
    out: list[tuple[int, int, int]] = []
    ever: set[str] = set()
    prev: dict[str, dict[str, tuple[int, int]]] = {}
    for cam, spans in frames:
        if spans is None:
            continue
        now = {t: (lo, hi) for t, lo, hi in spans if not t.startswith(NOT)}
        neg = {t.removeprefix(NOT): (lo, hi) for t, lo, hi in spans if t.startswith(NOT)}
        before = prev.get(cam, {})
        for thing, (lo, hi) in now.items():
            if thing not in before:
                out.append((lo, hi, 0 if thing not in ever else 1))
                ever.add(thing)
        for thing, (lo, hi) in before.items():
            if thing not in now:
                out.append((lo, hi, 2))
                mark = neg.get(thing) or neg.get(EVERYTHING)
                if mark:
                    out.append((mark[0], mark[1], 1))
        prev[cam] = now
    return out


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

    def render(self, question: str = "") -> str:
        """Return the lines about what ``question`` names, as the model reads them.

        Per thing the question names (its words, e.g. ``red box``): how many times, first
        and last seen, whether in view now (asked "still ...": that first, alone); per kind
        it names (``QR codes``, ``boxes``): how many in all, the first and the last; and,
        when it asks for an order (``before``, ``after``), the nearest spell of those kinds
        on its own, then the others. Times are of day in the frames' clock. Why so terse
        and so direct: the 0.5B model read "still in view: yes" at the end of a long line
        as "no", and took the first item of a list it was not asked for.
        """
        if not self.spells:
            return "Memory: nothing seen in the frames still in memory."
        words = set(_WORD.findall((question or "").lower()))
        by_thing: dict[str, list[Spell]] = {}
        for sp in self.spells:
            by_thing.setdefault(sp.thing, []).append(sp)
        named = _named_things(by_thing, words)
        kinds = [k for k, ws in _KIND_WORDS.items() if words & set(ws)
                 and any(_kind(t) == k for t in by_thing)]
        order = _ORDER.search(question or "") is not None
        # a kind's summary, unless the question names a thing of it ("the blue box") or
        # asks for an order ("the first box after ...": the list below answers it)
        summed = [] if order else [k for k in kinds
                                   if not any(_kind(t) == k for t in named)]
        lines = []
        still = _NOW.search(question or "") is not None
        for thing in [] if order and kinds else named:     # an anchor: the order line says it
            sps = by_thing[thing]
            now = "yes" if sps[-1].end is None else "no"
            if still:
                lines.append(f"{thing}: in view now: {now} (last seen at "
                             f"{_hms(sps[-1].last)}).")
                continue
            lines.append(f"{thing}: seen {_times(len(sps))}, first at {_hms(sps[0].start)}, "
                         f"last at {_hms(sps[-1].last)}; still in view: {now}.")
        for kind in summed:
            sps = [sp for sp in self.spells if _kind(sp.thing) == kind]
            lines.append(f"{kind}: {len(sps)} in all, first {sps[0].thing} at "
                         f"{_hms(sps[0].start)}, last {sps[-1].thing} at {_hms(sps[-1].start)}.")
        if order or not lines:
            lines.append(self._in_order(question, named, kinds))
        cam = f" (cameras: {self.cameras})" if self.cameras > 1 else ""
        return f"Memory of the frames{cam}:\n" + "\n".join(lines)

    def _in_order(self, question: str, named: list[str], kinds: list[str]) -> str:
        """List the named kinds in order; from a named thing, nearest first (before / after)."""
        anchors = named
        asked = [k for k in kinds if not any(_kind(t) == k for t in anchors)] or kinds
        show = [sp for sp in self.spells if not asked or _kind(sp.thing) in asked]
        if anchors and _ORDER.search(question or ""):
            spells = [sp for sp in self.spells if sp.thing == anchors[0]]
            at = spells[-1] if re.search(r"\blast\b", question, re.IGNORECASE) else spells[0]
            if _BEFORE.search(question):
                near = [sp for sp in show if sp.start < at.start][::-1]
                way = "Before"
            else:
                near = [sp for sp in show if sp.start > at.start]
                way = "After"
            near = [sp for sp in near if sp.thing != at.thing]
            if not near:
                return f"Nothing {way.lower()} {at.thing} at {_hms(at.start)}."
            then = "Earlier" if way == "Before" else "Later"
            rest = ", ".join(f"{sp.thing} at {_hms(sp.start)}" for sp in near[1:])
            return (f"Right {way.lower()} {at.thing} at {_hms(at.start)}: {near[0].thing}, at "
                    f"{_hms(near[0].start)}." + (f" {then}: {rest}." if rest else ""))
        return "In order: " + ", ".join(f"{sp.thing} at {_hms(sp.start)}" for sp in show) + "."

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


def _hms(stamp: float) -> str:
    return format_stamp(stamp)[:8]


def _times(n: int) -> str:
    return f"{n} time{'s' if n != 1 else ''}"


def _named_things(by_thing: Mapping[str, list], words: set[str]) -> list[str]:
    """Things whose own words the question uses most (a colour, a code's text, an id)."""
    own = {t: set(_WORD.findall(t.lower())) - _STOP
           - {w for ws in _KIND_WORDS.values() for w in ws} for t in by_thing}
    hits = {t: len(ws & words) for t, ws in own.items()}
    best = max(hits.values(), default=0)
    dark = {w for w in ("dark", "lights") if w in words}
    return [t for t in by_thing if (best and hits[t] == best) or (t == DARK and dark)]


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


def build_log(frames: Iterable[tuple[float, str, Seen | None]],
              merge_s: float = MERGE_S) -> MemoryLog:
    """Build the log from remembered frames ``(stamp, camera, seen)`` in any order.

    ``seen`` None (a ``no change.`` frame whose previous frame is unknown) is skipped.
    Consecutive remembered frames are read as adjacent: what happened between them while
    they were evicted is not known, so a thing seen in both is one spell, unless one between
    says it is absent (a whole frame without it, or a kept ``gone:`` word).
    """
    by_cam: dict[str, list] = {}
    for stamp, cam, seen in frames:
        if seen is not None:
            by_cam.setdefault(cam, []).append((float(stamp), seen))
    spells: list[Spell] = []
    latest = None
    n = sum(len(seq) for seq in by_cam.values())
    for cam, seq in by_cam.items():
        seq.sort(key=lambda f: f[0])
        open_: dict[str, Spell] = {}
        closed: dict[str, Spell] = {}
        for stamp, seen in seq:
            things = seen.present
            for thing in list(open_):
                if thing in things:
                    continue
                if seen.whole or thing in seen.absent or EVERYTHING in seen.absent:
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


def log_for(frames: Mapping[int, tuple[float, str]],
            spans: Mapping[int, list[tuple[str, int, int]] | None],
            live: Mapping[int, int], kept: set[int]) -> MemoryLog:
    """Build the log of the frames in memory (``frames`` id -> (stamp, camera)).

    ``spans`` maps a frame id to its things' token spans (arrival indices, see
    :func:`thing_spans`), ``live`` the cache's entries per source, ``kept`` the arrival
    indices the cache holds: a frame with no entry left is forgotten, and of one the
    memory holds in part only the things whose words it keeps are read.
    """
    return build_log([(stamp, cam, kept_things(spans.get(sid), kept))
                      for sid, (stamp, cam) in frames.items() if live.get(sid, 0) > 0])
