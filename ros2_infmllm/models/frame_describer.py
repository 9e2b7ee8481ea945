"""The frame describer: the eyes of text-only language models, composed of perception parts.

Turns one RGB frame into a short deterministic line (``[cam NAME HH:MM:SS.s] BODY``), so a
text LLM receives frames through exactly the same bounded-memory path as vision tokens
would take. What is seen comes from the parts of ``perception/`` (pretrained objects,
faces and text; ArUco, QR, colours, light, motion), chosen by ``perception.parts``; the
words and their grammar are :mod:`ros2_infmllm.perception.composer`'s. The words are
coarse on purpose (no percentages), so a scene that does not change reads the same and is
reported as "no change." in a few tokens.

Decoded QR and OCR text is data a stranger can print: it is written as one quoted,
labelled field (``QR code 'TEXT'``, ``text 'TEXT'``), with line breaks, control characters
and quotes neutralised and its length capped (:func:`quote_code_text`), so it can never
end the quote, start another frame line or flood the memory.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..perception.composer import DEFAULT_PARTS, Composer, FrameDescription, build_parts
from ..perception.markers import marker_ids
from ..perception.part import TEXT_MAX_CHARS as QR_MAX_CHARS
from ..perception.part import quote_text as quote_code_text
from ..perception.qr import QR_MAX_SIDE

__all__ = ["FrameDescriber", "FrameDescription", "QR_MAX_CHARS", "QR_MAX_SIDE",
           "check_image", "format_stamp", "frame_tag", "marker_ids", "quote_code_text"]


def format_stamp(stamp: float) -> str:
    """Return ``HH:MM:SS.s`` (UTC time of day) for a stamp in seconds."""
    tenths = int(round(float(stamp) * 10.0))
    secs, t = divmod(tenths, 10)
    return f"{(secs // 3600) % 24:02d}:{(secs // 60) % 60:02d}:{secs % 60:02d}.{t}"


def frame_tag(stamp: float, camera: str) -> str:
    """Short time/camera tag that opens each frame chunk, e.g. ``[cam front 12:03:04.5]``."""
    return f"[cam {camera or 'camera'} {format_stamp(stamp)}]"


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` if it is an HxWx3 uint8 RGB array, else raise ValueError with why."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3 RGB, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"frame too small: {tuple(image.shape)}")
    return image


class FrameDescriber(Composer):
    """The composer over the parts named in ``parts``, remembering each camera's last frame.

    Thread-safe. A part whose model is not installed is off, and says so in the log and
    in :meth:`missing` (which /diagnostics reports), instead of silently seeing nothing.
    """

    def __init__(self, parts: Sequence[str] = DEFAULT_PARTS, report_unchanged: bool = True,
                 events: bool = True) -> None:
        """Build the parts (their models load once, here)."""
        super().__init__(build_parts(list(parts)), report_unchanged=report_unchanged,
                         events=events)

    def analyse(self, image: np.ndarray, camera: str = "",
                full: np.ndarray | None = None) -> FrameDescription:
        """Describe ``image`` (HxWx3 uint8 RGB); updates the camera's previous frame.

        ``full`` is the same frame at the camera's resolution (``image`` is often a
        downscaled copy): QR codes and text are read from it.
        """
        image = check_image(image)
        return super().analyse(image, camera, None if full is None else check_image(full))

    def describe(self, image: np.ndarray, stamp: float, camera: str,
                 full: np.ndarray | None = None) -> str:
        """Return ``"[cam NAME HH:MM:SS.s] red box on the left, ...; dim light; still."``."""
        body = self.compose(self.analyse(image, camera, full), camera)
        return f"{frame_tag(stamp, camera)} {body}"
