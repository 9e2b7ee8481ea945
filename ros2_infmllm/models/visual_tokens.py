"""``model: lite0-qwen2.5-0.5b``: frames as visual tokens of a small model trained here.

The paper's setting is a multimodal model whose frames enter the KV cache as visual
tokens; no VLM checkpoint can be had from the package registries, so this one is built
from two packaged parts and a projector trained in this repository (LLaVA-1.5 recipe):

- the vision tower: EfficientNet-Lite0 ImageNet (``perception.efficientnet_lite0``,
  frozen). A frame is resized whole to 224 x 224; the feature maps of stages 2, 4, 6 and
  the head (40 + 112 + 320 + 1280 channels, strides 8 to 32) plus the mean and spread of
  the RGB pixels are average-pooled to a grid of 4 rows x 3 columns. The early stages and
  the pixel statistics carry the colour the head has mostly lost;
- the projector: four visual tokens per frame, one per column (left, middle, right) from
  the mean and maximum of its cells, and one for the whole frame; each goes through
  standardisation -> Linear -> GELU -> Linear into the LM's hidden size (LLaVA-1.5's
  2-layer MLP), trained by ``python -m ros2_infmllm.train`` (docs/visual_tokens.md);
- the language model: the default Qwen2.5-Coder-0.5B-Instruct GGUF, frozen.

A frame chunk is ``[cam NAME HH:MM:SS.s]<|vision_start|> left:`` token `` middle:`` token
`` right:`` token `` light:`` token ``<|vision_end|>`` + newline: the tokens fill
``<|image_pad|>`` slots, and the words before them tell the LM which part of the frame
each one stands for. With ``frame_line`` the perception line follows. The projector ships
with the package (safetensors, a few MB) and is checked against :data:`PROJECTOR_SHA256`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .base import Chunk, ModelError
from .frame_describer import check_image, frame_tag
from .images import downscale
from .vision import VisionAdapter

#: ``model:`` name of this model
NAME = "lite0-qwen2.5-0.5b"
#: the language model it was trained on (a ``models.packaged`` name)
LM_NAME = "qwen2.5-0.5b"
#: feature maps of EfficientNet-Lite0 that feed the tokens (stage index -> channels)
STAGE_CHANNELS = {2: 40, 4: 112, 6: 320}
HEAD_CHANNELS = 1280
#: per cell: mean and standard deviation of R, G, B in [0, 1]
PIXEL_STATS = 6
FEATURES = sum(STAGE_CHANNELS.values()) + HEAD_CHANNELS + PIXEL_STATS
TOWER_SIDE = 224
#: cells the feature maps are pooled to: rows x columns
ROWS, COLS = 4, 3
#: the visual tokens of a frame: the count, the columns, the light
SLOTS = ("count", "left", "middle", "right", "light")
#: the words around them: ``TEXT[i]`` comes before token ``i`` and ``TEXT[-1]`` after the
#: last, so confident tokens read "two boxes; the left is red, the middle is nothing, the
#: right is green; the light is dim." Chosen by the ceiling diagnostic (the truth's exact
#: words in the slots, 40 held-out frames) over "... boxes: red on the left, ...; dim
#: light" and "boxes: two left: red ... light: dim" (docs/visual_tokens.md)
TEXT = ("", " boxes; the left is", ", the middle is", ", the right is", "; the light is", ".")
#: the cells each slot's token reads: a column of the grid, or the whole frame (None)
SLOT_COLUMNS = (None, 0, 1, 2, None)
#: the slot whose token says how many boxes: derived from the column tokens' box words
COUNT_SLOT = 0
#: projector input per token: mean and max of its cells' features, and its slot (one-hot)
TOKEN_INPUT = 2 * FEATURES + len(SLOTS)
PROJECTOR_FILE = Path(__file__).with_name("weights") / "lite0_qwen2.5_0.5b_projector.safetensors"
#: sha256 of the shipped projector (written by the training run that produced it)
PROJECTOR_SHA256 = "900225774ef6dff778d6a55779e219aa19a6bddcc31e80bf48e2be37fceae22f"


def pooled_features(tower: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``[n, ROWS * COLS, FEATURES]`` cell features of a normalised batch ``[n, 3, S, S]``.

    Rows are the grid's cells in raster order (top-left first); columns are the pooled
    stage maps, the head, then mean and spread of the un-normalised RGB.
    """
    from ..perception.efficientnet_lite0 import IMAGENET_MEAN, IMAGENET_STD
    maps = tower.features(batch, stages=tuple(STAGE_CHANNELS))
    pool = nn.functional.adaptive_avg_pool2d
    grid = (ROWS, COLS)
    cols = [pool(maps[f"stage{i}"], grid) for i in STAGE_CHANNELS] + [pool(maps["head"], grid)]
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1)
    rgb = batch * std + mean
    m = pool(rgb, grid)
    spread = (pool(rgb * rgb, grid) - m * m).clamp_min(0).sqrt()
    x = torch.cat(cols + [m, spread], dim=1)
    return x.flatten(2).transpose(1, 2)


