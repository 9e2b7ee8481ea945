"""Exact re-positioning of cached (post-RoPE) keys.

RoPE rotates each pair of key dimensions by ``position * inv_freq``; rotations compose,
so a key cached at position ``p`` is moved to ``p'`` by rotating it by
``(p' - p) * inv_freq``. That is a pure rotation: the ``attention_scaling`` some RoPE
types apply to cos/sin is already inside the cached key and is not applied again.

Exactness by RoPE type:

* default, linear: inv_freq is constant, exact.
* dynamic (NTK), longrope: inv_freq changes only past ``max_position_embeddings``
  (``original_max_position_embeddings``); re-positioned positions stay below
  ``budget + max_chunk + decode_slack``, where the original inv_freq applies, so exact;
  :class:`~ros2_infmllm.memory.cache.BoundedCache` refuses a budget that would pass it.
* yarn: fixed rescaled inv_freq; its attention factor scales cos and sin and is already
  inside the cached key (a rotation keeps norms), so exact.
* llama3: a fixed rescaled inv_freq, exact.
* partial rotary (``rotary_pct`` / ``partial_rotary_factor`` in the config): only the first
  ``rotary_dim`` dimensions are rotated, the rest are untouched.
* M-RoPE: positions have three rows (t, h, w) and ``mrope_section`` assigns each
  frequency to one row. Re-positioning moves every kept token of one source run
  (contiguous tokens of one chunk) by the *same* shift on all three rows, so an image's
  2-D layout and its offset to the chunk's text survive; runs are packed in order, each
  starting at the previous run's maximum position + 1. A run whose kept tokens all have
  ``t == h == w`` (plain text) is compacted to contiguous positions instead. The next
  token's position is the maximum kept position + 1.

The layout of the rotated pairs is not in a config, so the caller says it: a
:class:`Rotation`, which each model adapter declares for its model (``ModelAdapter.rotation``).
A config with ``mrope_section`` given any kind but :attr:`Rotation.MROPE`, or the reverse,
is refused rather than re-rotated wrongly.

Models without RoPE (learned absolute positions: GPT-2, OPT, ...) cannot be re-positioned;
:func:`RopeSpec.from_config` returns None for them and the cache raises unless the policy
does not re-position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch

#: Largest block of angles rotated at once on the CPU (2 MiB of float64 per temporary).
CPU_BLOCK_ANGLES = 1 << 18


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if getter is not None else config


class Rotation(Enum):
    """How a model's RoPE pairs key dimensions and which position row turns each pair."""

    #: dimension ``i`` pairs with ``i + rotary_dim / 2``, one position row
    ROTATE_HALF = "rotate_half"
    #: dimension ``2i`` pairs with ``2i + 1``, one position row
    INTERLEAVED = "interleaved"
    #: rotate-half pairs, three position rows (t, h, w) split by the config's mrope_section
    MROPE = "mrope"


