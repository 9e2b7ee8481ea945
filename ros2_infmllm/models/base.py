"""Model adapter protocol, the Chunk dataclass and the device/dtype choice.

An adapter turns frames and text into token chunks for one model family and runs them
against a :class:`ros2_infmllm.memory.BoundedCache`. The base class here is complete for
text-only causal LMs (frames reach them through the OpenCV frame describer); families
with vision tokens or M-RoPE override :meth:`ModelAdapter.frame_chunk` and
:meth:`ModelAdapter.forward`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..memory.rope import Rotation
from .frame_describer import FrameDescriber, check_image
from .images import downscale

ROLES = ("system", "user", "assistant")


def check_image_max_side(image_max_side: Any) -> None:
    """Raise ValueError unless ``image_max_side`` is an int >= 16 (pixels)."""
    if isinstance(image_max_side, bool) or not isinstance(image_max_side, int) \
            or image_max_side < 16:
        raise ValueError(f"image_max_side must be an int >= 16, got {image_max_side!r}")


@dataclass
class Chunk:
    """One unit of the stream: prefilled in one forward, tagged as one memory source.

    Parameters
    ----------
    input_ids : torch.Tensor
        ``[1, q]`` token ids (vision placeholders included for VLMs).
    kind : str
        ``"frame"``, ``"system"``, ``"user"``, ``"assistant"`` or ``"prefix"``.
    text : str
        The text part (tag + describer line, or the formatted turn), for logs.
    extra : dict
        Model inputs besides ``input_ids`` (``pixel_values``, ``image_grid_thw``...).
    position_ids : torch.Tensor or None
        Explicit positions relative to the chunk start (M-RoPE image chunks), else None.
    """

    input_ids: torch.Tensor
    kind: str
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    position_ids: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        """Number of tokens the chunk appends to the cache."""
        return int(self.input_ids.shape[-1])


class ModelError(RuntimeError):
    """A model could not be found or loaded; the message says how to provide it."""


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16).

    There bfloat16 matrix products run 2.3x faster than float32 at the row counts of a
    frame chunk (28 rows, 0.5B shapes, 2 cores); elsewhere bfloat16 is emulated and slower.
    """
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """Map ``auto``/names to a torch dtype.

    auto: on CUDA bfloat16 where the GPU has it (Ampere and later, the Jetson Orin
    included; what the GPU benchmarks measure, and Qwen2's activations can overflow
    float16), else float16; on a CPU bfloat16 where it is native (:func:`cpu_has_bf16`),
    else float32. With bfloat16 keys re-rotated at every 32-token compaction the default
    model's streaming perplexity moved from 3.179 to 3.183 (docs/performance.md).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if str(device).startswith("cuda"):
            bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
            return torch.bfloat16 if bf16 else torch.float16
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of auto, {', '.join(table)}; got {dtype!r}")
    return table[dtype]


def attention_backends(device: str | torch.device) -> contextlib.AbstractContextManager:
    """SDPA kernels for the engine's prefills: on CUDA flash / memory-efficient, not cuDNN.

    cuDNN attention builds a plan per new key length, and the bounded memory's length
    changes with every chunk: about 0.8 ms of host time per layer call on an H200, more
    than the kernel itself (measured with torch.profiler at the 7B shape, 64-token
    question on a full 1024-token memory).
    """
    if not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH])


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is present, else ``cpu``; validate the name."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return device
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")


def cache_kwarg(model: Any) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values`` (older), as forward takes it.

    Looked up once per model class: ``inspect.signature`` costs more than a tiny model's
    forward, and callers ask per chunk.
    """
    return _cache_kwarg_of(type(model))