def token_inputs(cells: torch.Tensor) -> torch.Tensor:
    """``[n, len(SLOTS), TOKEN_INPUT]``: each slot's cells (``SLOT_COLUMNS``), mean and max."""
    grid = cells.reshape(cells.shape[0], ROWS, COLS, cells.shape[-1])
    groups = [cells if c is None else grid[:, :, c] for c in SLOT_COLUMNS]
    rows = [torch.cat([g.mean(1), g.amax(1)], dim=-1) for g in groups]
    x = torch.stack(rows, dim=1)
    slot = torch.eye(len(SLOTS), dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
    return torch.cat([x, slot], dim=-1)


class Projector(nn.Module):
    """LLaVA-1.5's 2-layer MLP, ending in the LM's vocabulary: a mixture of word embeddings.

    The MLP's output is not a free vector of the LM's hidden size but logits over ``K``
    words (each slot its own subset, ``allowed``); a token is the softmax (``temperature``)
    mixture of those words' embedding rows. Why: the frozen LM reads its own word
    embeddings exactly, so a confident token is (nearly) the word itself, and the head is
    trained by cross-entropy on the words, with no LM forward (cheap on a CPU). The cost:
    a token can only express the span of its slot's words.

    The count slot (``COUNT_SLOT``) has no head of its own: the chance that each column
    holds a box (its ``box_words``' share) gives the distribution of the number of boxes
    (0..columns), and that mixes the ``count_words`` (e.g. `` zero`` .. `` three``).
    """

    def __init__(self, features: int, hidden: int, word_embeddings: torch.Tensor,
                 allowed: torch.Tensor, box_words: torch.Tensor, count_words: torch.Tensor,
                 temperature: float = 0.25) -> None:
        """Build an untrained head: ``word_embeddings [K, H]``, ``allowed [slots, K]`` (0/1).

        ``box_words [K]`` (0/1) marks the words that mean "a box here"; ``count_words``
        the indices of the words for 0, 1, ... boxes.
        """
        super().__init__()
        self.register_buffer("box_words", box_words.detach().float().clone())
        self.register_buffer("count_words", count_words.detach().long().clone())
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.register_buffer("word_embeddings", word_embeddings.detach().float().clone())
        self.register_buffer("allowed", allowed.detach().float().clone())
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, word_embeddings.shape[0])

    def logits(self, cells: torch.Tensor) -> torch.Tensor:
        """``[n, slots, K]`` word logits of cell features ``[n, ROWS * COLS, FEATURES]``."""
        x = (token_inputs(cells.float()) - self.feature_mean) / self.feature_std
        out = self.fc2(nn.functional.gelu(self.fc1(x)))
        return out.masked_fill(self.allowed == 0, float("-inf"))

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        """Project cell features into ``[n, slots, H]``: each slot's word mixture."""
        return self.words(cells) @ self.word_embeddings

    def words(self, cells: torch.Tensor) -> torch.Tensor:
        """Return each token's weights over the words ``[n, slots, K]`` (count derived)."""
        logits = self.logits(cells)
        p = torch.softmax(logits / self.temperature, dim=-1)
        columns = [i for i, c in enumerate(SLOT_COLUMNS) if c is not None]
        has_box = (torch.softmax(logits[:, columns], dim=-1) * self.box_words).sum(-1)
        dist = torch.ones_like(has_box[:, :1])
        for c in range(has_box.shape[1]):
            q = has_box[:, c:c + 1]
            dist = torch.cat([dist * (1 - q), torch.zeros_like(q)], 1) \
                + torch.cat([torch.zeros_like(q), dist * q], 1)
        sharp = dist.clamp_min(1e-12) ** (1.0 / self.temperature)
        count = torch.zeros_like(p[:, COUNT_SLOT])
        count[:, self.count_words] = sharp / sharp.sum(-1, keepdim=True)
        return torch.cat([p[:, :COUNT_SLOT], count[:, None], p[:, COUNT_SLOT + 1:]], 1)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_projector(projector: Projector, path: Path, meta: dict[str, Any]) -> str:
    """Write the projector (float16 weights) with ``meta`` as JSON; return its sha256."""
    from safetensors.torch import save_file

    def kept(k: str, v: torch.Tensor) -> torch.dtype:
        return torch.float16 if k.startswith("fc") else \
            torch.float32 if v.is_floating_point() else v.dtype
    state = {k: v.detach().to("cpu", kept(k, v)).contiguous()
             for k, v in projector.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"meta": json.dumps(meta)})
    return sha256_file(path)


