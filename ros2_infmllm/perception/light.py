"""Light part: the frame's light level in four coarse words (dark .. bright light)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2

from .part import Observation, Part, View

#: side of the copy whose mean luma is the light level
SMALL = 96


@dataclass
class LightPart(Part):
    """Mean luma of a 96 px copy, in words; coarse, so that noise does not change them.

    Parameters
    ----------
    dark : float, default 0.25
        Below this mean luma (0..1) the frame is ``dark``.
    dim : float, default 0.45
        Below this, ``dim light``.
    bright : float, default 0.75
        Above this, ``bright light``; between ``dim`` and here, ``normal light``.
    """

    dark: float = 0.25
    dim: float = 0.45
    bright: float = 0.75

    name: ClassVar[str] = "light"
    slot: ClassVar[str] = "light"

    def see(self, view: View) -> list[Observation]:
        """One observation: the light level, scored by the mean luma."""
        small = cv2.resize(view.rgb, (SMALL, SMALL), interpolation=cv2.INTER_AREA)
        b = float(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).mean()) / 255.0
        words = "dark" if b < self.dark else "dim light" if b < self.dim else \
            "bright light" if b > self.bright else "normal light"
        return [Observation(words, score=b, part=self.name, placed=False)]
