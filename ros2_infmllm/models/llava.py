"""LLaVA adapters: LLaVA(-1.5) frames as images, OneVision / NeXT-Video frames as 1-frame videos.

- ``llava``: a CLIP/SigLIP tower at its native ``S = vision_config.image_size`` and a
  projector; a frame is padded to a square with the mean colour (LLaVA-1.5's "pad" mode),
  resized to ``S x S`` and costs ``(S / patch)**2`` tokens (576 for LLaVA-1.5: 336 / 14).
- ``llava_onevision`` and ``llava_next_video``: their image path is "anyres" (a variable
  number of tiles per image), which breaks a flat per-frame cost, so each frame goes
  through their *video* path as a one-frame video (what they were trained on for streams):
  the frame is stretched to ``S x S`` and pooled, ``ceil(g / 2)**2 + 1`` tokens for
  OneVision (196 + 1 newline for 384 / 14) and ``(g // stride)**2`` for NeXT-Video
  (144 for 336 / 14, stride 2), with ``g = S / patch``.

``image_max_side`` does not change the token cost here (the towers have fixed sizes); it
only matters to callers that downscale frames before ingest. The language models use
1-D RoPE (Llama / Mistral / Qwen2), so positions continue from the bounded cache. Chat
markers: ChatML when the checkpoint's chat template (or vocabulary) uses ``<|im_start|>``,
else (template with ``ASSISTANT:``, or no ChatML token) the Vicuna ``USER: ... ASSISTANT:``
format of LLaVA-1.5 / NeXT-Video.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ModelAdapter, ModelError
from .images import resize
from .loading import load_checkpoint, read_json
from .vision import CLIP_MEAN, CLIP_STD, VisionAdapter, image_norm

LLAVA_CLASSES = {"llava": "LlavaForConditionalGeneration",
                 "llava_onevision": "LlavaOnevisionForConditionalGeneration",
                 "llava_next_video": "LlavaNextVideoForConditionalGeneration"}
#: vision towers whose token count is known: model_type -> has a CLS token
TOWERS = {"clip_vision_model": True, "siglip_vision_model": False}


def frame_tokens(cfg: Any) -> tuple[str, int]:
    """Return (``"image"`` or ``"video"``, placeholder tokens per frame) for a config.

    Raises :class:`ModelError` for a vision tower or layout this adapter cannot cost.
    """
    vis = cfg.vision_config
    tower = getattr(vis, "model_type", "")
    if tower not in TOWERS:
        raise ModelError(f"{cfg.model_type}: vision tower {tower!r} is not supported "
                         f"(supported: {', '.join(TOWERS)})")
    size, patch = int(vis.image_size), int(vis.patch_size)
    g = size // patch
    if g * patch != size:
        raise ModelError(f"vision image_size {size} is not a multiple of patch {patch}")
    hidden = g * g + (1 if TOWERS[tower] else 0)
    kept = hidden - (1 if cfg.vision_feature_select_strategy == "default" else 0)
    if cfg.model_type == "llava":
        return "image", kept
    if kept != g * g:
        raise ModelError(f"{cfg.model_type}: {kept} vision features per frame do not form "
                         f"the {g}x{g} grid its video pooling needs")
    if cfg.model_type == "llava_onevision":
        return "video", math.ceil(g / 2) ** 2 + 1
    stride = int(cfg.spatial_pool_stride)
    return "video", (g // stride) ** 2


def chat_roles(tok: Any, path: Path) -> tuple[str, dict[str, tuple[str, str]]]:
    """Pick ChatML or Vicuna markers from the checkpoint's chat template (else vocabulary)."""
    template = getattr(tok, "chat_template", None) or ""
    if not isinstance(template, str):
        template = str(template)
    if not template and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    if not template:
        template = str(read_json(path / "chat_template.json").get("chat_template", ""))
    if "<|im_start|>" in template:
        chatml = True
    elif "ASSISTANT:" in template:
        chatml = False
    else:
        tid = tok.convert_tokens_to_ids("<|im_start|>")
        chatml = isinstance(tid, int) and tid != tok.unk_token_id
    if chatml:
        return "chatml", {r: (f"<|im_start|>{r}\n", "<|im_end|>\n")
                          for r in ("system", "user", "assistant")}
    eos = tok.eos_token or "\n"
    return "vicuna", {"system": (tok.bos_token or "", " "), "user": ("USER: ", " "),
                      "assistant": ("ASSISTANT:", eos)}


