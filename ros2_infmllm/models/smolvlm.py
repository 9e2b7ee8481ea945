"""SmolVLM / Idefics3 adapter: each frame is a tag plus a fixed number of image tokens.

Idefics3 (and SmolVLM, its small sibling, and SmolVLM2 = model_type ``smolvlm``) encodes
square tiles of ``S = vision_config.image_size`` pixels with a SigLIP tower and a
pixel-shuffle connector, so every tile costs ``(S / patch)**2 / scale_factor**2`` tokens
(64 for SmolVLM-256M/500M: S = 512, patch 16, scale 4). A frame is one global tile when
``image_max_side`` is at most about ``S`` (the default), else an ``n x n`` grid of tiles
plus the global tile, ``n = round(image_max_side / S)``; the token cost per frame is
therefore fixed whatever the frame's size. Pre-processing is done here (OpenCV resize and
the normalisation of ``preprocessor_config.json``), so no processor object is needed.
The text model is Llama-like with 1-D RoPE: positions continue from the bounded cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ModelAdapter, ModelError
from .images import fit_size, resize
from .loading import load_checkpoint
from .vision import VisionAdapter, image_norm

#: model_type -> transformers class name of the conditional-generation model
SMOLVLM_CLASSES = {"idefics3": "Idefics3ForConditionalGeneration",
                   "smolvlm": "SmolVLMForConditionalGeneration"}


class SmolVLMAdapter(VisionAdapter):
    """Idefics3 / SmolVLM: tiles of SigLIP tokens between ``<fake_token_around_image>``."""

    family = "smolvlm"

    def __init__(self, model: Any, tok: Any, name: str, image_max_side: int,
                 norm: tuple[np.ndarray, np.ndarray, float]):
        """Wrap a loaded Idefics3/SmolVLM model; ``norm`` = (mean, std, rescale)."""
        cfg = model.config
        vis = cfg.vision_config
        self.tile = int(vis.image_size)
        patch = int(vis.patch_size)
        sf = int(getattr(cfg, "scale_factor", 1) or 1)
        grid = self.tile // patch
        if grid * patch != self.tile or grid % sf:
            raise ModelError(f"vision tile {self.tile} px / patch {patch} / scale factor {sf} "
                             f"does not give a whole token grid")
        self.tile_tokens = (grid // sf) ** 2
        self.grid_n = max(1, round(image_max_side / self.tile))
        self.image_token_id = int(cfg.image_token_id)
        self.norm = norm
        bos = tok.bos_token or ""
        roles = {"system": (bos + "System: ", "<end_of_utterance>\n"),
                 "user": ("User: ", "<end_of_utterance>\n"),
                 "assistant": ("Assistant:", "<end_of_utterance>\n")}
        super().__init__(model, tok, name, image_max_side, roles)
        self._fake = self._ids("<fake_token_around_image>", False)
        self._global = self._ids("<global-img>", False)
        self._rowcol = {(r, c): self._ids(f"<row_{r + 1}_col_{c + 1}>", False)
                        for r in range(self.grid_n) for c in range(self.grid_n)}
        self._nl = self._ids("\n", False)

    @property
    def frame_vision_tokens(self) -> int:
        """Vision-related tokens per frame (placeholders + tile markers), without the tag."""
        return len(self.vision_ids())

    def vision_ids(self) -> list[int]:
        """Token ids of one frame's image part, as the Idefics3 processor lays them out."""
        img = [self.image_token_id] * self.tile_tokens
        ids: list[int] = []
        if self.grid_n > 1:
            for r in range(self.grid_n):
                for c in range(self.grid_n):
                    ids += self._fake + self._rowcol[(r, c)] + img
                ids += self._nl
            ids += self._nl
        return ids + self._fake + self._global + img + self._fake

    def vision_part(self, image: np.ndarray) -> tuple[list[int], dict[str, Any], str]:
        """Tiles (``n x n`` of the stretched frame, if any) + a letterboxed global tile."""
        s, n = self.tile, self.grid_n
        tiles: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        if n > 1:
            big = resize(image, n * s, n * s)
            for r in range(n):
                for c in range(n):
                    tiles.append(big[r * s:(r + 1) * s, c * s:(c + 1) * s])
                    masks.append(np.ones((s, s), dtype=bool))
        h, w = fit_size(image.shape[0], image.shape[1], s)
        glob = np.zeros((s, s, 3), dtype=np.uint8)
        glob[:h, :w] = resize(image, w, h)
        mask = np.zeros((s, s), dtype=bool)
        mask[:h, :w] = True
        pix = self.pixels(tiles + [glob], *self.norm)
        pix[-1, :, ~torch.from_numpy(mask)] = 0.0      # padding is zero after normalisation
        extra = {"pixel_values": pix.unsqueeze(0),
                 "pixel_attention_mask": torch.from_numpy(np.stack(masks + [mask]))
                 .unsqueeze(0).to(self.device)}
        shown = f"<image {len(tiles) + 1} tile(s) x {self.tile_tokens} tokens>"
        return self.vision_ids(), extra, shown

    def describe(self) -> dict[str, Any]:
        """Describe the model plus its per-frame token cost."""
        d = super().describe()
        d.update(tile_px=self.tile, tiles_per_frame=self.grid_n ** 2 + (self.grid_n > 1),
                 frame_vision_tokens=self.frame_vision_tokens)
        return d


def load(path: Path, device: str, dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Load an Idefics3/SmolVLM checkpoint directory as a vision adapter (registry entry)."""
    p = Path(path)
    model, tok, _ = load_checkpoint(p, device, dtype, "SmolVLM/Idefics3", SMOLVLM_CLASSES)
    norm = image_norm(p, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return SmolVLMAdapter(model, tok, f"smolvlm ({p.name})", image_max_side, norm)
