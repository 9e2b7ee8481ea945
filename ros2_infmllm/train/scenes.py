"""Random rendered scenes with their ground truth, and the questions that truth answers.

Why: the projector learns what pixels mean from questions whose right answers are known.
The scenes are drawn like the demo bags' frames (gray floor with drifting gray blobs,
coloured boxes of the bag colours, ArUco markers and QR codes beside them, the light
scaled) but with random counts, places, sizes, frame sizes, light and noise, each scene
from its own seed; the bags' own frames are never used. Light is labelled by the frame
describer's brightness bands (dark < 0.25 <= dim < 0.45 <= normal <= 0.75 < bright) and
drawn inside a band, never within 0.04 of a band edge, so no label is a coin toss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..eval.scenario import aruco_patch, qr_patch
from ..models.frame_describer import format_stamp

#: box colours (RGB): the demo bags' (eval/scenario.py) and two more; drawn +- 15 per channel
COLOURS = {"red": (210, 30, 30), "blue": (30, 60, 210), "green": (30, 170, 60),
           "yellow": (225, 205, 30), "orange": (240, 140, 20), "purple": (130, 50, 170),
           "cyan": (40, 200, 210), "pink": (240, 130, 180)}
PLACES = ("left", "middle", "right")
#: brightness (mean gray / 255) drawn per light label: inside its band, off the edges
LIGHT_DRAW = {"dark": (0.06, 0.21), "dim": (0.29, 0.41), "normal": (0.49, 0.71),
              "bright": (0.79, 0.88)}
LIGHTS = tuple(LIGHT_DRAW)
MARKERS = ("ArUco marker", "QR code", "neither")
QR_WORDS = ("DOCK A", "GATE 3", "EXIT", "PARCEL FOR TOM", "CODE 1234", "LOBBY", "BAY 7",
            "STORE", "ROOM 12", "HELLO")
#: every answer a question kind can have: an answer naming two of them is wrong
CANDIDATES = {"colour": tuple(COLOURS), "place": PLACES, "count": ("0", "1", "2", "3"),
              "light": LIGHTS, "marker": ("aruco", "qr", "neither")}


@dataclass(frozen=True)
class Item:
    """One thing in view: a coloured box, an ArUco marker or a QR code, in one place."""

    kind: str
    place: str
    colour: Optional[str] = None
    ident: Optional[str] = None


@dataclass(frozen=True)
class Truth:
    """What a rendered frame shows."""

    items: tuple
    light: str

    @property
    def boxes(self) -> list:
        """The coloured boxes, left to right."""
        return sorted((i for i in self.items if i.kind == "box"), key=lambda i: PLACES.index(
            i.place))

    @property
    def marker(self) -> str:
        """``ArUco marker``, ``QR code`` or ``neither``."""
        kinds = {i.kind for i in self.items}
        return "ArUco marker" if "aruco" in kinds else "QR code" if "qr" in kinds else "neither"

    def caption(self) -> str:
        """One line: the boxes by place, the code, the light."""
        parts = [f"{b.colour} box {where(b.place)}" for b in self.boxes] or ["no box"]
        codes = [f"{'ArUco marker' if i.kind == 'aruco' else 'QR code'} {where(i.place)}"
                 for i in self.items if i.kind != "box"]
        return ", ".join(parts + codes) + f"; {self.light}."


def where(place: str) -> str:
    """``on the left``, ``in the middle`` or ``on the right``."""
    return "in the middle" if place == "middle" else f"on the {place}"


def light_of(brightness: float) -> str:
    """Return the frame describer's light band of a mean gray level in [0, 1]."""
    return "dark" if brightness < 0.25 else "dim" if brightness < 0.45 else \
        "bright" if brightness > 0.75 else "normal"


def random_truth(rng: np.random.Generator, max_boxes: int = 3, codes: bool = True) -> Truth:
    """Draw boxes of distinct colours in distinct places, maybe a code, and a light."""
    n = int(rng.choice(np.arange(max_boxes + 1), p=_count_weights(max_boxes)))
    places = [str(p) for p in rng.permutation(PLACES)]
    colours = [str(c) for c in rng.permutation(list(COLOURS))]
    items = [Item("box", places.pop(), colour=colours.pop()) for _ in range(n)]
    if codes and places and rng.random() < 0.5:
        if rng.random() < 0.5:
            items.append(Item("aruco", places.pop(), ident=str(int(rng.integers(0, 50)))))
        else:
            items.append(Item("qr", places.pop(), ident=str(rng.choice(QR_WORDS))))
    light = str(rng.choice(LIGHTS, p=(0.25, 0.25, 0.35, 0.15)))
    return Truth(tuple(items), light)


def _count_weights(max_boxes: int) -> np.ndarray:
    w = np.array([0.15, 0.45, 0.25, 0.15][:max_boxes + 1])
    return w / w.sum()


