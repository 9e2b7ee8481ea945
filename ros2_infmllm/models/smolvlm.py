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

This module also holds the small helpers the other vision adapters share (offline loading,
normalisation constants, resizing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .base import ROLES, Chunk, ModelAdapter, ModelError, check_image_max_side, offline
from .frame_describer import check_image, frame_tag

#: model_type -> transformers class name of the conditional-generation model
SMOLVLM_CLASSES = {"idefics3": "Idefics3ForConditionalGeneration",
                   "smolvlm": "SmolVLMForConditionalGeneration"}


# ---- shared helpers (also used by llava.py) ----------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    """Return the JSON object in ``path``, or ``{}`` when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


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


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to exactly ``width x height`` (area filter to shrink, bicubic to enlarge)."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_CUBIC
    return cv2.resize(image, (int(width), int(height)), interpolation=interp)


def fit_size(h: int, w: int, side: int) -> tuple[int, int]:
    """Height and width of an ``h x w`` image scaled to fit a ``side`` square (aspect kept)."""
    s = side / max(h, w)
    return max(1, min(side, round(h * s))), max(1, min(side, round(w * s)))


def to_pixels(image: np.ndarray, mean: np.ndarray, std: np.ndarray,
              scale: float) -> torch.Tensor:
    """HxWx3 uint8 RGB -> normalised float32 ``[3, H, W]`` tensor."""
    x = image.astype(np.float32) * scale
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def load_vlm(path: Path | str, device: str, dtype: torch.dtype, classes: dict[str, str],
             family: str) -> tuple[Any, Any, dict[str, Any]]:
    """Load a vision-language checkpoint + tokenizer offline; returns (model, tok, config).

    ``classes`` maps the model_types this family accepts to transformers class names. Never
    downloads, never runs remote code; raises :class:`ModelError` naming ``path``.
    """
    offline()
    p = Path(path)
    cfg = read_json(p / "config.json")
    if not cfg:
        raise ModelError(f"model directory {p} has no config.json: put a {family} transformers "
                         f"checkpoint there (config.json, weights, tokenizer, "
                         f"preprocessor_config.json)")
    model_type = str(cfg.get("model_type", ""))
    if model_type not in classes:
        raise ModelError(f"{p}: model_type {model_type!r} is not a {family} model "
                         f"(expected one of {', '.join(sorted(classes))})")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ModelError(f"model directory {p} has no weights (*.safetensors / *.bin): copy "
                         f"the full {family} checkpoint there (nothing is downloaded)")
    import transformers
    from transformers import AutoTokenizer
    cls = getattr(transformers, classes[model_type], None)
    if cls is None:
        raise ModelError(f"this transformers ({transformers.__version__}) has no "
                         f"{classes[model_type]} for {p}")
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True,
                                            trust_remote_code=False)
        model = cls.from_pretrained(str(p), local_files_only=True, trust_remote_code=False,
                                    dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot load the {family} checkpoint in {p}: "
                         f"{type(exc).__name__}: {exc}") from exc
    return model.to(device).eval(), tok, cfg


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


# ---- SmolVLM / Idefics3 -----------------------------------------------------------------
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
    check_image_max_side(image_max_side)
    p = Path(path)
    model, tok, _ = load_vlm(p, device, dtype, SMOLVLM_CLASSES, "SmolVLM/Idefics3")
    norm = image_norm(p, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return SmolVLMAdapter(model, tok, f"smolvlm ({p.name})", image_max_side, norm)


__all__ = ["SmolVLMAdapter", "VisionAdapter", "load", "load_vlm", "image_norm", "resize",
           "fit_size", "to_pixels"]
