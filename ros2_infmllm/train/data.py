"""Training and held-out examples: rendered frames, their cell features, their questions.

An example is one or more frames (indices into a feature table) with their tags, one
question and its answer, tokenised exactly as the adapter's session feeds them: the
system turn, each frame as tag + ``<|vision_start|>`` + cell slots + ``<|vision_end|>``
+ newline, the user turn (question + the adapter's answer instruction), the assistant's
opening; the loss is on the answer and its ``<|im_end|>``. Scenes are drawn from seeds
(``SeedSplit``); the held-out split uses seeds the training split never sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import Pool
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from ..models.base import ModelAdapter
from ..models.frame_describer import frame_tag
from ..models.vision import VisionAdapter
from ..models.visual_tokens import TEXT
from ..perception.efficientnet_lite0 import IMAGENET_MEAN, IMAGENET_STD
from .scenes import (COLOURS, LIGHTS, PLACES, Truth, questions, random_truth, render,
                     timed_questions)

#: frame sizes drawn for a scene (the bags are 160 x 120) and their weights
SIZES = ((160, 120), (320, 240), (224, 224), (640, 480))
SIZE_WEIGHTS = (0.55, 0.2, 0.1, 0.15)
#: camera names of the tags (none is a place word: a camera "left" reads as a place)
CAMERAS = ("front", "camera", "dock", "rear")
#: seed streams: training scenes, training timed sequences, held-out ones
TRAIN, TRAIN_TIMED, HELDOUT, HELDOUT_TIMED = 1, 2, 1001, 1002


@dataclass
class Example:
    """Frames (feature rows), their stamps and camera, one question, its answer and kind."""

    frames: list
    stamps: list
    camera: str
    question: str
    answer: str
    kind: str


def scene(stream: int, index: int, max_boxes: int = 3) -> tuple:
    """``(truth, rgb)`` of scene ``index`` of a seed stream: the same pixels every time."""
    rng = np.random.default_rng([stream, index])
    truth = random_truth(rng, max_boxes=max_boxes)
    w, h = SIZES[int(rng.choice(len(SIZES), p=SIZE_WEIGHTS))]
    return truth, render(truth, rng, w, h), rng


def _tower_input(args: tuple) -> tuple:
    stream, index, max_boxes = args
    truth, rgb, _ = scene(stream, index, max_boxes)
    return truth, cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)


def rendered(jobs: Sequence[tuple], workers: int) -> list:
    """``(truth, 224x224 uint8)`` of each ``(stream, index, max_boxes)``, rendered in a pool."""
    if workers <= 1:
        return [_tower_input(j) for j in jobs]
    with Pool(workers) as pool:
        return pool.map(_tower_input, jobs, chunksize=64)


def tower_features(tower: torch.nn.Module, images: np.ndarray, device: str,
                   batch: int = 256) -> torch.Tensor:
    """Cell features ``[n, cells, F]`` (float16, on the CPU) of 224x224 uint8 frames.

    The normalisation is :func:`perception.efficientnet_lite0.to_batch`'s, on the device.
    """
    from ..models.visual_tokens import pooled_features
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).to(device).float().div_(255.0)
            x = (x.permute(0, 3, 1, 2) - mean) / std
            out.append(pooled_features(tower, x).half().cpu())
    return torch.cat(out)


def examples_of(truths: Sequence[Truth], first_row: int, timed: bool,
                per_frame: int, rng: np.random.Generator) -> list:
    """Examples over frames ``first_row...``: per-frame questions, or timed triples."""
    out = []
    if not timed:
        for i, truth in enumerate(truths):
            qa = questions(truth, rng)
            picks = rng.permutation(len(qa))[:per_frame]
            cam = str(rng.choice(CAMERAS))
            stamp = float(rng.uniform(0, 86000))
            for j in picks:
                kind, q, a = qa[int(j)]
                out.append(Example([first_row + i], [stamp], cam, q, a, kind))
        return out
    for k in range(0, len(truths) - 2, 3):
        stamps = [float(rng.uniform(0, 86000))]
        for _ in range(2):
            stamps.append(stamps[-1] + float(rng.uniform(8, 60)))
        group = list(truths[k:k + 3])
        cam = str(rng.choice(CAMERAS))
        for kind, q, a in timed_questions(group, stamps, rng)[:per_frame]:
            out.append(Example([first_row + k + j for j in range(3)], stamps, cam, q, a,
                               kind))
    return out


def build(tower: torch.nn.Module, n_scenes: int, n_timed: int, device: str,
          held_out: bool, workers: int, per_frame: int, seed: int,
          progress: Optional[Callable[[str], Any]] = None) -> tuple:
    """Render, encode and question ``n_scenes`` frames and ``n_timed`` timed triples.

    Returns ``(features [n, cells, F] float16, truths, examples)``; held-out draws other
    seeds.
    """
    streams = (HELDOUT, HELDOUT_TIMED) if held_out else (TRAIN, TRAIN_TIMED)
    rng = np.random.default_rng([seed, int(held_out)])
    feats, truths, examples, row = [], [], [], 0
    plan = [(streams[0], n_scenes, 3, False), (streams[1], 3 * n_timed, 1, True)]
    for stream, count, max_boxes, timed in plan:
        for start in range(0, count, 4096):
            jobs = [(stream, i, max_boxes) for i in range(start, min(count, start + 4096))]
            pairs = rendered(jobs, workers)
            images = np.stack([p[1] for p in pairs])
            feats.append(tower_features(tower, images, device))
            truths += [p[0] for p in pairs]
            examples += examples_of([p[0] for p in pairs], row, timed, per_frame, rng)
            row += len(pairs)
            if progress:
                progress(f"{'held-out' if held_out else 'training'} frames: {row}")
    return torch.cat(feats), truths, examples


class Encoder:
    """Token ids of examples as the adapter's session feeds them (ChatML, Qwen2.5)."""

    def __init__(self, tok: Any, system_prompt: str = VisionAdapter.default_prompt) -> None:
        """Cache the ids of the fixed pieces."""
        self.tok = tok
        self._known: dict = {}
        ids = tok.convert_tokens_to_ids
        self.vs, self.ve, self.pad = (ids("<|vision_start|>"), ids("<|vision_end|>"),
                                      ids("<|image_pad|>"))
        self.end = ids("<|im_end|>")
        self.system = self.turn("system", system_prompt)
        self.newline = self.text("\n", False)
        self.assistant = self.text("<|im_start|>assistant\n", False)

    def text(self, text: str, literal: bool) -> list:
        """Return the ids of ``text``, no special tokens added (``literal``: no control tokens)."""
        key = (text, literal)
        if key not in self._known:
            self._known[key] = list(self.tok(text, add_special_tokens=False,
                                             split_special_tokens=literal)["input_ids"])
        return self._known[key]

    def turn(self, role: str, text: str) -> list:
        """Return a complete ChatML turn's ids."""
        return self.text(f"<|im_start|>{role}\n", False) + self.text(text, True) \
            + self.text("<|im_end|>\n", False)

    def frame(self, stamp: float, camera: str) -> list:
        """Return one frame chunk's ids: tag, vision markers around the slots, newline."""
        ids = self.text(frame_tag(stamp, camera), True) + [self.vs]
        for words in TEXT[:-1]:
            ids += (self.text(words, False) if words else []) + [self.pad]
        return ids + self.text(TEXT[-1], False) + [self.ve] + self.newline

    def prompt(self, ex: Example) -> list:
        """Return the ids of everything before the answer."""
        ids = list(self.system)
        for stamp in ex.stamps:
            ids += self.frame(stamp, ex.camera)
        q = f"{ex.question} {ModelAdapter.answer_instruction}"
        return ids + self.turn("user", q) + self.assistant

    def answer(self, ex: Example) -> list:
        """Return the answer's ids and the end of the turn."""
        return self.text(ex.answer, True) + [self.end]


#: the words a visual token can be (the projector's vocabulary), by slot
EMPTY, ARUCO, QR = " nothing", " marker", " QR"
COUNT_WORDS = (" no", " one", " two", " three")
COLUMN_WORDS = tuple(f" {c}" for c in COLOURS) + (ARUCO, QR, EMPTY)
LIGHT_WORDS = tuple(f" {light}" for light in LIGHTS)
WORDS = COUNT_WORDS + COLUMN_WORDS + LIGHT_WORDS
#: each slot's words, in ``SLOTS`` order: the count, three columns, the light
SLOT_VOCAB = (COUNT_WORDS, COLUMN_WORDS, COLUMN_WORDS, COLUMN_WORDS, LIGHT_WORDS)


def slot_words(truth: Truth) -> list:
    """Return the words of a frame's tokens: count, each column's box colour or code, light."""
    words = [COUNT_WORDS[len(truth.boxes)]]
    for place in PLACES:
        here = [i for i in truth.items if i.place == place]
        item = here[0] if here else None
        words.append(EMPTY if item is None else f" {item.colour}" if item.kind == "box"
                     else ARUCO if item.kind == "aruco" else QR)
    return words + [f" {truth.light}"]
