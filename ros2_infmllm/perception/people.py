"""People part: whole bodies, with OpenCV's HOG people detector (Dalal and Triggs, 2005).

The detector is a linear SVM over histograms of oriented gradients in a 64x128 window,
trained on INRIA's upright pedestrians; its weights come with OpenCV
(``HOGDescriptor_getDefaultPeopleDetector``). OpenCV 5 moved HOG and the cascades out of
the main wheel: ``opencv-contrib-python-headless`` (the same ``cv2`` at the same version,
plus the contrib modules) has them, which is why the project installs that wheel. Faces
(the face part) see people near the camera; bodies see them farther away, down to about
70 px tall in a 640x480 frame, since the frame is searched enlarged to ``side`` px. The
composer counts a person once when a face lies inside a body box.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from .part import MissingModel, Observation, Part, View, group_label, nms

INSTALL_HINT = ("pip uninstall opencv-python-headless && "
                "pip install opencv-contrib-python-headless (OpenCV 5 keeps HOG in contrib)")


@functools.lru_cache(maxsize=1)
def _detector() -> cv2.HOGDescriptor:
    """Build the HOG descriptor with the default people SVM, once per process."""
    if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
        raise MissingModel(f"OpenCV {cv2.__version__} has no HOG people detector: "
                           f"{INSTALL_HINT}")
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


@dataclass
class PeoplePart(Part):
    """People counted by their bodies (``person`` / ``3 people``), placed at their mean.

    Parameters
    ----------
    side : int, default 960
        Longer side of the grey copy searched (enlarged or shrunk from the camera's
        frame); a body must be about 100 px tall there to fill the 64x128 window.
    max_zoom : float, default 2.0
        Most the frame is enlarged. Why: a small frame (the rendered scenes' 160x120) holds
        no body tall enough to find, and enlarging it to ``side`` would cost a full search.
    scale : float, default 1.05
        Ratio between two pyramid levels.
    stride : int, default 8
        Window step in pixels.
    min_weight : float, default 2.2
        Smallest SVM margin kept. On the eyes test's tune images pedestrians scored 2.2-5.7
        and the best non-person (a page of text, a sign) 1.9.
    threads : int, default 1
        OpenCV threads while the detector runs (restored after; the node runs beside
        other work).
    every : int, default 6
        Run at least every 6th frame of a camera (sooner on a changed picture). Why: a
        run costs about 0.2 s of one core at 960 px (0.4 s at load 7), the dearest part
        per run after OCR; every 6th frame adds about 35 ms to a frame on average.
    min_gap : int, default 3
        Fewest frames between two runs.
    phase : int, default 1
        Runs on odd frames (5, 11, 17 ...), the object part (every 2nd) and OCR (every 6th)
        on even ones, so that the dearest parts do not add up in one frame.
    """

    side: int = 960
    max_zoom: float = 2.0
    scale: float = 1.05
    stride: int = 8
    min_weight: float = 2.2
    threads: int = 1
    every: int = 6
    min_gap: int = 3
    phase: int = 1

    name: ClassVar[str] = "people"

    def load(self) -> None:
        """Build the detector once (MissingModel when this OpenCV has no HOG)."""
        self._hog = _detector()

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Body boxes ``(n, 4)`` (x1, y1, x2, y2 in 0..1 of ``rgb``) and their SVM margins."""
        h, w = rgb.shape[:2]
        s = min(self.side / max(h, w), self.max_zoom)
        size = (max(64, round(w * s)), max(128, round(h * s)))
        grey = cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1
                                       else cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY)
        before = cv2.getNumThreads()
        cv2.setNumThreads(self.threads)
        try:
            rects, weights = self._hog.detectMultiScale(
                grey, hitThreshold=0.0, winStride=(self.stride, self.stride),
                padding=(8, 8), scale=self.scale)
        finally:
            cv2.setNumThreads(before)
        weights = np.asarray(weights, np.float32).reshape(-1)
        keep = weights >= self.min_weight
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        r = np.asarray(rects, np.float32).reshape(-1, 4)[keep]
        boxes = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], 1)
        weights = weights[keep]
        kept = nms(boxes, weights, 0.5, by_min=True)      # one body, one box
        return boxes[kept] / np.array([size[0], size[1]] * 2, np.float32), weights[kept]

    def see(self, view: View) -> list[Observation]:
        """One observation, ``person`` or ``N people``, with each body's box as a member."""
        boxes, weights = self.detect(view.source)
        if not len(boxes):
            return []
        score = float(np.mean(weights / (1.0 + weights)))     # margin squashed into 0..1
        return [group_label(boxes, score, self.name)]
