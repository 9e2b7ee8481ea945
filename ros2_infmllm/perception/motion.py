"""Motion part: how much of the frame changed since the camera's previous frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from .part import Observation, Part, View

SMALL = 96


@dataclass
class MotionPart(Part):
    """Share of pixels of a 96 px grey copy that changed by more than ``threshold``.

    It keeps each camera's previous copy (:meth:`get_state` / :meth:`set_state` carry it
    through a memory snapshot, so a restored stream reads its next frame as the
    uninterrupted one would). Runs on every frame.

    Parameters
    ----------
    threshold : int, default 25
        Grey-level difference (0..255) that counts a pixel as changed.
    still : float, default 0.01
        Below this share the frame is ``still``.
    much : float, default 0.15
        At or above this share, ``much motion``; between, ``some motion``.
    """

    threshold: int = 25
    still: float = 0.01
    much: float = 0.15

    name: ClassVar[str] = "motion"
    slot: ClassVar[str] = "motion"

    def __post_init__(self) -> None:
        """No camera seen yet."""
        super().__post_init__()
        self.every = 1
        self._prev: dict[str, np.ndarray] = {}

    def see(self, view: View) -> list[Observation]:
        """One observation: ``first frame``, ``still``, ``some motion`` or ``much motion``."""
        small = cv2.resize(view.rgb, (SMALL, SMALL), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        with self._lock:
            prev = self._prev.get(view.camera)
            self._prev[view.camera] = grey
        if prev is None:
            return [Observation("first frame", score=0.0, part=self.name, placed=False)]
        m = float((cv2.absdiff(prev, grey) > self.threshold).mean())
        words = "still" if m < self.still else "some motion" if m < self.much else \
            "much motion"
        return [Observation(words, score=m, part=self.name, placed=False)]

    def get_state(self) -> dict[str, np.ndarray]:
        """Each camera's previous grey copy."""
        with self._lock:
            return {c: p.copy() for c, p in self._prev.items()}

    def set_state(self, prev: dict[str, np.ndarray]) -> None:
        """Replace the previous copies with ones :meth:`get_state` returned."""
        with self._lock:
            self._prev = {c: np.ascontiguousarray(p, dtype=np.uint8) for c, p in prev.items()}
            self._last.clear()

    def forget(self) -> None:
        """Forget the previous frames too (motion starts over)."""
        super().forget()
        with self._lock:
            self._prev.clear()