def load_projector(path: Path = PROJECTOR_FILE, sha256: str | None = PROJECTOR_SHA256
                   ) -> tuple[Projector, dict[str, Any]]:
    """Read a projector file, checking its sha256 (``None`` skips the check, for training).

    Raises :class:`ModelError` saying what is wrong when the file is missing or differs
    from the shipped one.
    """
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{NAME}: projector weights missing: {path} (they ship with the "
                         f"package; re-install it, or retrain: python -m ros2_infmllm.train)")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise ModelError(f"{NAME}: projector checksum mismatch for {path}: sha256 {got}, "
                             f"expected {sha256} (a damaged or foreign file; re-install the "
                             f"package)")
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        header = f.metadata() or {}
    proj = Projector(state["fc1.weight"].shape[1], state["fc1.weight"].shape[0],
                     state["word_embeddings"], state["allowed"], state["box_words"],
                     state["count_words"])
    proj.load_state_dict({k: v.float() if v.is_floating_point() else v
                          for k, v in state.items()}, strict=True)
    return proj.eval().requires_grad_(False), json.loads(header.get("meta", "{}"))


def check_words(projector: Projector, meta: dict, model: Any, tok: Any) -> None:
    """Fail unless the projector's word rows are this LM's embeddings of its words.

    Why: the tokens are mixtures of those rows; a projector trained for another LM or
    tokenizer would hand this one vectors it never reads as the words.
    """
    words = meta.get("words") or []
    ids = [tok(w, add_special_tokens=False)["input_ids"] for w in words]
    if len(words) != projector.word_embeddings.shape[0] or any(len(i) != 1 for i in ids):
        raise ModelError(f"{NAME}: the projector's words {words} are not one token each "
                         f"in this tokenizer (trained for another LM?)")
    rows = model.get_input_embeddings().weight[[i[0] for i in ids]].detach().float().cpu()
    if not torch.allclose(rows, projector.word_embeddings.cpu(), rtol=0.0, atol=2e-2):
        raise ModelError(f"{NAME}: the projector's word embeddings differ from this LM's "
                         f"(trained for another LM: {meta.get('lm')})")


