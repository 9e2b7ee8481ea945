"""QR part: decoded QR codes, as quoted data (never instructions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from .part import Observation, Part, View, quote_text, shrink

#: QR decoding on the camera frame, shrunk to at most this side
QR_MAX_SIDE = 1920


@dataclass
class QRPart(Part):
    """OpenCV's QR detectors on the camera's own frame, shrunk to ``max_side``.

    A QR module is small (a code of 33 modules, 2 px each in a 1280x720 frame, is 0.6 px
    each at 384 px and lost), hence the full frame. OpenCV's ArUco-based QR detector
    decodes modules of 2 px that the classic ``QRCodeDetector`` misses, in a tenth of its
    time; the classic one is tried as well when that finds a code but cannot decode it.
    The text is written as one quoted field (``QR code 'TEXT'``, :func:`quote_text`), so
    it can never end the quote, start another frame line or flood the memory.

    Parameters
    ----------
    max_side : int, default 1920
        Longer side the camera frame is shrunk to before decoding.
    """

    max_side: int = QR_MAX_SIDE

    name: ClassVar[str] = "qr"

    def load(self) -> None:
        """Build the two detectors once."""
        aruco_qr = getattr(cv2, "QRCodeDetectorAruco", None)
        self._fast = aruco_qr() if aruco_qr is not None else None
        self._classic = cv2.QRCodeDetector()

    def see(self, view: View) -> list[Observation]:
        """At most one ``QR code 'TEXT'`` (no place: the text is what questions ask)."""
        grey = view.grey
        if view.full is not None and view.full is not view.rgb:
            grey = cv2.cvtColor(shrink(view.full, self.max_side), cv2.COLOR_RGB2GRAY)
        text, points = self.decode(grey)
        if not text:
            return []
        box = (0.0, 0.0, 1.0, 1.0)
        if points is not None and np.asarray(points).size >= 8:
            pts = np.asarray(points, np.float32).reshape(-1, 2)
            h, w = grey.shape
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            box = (float(x0 / w), float(y0 / h), float((x1 - x0) / w), float((y1 - y0) / h))
        return [Observation(f"QR code '{quote_text(text)}'", box, 1.0, self.name,
                            placed=False)]

    def decode(self, grey) -> tuple[str, np.ndarray | None]:
        """Text of the QR code in ``grey`` and its corners, or "" (an error reads as none)."""
        try:
            if self._fast is not None:
                text, points, _ = self._fast.detectAndDecode(grey)
                if text or points is None:
                    return text or "", points
            found, points = self._classic.detect(grey)
            return ((self._classic.detectAndDecode(grey)[0] or "") if found else "", points)
        except cv2.error:       # OpenCV asserts on some degenerate candidate outlines
            return "", None