@functools.lru_cache(maxsize=None)
def _cache_kwarg_of(cls: type) -> str:
    import inspect
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def chat_markers(tokenizer: Any) -> tuple[str, str]:
    """``(turn_open, turn_close)`` as the tokenizer's own chat template writes a turn.

    Rendered from two sentinel messages, so the adapter's turns are the template's, not a
    guess. Raises :class:`ModelError` when the template has no such shape (a turn that
    does not name its role, or roles closed differently).
    """
    sentinel = "\x01SENTINEL\x01"
    msgs = [{"role": "system", "content": sentinel}, {"role": "user", "content": sentinel}]
    try:
        text = tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception as exc:     # noqa: BLE001 - no or broken template: say so
        raise ModelError(f"the tokenizer's chat template cannot render a turn: {exc}") from exc
    pieces = text.split(sentinel)
    if len(pieces) != 3:
        raise ModelError(f"chat template renders an unexpected shape: {text!r}")
    head, between = pieces[0], pieces[1]
    at = head.rfind("system")
    turn_open = head[:at] + "{role}" + head[at + len("system"):] if at >= 0 else ""
    user_open = turn_open.format(role="user")
    close = between[:between.rfind(user_open)] if turn_open and user_open in between else ""
    if not close:
        raise ModelError(f"chat template turns do not open with their role: {text!r}")
    return turn_open, close


