"""Marker part: ArUco markers (4x4_50 dictionary) with their id and place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from .part import Observation, Part, View


def marker_ids(ids) -> list[int]:
    """Return the ids that ``detectMarkers`` found, as ints; nothing found is ``[]``.

    OpenCV 4.x returns ``None`` when no marker is found, 5.x an empty array: both read
    the same here, so the description does not depend on the OpenCV release.
    """
    if ids is None:
        return []
    return [int(i) for i in np.asarray(ids).reshape(-1)]


@dataclass
class MarkersPart(Part):
    """OpenCV's ArUco detector on the working copy; one observation per id, by id.

    Parameters
    ----------
    dictionary : int, default cv2.aruco.DICT_4X4_50
        The ArUco dictionary the robot's markers come from.
    """

    dictionary: int = cv2.aruco.DICT_4X4_50

    name: ClassVar[str] = "markers"

    def load(self) -> None:
        """Build the detector once."""
        aruco = cv2.aruco
        self._detector = aruco.ArucoDetector(aruco.getPredefinedDictionary(self.dictionary),
                                             aruco.DetectorParameters())

    def see(self, view: View) -> list[Observation]:
        """``ArUco marker N`` with the marker's box, for each id found."""
        corners, ids, _ = self._detector.detectMarkers(view.grey)
        h, w = view.grey.shape
        found = {}
        for i, c in zip(marker_ids(ids), corners):
            pts = np.asarray(c).reshape(-1, 2)
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            found[i] = (float(x0 / w), float(y0 / h), float((x1 - x0) / w),
                        float((y1 - y0) / h))
        return [Observation(f"ArUco marker {i}", box, 1.0, self.name)
                for i, box in sorted(found.items())]
