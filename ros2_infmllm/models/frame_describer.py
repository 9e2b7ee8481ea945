"""OpenCV frame describer: the eyes of text-only language models.

Turns one RGB frame into a short deterministic line of text (dominant colours by name,
brightness, motion against the previous frame of the same camera, ArUco markers, QR codes,
faces), so a text LLM receives frames through exactly the same bounded-memory path as
vision tokens would take. Everything is computed on a downscaled copy (<= 160 px) except
marker/QR/face detection, which uses the frame at ``image_max_side``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

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


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``image`` so its longer side is at most ``max_side`` (never enlarges)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


@dataclass
class FrameDescription:
    """What the describer saw in one frame.

    Parameters
    ----------
    colours : list of (str, float)
        Dominant colour names with their share of the frame (largest first).
    brightness : float
        Mean luma in 0..1.
    motion : float or None
        Share of pixels that changed against the previous frame of the camera
        (None for the first frame).
    markers : list of int
        ArUco (4x4_50 dictionary) marker ids, sorted.
    qr : list of str
        Decoded QR code texts.
    faces : int
        Number of frontal faces (Haar cascade).
    """

    colours: list[tuple[str, float]] = field(default_factory=list)
    brightness: float = 0.0
    motion: float | None = None
    markers: list[int] = field(default_factory=list)
    qr: list[str] = field(default_factory=list)
    faces: int = 0

    def text(self) -> str:
        """One short line for the language model."""
        parts = []
        cols = ", ".join(f"{n} {round(100 * s)}%" for n, s in self.colours)
        parts.append(f"colours: {cols}")
        b = self.brightness
        parts.append("dark" if b < 0.25 else "dim" if b < 0.45 else
                     "bright" if b > 0.75 else "normal light")
        if self.motion is not None:
            m = self.motion
            parts.append("no motion" if m < 0.01 else f"motion {round(100 * m)}%")
        if self.markers:
            parts.append("aruco markers " + " ".join(str(i) for i in self.markers))
        if self.qr:
            parts.append("qr " + " ".join(repr(t) for t in self.qr))
        if self.faces:
            parts.append(f"{self.faces} face{'s' if self.faces > 1 else ''}")
        return "; ".join(parts)


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
                 min_share: float = 0.05):
        """Build the detectors once (ArUco 4x4_50, QR, the shipped frontal-face cascade)."""
        self.max_colours = max_colours
        self.min_share = min_share
        self._lock = threading.Lock()
        self._prev: dict[str, np.ndarray] = {}
        aruco = cv2.aruco
        self._aruco = aruco.ArucoDetector(aruco.getPredefinedDictionary(aruco.DICT_4X4_50),
                                          aruco.DetectorParameters())
        self._qr = cv2.QRCodeDetector() if detect_qr else None
        self._faces = None
        if detect_faces:
            self._faces = load_face_cascade()

    def reset(self) -> None:
        """Forget previous frames (motion starts over)."""
        with self._lock:
            self._prev.clear()

    def analyse(self, image: np.ndarray, camera: str = "") -> FrameDescription:
        """Describe ``image`` (HxWx3 uint8 RGB); updates the camera's previous frame."""
        image = check_image(image)
        small = cv2.resize(image, (_SMALL, _SMALL), interpolation=cv2.INTER_AREA)
        desc = FrameDescription()
        # dominant colours: nearest named reference per pixel, shares over the frame
        px = small.reshape(-1, 3).astype(np.float32)
        d = ((px[:, None, :] - _REF[None, :, :]) ** 2).sum(-1)
        counts = np.bincount(d.argmin(1), minlength=len(_NAMES)) / px.shape[0]
        order = np.argsort(-counts, kind="stable")
        desc.colours = [(_NAMES[i], float(counts[i])) for i in order[:self.max_colours]
                        if counts[i] >= self.min_share]
        grey_small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        desc.brightness = float(grey_small.mean()) / 255.0
        with self._lock:
            prev = self._prev.get(camera)
            self._prev[camera] = grey_small
        if prev is not None:
            diff = cv2.absdiff(prev, grey_small)
            desc.motion = float((diff > 25).mean())
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        _, ids, _ = self._aruco.detectMarkers(grey)
        if ids is not None:
            desc.markers = sorted({int(i) for i in np.asarray(ids).reshape(-1)})
        if self._qr is not None:
            found, _pts = self._qr.detect(grey)
            if found:
                text, _, _ = self._qr.detectAndDecode(grey)
                if text:
                    desc.qr = [text]
        if self._faces is not None:
            faces = self._faces.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=5,
                                                 minSize=(24, 24))
            desc.faces = int(len(faces))
        return desc

    def describe(self, image: np.ndarray, stamp: float, camera: str) -> str:
        """Return ``"[cam NAME HH:MM:SS.s] colours: ...; bright; ..."`` for one frame."""
        return f"{frame_tag(stamp, camera)} {self.analyse(image, camera).text()}"