class ModelAdapter:
    """Text-only causal LM adapter (Llama family by default); subclasses add vision.

    Subclasses set the chat markers (``turn_open``/``turn_close``). The ``lock`` serialises
    every forward of this model across sessions (the scoring attention hands scores through
    module state).
    """

    family = "llama"
    #: how the model's RoPE turns key pairs; the bounded cache re-positions keys by it
    rotation = Rotation.ROTATE_HALF
    turn_open = "<|im_start|>{role}\n"
    turn_close = "<|im_end|>\n"
    #: appended to every question in its user turn. Why: asked to be brief in the system
    #: prompt, the 0.5B default still answers in full sentences (14-17 tokens, 2.5-3 s on
    #: two CPU cores); asked in the turn itself it answers "17", "DOCK B", "Anna" (1-3
    #: tokens), which keeps the demo's answers under its latency bar (docs/eval.md)
    answer_instruction = "Give only the answer, in as few words as possible."

    def __init__(self, model: Any, tokenizer: Any, name: str, image_max_side: int = 384,
                 describer: FrameDescriber | None = None,
                 system_prompt: str | None = None, markers: tuple[str, str] | None = None,
                 family: str | None = None):
        """Wrap a loaded model and tokenizer; switch the model to the scoring attention.

        The switch is here, the one constructor every loader and family ends in, so no
        loader can forget it (the bounded cache needs the window scores it computes).
        ``markers`` (``turn_open``, ``turn_close``) replaces the class's ChatML turns, e.g.
        with :func:`chat_markers` of the model's own template; ``family`` the class's name.
        """
        from ..memory import use_scoring_attention
        if markers is not None:
            self.turn_open, self.turn_close = markers
        if family is not None:
            self.family = family
        self.model = use_scoring_attention(model.eval())
        self.tokenizer = tokenizer
        self.name = name
        self.image_max_side = image_max_side
        self.describer = describer if describer is not None else FrameDescriber()
        self.system_prompt = system_prompt if system_prompt is not None else (
            "You watch camera frames. Each line starting with [cam NAME HH:MM:SS.s] describes "
            "one frame: what is in view (coloured boxes, ArUco markers, QR codes), the light "
            "and the motion; \"no change.\" means the frame looked like the one before. "
            "Answer questions about them briefly.")
        self.lock = threading.RLock()
        self.device = next(model.parameters()).device
        eos = getattr(model.generation_config, "eos_token_id", None) \
            if getattr(model, "generation_config", None) is not None else None
        ids: set[int] = set()
        for e in (eos, getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(e, int):
                ids.add(e)
            elif isinstance(e, (list, tuple)):
                ids.update(int(x) for x in e)
        end = self.turn_close.strip()
        if end:
            tid = tokenizer.convert_tokens_to_ids(end)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
                ids.add(tid)
        self.eos_token_ids: set[int] = ids
        self.cache_kwarg = cache_kwarg(model)

    # ---- chunks ---------------------------------------------------------------------------
    def encode(self, text: str, literal: bool = False) -> torch.Tensor:
        """Token ids ``[1, q]`` of ``text`` without special tokens added.

        ``literal`` tokenises special-token strings inside ``text`` as plain text, so text a
        message carries can never become a chat control token.
        """
        ids = self._ids(text, literal)
        if not ids:
            raise ValueError("text encodes to zero tokens")
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def _ids(self, text: str, literal: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False,
                                   split_special_tokens=literal)["input_ids"])

    def frame_chunk(self, image_rgb: np.ndarray, stamp: float, camera: str) -> Chunk:
        """Tag + describer line for one frame (text-only models).

        The describer decodes QR codes from the frame as the camera sent it (their modules
        do not survive ``image_max_side``); the line is tokenised ``literal``, so text a
        code carries can never become a chat control token.
        """
        full = check_image(image_rgb)
        image = downscale(full, self.image_max_side)
        text = self.describer.describe(image, stamp, camera, full=full) + "\n"
        return Chunk(self.encode(text, literal=True), "frame", text)

    def text_chunk(self, text: str, role: str) -> Chunk:
        """One complete chat turn (``role`` in system/user/assistant)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        opening, closing = self.turn_open.format(role=role), self.turn_close
        ids = self._ids(opening, False) + self._ids(text, True) + self._ids(closing, False)
        if not ids:
            raise ValueError("text encodes to zero tokens")
        t = opening + text + closing
        return Chunk(torch.tensor([ids], dtype=torch.long, device=self.device), role, t)

    def answer_prefix(self) -> Chunk:
        """Return the chat template's opening of the assistant turn."""
        t = self.turn_open.format(role="assistant")
        return Chunk(self.encode(t), "prefix", t)

    def answer_suffix(self) -> str:
        """Text closing the assistant turn after an answer (fed back in multi-round mode)."""
        return self.turn_close

    # ---- forwards -------------------------------------------------------------------------
    def forward(self, chunk: Chunk, cache: Any, logits: bool = True) -> torch.Tensor | None:
        """Prefill ``chunk`` against ``cache``; return the last position's logits ``[V]``.

        ``logits=False`` (frames, fed-back turns: only the cache is wanted) skips the LM
        head, a ``vocab x hidden`` product that is a tenth of a small model's prefill.
        """
        q = chunk.n_tokens
        start = cache.next_position()
        pos = torch.arange(start, start + q, device=self.device).unsqueeze(0)
        return self.run_model(chunk, cache, pos, logits)

    def run_model(self, chunk: Chunk, cache: Any, position_ids: torch.Tensor,
                  logits: bool, embeds: torch.Tensor | None = None) -> torch.Tensor | None:
        """One forward of ``chunk`` at ``position_ids``; the last logits, or None.

        ``embeds`` (``[1, q, hidden]``), when given, replace the chunk's ids and extras:
        the adapter has already built the input embeddings (e.g. with its image encoder).
        """
        # an empty index list of positions to keep: the LM head computes no row
        keep = 1 if logits else torch.empty(0, dtype=torch.long, device=self.device)
        inputs = {"input_ids": chunk.input_ids, **chunk.extra} if embeds is None else \
            {"inputs_embeds": embeds}
        with torch.no_grad(), attention_backends(self.device):
            # no_grad, not inference_mode: the cache's buffers are updated later
            out = self.model(position_ids=position_ids, use_cache=True, logits_to_keep=keep,
                             **{self.cache_kwarg: cache}, **inputs)
        return out.logits[0, -1] if logits else None

    def decode_step(self, token_id: int, cache: Any) -> torch.Tensor:
        """Append one generated token; return the next-token logits ``[V]``."""
        ids = torch.tensor([[int(token_id)]], dtype=torch.long, device=self.device)
        return self.forward(Chunk(ids, "assistant"), cache)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        """Name, family, parameter count, dtype, device and perception parts, for diagnostics."""
        p = next(self.model.parameters())
        out = {"name": self.name, "family": self.family, "dtype": str(p.dtype).split(".")[-1],
               "device": str(p.device),
               "parameters": sum(t.numel() for t in self.model.parameters())}
        describer = getattr(self, "describer", None)
        if describer is not None:
            out["perception"] = {"parts": [q.name for q in describer.parts],
                                 "missing": describer.missing(), "cost": describer.costs()}
        return out