def render(truth: Truth, rng: np.random.Generator, width: int = 160,
           height: int = 120) -> np.ndarray:
    """Draw ``truth`` as an RGB uint8 frame; its mean gray falls in the light's band."""
    w, h = width, height
    base = rng.uniform(60, 160)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base + rng.uniform(-8, 8, 3)
    scale = w / 160.0
    for _ in range(int(rng.integers(0, 5))):
        size = int(rng.integers(8, 24) * scale)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        img[y:y + size, x:x + size] = rng.uniform(70, 150)
    third = w // 3
    items = np.zeros((h, w), bool)
    for item in truth.items:
        side = int(min(rng.uniform(0.3, 0.6) * h, third + 8))
        col = PLACES.index(item.place)
        bw = int(min(third + 8, side * rng.uniform(0.75, 1.25))) if item.kind == "box" \
            else max(side, 36)
        side = side if item.kind == "box" else bw
        # the item lies in its third; neighbours may overlap by a few pixels
        lo = max(0, col * third - 4)
        hi = min(w - bw, (col + 1) * third + 4 - bw)
        x0 = int(rng.integers(lo, max(lo + 1, hi + 1))) if hi >= lo else lo
        y0 = int(rng.integers(0, max(1, h - side)))
        if item.kind == "box":
            rgb = np.clip(np.array(COLOURS[item.colour]) + rng.uniform(-15, 15, 3), 0, 255)
            cv2.rectangle(img, (x0, y0), (x0 + bw - 1, y0 + side - 1), tuple(map(float, rgb)),
                          -1)
        else:
            patch = aruco_patch(int(item.ident), side) if item.kind == "aruco" \
                else qr_patch(str(item.ident), side)
            ph, pw = min(side, h - y0), min(side, w - x0)
            img[y0:y0 + ph, x0:x0 + pw] = patch[:ph, :pw, None]
        items[y0:y0 + side, x0:x0 + bw] = True
    lo, hi = LIGHT_DRAW[truth.light]
    target = rng.uniform(lo, hi) * 255.0
    for _ in range(4):
        mean = _gray(img)
        if target <= mean or not items.any() or items.all():
            # darker (or nothing to keep): the whole frame scales, as the bags' dim event
            img = np.clip(img * (target / max(1.0, mean)), 0, 255)
        else:
            # brighter: the floor brightens, the boxes at most 1.2x (their colour stays)
            img[items] = np.clip(img[items] * min(1.2, target / max(1.0, mean)), 0, 255)
            bg = ~items
            n_items, n_bg = int(items.sum()), int(bg.sum())
            need = target * (n_items + n_bg) - _gray(img[items]) * n_items
            img[bg] = np.clip(img[bg] * need / max(1.0, _gray(img[bg]) * n_bg), 0, 255)
    img += rng.normal(0.0, rng.uniform(1.0, 4.0), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _gray(img: np.ndarray) -> float:
    return float((img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114).mean())


def measured_light(rgb: np.ndarray) -> str:
    """Light band of a rendered frame, measured as the describer measures it."""
    return light_of(_gray(rgb.astype(np.float32)) / 255.0)


def questions(truth: Truth, rng: np.random.Generator) -> list:
    """``(kind, question, answer)`` for one frame, one of each kind its truth answers."""
    out = []
    boxes = truth.boxes
    if boxes:
        b = boxes[int(rng.integers(len(boxes)))]
        q = (str(rng.choice(("What colour is the box?", "Which colour is the box?")))
             if len(boxes) == 1 else
             str(rng.choice(("What colour is the box {}?",
                             "Which colour does the box {} have?"))).format(where(b.place)))
        out.append(("colour", q, str(b.colour)))
        q = str(rng.choice(("Where is the {} box?", "On which side is the {} box?",
                            "Is the {} box on the left, in the middle or on the right?")))
        out.append(("place", q.format(b.colour), str(b.place)))
    out.append(("count", str(rng.choice(("How many boxes are there?",
                                         "How many coloured boxes do you see?"))),
                str(len(boxes))))
    # "dark or normal?" only where one of the two is right (a dim frame is not "normal")
    light_qs = ["How is the light?", "Is the frame dark, dim, normal or bright?"]
    if truth.light in ("dark", "normal"):
        light_qs.append("Was the last frame dark or normal light?")
    out.append(("light", str(rng.choice(light_qs)), truth.light))
    out.append(("marker", "Is there an ArUco marker or a QR code?", truth.marker))
    out.append(("caption", "Describe the frame.", truth.caption()))
    return out


def timed_questions(truths: list, stamps: list, rng: np.random.Generator) -> list:
    """``(kind, question, answer)`` about one frame of several, named by its time.

    The time is the frame's tag time to the second, as a person reading the clock asks.
    """
    j = int(rng.integers(len(truths)))
    t = format_stamp(stamps[j])[:8]
    truth = truths[j]
    out = [("timed_light", f"How was the light at {t}?", truth.light)]
    if len(truth.boxes) == 1:
        b = truth.boxes[0]
        out.append(("timed_colour", f"What colour was the box at {t}?", b.colour))
        out.append(("timed_place", f"Where was the box at {t}?", b.place))
    return out