@dataclass
class RopeSpec:
    """What re-rotation needs to know about a model's RoPE.

    Parameters
    ----------
    inv_freq : torch.Tensor
        float64 ``[rotary_dim // 2]`` inverse frequencies (after the type's rescaling).
    rotary_dim : int
        Leading head dimensions that are rotated.
    head_dim : int
        Key head dimension.
    rotation : Rotation
        The pair layout and number of position rows.
    mrope_section : tuple of int or None
        Frequencies per (t, h, w) row for :attr:`Rotation.MROPE`, else None.
    model_type : str
        For messages.
    rope_type : str
        transformers' rope type (default, linear, dynamic, llama3, yarn, ...).
    exact_below : int or None
        For rope types whose frequencies change with the sequence length (dynamic NTK,
        longrope): positions must stay below this for the frequencies to be fixed.
    """

    inv_freq: torch.Tensor
    rotary_dim: int
    head_dim: int
    rotation: Rotation = Rotation.ROTATE_HALF
    mrope_section: tuple[int, ...] | None = None
    model_type: str = ""
    rope_type: str = "default"
    exact_below: int | None = None
    _device_tensors: dict = field(default_factory=dict, repr=False, compare=False)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``inv_freq`` and the M-RoPE row of each frequency on ``device`` (made once)."""
        key = str(device)
        if key not in self._device_tensors:
            rows = None
            if self.mrope_section is not None:
                rows = torch.repeat_interleave(torch.arange(3),
                                               torch.tensor(self.mrope_section)).to(device)
            self._device_tensors[key] = (self.inv_freq.to(device), rows)
        return self._device_tensors[key]

    @property
    def rows(self) -> int:
        """Position rows: 3 for M-RoPE, else 1."""
        return 3 if self.rotation is Rotation.MROPE else 1

    @classmethod
    def from_config(cls, config, rotation: Rotation = Rotation.ROTATE_HALF
                    ) -> "RopeSpec | None":
        """Derive the spec from a transformers config; None if the model has no RoPE.

        ``rotation`` is the kind the model's adapter declares; raises ValueError when the
        config's ``mrope_section`` (or its absence) contradicts it.
        """
        if not isinstance(rotation, Rotation):
            raise TypeError(f"rotation must be a Rotation, got {rotation!r}")
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        text = _text_config(config)
        model_type = str(getattr(text, "model_type", ""))
        params = getattr(text, "rope_parameters", None)
        if not params or "rope_theta" not in params:
            return None
        if "standardize_rope_params" in dir(text):
            text.standardize_rope_params()
            params = text.rope_parameters
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        partial = float(params.get("partial_rotary_factor",
                                   getattr(text, "partial_rotary_factor", 1.0)) or 1.0)
        rotary_dim = int(head_dim * partial)
        rope_type = params.get("rope_type", params.get("type", "default"))
        if params.get("mrope_interleaved"):
            raise ValueError(f"{model_type}: interleaved M-RoPE (rows alternating by "
                             f"frequency) is not supported by the re-rotation; use a policy "
                             f"with reposition=False")
        exact_below = None
        if rope_type in ("default", "mrope"):
            # the model's own float32 formula, so re-rotation uses its exact frequencies
            base = float(params["rope_theta"])
            ramp = torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(torch.float32)
            inv_freq = (1.0 / (base ** (ramp / rotary_dim))).to(torch.float64)
        elif rope_type in ROPE_INIT_FUNCTIONS:
            # seq_len=None: dynamic NTK returns the original frequencies (positions stay
            # below max_position_embeddings after re-positioning).
            inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](text, None)
            inv_freq = inv_freq.to(torch.float64)
            if rope_type in ("dynamic", "longrope"):
                # frequencies switch once positions pass the original context length
                exact_below = int(params.get("original_max_position_embeddings")
                                  or getattr(text, "max_position_embeddings", 0) or 0) or None
        else:
            raise ValueError(f"{model_type}: unsupported rope_type {rope_type!r}")
        mrope = _mrope_section(params, rotation, model_type)
        if mrope is not None and sum(mrope) != inv_freq.numel():
            raise ValueError(f"{model_type}: mrope_section {mrope} does not sum to "
                             f"{inv_freq.numel()} frequencies")
        return cls(inv_freq=inv_freq, rotary_dim=rotary_dim, head_dim=head_dim,
                   rotation=rotation, mrope_section=mrope, model_type=model_type,
                   rope_type=str(rope_type), exact_below=exact_below)

    def angles(self, delta: torch.Tensor) -> torch.Tensor:
        """Return float64 angles ``[H, n, rotary_dim // 2]`` for position shifts ``[R, H, n]``."""
        inv, rows = self._on(delta.device)
        if rows is None:
            return delta[0].to(torch.float64).unsqueeze(-1) * inv
        per_freq = delta.permute(1, 2, 0).to(torch.float64)[..., rows]   # [H, n, F]
        return per_freq * inv

    def rotate_(self, keys: torch.Tensor, delta: torch.Tensor) -> None:
        """Rotate ``keys`` ``[H, n, D]`` in place by position shifts ``delta`` ``[R, H, n]``.

        On the CPU the rows are rotated a block at a time, each block's temporaries at most
        ``CPU_BLOCK_ANGLES`` angles: all rows at once (30 layers x 3 heads x 1024 tokens on
        the default model) made ~200 MB of temporaries per compaction, fresh heap pages
        that glibc keeps resident until trimmed, so the node's resident set swung by
        ~100 MB with every frame. On CUDA the caching allocator reuses them: one block.
        """
        n_rows, n = keys.shape[0], keys.shape[-2]
        if n == 0:
            return
        block = n_rows
        if keys.device.type == "cpu":
            block = max(1, CPU_BLOCK_ANGLES // (n * max(1, self.rotary_dim // 2)))
        for r0 in range(0, n_rows, block):
            self._rotate_block(keys[r0:r0 + block], delta[:, r0:r0 + block])

    def _rotate_block(self, keys: torch.Tensor, delta: torch.Tensor) -> None:
        ang = self.angles(delta)
        cos = torch.cos(ang).to(torch.float32)
        sin = torch.sin(ang).to(torch.float32)
        rot = keys[..., :self.rotary_dim].float()
        if self.rotation is Rotation.INTERLEAVED:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        else:
            half = self.rotary_dim // 2
            x1, x2 = rot[..., :half], rot[..., half:]
            out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        keys[..., :self.rotary_dim] = out.to(keys.dtype)


def _mrope_section(params: dict, rotation: Rotation, model_type: str) -> tuple[int, ...] | None:
    """Return the config's ``mrope_section`` for M-RoPE; raise if config and kind disagree."""
    section = params.get("mrope_section")
    if rotation is Rotation.MROPE and section is None:
        raise ValueError(f"{model_type}: the rotation given is M-RoPE but the config has no "
                         f"rope_parameters['mrope_section'] to split the frequencies by row")
    if rotation is not Rotation.MROPE and section is not None:
        raise ValueError(f"{model_type}: the config has mrope_section {list(section)} "
                         f"(M-RoPE, three position rows) but the rotation given is "
                         f"{rotation.value}; build the cache with rotation=Rotation.MROPE "
                         f"(the adapter's rotation)")
    return tuple(int(m) for m in section) if section is not None else None


def repack_positions(pos: torch.Tensor, run_start: torch.Tensor) -> torch.Tensor:
    """Compute new contiguous positions ``[R, H, n]`` for kept tokens (see the module docstring).

    ``pos`` holds the current positions of the kept tokens in cache order; ``run_start``
    ``[H, n]`` is True where a token starts a new source run. With one row, this is
    simply ``0..n-1`` for every head.
    """
    rows, n_heads, n = pos.shape
    device = pos.device
    if rows == 1 or n == 0:
        base = torch.arange(n, device=device, dtype=pos.dtype)
        return base.expand(rows, n_heads, n).contiguous()
    run_id = torch.cumsum(run_start.long(), dim=-1) - 1                   # [H, n]
    tok_min = pos.amin(dim=0)                                              # [H, n]
    tok_max = pos.amax(dim=0)
    big = torch.iinfo(pos.dtype).max
    run_min = torch.full((n_heads, n), big, dtype=pos.dtype, device=device)
    run_min.scatter_reduce_(1, run_id, tok_min, reduce="amin")
    run_max = torch.full((n_heads, n), -big, dtype=pos.dtype, device=device)
    run_max.scatter_reduce_(1, run_id, tok_max, reduce="amax")
    flat = (tok_min == tok_max).long()
    run_flat = torch.ones((n_heads, n), dtype=torch.long, device=device)
    run_flat.scatter_reduce_(1, run_id, flat, reduce="amin")
    count = torch.zeros((n_heads, n), dtype=torch.long, device=device)
    count.scatter_add_(1, run_id, torch.ones_like(run_id))
    used = count > 0
    span = torch.where(run_flat.bool(), count, run_max - run_min + 1)
    span = torch.where(used, span, torch.zeros_like(span))
    start = torch.cumsum(span, dim=-1) - span                              # [H, R]
    # rank of each token inside its run (for flat/text runs)
    idx = torch.arange(n, device=device).expand(n_heads, n)
    first = torch.full((n_heads, n), n, dtype=torch.long, device=device)
    first.scatter_reduce_(1, run_id, idx, reduce="amin")
    rank = idx - first.gather(1, run_id)
    tok_start = start.gather(1, run_id)
    tok_flat = run_flat.gather(1, run_id).bool()
    shift_2d = tok_start - run_min.gather(1, run_id)                       # [H, n]
    new_2d = pos + shift_2d.unsqueeze(0)
    new_1d = (tok_start + rank).unsqueeze(0).expand(rows, n_heads, n)
    return torch.where(tok_flat.unsqueeze(0), new_1d, new_2d)
