"""Colour part: large saturated colour regions as ``red box`` / ``brown patch`` with a place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from .part import Observation, Part, View

#: Reference colours (RGB) with plain names; the nearest one names a pixel cluster.
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "gray": (128, 128, 128), "white": (235, 235, 235),
    "red": (200, 30, 30), "orange": (240, 140, 20), "yellow": (230, 220, 40),
    "green": (40, 170, 60), "cyan": (40, 200, 210), "blue": (30, 60, 200),
    "purple": (130, 50, 170), "pink": (240, 130, 180), "brown": (120, 75, 35),
}
_NAMES = list(COLOUR_NAMES)
_REF = np.array([COLOUR_NAMES[n] for n in _NAMES], dtype=np.float32)
SMALL = 96


@dataclass
class ColoursPart(Part):
    """Connected regions of vivid pixels on a 96 px copy, named by the nearest colour.

    A region is a ``box`` when it fills at least 80% of its bounding rectangle, else a
    ``patch``; the largest come first.

    Parameters
    ----------
    max_regions : int, default 3
        Regions kept per frame.
    min_share : float, default 0.03
        Smallest region, as a share of the frame (and the least vivid share to look).
    saturation : int, default 90
        Least HSV saturation (0..255) of a vivid pixel.
    patches : bool, default False
        Report patches too. Off: in real photographs most vivid regions are patches of
        clothing, fruit or paint (``brown patch on the right``), words that name nothing
        an operator asks about; painted boxes and parcels are boxes.
    """

    max_regions: int = 3
    min_share: float = 0.03
    saturation: int = 90
    patches: bool = False

    name: ClassVar[str] = "colours"

    def see(self, view: View) -> list[Observation]:
        """``<colour> box|patch`` observations, scored by their share of the frame."""
        small = cv2.resize(view.rgb, (SMALL, SMALL), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        vivid = (hsv[..., 1] >= self.saturation) & (hsv[..., 2] >= 50)
        if vivid.mean() < self.min_share:
            return []
        px = small.reshape(-1, 3).astype(np.float32)
        nearest = ((px[:, None, :] - _REF[None, :, :]) ** 2).sum(-1).argmin(1)
        nearest = nearest.reshape(small.shape[:2])
        found = []
        for ci in np.unique(nearest[vivid]):
            mask = (vivid & (nearest == ci)).astype(np.uint8)
            n, _, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for k in range(1, n):
                area = stats[k, cv2.CC_STAT_AREA]
                if area < self.min_share * mask.size:
                    continue
                x, y, w, h = (int(stats[k, c]) for c in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                                         cv2.CC_STAT_WIDTH,
                                                         cv2.CC_STAT_HEIGHT))
                shape = "box" if area >= 0.8 * w * h else "patch"
                if shape == "patch" and not self.patches:
                    continue
                found.append((area, f"{_NAMES[ci]} {shape}",
                              (x / SMALL, y / SMALL, w / SMALL, h / SMALL),
                              float(cents[k][0]) / SMALL))
        found.sort(key=lambda f: -f[0])
        return [Observation(label, box, float(area) / (SMALL * SMALL), self.name, centre=cx)
                for area, label, box, cx in found[:self.max_regions]]
