"""Object part: what is in view, in plain nouns, from EfficientNet-Lite0's ImageNet head.

One forward pass of the whole frame (aspect kept, ``height`` px tall) gives a grid of
1280-channel features; the ImageNet head is applied to the features pooled over the whole
frame, over its left, centre and right thirds and over the six tiles of two rows by those
thirds, so an object that fills only a sixth of the frame still wins its tile (tuning
images: 17 of 32 named with tiles at 288 px, 11 without). Class probabilities are summed per noun
(:mod:`.imagenet_nouns`: 120 dog breeds are one ``dog``), and a noun is kept only when
its best region is confident; its place is that region's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from .imagenet_nouns import NOUNS
from .part import MissingModel, Observation, Part, View

#: (name, first and last third of the width, first and last half of the height); the
#: whole frame (the first) is not placed, the others are placed by their thirds
REGIONS = (("whole", 0, 3, 0, 2), ("left", 0, 1, 0, 2), ("centre", 1, 2, 0, 2),
           ("right", 2, 3, 0, 2)) + tuple(
    (f"{row}-{col}", a, a + 1, r, r + 1) for r, row in enumerate(("top", "bottom"))
    for a, col in enumerate(("left", "centre", "right")))


@functools.lru_cache(maxsize=1)
def _backbone():
    """Load the frozen network once, shared by every object part of the process."""
    from .efficientnet_lite0 import load_efficientnet_lite0
    return load_efficientnet_lite0()


def detail(rgb: np.ndarray) -> float:
    """Share of strong edges of a 128x96 grey copy (how much there is to recognise)."""
    grey = cv2.cvtColor(cv2.resize(rgb, (128, 96), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return float((np.hypot(gx, gy) > 60).mean())


@dataclass
class ObjectsPart(Part):
    """Nouns of confident ImageNet classes, on the frame and on its thirds.

    Parameters
    ----------
    min_score : float, default 0.4
        Least summed probability of a noun in its best region.
    max_items : int, default 3
        Nouns kept per frame, most confident first.
    height : int, default 288
        Rows of the network input (the width follows the frame's aspect, at most 2x).
    min_detail : float, default 0.08
        Least share of strong edges (Sobel magnitude over 60 on a 128x96 grey copy) for
        the classifier to run. Why: on a flat, featureless picture ImageNet still names
        something (``laptop`` at 0.5 on the rendered scenes' gray floor, whose share is
        about 0.03); the real photographs of the eyes test all have 0.09 or more.
    threads : int, default 1
        torch intra-op threads for the forward (the process's setting is restored after).
        Why: on two busy cores a 2-thread forward mostly waits at its own barrier (measured
        at load 7.6: 450-1500 ms a frame with 2 threads, 153-222 ms with 1).
    every : int, default 2
        Schedule (see :class:`~.part.Part`): at least every second frame.
    """

    min_score: float = 0.4
    max_items: int = 3
    min_detail: float = 0.08
    threads: int = 1
    height: int = 288
    every: int = 2

    name: ClassVar[str] = "objects"

    def load(self) -> None:
        """Load the packaged backbone (once per process) or raise MissingModel."""
        from .efficientnet_lite0 import MissingWeights
        try:
            self._net = _backbone()
        except MissingWeights as exc:
            raise MissingModel(str(exc)) from exc
        self._nouns = sorted(set(NOUNS.values()))
        to_noun = {n: i for i, n in enumerate(self._nouns)}
        self._classes = np.array(sorted(NOUNS), np.int64)
        index = np.array([to_noun[NOUNS[c]] for c in self._classes], np.int64)
        self._noun_of = index

    def scores(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Per region (``REGIONS``), the summed probability of every noun (``_nouns``)."""
        import torch
        from .efficientnet_lite0 import IMAGENET_MEAN, IMAGENET_STD
        h, w = rgb.shape[:2]
        width = int(min(2.0, max(1.0, w / h)) * self.height) // 32 * 32
        x = cv2.resize(rgb, (width, self.height), interpolation=cv2.INTER_AREA)
        x = (x.astype(np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / \
            np.float32(IMAGENET_STD)
        batch = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
        before = torch.get_num_threads()
        if before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._pooled_scores(batch)
        finally:
            if before != self.threads:
                torch.set_num_threads(before)

    def _pooled_scores(self, batch) -> dict[str, np.ndarray]:
        """Return noun scores per region of one normalised batch (see :meth:`scores`)."""
        import torch
        with torch.inference_mode():
            head = self._net.features(batch)["head"][0]
            rows, cols = head.shape[1:]
            pooled = torch.stack([
                head[:, r0 * rows // 2:max(r0 * rows // 2 + 1, r1 * rows // 2),
                     a * cols // 3:max(a * cols // 3 + 1, b * cols // 3)].mean((1, 2))
                for _, a, b, r0, r1 in REGIONS])
            probs = torch.softmax(self._net.get_submodule("_fc")(pooled), -1).numpy()
        out = {}
        for (name, *_), p in zip(REGIONS, probs):
            summed = np.zeros(len(self._nouns), np.float64)
            np.add.at(summed, self._noun_of, p[self._classes])
            out[name] = summed
        return out

    def see(self, view: View) -> list[Observation]:
        """Up to ``max_items`` nouns, each placed in its most confident third."""
        if detail(view.rgb) < self.min_detail:
            return []
        scores = self.scores(view.rgb)
        found = []
        for k, noun in enumerate(self._nouns):
            best, where = max((float(scores[r[0]][k]), i) for i, r in enumerate(REGIONS))
            if best < self.min_score:
                continue
            _, a, b, _, _ = REGIONS[where]
            found.append((best, noun, a, b, where))
        found.sort(key=lambda f: (-f[0], f[1]))
        return [Observation(noun, (a / 3.0, 0.0, (b - a) / 3.0, 1.0), best, self.name,
                            placed=where != 0)
                for best, noun, a, b, where in found[:self.max_items]]