class LlavaAdapter(VisionAdapter):
    """LLaVA family: one image (``llava``) or one-frame video (OneVision, NeXT-Video)."""

    family = "llava"

    def __init__(self, model: Any, tok: Any, name: str, image_max_side: int,
                 norm: tuple[np.ndarray, np.ndarray, float], path: Path):
        """Wrap a loaded LLaVA-family model; ``norm`` = (mean, std, rescale)."""
        cfg = model.config
        self.mode, self.tokens = frame_tokens(cfg)
        self.size = int(cfg.vision_config.image_size)
        key = "image_token_id" if self.mode == "image" else "video_token_id"
        tid = getattr(cfg, key, None)
        if not isinstance(tid, int):
            raise ModelError(f"{path}: config has no {key}")
        self.placeholder_id = tid
        self.norm = norm
        self.chat, roles = chat_roles(tok, path)
        super().__init__(model, tok, name, image_max_side, roles)
        self._nl = self._ids("\n", False)

    @property
    def frame_vision_tokens(self) -> int:
        """Vision placeholder tokens per frame (plus the newline before them)."""
        return self.tokens + len(self._nl)

    def square(self, image: np.ndarray) -> np.ndarray:
        """Frame as the tower's ``S x S`` input: padded with the mean colour, or stretched."""
        if self.mode == "image":
            h, w = image.shape[:2]
            side = max(h, w)
            fill = np.clip(np.round(self.norm[0] / self.norm[2]), 0, 255).astype(np.uint8)
            sq = np.empty((side, side, 3), dtype=np.uint8)
            sq[:] = fill
            top, left = (side - h) // 2, (side - w) // 2
            sq[top:top + h, left:left + w] = image
            image = sq
        return resize(image, self.size, self.size)

    def vision_part(self, image: np.ndarray) -> tuple[list[int], dict[str, Any], str]:
        """Return newline + placeholders and ``pixel_values`` / ``pixel_values_videos``."""
        pix = self.pixels([self.square(image)], *self.norm)
        extra = {"pixel_values": pix} if self.mode == "image" else \
            {"pixel_values_videos": pix.unsqueeze(0)}
        ids = self._nl + [self.placeholder_id] * self.tokens
        return ids, extra, f"\n<{self.mode} x {self.tokens} tokens>"

    def describe(self) -> dict[str, Any]:
        """Describe the model plus its per-frame token cost and chat format."""
        d = super().describe()
        d.update(frame_mode=self.mode, frame_vision_tokens=self.frame_vision_tokens,
                 chat_format=self.chat, tower_px=self.size)
        return d


def load(path: Path, device: str, dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Load a LLaVA / LLaVA-OneVision / LLaVA-NeXT-Video directory (registry entry point)."""
    p = Path(path)
    cfg = read_json(p / "config.json")
    vis_type = str((cfg.get("vision_config") or {}).get("model_type", "clip_vision_model"))
    if cfg and vis_type not in TOWERS:     # fail before loading gigabytes of weights
        raise ModelError(f"{p}: vision tower {vis_type!r} is not supported by the LLaVA "
                         f"adapter (supported: {', '.join(TOWERS)})")
    model, tok, _ = load_checkpoint(p, device, dtype, "LLaVA", LLAVA_CLASSES)
    siglip = model.config.vision_config.model_type == "siglip_vision_model"
    norm = image_norm(p, (0.5, 0.5, 0.5) if siglip else CLIP_MEAN,
                      (0.5, 0.5, 0.5) if siglip else CLIP_STD)
    return LlavaAdapter(model, tok, f"{model.config.model_type} ({p.name})", image_max_side,
                        norm, p)
