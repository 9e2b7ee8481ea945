"""The one image resize of models/: frames shrunk for the describer and for vision towers.

The describer's copy (:func:`downscale`), SmolVLM's tiles, LLaVA's tower input and
Qwen2-VL's square frames all go through :func:`resize`: the area filter when the image
shrinks (no aliasing of small text and markers), bicubic when it grows.
"""

from __future__ import annotations

import cv2
import numpy as np


def fit_size(h: int, w: int, side: int) -> tuple[int, int]:
    """Height and width of an ``h x w`` image scaled to fit a ``side`` square (aspect kept)."""
    s = side / max(h, w)
    return max(1, min(side, round(h * s))), max(1, min(side, round(w * s)))


def resize(image: np.ndarray, width: int, height: int,
           by_longer_side: bool = False) -> np.ndarray:
    """Resize to exactly ``width x height``: area filter when shrinking, else bicubic.

    Shrinking means fewer pixels; with ``by_longer_side`` it means a shorter longer side,
    the rule Qwen2-VL's square frames were written and tested with (a wide frame squeezed
    into a square of more pixels is still filtered as shrunk along its width).
    """
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrinks = max(width, height) < max(h, w) if by_longer_side else width * height < w * h
    interp = cv2.INTER_AREA if shrinks else cv2.INTER_CUBIC
    return cv2.resize(image, (int(width), int(height)), interpolation=interp)


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``image`` so its longer side is at most ``max_side`` (never enlarges)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    height, width = fit_size(h, w, max_side)
    return resize(image, width, height)
