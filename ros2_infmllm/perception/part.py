"""What every perception part shares: its observations, the frame it sees, schedule and cost.

A part (one file each, in the manner of kvpress presses) is a dataclass whose fields are its
parameters; it overrides :meth:`Part.see` (one frame in, observations out) and, when it
has a model, :meth:`Part.load`. The base class does the plumbing every part needs and
none should redo: the model loaded once (lazily, under a lock), its absence kept as a
reason (``missing``) instead of silently reporting nothing, the schedule (run every
``every`` frames of a camera, sooner when the picture changed), and the part's own cost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

#: decoded text (QR, OCR) kept per item; the rest is cut and marked with "..."
TEXT_MAX_CHARS = 120


class MissingModel(RuntimeError):
    """A part's model or package is not installed; the message says what to install."""


@dataclass(frozen=True)
class Observation:
    """One thing a part saw, with what vision_msgs/Detection2D carries.

    Parameters
    ----------
    label : str
        Plain words an operator uses (``truck``, ``2 people``, ``text 'EBY-584'``).
    box : tuple of float
        ``(x, y, w, h)`` in 0..1 of the frame; the whole frame is ``(0, 0, 1, 1)``.
    score : float
        The part's confidence in 0..1.
    part : str
        Name of the part that gave it (precision is counted per part).
    placed : bool
        Whether the line names its place (left / centre / right).
    centre : float or None
        Horizontal centre (0..1) that names the place, when it is not the box's (a
        region's centre of mass).
    members : tuple of box tuples
        Boxes (``x, y, w, h``) of each thing a counted label groups (each face or body
        of ``3 people``), so two parts' counts can be merged without counting twice.
    """

    label: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    score: float = 1.0
    part: str = ""
    placed: bool = True
    centre: float | None = None
    members: tuple[tuple[float, float, float, float], ...] = ()

    def place(self) -> str:
        """Horizontal place of the centre in words."""
        x = self.box[0] + self.box[2] / 2.0 if self.centre is None else self.centre
        return "on the left" if x < 1 / 3 else "on the right" if x > 2 / 3 else \
            "in the centre"

    def words(self) -> str:
        """Return the item as the frame line writes it (``truck on the left``)."""
        return f"{self.label} {self.place()}" if self.placed else self.label


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, by_min: bool = False) -> list[int]:
    """Return the indices greedy non-maximum suppression keeps (overlap by union or smaller)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        den = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / den <= iou]
    return keep


def group_label(boxes: np.ndarray, score: float, part: str) -> Observation:
    """``person`` / ``N people`` over ``boxes`` (x1, y1, x2, y2 in 0..1), each a member.

    Boxed around all of them and placed at the mean of their centres.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    members = tuple((float(x1), float(y1), float(x2 - x1), float(y2 - y1))
                    for x1, y1, x2, y2 in b)
    x1, y1 = float(b[:, 0].min()), float(b[:, 1].min())
    x2, y2 = float(b[:, 2].max()), float(b[:, 3].max())
    n = len(b)
    return Observation("person" if n == 1 else f"{n} people", (x1, y1, x2 - x1, y2 - y1),
                       float(score), part, centre=float(((b[:, 0] + b[:, 2]) / 2).mean()),
                       members=members)


@dataclass
class View:
    """One frame as the parts see it.

    ``rgb`` is the working copy (shrunk to the model's ``image_max_side``); ``full`` is the
    frame as the camera sent it, for parts whose details do not survive the shrink (QR
    modules, small print). Grey and thumbnail copies are made once and shared.
    """

    rgb: np.ndarray
    camera: str = ""
    full: np.ndarray | None = None
    _grey: np.ndarray | None = field(default=None, repr=False)

    @property
    def source(self) -> np.ndarray:
        """The largest copy of the frame there is."""
        return self.rgb if self.full is None else self.full

    @property
    def grey(self) -> np.ndarray:
        """Grey copy of ``rgb``."""
        if self._grey is None:
            self._grey = cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)
        return self._grey

    def thumbnail(self, side: int = 32) -> np.ndarray:
        """Grey ``side`` x ``side`` copy, to tell whether the picture changed."""
        return cv2.resize(self.grey, (side, side), interpolation=cv2.INTER_AREA)


