"""The base of the adapters whose frames reach the model as vision tokens, and its helpers.

:class:`VisionAdapter` gives a family per-role chat markers and frame chunks of the form
tag + the frame's vision tokens + newline; a family subclasses it and implements
:meth:`VisionAdapter.vision_part` (SmolVLM, LLaVA; Qwen2-VL also replaces the frame chunk,
which carries its M-RoPE positions and no newline). The normalisation helpers read a
checkpoint's ``preprocessor_config.json``; CLIP's mean and std are the default of the
towers that ship none (LLaVA, Qwen2-VL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ROLES, Chunk, ModelAdapter, ModelError
from .frame_describer import check_image, frame_tag
from .loading import read_json

#: CLIP normalisation, what the processors use when a checkpoint says nothing
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_norm(path: Path, default_mean: tuple[float, float, float],
               default_std: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, std and rescale factor from the checkpoint's (video) preprocessor config.

    Falls back to the family's defaults when the checkpoint ships no preprocessor config.
    """
    cfg: dict[str, Any] = {}
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        cfg = read_json(path / name)
        if cfg:
            break
    mean = np.asarray(cfg.get("image_mean", default_mean), dtype=np.float32).reshape(-1)
    std = np.asarray(cfg.get("image_std", default_std), dtype=np.float32).reshape(-1)
    if mean.size == 1:
        mean = np.repeat(mean, 3)
    if std.size == 1:
        std = np.repeat(std, 3)
    if mean.size != 3 or std.size != 3 or np.any(std <= 0):
        raise ModelError(f"bad image_mean/image_std in {path}: {mean.tolist()} {std.tolist()}")
    scale = float(cfg.get("rescale_factor", 1.0 / 255.0))
    return mean, std, scale


def to_pixels(image: np.ndarray, mean: np.ndarray, std: np.ndarray,
              scale: float) -> torch.Tensor:
    """HxWx3 uint8 RGB -> normalised float32 ``[3, H, W]`` tensor."""
    x = image.astype(np.float32) * scale
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class VisionAdapter(ModelAdapter):
    """Base of the vision adapters: per-role chat markers and frames as vision tokens.

    ``roles`` maps system/user/assistant to (opening, closing) strings; subclasses fill it
    and implement :meth:`vision_part` (the frame's placeholder ids and model inputs).
    """

    family = "vlm"
    #: frames are seen, not described: the prompt says so
    default_prompt = ("You watch a stream of camera frames. Each frame starts with a tag "
                      "[cam NAME HH:MM:SS.s] giving its camera and time. Answer questions "
                      "about what the frames show, briefly.")

    def __init__(self, model: Any, tok: Any, name: str, image_max_side: int,
                 roles: dict[str, tuple[str, str]], system_prompt: str | None = None):
        """Wrap ``model``/``tok``; ``roles`` gives the chat markers of each role."""
        if set(roles) != set(ROLES):
            raise ValueError(f"roles must define {ROLES}, got {sorted(roles)}")
        self.roles = dict(roles)
        self.turn_open, self.turn_close = roles["user"]
        super().__init__(model, tok, name, image_max_side=image_max_side,
                         system_prompt=system_prompt if system_prompt is not None
                         else self.default_prompt)
        end = roles["assistant"][1].strip()
        if end:
            tid = tok.convert_tokens_to_ids(end)
            if isinstance(tid, int) and tid != tok.unk_token_id:
                self.eos_token_ids.add(tid)
        self.pixel_dtype = next(model.parameters()).dtype

    # ---- chunks ---------------------------------------------------------------------------
    def text_chunk(self, text: str, role: str) -> Chunk:
        """One complete chat turn with this family's markers (message text kept literal)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        opening, closing = self.roles[role]
        ids = self._ids(opening, False) + self._ids(text, True) + self._ids(closing, False)
        if not ids:
            raise ValueError("text encodes to zero tokens")
        return Chunk(torch.tensor([ids], dtype=torch.long, device=self.device), role,
                     opening + text + closing)

    def answer_prefix(self) -> Chunk:
        """Return the opening of the assistant turn (the generation prompt)."""
        t = self.roles["assistant"][0]
        return Chunk(self.encode(t), "prefix", t)

    def answer_suffix(self) -> str:
        """Text closing the assistant turn (fed back in multi-round mode)."""
        return self.roles["assistant"][1]

    def vision_part(self, image: np.ndarray) -> tuple[list[int], dict[str, Any], str]:
        """Return placeholder token ids, model inputs and a log string for one frame."""
        raise NotImplementedError

    def frame_chunk(self, image_rgb: np.ndarray, stamp: float, camera: str) -> Chunk:
        """Tag ``[cam NAME HH:MM:SS.s]`` + the frame's vision tokens + newline, one chunk."""
        image = check_image(image_rgb)
        tag = frame_tag(stamp, camera)
        ids, extra, shown = self.vision_part(image)
        ids = self._ids(tag, True) + ids + self._ids("\n", False)
        return Chunk(torch.tensor([ids], dtype=torch.long, device=self.device), "frame",
                     tag + shown + "\n", extra=extra)

    def pixels(self, images: list[np.ndarray], mean: np.ndarray, std: np.ndarray,
               scale: float) -> torch.Tensor:
        """Stack normalised images ``[n, 3, H, W]`` on the model's device and dtype."""
        x = torch.stack([to_pixels(im, mean, std, scale) for im in images])
        return x.to(device=self.device, dtype=self.pixel_dtype)
