"""Qwen2-VL / Qwen2.5-VL: frames become vision tokens with M-RoPE positions.

One frame is one chunk: ``[cam NAME HH:MM:SS.s]`` (text) + ``<|vision_start|>`` + one
``<|image_pad|>`` per merged patch + ``<|vision_end|>``. Every frame is resized to the
same square side (``image_max_side`` rounded down to a multiple of patch x merge), so
every frame costs the same number of tokens and ingest cost stays flat.

Positions (M-RoPE, three rows t/h/w) are built as Qwen2-VL's own ``get_rope_index``
builds them for one image: text tokens sit at ``p, p+1, ...`` on all rows; the image
starts at ``g`` (after ``<|vision_start|>``) with ``t = g``, ``h = g + row``,
``w = g + column`` of the merged grid; ``<|vision_end|>`` follows at ``g + grid side``.
The chunk carries these positions relative to its start; :meth:`Qwen2VLAdapter.forward`
adds ``cache.next_position()`` and records them with ``cache.set_next_positions`` so the
bounded memory can re-position kept tokens exactly (memory/rope.py). Text chunks use the
base adapter's ``next_position() + arange`` on all rows.

Pixel preprocessing (resize, rescale, normalise, patchify into Qwen2-VL's flattened
patch layout) is done here with OpenCV/numpy/torch, with the mean/std of the checkpoint's
``preprocessor_config.json``; tests check it against transformers' image processor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..memory.rope import Rotation
from .base import ROLES, Chunk, ModelError
from .frame_describer import check_image, frame_tag
from .images import resize
from .loading import load_checkpoint, read_json
from .vision import CLIP_MEAN, CLIP_STD, VisionAdapter

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"

SYSTEM_PROMPT = ("You watch camera frames. Each frame is an image preceded by a tag "
                 "[cam NAME HH:MM:SS.s] with its camera and time. Answer questions about "
                 "them briefly.")


@dataclass
class VisionPreprocess:
    """How frames become Qwen2-VL ``pixel_values`` (the image processor's parameters).

    Parameters
    ----------
    patch_size : int
        Side of one vision patch in pixels (14 for Qwen2-VL).
    merge_size : int
        Patches merged per side into one LLM token (2).
    temporal_patch_size : int
        Frames per temporal patch (2); a still frame is repeated to fill it.
    image_mean, image_std : tuple of float
        Per-channel normalisation after rescaling (RGB order).
    rescale_factor : float
        Multiplier taking uint8 values to [0, 1].
    channels : int
        Input channels of the vision tower (3).
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    rescale_factor: float = 1.0 / 255.0
    channels: int = 3

    def __post_init__(self) -> None:
        """Validate as soon as the parameters exist."""
        for name in ("patch_size", "merge_size", "temporal_patch_size", "channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.image_mean = tuple(float(x) for x in self.image_mean)
        self.image_std = tuple(float(x) for x in self.image_std)
        if len(self.image_mean) != self.channels or len(self.image_std) != self.channels:
            raise ValueError(f"image_mean/image_std need {self.channels} values, got "
                             f"{self.image_mean} / {self.image_std}")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be > 0, got {self.image_std}")

    @property
    def factor(self) -> int:
        """Pixels per LLM token along one side (patch x merge, 28 for Qwen2-VL)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: channels x temporal x patch x patch."""
        return self.channels * self.temporal_patch_size * self.patch_size ** 2

    def frame_side(self, image_max_side: int) -> int:
        """Square side for every frame: ``image_max_side`` rounded down to ``factor``.

        At least two LLM tokens per side (the processor's own minimum of 56 x 56 pixels).
        """
        if isinstance(image_max_side, bool) or not isinstance(image_max_side, int) \
                or image_max_side < 1:
            raise ValueError(f"image_max_side must be an int >= 1, got {image_max_side!r}")
        return max(2, image_max_side // self.factor) * self.factor

    def patchify(self, image: np.ndarray, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Normalise and flatten an RGB uint8 image whose sides are multiples of ``factor``.

        The work runs on ``device``: the uint8 frame is copied there first (a quarter of
        the float32 patches' bytes, and no host-side elementwise passes).

        Returns ``pixel_values`` ``[grid_h * grid_w, patch_dim]`` float32 in the order the
        vision tower expects (merge blocks row-major, the patches of each block row-major
        inside it; each patch laid out channel, time, row, column) and ``(1, grid_h,
        grid_w)``.
        """
        h, w, c = image.shape
        f, p, m, t = self.factor, self.patch_size, self.merge_size, self.temporal_patch_size
        if c != self.channels or h % f or w % f:
            raise ValueError(f"image {tuple(image.shape)} must be HxWx{self.channels} with "
                             f"sides divisible by {f}")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).to(torch.float32)
        x = x * self.rescale_factor
        mean = torch.tensor(self.image_mean, dtype=torch.float32, device=device)
        std = torch.tensor(self.image_std, dtype=torch.float32, device=device)
        x = ((x - mean) / std).permute(2, 0, 1)                          # [C, H, W]
        gh, gw = h // p, w // p
        x = x.reshape(c, gh // m, m, p, gw // m, m, p)
        x = x.permute(1, 4, 2, 5, 0, 3, 6)             # [bh, bw, mh, mw, C, p, p]
        x = x.unsqueeze(5).expand(*x.shape[:5], t, p, p)  # a still frame fills the time axis
        return x.reshape(gh * gw, self.patch_dim).contiguous(), (1, gh, gw)

    def pixel_values(self, image_rgb: np.ndarray, side: int, device: str | torch.device = "cpu"
                     ) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Resize to ``side`` x ``side`` and patchify on ``device`` (see :meth:`patchify`)."""
        return self.patchify(resize(image_rgb, side, side, by_longer_side=True), device)

    @classmethod
    def from_checkpoint(cls, path: Path | None, vision_config: Any) -> "VisionPreprocess":
        """Parameters from ``vision_config`` and (if present) ``preprocessor_config.json``.

        Raises ModelError when the two disagree on the patch geometry.
        """
        geo = {"patch_size": int(getattr(vision_config, "patch_size", 14)),
               "merge_size": int(getattr(vision_config, "spatial_merge_size", 2)),
               "temporal_patch_size": int(getattr(vision_config, "temporal_patch_size", 2)),
               "channels": int(getattr(vision_config, "in_channels", 3))}
        extra: dict[str, Any] = {}
        pre = Path(path) / "preprocessor_config.json" if path is not None else None
        data = read_json(pre) if pre is not None else {}
        for key in ("patch_size", "merge_size", "temporal_patch_size"):
            if key in data and int(data[key]) != geo[key]:
                raise ModelError(f"{pre}: {key}={data[key]} but the vision config says "
                                 f"{geo[key]}")
        for key in ("image_mean", "image_std", "rescale_factor"):
            if data.get(key) is not None:
                extra[key] = data[key]
        try:
            return cls(**geo, **extra)
        except ValueError as exc:
            raise ModelError(f"bad image preprocessing parameters in {path}: {exc}") from exc


def frame_positions(n_text: int, grid_hw: tuple[int, int]) -> torch.Tensor:
    """M-RoPE positions ``[3, q]`` of one frame chunk, relative to its first token.

    ``n_text`` tokens (tag + ``<|vision_start|>``) at ``0..n_text-1`` on all rows, the
    merged ``grid_hw`` image at ``t = g, h = g + row, w = g + column`` with ``g = n_text``,
    then ``<|vision_end|>`` at ``g + max(grid_h, grid_w)``, as Qwen2-VL's get_rope_index.
    """
    gh, gw = grid_hw
    text = torch.arange(n_text).expand(3, n_text)
    rows = torch.arange(gh).repeat_interleave(gw)
    cols = torch.arange(gw).repeat(gh)
    image = torch.stack([torch.zeros_like(rows), rows, cols]) + n_text
    end = torch.full((3, 1), n_text + max(gh, gw))
    return torch.cat([text, image, end], dim=1)


class Qwen2VLAdapter(VisionAdapter):
    """Qwen2-VL / Qwen2.5-VL: frames as vision tokens, M-RoPE positions for the memory."""

    family = "qwen2_vl"
    rotation = Rotation.MROPE
    default_prompt = SYSTEM_PROMPT

    def __init__(self, model: Any, tokenizer: Any, name: str, image_max_side: int = 384,
                 preprocess: VisionPreprocess | None = None,
                 system_prompt: str | None = None):
        """Wrap a loaded Qwen2-VL model + tokenizer (the base switches its attention)."""
        chatml = {role: (f"<|im_start|>{role}\n", "<|im_end|>\n") for role in ROLES}
        super().__init__(model, tokenizer, name, image_max_side, chatml, system_prompt)
        cfg = model.config
        self.family = str(getattr(cfg, "model_type", "qwen2_vl"))
        self.preprocess = preprocess if preprocess is not None else \
            VisionPreprocess.from_checkpoint(None, cfg.vision_config)
        self.image_token_id = self._special_id(IMAGE_PAD, "image_token_id")
        self.vision_start_id = self._special_id(VISION_START, "vision_start_token_id")
        self.vision_end_id = self._special_id(VISION_END, "vision_end_token_id")
        self.frame_side = self.preprocess.frame_side(image_max_side)
        grid = self.frame_side // self.preprocess.patch_size
        #: patch grid ``(t, h, w)`` of every frame (the fixed frame side)
        self.frame_grid = (1, grid, grid)
        self.llm_grid = grid // self.preprocess.merge_size
        self.image_tokens = self.llm_grid ** 2
        if hasattr(model, "model") and hasattr(model.model, "visual"):
            self.pixel_dtype = next(model.model.visual.parameters()).dtype
        #: ``pixel_values`` of one frame -> its image features, set by an accelerator
        #: (``accel/vision_graph.py``); None runs the model's own tower inside its forward
        self.image_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _special_id(self, token: str, config_key: str) -> int:
        """Id of a vision marker: the config's (what the model matches) or the tokenizer's."""
        tid = getattr(self.model.config, config_key, None)
        from_tok = self.tokenizer.convert_tokens_to_ids(token)
        if from_tok == self.tokenizer.unk_token_id:
            from_tok = None
        if tid is None:
            tid = from_tok
        if tid is None:
            raise ModelError(f"{self.name}: neither config.{config_key} nor the tokenizer "
                             f"defines {token}")
        if from_tok is not None and int(from_tok) != int(tid):
            raise ModelError(f"{self.name}: tokenizer maps {token} to {from_tok} but "
                             f"config.{config_key} is {tid}; tokenizer and model disagree")
        return int(tid)

    def frame_tokens(self, tag: str = "") -> int:
        """Tokens one frame chunk costs: the tag's + 2 markers + the fixed image tokens."""
        return (len(self._ids(tag, True)) if tag else 0) + 2 + self.image_tokens

    def vision_part(self, image: np.ndarray) -> tuple[list[int], dict[str, Any], str]:
        """Return the markers around the image pads, ``pixel_values`` and ``image_grid_thw``."""
        pix, thw = self.preprocess.pixel_values(image, self.frame_side, self.device)
        ids = [self.vision_start_id] + [self.image_token_id] * self.image_tokens \
            + [self.vision_end_id]
        extra = {"pixel_values": pix.to(self.pixel_dtype),
                 "image_grid_thw": torch.tensor([thw], dtype=torch.long, device=self.device)}
        return ids, extra, ""

    def frame_chunk(self, image_rgb: np.ndarray, stamp: float, camera: str) -> Chunk:
        """Tag text + vision tokens of one frame (no newline), with relative M-RoPE positions."""
        tag = frame_tag(stamp, camera)
        tag_ids = self._ids(tag, True)
        ids, extra, _ = self.vision_part(check_image(image_rgb))
        pos = frame_positions(len(tag_ids) + 1, (self.llm_grid, self.llm_grid))
        return Chunk(torch.tensor([tag_ids + ids], dtype=torch.long, device=self.device),
                     "frame", tag, extra, pos.to(self.device))

    def forward(self, chunk: Chunk, cache: Any, logits: bool = True) -> torch.Tensor | None:
        """Prefill ``chunk``; image chunks pass their 3-row positions and tell the cache."""
        if chunk.position_ids is None:
            return super().forward(chunk, cache, logits)
        rel = chunk.position_ids
        if rel.dim() != 2 or rel.shape[0] != 3 or rel.shape[1] != chunk.n_tokens:
            raise ValueError(f"M-RoPE chunk positions must be [3, {chunk.n_tokens}], got "
                             f"{tuple(rel.shape)}")
        pos = (rel.to(self.device) + cache.next_position()).unsqueeze(1)     # [3, 1, q]
        cache.set_next_positions(pos)
        pixels = chunk.extra.get("pixel_values")
        if self.image_encoder is None or pixels is None:
            return self.run_model(chunk, cache, pos, logits)
        with torch.no_grad():
            # the pads sit just before <|vision_end|> (see frame_chunk)
            embeds = self.model.get_input_embeddings()(chunk.input_ids)
            end = chunk.n_tokens - 1
            embeds[0, end - self.image_tokens:end] = self.image_encoder(pixels).to(embeds.dtype)
        return self.run_model(chunk, cache, pos, logits, embeds=embeds)

    def describe(self) -> dict[str, Any]:
        """Describe the model as the base does, plus the fixed frame geometry."""
        d = super().describe()
        d.update({"frame_side_px": self.frame_side, "image_tokens_per_frame": self.image_tokens})
        return d


#: model_type -> transformers class of the checkpoints this adapter loads
QWEN2_VL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration",
                    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}


def load(path: Path | str, device: str, dtype: torch.dtype,
         image_max_side: int = 384) -> Qwen2VLAdapter:
    """Load a qwen2_vl / qwen2_5_vl checkpoint directory offline (registry entry point).

    Raises :class:`ModelError` naming ``path`` when files are missing or unreadable.
    """
    p = Path(path)
    model, tok, cfg = load_checkpoint(p, device, dtype, "Qwen2-VL", QWEN2_VL_CLASSES)
    model_type = cfg["model_type"]
    pre = VisionPreprocess.from_checkpoint(p, model.config.vision_config)
    return Qwen2VLAdapter(model, tok, f"{model_type} ({p.name})", image_max_side=image_max_side,
                          preprocess=pre)
