"""The composer: the parts' observations of one frame become one short, stable line.

Grammar of a frame line (deterministic: the same observations always give the same words;
the question helpers that count, order and date events parse it)::

    LINE     := TAG " " BODY                   TAG := "[cam " CAMERA " " HH:MM:SS.s "]"
    BODY     := "no change." | SCENE [EVENTS]
    SCENE    := CONTENT "; " LIGHT "; " MOTION "."
    CONTENT  := "nothing in view" | ITEM (", " ITEM)*
    ITEM     := LABEL [" " PLACE]              PLACE := "on the left" | "in the centre"
                                                        | "on the right"
    LABEL    := COLOUR " box" | COLOUR " patch" | "ArUco marker " ID | "QR code '" TEXT "'"
              | "text '" TEXT "'" | NOUN | "person" | N " people"
    LIGHT    := "dark" | "dim light" | "normal light" | "bright light"
    MOTION   := "first frame" | "still" | "some motion" | "much motion"
    EVENTS   := [" appeared: " LABEL (", " LABEL)* "."] [" gone: " LABEL (", " LABEL)* "."]

Items come in the order of the parts in ``perception.parts``, and within a part in the
part's own order (largest or most confident first); at most ``max_items``. ``no change.``
stands for a SCENE equal to the camera's previous one (repeated lines would spend the
bounded memory on nothing new). EVENTS compare the labels of CONTENT with the camera's
previous frame (not on its first frame): a label that was not there ``appeared``, one that
is no longer there is ``gone``; an item that only moved is no event. TEXT is quoted data
(:func:`~.part.quote_text`): it never closes its quote nor starts a line.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .colours import ColoursPart
from .faces import FacesPart
from .light import LightPart
from .markers import MarkersPart
from .motion import MotionPart
from .objects import ObjectsPart
from .part import Observation, Part, View, group_label
from .people import PeoplePart
from .qr import QRPart
from .text import TextPart

#: every part by its name in ``perception.parts``
PARTS: dict[str, type[Part]] = {p.name: p for p in (
    ObjectsPart, FacesPart, PeoplePart, TextPart, ColoursPart, MarkersPart, QRPart,
    LightPart, MotionPart)}
#: the default ``perception.parts``: every part, content parts in the line's order
DEFAULT_PARTS = ("colours", "markers", "qr", "objects", "faces", "people", "text", "light",
                 "motion")
#: separates a camera's previous SCENE from its labels in :meth:`Composer.get_state`
_STATE_SEP = "\x1e"
log = logging.getLogger(__name__)


def build_parts(names: Sequence[str]) -> list[Part]:
    """One part per name, with its default parameters; ValueError names unknown ones."""
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise ValueError(f"unknown perception parts {unknown}; known: {sorted(PARTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"perception parts listed twice: {list(names)}")
    return [PARTS[n]() for n in names]


def _overlap(a: Observation, b: Observation) -> bool:
    """Whether two boxes overlap along the width."""
    return a.box[0] < b.box[0] + b.box[2] and b.box[0] < a.box[0] + a.box[2]


def _without_misread_codes(items: list[Observation]) -> list[Observation]:
    """Drop object nouns whose region overlaps a QR code or an ArUco marker.

    Why: ImageNet has no code class, and its nearest ones are confident and wrong (a QR
    code or a marker reads as ``clock`` at 0.6-0.7 on the rendered scenes); the code
    itself is reported.
    """
    codes = [o for o in items if o.part in ("qr", "markers")]
    return [o for o in items if not (o.part == "objects" and any(
        _overlap(o, c) for c in codes))] if codes else items


def _inside(face: tuple, body: tuple) -> bool:
    """Whether the centre of ``face`` lies inside ``body`` (both x, y, w, h)."""
    cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
    return body[0] <= cx <= body[0] + body[2] and body[1] <= cy <= body[1] + body[3]


def _people_once(items: list[Observation]) -> list[Observation]:
    """Faces and bodies become one ``person`` / ``N people`` item, each person counted once.

    Why: a person near the camera shows both a face and a body, and the face part and the
    people part would each count them. A face whose centre lies inside a body box belongs
    to that body; the count is the bodies plus the faces outside every body. The merged
    item takes the place of the first of the two and the people part's name (precision
    is counted against it).
    """
    faces = next((o for o in items if o.part == "faces"), None)
    bodies = next((o for o in items if o.part == "people"), None)
    if faces is None or bodies is None:
        return items
    alone = tuple(f for f in faces.members if not any(_inside(f, b) for b in bodies.members))
    boxes = np.array([(x, y, x + w, y + h) for x, y, w, h in bodies.members + alone])
    merged = group_label(boxes, max(faces.score, bodies.score), bodies.part)
    first = next(o for o in items if o is faces or o is bodies)
    return [merged if o is first else o for o in items if o is first or
            (o is not faces and o is not bodies)]


@dataclass
class FrameDescription:
    """What the parts saw in one frame: content items, light and motion words."""

    items: list[Observation] = field(default_factory=list)
    light_words: str = "normal light"
    motion_words: str = "first frame"

    @property
    def qr(self) -> list[str]:
        """Decoded QR texts (as quoted in the line)."""
        return [o.label[len("QR code '"):-1] for o in self.items if o.part == "qr"]

    def light(self) -> str:
        """Light level in words."""
        return self.light_words

    def movement(self) -> str:
        """Motion in words."""
        return self.motion_words

    def content(self) -> str:
        """Return what is in view, without light and motion (what questions ask about)."""
        return ", ".join(o.words() for o in self.items) if self.items else "nothing in view"

    def text(self) -> str:
        """Return the SCENE of the grammar (content; light; motion.)."""
        return f"{self.content()}; {self.light()}; {self.movement()}."


class Composer:
    """Runs the parts on each frame and writes the frame line; one state per camera.

    Thread-safe (one lock around the per-camera state; parts lock their own).
    """

    def __init__(self, parts: Sequence[Part], report_unchanged: bool = True,
                 max_items: int = 8, events: bool = True) -> None:
        """Keep the parts; their models load now, and a missing one is logged once."""
        self.parts = list(parts)
        self.report_unchanged = report_unchanged
        self.max_items = int(max_items)
        self.events = events
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, list[str] | None]] = {}
        for part in self.parts:
            if not part.ready():
                log.warning("perception part %s is off: %s", part.name, part.missing)

    def missing(self) -> dict[str, str]:
        """Parts whose model is not installed, with what to install."""
        return {p.name: p.missing for p in self.parts if p.missing}

    def costs(self) -> dict[str, dict]:
        """Each part's runs, mean and worst seconds, and missing reason."""
        return {p.name: p.costs() for p in self.parts}

    def _motion(self) -> MotionPart | None:
        return next((p for p in self.parts if isinstance(p, MotionPart)), None)

    def analyse(self, image: np.ndarray, camera: str = "",
                full: np.ndarray | None = None) -> FrameDescription:
        """Run every part on one frame (``image`` the working copy, ``full`` the camera's)."""
        view = View(image, camera, full)
        desc = FrameDescription()
        for part in self.parts:
            obs = part.observe(view)
            if part.slot == "light":
                desc.light_words = obs[0].label if obs else desc.light_words
            elif part.slot == "motion":
                desc.motion_words = obs[0].label if obs else desc.motion_words
            else:
                desc.items.extend(obs)
        desc.items = _without_misread_codes(_people_once(desc.items))[:self.max_items]
        return desc

    def compose(self, desc: FrameDescription, camera: str) -> str:
        """BODY of the grammar for ``desc``; updates the camera's previous scene."""
        scene = desc.text()
        labels = [o.label for o in desc.items]
        with self._lock:
            before, before_labels = self._last.get(camera, (None, None))
            self._last[camera] = (scene, labels)
        if before == scene and self.report_unchanged:
            return "no change."
        if not self.events or before_labels is None:
            return scene
        new = [x for x in dict.fromkeys(labels) if x not in before_labels]
        gone = [x for x in dict.fromkeys(before_labels) if x not in labels]
        return scene + (f" appeared: {', '.join(new)}." if new else "") + \
            (f" gone: {', '.join(gone)}." if gone else "")

    def reset(self) -> None:
        """Forget every camera (motion and events start over, every part runs next)."""
        with self._lock:
            self._last.clear()
        for part in self.parts:
            part.forget()

    def get_state(self) -> dict[str, tuple[np.ndarray | None, str | None]]:
        """Per camera: (motion's previous grey copy, previous scene); a snapshot keeps it.

        Why: the next frame's motion, ``no change.`` and events read against these, so a
        restored stream describes its next frame as the uninterrupted one would. The
        scene's labels travel inside the string (after a record separator), so the
        snapshot format stays (camera, array, string).
        """
        motion = self._motion()
        prev = motion.get_state() if motion is not None else {}
        with self._lock:
            cams = set(prev) | set(self._last)
            out = {}
            for c in cams:
                scene, labels = self._last.get(c, (None, None))
                line = None if scene is None else scene + (
                    "" if labels is None else _STATE_SEP + json.dumps(labels))
                out[c] = (prev.get(c), line)
            return out

    def set_state(self, state: dict[str, tuple[np.ndarray | None, str | None]]) -> None:
        """Replace the per-camera state with one :meth:`get_state` returned."""
        motion = self._motion()
        if motion is not None:
            motion.set_state({c: p for c, (p, _) in state.items() if p is not None})
        last = {}
        for c, (_, line) in state.items():
            if line is None:
                continue
            scene, _, labels = str(line).partition(_STATE_SEP)
            last[c] = (scene, json.loads(labels) if labels else None)
        with self._lock:
            self._last = last
        for part in self.parts:
            if part is not motion:
                part.forget()