class VisualTokenAdapter(VisionAdapter):
    """Qwen2.5 (ChatML) with EfficientNet-Lite0 cells projected into its embedding space."""

    family = "lite0-qwen2"

    def __init__(self, model: Any, tok: Any, tower: nn.Module, projector: Projector,
                 image_max_side: int = 384, frame_line: bool = False, name: str = NAME):
        """Wrap the LM, tower and projector; ``frame_line`` adds the perception line."""
        roles = {r: (f"<|im_start|>{r}\n", "<|im_end|>\n")
                 for r in ("system", "user", "assistant")}
        super().__init__(model, tok, name, image_max_side, roles)
        self.tower = tower.to(self.device)
        self.projector = projector.to(self.device)
        self.frame_line = frame_line
        ids = {t: tok.convert_tokens_to_ids(t)
               for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")}
        if any(not isinstance(v, int) or v == tok.unk_token_id for v in ids.values()):
            raise ModelError(f"{name}: the tokenizer lacks the vision tokens: {ids}")
        self.vision_start_id = ids["<|vision_start|>"]
        self.vision_end_id = ids["<|vision_end|>"]
        self.image_token_id = ids["<|image_pad|>"]

        self.set_wording(TEXT)

    def set_wording(self, text: Sequence[str]) -> None:
        """Use ``text`` (the pieces around the slots, as :data:`TEXT`) for the next frames.

        Why: the wording needs no retraining, so a study of wordings (train.evaluate
        ``--text``) swaps it on a loaded model.
        """
        if len(text) != len(TEXT):
            raise ValueError(f"wording needs {len(TEXT)} pieces (as TEXT), got {len(text)}")
        self._text_ids = [self._ids(w, False) if w else [] for w in text]

    @property
    def image_tokens(self) -> int:
        """Visual tokens per frame (three columns and the whole frame)."""
        return len(SLOTS)

    def vision_part(self, image: np.ndarray) -> tuple[list[int], dict[str, Any], str]:
        """Markers, slot words and pads, and the frame's cell features (the tower runs here)."""
        from ..perception.efficientnet_lite0 import to_batch
        with torch.no_grad():
            feats = pooled_features(self.tower, to_batch(image, TOWER_SIDE).to(self.device))
        ids = [self.vision_start_id]
        for words in self._text_ids[:-1]:
            ids += words + [self.image_token_id]
        ids += self._text_ids[-1] + [self.vision_end_id]
        # the text shown for the frame (memory view, memory log) names no number: the LM
        # read "<4 visual tokens>" in the log as a count of boxes
        return ids, {"cell_features": feats}, "<visual tokens>"

    def frame_chunk(self, image_rgb: np.ndarray, stamp: float, camera: str) -> Chunk:
        """Tag + visual tokens (+ the perception line when ``frame_line``) + newline."""
        image = check_image(image_rgb)
        tag = frame_tag(stamp, camera)
        ids, extra, shown = self.vision_part(image)
        line = ""
        if self.frame_line:
            described = self.describer.describe(downscale(image, self.image_max_side),
                                                stamp, camera, full=image)
            line = " " + described[len(tag):].strip()
        ids = self._ids(tag, True) + ids + self._ids(line, True) + self._ids("\n", False)
        return Chunk(torch.tensor([ids], dtype=torch.long, device=self.device), "frame",
                     tag + shown + line + "\n", extra=extra)

    def embed(self, input_ids: torch.Tensor, cell_features: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the projected cells in the ``<|image_pad|>`` slots.

        ``cell_features`` is ``[n_frames, cells, FEATURES]`` for the frames in order.
        """
        embeds = self.model.get_input_embeddings()(input_ids)
        slots = input_ids == self.image_token_id
        proj = self.projector(cell_features)
        embeds[slots] = proj.reshape(-1, proj.shape[-1]).to(embeds.dtype)
        return embeds

    def forward(self, chunk: Chunk, cache: Any, logits: bool = True) -> torch.Tensor | None:
        """Prefill ``chunk``; a frame's pads get its projected cells as input embeddings."""
        feats = chunk.extra.get("cell_features")
        if feats is None:
            return super().forward(chunk, cache, logits)
        start = cache.next_position()
        pos = torch.arange(start, start + chunk.n_tokens, device=self.device).unsqueeze(0)
        with torch.no_grad():
            embeds = self.embed(chunk.input_ids, feats)
        return self.run_model(chunk, cache, pos, logits, embeds=embeds)

    def describe(self) -> dict[str, Any]:
        """Describe the model plus its visual-token geometry."""
        d = super().describe()
        d.update(image_tokens_per_frame=self.image_tokens, cells=f"{ROWS}x{COLS}",
                 tower="efficientnet-lite0 (ImageNet, frozen)", frame_line=self.frame_line,
                 projector=str(PROJECTOR_FILE.name))
        return d


def adapter(weights: Any, name: str, spec: Any, device: str, dtype: torch.dtype,
            image_max_side: int = 384) -> VisualTokenAdapter:
    """Wrap the LM's weights (registry entry point) with the tower and shipped projector.

    ``weights`` is the registry's ``loading.Checkpoint`` of the default LM's GGUF, already
    on ``device`` in ``dtype``; the tower and projector stay float32 (small beside the LM).
    The projector's checksum is checked first, so a damaged file fails before anything.
    """
    from ..perception.efficientnet_lite0 import MissingWeights, load_efficientnet_lite0
    projector, meta = load_projector()
    check_words(projector, meta, weights.model, weights.tokenizer)
    try:
        tower = load_efficientnet_lite0()
    except MissingWeights as exc:
        raise ModelError(f"{name}: {exc}") from exc
    return VisualTokenAdapter(weights.model, weights.tokenizer, tower, projector,
                              image_max_side, name=f"{name} ({spec.summary})")
