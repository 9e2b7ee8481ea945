"""Text part: signs, plates and labels read by PP-OCRv4, as quoted data (never instructions).

PyPI ``rapidocr-onnxruntime`` 1.4.4 ships PP-OCRv4's text detector and recogniser (and a
direction classifier, not used here: upright camera text does not need it) as ONNX files
and runs them with onnxruntime. It declares ``opencv-python``, which would replace our
``opencv-contrib-python-headless`` (the same ``cv2`` module), so it is installed
``--no-deps`` with what it really needs (onnxruntime, pyclipper, shapely, six). OCR is
the dearest part (0.4-0.8 s a frame at full size on two cores), so it reads a copy of at
most ``max_side`` pixels and runs on a schedule: every ``every`` frames, sooner when the
picture changed, never more often than every ``min_gap`` frames.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from .part import MissingModel, Observation, Part, View, quote_text, shrink

INSTALL_HINT = ("pip install --no-deps rapidocr-onnxruntime==1.4.4 && "
                "pip install onnxruntime pyclipper shapely six")


@functools.lru_cache(maxsize=4)
def _engine(max_side: int, threads: int):
    """Build the OCR engine for these settings once per process (its sessions are read-only)."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise MissingModel(f"text reader not installed ({exc}): {INSTALL_HINT}") from exc
    return RapidOCR(det_limit_type="max", det_limit_side_len=max_side, use_cls=False,
                    intra_op_num_threads=threads, inter_op_num_threads=1)


@dataclass
class TextPart(Part):
    """Words read in the frame, each ``text 'WORD'`` placed where it stands.

    Parameters
    ----------
    min_score : float, default 0.85
        Least recognition score of a kept word.
    min_chars : int, default 3
        Fewest letters or digits in a kept word (shorter reads are mostly noise).
    max_items : int, default 4
        Words kept per frame, the largest first (the line must stay short).
    max_codes : int, default 2
        Of those, how many may be taken first because they look like a code (letters and
        digits together: a number plate ``EBY-584``, a model ``GM 125``). Why: a plate is
        small beside the maker's name above it, yet it is what tells one vehicle from
        another; by size alone ``LEYLAND`` was kept and ``EBY-584`` dropped.
    max_side : int, default 640
        Longer side of the copy the detector reads.
    threads : int, default 2
        onnxruntime intra-op threads.
    every, min_gap : int, default 6, 3
        Schedule (see :class:`~.part.Part`).
    """

    min_score: float = 0.85
    min_chars: int = 3
    max_items: int = 4
    max_codes: int = 2
    max_side: int = 640
    threads: int = 2
    every: int = 6
    min_gap: int = 3

    name: ClassVar[str] = "text"

    def load(self) -> None:
        """Build the OCR engine once (MissingModel when the package is absent)."""
        self._ocr = _engine(self.max_side, self.threads)

    def read(self, rgb: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
        """``(text, score, corner points)`` of every line the engine reads in ``rgb``."""
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        result, _ = self._ocr(bgr, use_cls=False)
        return [(str(t), float(s), np.asarray(p, np.float32)) for p, t, s in result or []]

    def see(self, view: View) -> list[Observation]:
        """Up to ``max_items`` confident words (codes taken first), largest first."""
        rgb = shrink(view.source, self.max_side)
        h, w = rgb.shape[:2]
        found = []
        for text, score, pts in self.read(rgb):
            text = quote_text(text.strip(), 40)
            if score < self.min_score or sum(c.isalnum() and c.isascii() for c in text) \
                    < self.min_chars or not all(c.isascii() for c in text):
                continue
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            found.append(((y1 - y0) * (x1 - x0), text, score,
                          (float(x0 / w), float(y0 / h), float((x1 - x0) / w),
                           float((y1 - y0) / h))))
        found.sort(key=lambda f: (-f[0], f[1]))
        codes = [f for f in found if code_like(f[1])][:min(self.max_codes, self.max_items)]
        kept = codes + [f for f in found if f not in codes][:self.max_items - len(codes)]
        kept.sort(key=lambda f: (-f[0], f[1]))
        return [Observation(f"text '{text}'", box, score, self.name)
                for _, text, score, box in kept]


def code_like(text: str) -> bool:
    """Whether ``text`` mixes letters and digits like a plate or part number (``EBY-584``)."""
    alnum = [c for c in text if c.isalnum()]
    return 4 <= len(alnum) <= 12 and any(c.isdigit() for c in alnum) and \
        any(c.isalpha() for c in alnum)
