"""OpenCV frame describer: the eyes of text-only language models.

Turns one RGB frame into a short deterministic line of text (coloured boxes and patches
with their place, ArUco markers, QR codes, faces, light level, motion against the previous
frame of the same camera), so a text LLM receives frames through exactly the same
bounded-memory path as vision tokens would take. The words are coarse on purpose (no
percentages), so a scene that does not change reads the same and is reported as "no
change." in a few tokens. Colours, light and motion use a 96 px copy; marker and face
detection use the frame at ``image_max_side``; QR codes are decoded from the camera's own
frame, at most ``qr_max_side`` pixels, when the caller passes it: a QR module is small (a
code of 33 modules, 2 px each in a 1280x720 frame, is 0.6 px each at 384 px and lost).

Decoded QR text is data a stranger can print: it is written as one quoted, labelled field
(``QR code 'TEXT'``), with line breaks, control characters and quotes neutralised and its
length capped (:func:`quote_code_text`), so it can never end the quote, start another frame
line or flood the memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from .images import downscale

# Reference colours (RGB) with plain names; the nearest one names a pixel cluster.
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "gray": (128, 128, 128), "white": (235, 235, 235),
    "red": (200, 30, 30), "orange": (240, 140, 20), "yellow": (230, 220, 40),
    "green": (40, 170, 60), "cyan": (40, 200, 210), "blue": (30, 60, 200),
    "purple": (130, 50, 170), "pink": (240, 130, 180), "brown": (120, 75, 35),
}
_NAMES = list(COLOUR_NAMES)
_REF = np.array([COLOUR_NAMES[n] for n in _NAMES], dtype=np.float32)
_SMALL = 96            # side of the copy used for colours, brightness and motion
QR_MAX_SIDE = 1920     # QR decoding on the camera frame, shrunk to at most this side
QR_MAX_CHARS = 120     # decoded QR text kept per code (the rest is cut, marked with "...")


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


def quote_code_text(text: str, limit: int = QR_MAX_CHARS) -> str:
    """Return decoded code text made safe to quote inside a frame line.

    Why: the text is printed by whoever put the code up. Line breaks and other control
    characters become spaces (a newline could start a forged ``[cam ...]`` line), a
    straight quote becomes a typographic one (it cannot close the quote), runs of spaces
    shrink to one, and text past ``limit`` characters is cut with ``...``. Plain sign text
    (letters, digits, spaces) comes back unchanged.
    """
    cleaned = "".join(" " if (ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029")
                      else "\u2019" if c == "'" else c for c in str(text))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit].rstrip() + "..."


def marker_ids(ids) -> list[int]:
    """Return the ids that ``detectMarkers`` found, as ints; nothing found is ``[]``.

    OpenCV 4.x returns ``None`` when no marker is found, 5.x an empty array: both read
    the same here, so the description does not depend on the OpenCV release.
    """
    if ids is None:
        return []
    return [int(i) for i in np.asarray(ids).reshape(-1)]


def _where(x: float, width: int) -> str:
    """Horizontal place of a centre ``x`` in a frame ``width`` wide."""
    third = x / max(1, width)
    return "on the left" if third < 1 / 3 else "on the right" if third > 2 / 3 else \
        "in the centre"


@dataclass
class FrameDescription:
    """What the describer saw in one frame.

    Parameters
    ----------
    objects : list of (str, str, str)
        Saturated colour regions as ``(colour, "box" | "patch", place)``, largest first;
        a region is a box when it fills at least 80% of its bounding rectangle.
    brightness : float
        Mean luma in 0..1.
    motion : float or None
        Share of pixels that changed against the previous frame of the camera
        (None for the first frame).
    markers : list of (int, str)
        ArUco (4x4_50 dictionary) marker ids with their place, by id.
    qr : list of str
        Decoded QR code texts.
    faces : int
        Number of frontal faces (Haar cascade).
    """

    objects: list[tuple[str, str, str]] = field(default_factory=list)
    brightness: float = 0.0
    motion: float | None = None
    markers: list[tuple[int, str]] = field(default_factory=list)
    qr: list[str] = field(default_factory=list)
    faces: int = 0

    def light(self) -> str:
        """Light level in words."""
        b = self.brightness
        return "dark" if b < 0.25 else "dim light" if b < 0.45 else \
            "bright light" if b > 0.75 else "normal light"

    def movement(self) -> str:
        """Motion in words (coarse, so that sensor noise does not change the text)."""
        m = self.motion
        return "first frame" if m is None else "still" if m < 0.01 else \
            "some motion" if m < 0.15 else "much motion"

    def content(self) -> str:
        """Return what is in view, without light and motion (what questions ask about)."""
        seen = [f"{c} {shape} {where}" for c, shape, where in self.objects]
        seen += [f"ArUco marker {i} {where}" for i, where in self.markers]
        seen += [f"QR code '{quote_code_text(t)}'" for t in self.qr]
        if self.faces:
            seen.append(f"{self.faces} face{'s' if self.faces > 1 else ''}")
        return ", ".join(seen) if seen else "nothing in view"

    def text(self) -> str:
        """One short line for the language model."""
        return f"{self.content()}; {self.light()}; {self.movement()}."


def load_face_cascade():
    """Return OpenCV's shipped frontal-face Haar cascade, or None where this OpenCV has none.

    OpenCV 5 wheels dropped ``CascadeClassifier`` and the cascade files (its face detector,
    ``FaceDetectorYN``, needs an ONNX model that no package here ships), so faces are then
    simply not reported; OpenCV 4 wheels have both.
    """
    import os
    cls = getattr(cv2, "CascadeClassifier", None)
    base = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = os.path.join(base, "haarcascade_frontalface_default.xml") if base else ""
    if cls is None or not path or not os.path.isfile(path):
        return None
    casc = cls(path)
    return None if casc.empty() else casc


class FrameDescriber:
    """Deterministic OpenCV description of frames, remembering the previous frame per camera.

    Thread-safe (one lock); ``detect_faces`` / ``detect_qr`` can be turned off for speed.
    """

    def __init__(self, max_colours: int = 3, detect_faces: bool = True, detect_qr: bool = True,
                 min_share: float = 0.03, report_unchanged: bool = True,
                 qr_max_side: int = QR_MAX_SIDE):
        """Build the detectors once (ArUco 4x4_50, QR, the shipped frontal-face cascade).

        QR codes are found by OpenCV's ArUco-based QR detector (it decodes modules of
        2 px that the classic ``QRCodeDetector`` misses, in a tenth of its time); the
        classic one is tried as well when that finds a code but cannot decode it.
        """
        self.max_colours = max_colours
        self.qr_max_side = int(qr_max_side)
        self.min_share = min_share
        self.report_unchanged = report_unchanged
        self._last_line: dict[str, str] = {}
        self._lock = threading.Lock()
        self._prev: dict[str, np.ndarray] = {}
        aruco = cv2.aruco
        self._aruco = aruco.ArucoDetector(aruco.getPredefinedDictionary(aruco.DICT_4X4_50),
                                          aruco.DetectorParameters())
        self._qr = None
        if detect_qr:
            aruco_qr = getattr(cv2, "QRCodeDetectorAruco", None)
            self._qr = (aruco_qr() if aruco_qr is not None else None, cv2.QRCodeDetector())
        self._faces = None
        if detect_faces:
            self._faces = load_face_cascade()

    def reset(self) -> None:
        """Forget previous frames (motion starts over)."""
        with self._lock:
            self._prev.clear()
            self._last_line.clear()

    def get_state(self) -> dict[str, tuple[np.ndarray | None, str | None]]:
        """Per camera: (previous small grey frame, previous line); a memory snapshot keeps it.

        Why: the next frame's motion and "no change." read against these, so a restored
        stream describes its next frame as the uninterrupted one would.
        """
        with self._lock:
            cams = set(self._prev) | set(self._last_line)
            return {c: (None if c not in self._prev else self._prev[c].copy(),
                        self._last_line.get(c)) for c in cams}

    def set_state(self, state: dict[str, tuple[np.ndarray | None, str | None]]) -> None:
        """Replace the per-camera state with one :meth:`get_state` returned."""
        with self._lock:
            self._prev = {c: np.ascontiguousarray(p, dtype=np.uint8)
                          for c, (p, _) in state.items() if p is not None}
            self._last_line = {c: str(line) for c, (_, line) in state.items() if line is not None}

    def analyse(self, image: np.ndarray, camera: str = "",
                full: np.ndarray | None = None) -> FrameDescription:
        """Describe ``image`` (HxWx3 uint8 RGB); updates the camera's previous frame.

        ``full`` is the same frame at the camera's resolution (``image`` is often a
        downscaled copy): QR codes are decoded from it, shrunk to ``qr_max_side``.
        """
        image = check_image(image)
        small = cv2.resize(image, (_SMALL, _SMALL), interpolation=cv2.INTER_AREA)
        desc = FrameDescription(objects=self._objects(small))
        grey_small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        desc.brightness = float(grey_small.mean()) / 255.0
        with self._lock:
            prev = self._prev.get(camera)
            self._prev[camera] = grey_small
        if prev is not None:
            diff = cv2.absdiff(prev, grey_small)
            desc.motion = float((diff > 25).mean())
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        corners, ids, _ = self._aruco.detectMarkers(grey)
        width = grey.shape[1]
        found = {i: _where(float(np.asarray(c).reshape(-1, 2)[:, 0].mean()), width)
                 for i, c in zip(marker_ids(ids), corners)}
        desc.markers = sorted(found.items())
        if self._qr is not None:
            codes = grey
            if full is not None and full is not image:
                codes = cv2.cvtColor(downscale(check_image(full), self.qr_max_side),
                                     cv2.COLOR_RGB2GRAY)
            text = self._decode_qr(codes)
            if text:
                desc.qr = [text]
        if self._faces is not None:
            faces = self._faces.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=5,
                                                 minSize=(24, 24))
            desc.faces = int(len(faces))
        return desc

    def _decode_qr(self, grey: np.ndarray) -> str:
        """Text of the QR code in ``grey``, or "" (a detector error reads as none found)."""
        fast, classic = self._qr
        try:
            if fast is not None:
                text, points, _ = fast.detectAndDecode(grey)
                if text or points is None:
                    return text or ""
            found, _ = classic.detect(grey)
            return (classic.detectAndDecode(grey)[0] or "") if found else ""
        except cv2.error:       # OpenCV asserts on some degenerate candidate outlines
            return ""

    def _objects(self, small: np.ndarray) -> list[tuple[str, str, str]]:
        """Saturated colour regions of ``small`` (RGB) as (colour, shape, place)."""
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        vivid = (hsv[..., 1] >= 90) & (hsv[..., 2] >= 50)
        if vivid.mean() < self.min_share:
            return []
        px = small.reshape(-1, 3).astype(np.float32)
        nearest = ((px[:, None, :] - _REF[None, :, :]) ** 2).sum(-1).argmin(1)
        nearest = nearest.reshape(small.shape[:2])
        found = []
        for ci in np.unique(nearest[vivid]):
            mask = (vivid & (nearest == ci)).astype(np.uint8)
            n, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for k in range(1, n):
                area = stats[k, cv2.CC_STAT_AREA]
                if area < self.min_share * mask.size:
                    continue
                box = stats[k, cv2.CC_STAT_WIDTH] * stats[k, cv2.CC_STAT_HEIGHT]
                shape = "box" if area >= 0.8 * box else "patch"
                found.append((area, _NAMES[ci], shape, _where(cents[k][0], small.shape[1])))
        found.sort(key=lambda f: -f[0])
        return [f[1:] for f in found[:self.max_colours]]

    def describe(self, image: np.ndarray, stamp: float, camera: str,
                 full: np.ndarray | None = None) -> str:
        """Return ``"[cam NAME HH:MM:SS.s] red box on the left, ...; dim light; still."``.

        With ``report_unchanged`` a frame whose content, light and motion read the same
        as the previous frame of its camera becomes ``"[cam ...] no change."``: repeated
        lines would spend the bounded memory on nothing new. ``full``: see :meth:`analyse`.
        """
        desc = self.analyse(image, camera, full)
        line = desc.text()
        with self._lock:
            same = self._last_line.get(camera) == line
            self._last_line[camera] = line
        if same and self.report_unchanged:
            line = "no change."
        return f"{frame_tag(stamp, camera)} {line}"