def quote_text(text: str, limit: int = TEXT_MAX_CHARS) -> str:
    """Return text read from the scene (QR, OCR) made safe to quote inside a frame line.

    Why: the text is printed by whoever put it up. Line breaks and other control
    characters become spaces (a newline could start a forged ``[cam ...]`` line), a
    straight quote becomes a typographic one (it cannot close the quote), runs of spaces
    shrink to one, and text past ``limit`` characters is cut with ``...``. Plain sign text
    (letters, digits, spaces) comes back unchanged.
    """
    cleaned = "".join(" " if (ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029")
                      else "\u2019" if c == "'" else c for c in str(text))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit].rstrip() + "..."


@dataclass
class Part:
    """Base of the perception parts: lazy model, schedule, cost, absence.

    Parameters
    ----------
    every : int, default 1
        Run at least every ``every`` frames of a camera; between runs the last
        observations stand (the scene is assumed unchanged).
    on_change : bool, default True
        Run sooner, at most every ``min_gap`` frames, when the picture changed since the
        part's last run (mean grey difference of a 32 px thumbnail above ``change``).
    min_gap : int, default 1
        Fewest frames between two runs, also when the picture changes (a cost cap).
    change : float, default 6.0
        Mean absolute grey difference (0..255) that counts as a changed picture.
    phase : int, default 0
        Frames the second run comes early by (``every - phase`` frames after the camera's
        first). Why: two dear parts whose ``every`` share a factor would otherwise run on
        the same frames (objects every 2nd, people every 4th) and add up in one frame.
    """

    every: int = 1
    on_change: bool = True
    min_gap: int = 1
    change: float = 6.0
    phase: int = 0

    #: name used in ``perception.parts``, the costs and /diagnostics
    name: ClassVar[str] = "part"
    #: where the composer puts the part's observations: content, light or motion
    slot: ClassVar[str] = "content"

    def __post_init__(self) -> None:
        """Check the schedule and start with no model, no history and no cost."""
        if self.every < 1 or self.min_gap < 1 or not 0 <= self.phase < self.every:
            raise ValueError(f"{self.name}: every and min_gap must be >= 1 and phase in "
                             f"0..every-1 (got {self.every}, {self.min_gap}, {self.phase})")
        self._lock = threading.RLock()
        self._loaded = False
        self.missing: str | None = None
        self._last: dict[str, tuple[list[Observation], np.ndarray, int]] = {}
        self.runs = 0
        self.total_s = 0.0
        self.max_s = 0.0

    def load(self) -> None:
        """Load the part's model; raise :class:`MissingModel` saying what to install."""

    def see(self, view: View) -> list[Observation]:
        """Return what the part sees in ``view`` (the one method a part overrides)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Load the model once; False (with ``missing`` set) when it is not installed."""
        with self._lock:
            if not self._loaded:
                self._loaded = True
                try:
                    self.load()
                except MissingModel as exc:
                    self.missing = str(exc)
            return self.missing is None

    def observe(self, view: View) -> list[Observation]:
        """Observations for this frame: a fresh :meth:`see` when due, else the last ones."""
        if not self.ready():
            return []
        with self._lock:
            thumb = view.thumbnail()
            last = self._last.get(view.camera)
            if last is not None:
                obs, seen, since = last
                changed = self.on_change and float(
                    np.abs(thumb.astype(np.int16) - seen).mean()) > self.change
                if since + 1 < self.every and not (changed and since + 1 >= self.min_gap):
                    self._last[view.camera] = (obs, seen, since + 1)
                    return list(obs)
            t0 = time.perf_counter()
            obs = list(self.see(view))
            cost = time.perf_counter() - t0
            self.runs += 1
            self.total_s += cost
            self.max_s = max(self.max_s, cost)
            self._last[view.camera] = (obs, thumb.astype(np.int16),
                                       self.phase if last is None else 0)
            return list(obs)

    def forget(self) -> None:
        """Forget every camera's last observations (the next frame runs the part)."""
        with self._lock:
            self._last.clear()

    def costs(self) -> dict[str, float | str | None]:
        """Return runs, mean and worst seconds per run, and the missing model's reason."""
        with self._lock:
            return {"runs": self.runs,
                    "mean_s": self.total_s / self.runs if self.runs else 0.0,
                    "max_s": self.max_s, "missing": self.missing}


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` with its longer side at most ``max_side`` (area filter; never enlarges)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    size = (max(1, min(max_side, round(w * s))), max(1, min(max_side, round(h * s))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
