"""Owned decode step (and chunk forward) for the Llama family (Llama, Qwen2), opt-in per model.

Why: with fused q/k/v and gate/up weights and inductor-compiled norms / MLPs / rotary
embedding (``fused_linear``, ``compiled_decode``), a 7B decode step replayed from a CUDA
graph still runs ~18 small kernels per layer that those modules cannot reach: the RoPE
application inside ``LlamaAttention.forward`` (10 kernels: mul, add, cat, neg for q and
k), the two residual adds of the decoder layer and a cast or two (docs/performance.md).
They live in transformers' modeling code, which this project does not patch.

:func:`install_owned_decode` gives one model *instance* a ``forward`` that runs one-token
steps on a ``BoundedCache`` through its own step, built from the model's own weight
tensors (no copy, read at every call, so later fusing stays visible), and sends every
other call (prefill chunks, scoring chunks, other caches, explicit M-RoPE positions,
masks, embeddings, gradients) to the class's ``forward`` unchanged. Per layer (each
"compiled" piece one inductor kernel; "GEMV" one projection as :func:`linear`: a Triton
matrix-vector kernel on CUDA, ``F.linear`` elsewhere or with ``triton_gemv=False``):

1. compiled: residual add of the previous layer's MLP output + RMSNorm; GEMV q/k/v (one
   when fused); compiled: (biases +) RoPE of q and k (cos/sin computed once per step,
   compiled, with the rotary module's own formula and ``inv_freq``),
2. eager: ``cache.update(k, v, layer_idx)``, the bounded cache's own update (writes,
   host bookkeeping, compaction of a pending layer, score requests all as before), then
   the scores a waiting layer asked for (``scoring.give_scores``, exactly what the scoring
   attention function does) and ``F.scaled_dot_product_attention`` over the kept keys,
3. GEMV o_proj; compiled: residual add + RMSNorm; GEMV gate/up; compiled: silu x up;
   GEMV down,

then the last residual add + final norm (compiled) and the lm_head GEMV. Each compiled
function is one graph for all layers (weights are graph inputs, ``dynamic=False``,
``fullgraph=True``), compiled at the first one-token call (outside a
CUDA-graph capture; the graph runner's first visit of a length is eager). The CUDA-graph
runner (``cuda_graph.py``) captures the step like the transformers forward: it calls
``model(...)``, and the step calls ``cache.update`` once per layer, so ``advance_layer``
repeats the same bookkeeping after a replay. Nothing global is changed: no transformers
function or class is patched, other instances keep the class's ``forward``.

With ``chunks=True`` (the engine's graph path) multi-token chunks (frames, questions) run
the same functions eagerly: a 64-token question on a 7B model is ~12 ms of GPU work but
~24 ms of host time through the class's forward (modules, masks, keyword plumbing), so
the time to first token is the host's; the owned forward launches the same GEMMs with
less Python between them. A layer is three pieces, :func:`start_layer` (residual, norm,
q/k/v, RoPE), :func:`attend` (the cache, scores, SDPA) and :func:`finish_layer`
(o_proj, residual, norm, MLP); the row-wise ones are what ``chunk_graph.py`` captures.

Besides Llama / Qwen2 causal LMs, the language tower of a VLM is served where it has
that layout (LLaVA's and SmolVLM's Llama, Qwen2-VL's Qwen2): text tokens as ids, frames
as input embeddings with the image features in place, and Qwen2-VL's M-RoPE positions
``[3, 1, t]`` (image tokens; text tokens sit at equal rows, which is 1-D RoPE).
"""
from __future__ import annotations

import functools
import types
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ros2_infmllm.accel.compiled_decode import call_compiled, gated_mlp_weights
from ros2_infmllm.accel.fused_linear import FusedPart

#: text model types served: the model's own, or its language tower's (LLaVA's Llama,
#: SmolVLM's Llama, Qwen2-VL's M-RoPE Qwen2)
MODEL_TYPES = ("llama", "qwen2", "qwen2_vl_text")
_MROPE_TYPES = ("qwen2_vl_text",)
_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen2VLRMSNorm")
_ROPE_TYPES = ("default", "linear", "llama3", "yarn")    # fixed inv_freq, plain cos/sin
# ``logits_to_keep``: the engine's adapters pass 1, or no positions at all for frames;
# ``inputs_embeds``: a vision adapter's frame with its image features already in place
_FORWARD_KW = {"input_ids", "inputs_embeds", "position_ids", "use_cache", "cache",
               "past_key_values", "attention_mask", "return_dict", "logits_to_keep"}


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama / Qwen2 RMSNorm (the classes' own formula)."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, scaling: float,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos / sin ``[1, t, D]`` of the ``[1, t]`` positions, as the rotary module computes them."""
    freqs = position_ids[..., None].float() * inv_freq.float()
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def _mrope_cos_sin(position_ids: torch.Tensor, rows: torch.Tensor, inv_freq: torch.Tensor,
                   scaling: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos / sin ``[1, t, D]`` of M-RoPE positions ``[3, 1, t]``.

    Frequency ``j`` turns by the position of row ``rows[j]`` (temporal, height or width
    section), which is what Qwen2-VL's rotary module does when it splits its per-row
    tables by ``mrope_section``; picking the position before the product gives the same
    numbers.
    """
    pos = position_ids[:, 0].index_select(0, rows).t().unsqueeze(0)       # [1, t, D/2]
    freqs = pos.float() * inv_freq.float()
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def _norm_in(x, d, w_norm, eps: float):
    """Residual add ``x + d`` (d None: the first layer) and RMSNorm: ``(x, norm(x))``."""
    if d is not None:
        x = x + d
    return x, _rms(x, w_norm, eps)


def _rope_qkv(outs: tuple, bs: tuple, cos, sin, heads: tuple):
    """q/k/v from the q/k/v projection output(s) ``[1, t, *]`` (+ biases), RoPE of q and k.

    Returns q ``[1, Hq, t, D]``, k and v ``[1, Hkv, t, D]`` (q and k rotated as
    ``apply_rotary_pos_emb`` rotates them).
    """
    n_q, n_kv, dim = heads
    outs = tuple(o if b is None else o + b for o, b in zip(outs, bs))
    if len(outs) == 1:
        q, k, v = outs[0].split([n_q * dim, n_kv * dim, n_kv * dim], -1)
    else:
        q, k, v = outs
    t = q.shape[-2]
    q = q.view(1, t, n_q, dim).transpose(1, 2)
    k = k.view(1, t, n_kv, dim).transpose(1, 2)
    v = v.view(1, t, n_kv, dim).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q = (q * cos) + (_rotate_half(q) * sin)
    k = (k * cos) + (_rotate_half(k) * sin)
    return q, k, v


def _norm_post(x, o, b_o, w_norm, eps: float):
    """``x + o_proj output`` (+ bias) and RMSNorm: ``(x, norm(x))``."""
    x = x + (o if b_o is None else o + b_o)
    return x, _rms(x, w_norm, eps)


def _silu_mul(outs: tuple, bs: tuple):
    """``silu(gate) * up`` from the gate/up GEMV output(s) (+ biases)."""
    outs = tuple(o if b is None else o + b for o, b in zip(outs, bs))
    gate, up = outs[0].chunk(2, dim=-1) if len(outs) == 1 else outs
    return F.silu(gate) * up


# ---- GEMV (batch-1 linear) -------------------------------------------------------------------
# At batch 1 every projection is a matrix-vector product. cuBLAS picks split-K kernels (and a
# reduce kernel) for some 7B shapes and reaches 3.2-4.0 TB/s on the H200; a plain Triton
# kernel (rows per program, fp32 accumulation over K, no split) measured 3.1-4.2 TB/s on
# the same shapes, faster on each (docs/performance.md). Used on CUDA when Triton imports.
_GEMV = None          # the Triton kernel once built, False if Triton is not usable


def _gemv_kernel():
    global _GEMV
    if _GEMV is not None:
        return _GEMV
    try:
        import triton
        import triton.language as tl
    except ImportError:                           # pragma: no cover - CUDA images have it
        _GEMV = False
        return _GEMV

    @triton.jit
    def gemv(w_ptr, x_ptr, y_ptr, n_out, n_in, stride_w, BLOCK_O: tl.constexpr,
             BLOCK_K: tl.constexpr, EVEN: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
        acc = tl.zeros((BLOCK_O, BLOCK_K), tl.float32)
        for k0 in range(0, n_in, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            ptrs = w_ptr + rows[:, None] * stride_w + cols[None, :]
            if EVEN:
                w = tl.load(ptrs, eviction_policy="evict_first")
                x = tl.load(x_ptr + cols)
            else:
                m = cols < n_in
                w = tl.load(ptrs, mask=(rows[:, None] < n_out) & m[None, :], other=0.0,
                            eviction_policy="evict_first")
                x = tl.load(x_ptr + cols, mask=m, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        tl.store(y_ptr + rows, tl.sum(acc, axis=1).to(y_ptr.dtype.element_ty),
                 mask=rows < n_out)

    _GEMV = gemv
    return _GEMV


def _gemv_config(n_out: int, n_in: int) -> tuple[int, int, int, int]:
    """``(rows per program, K block, warps, stages)``, the best measured on the H200."""
    if n_in >= 8192:
        return 2, 512, 4, 4          # down_proj 4096 x 11008
    if n_out >= 16384:
        return 8, 512, 4, 3          # gate/up 22016 x 4096, lm_head
    if n_out >= 8192:
        return 16, 256, 4, 3         # q/k/v 12288 x 4096
    return 2, 256, 4, 3              # o_proj 4096 x 4096


def linear(x: torch.Tensor, weight: torch.Tensor, triton: bool = True) -> torch.Tensor:
    """Return ``x @ weight.T`` for one row ``x`` (``[1, 1, K]``): Triton GEMV on CUDA."""
    kernel = _gemv_kernel() if triton and x.is_cuda else False
    if not kernel or x.numel() != weight.shape[1] or weight.dtype != x.dtype \
            or weight.stride(1) != 1 or x.dtype not in (torch.float16, torch.bfloat16,
                                                        torch.float32):
        return F.linear(x, weight)
    n_out, n_in = weight.shape
    x = x.contiguous()
    y = torch.empty((1, 1, n_out), dtype=x.dtype, device=x.device)
    bo, bk, warps, stages = _gemv_config(n_out, n_in)
    kernel[((n_out + bo - 1) // bo,)](weight, x, y, n_out, n_in, weight.stride(0),
                                      BLOCK_O=bo, BLOCK_K=bk,
                                      EVEN=n_in % bk == 0 and n_out % bo == 0,
                                      num_warps=warps, num_stages=stages)
    return y


def _qkv(attn: nn.Module) -> Optional[tuple]:
    """``(weights, biases)`` of q/k/v: one fused matrix or three, None if neither."""
    q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
    if all(type(m) is nn.Linear for m in (q, k, v)):
        return (q.weight, k.weight, v.weight), (q.bias, k.bias, v.bias)
    if all(isinstance(m, FusedPart) for m in (q, k, v)) and q.group is k.group is v.group \
            and (q.index, k.index, v.index) == (0, 1, 2) and len(q.group.sizes) == 3:
        return (q.group.weight,), (q.group.bias,)
    return None


def _norm_ok(norm: Any) -> bool:
    weight = getattr(norm, "weight", None)
    return type(norm).__name__ in _NORMS and isinstance(weight, nn.Parameter)


def text_config(model: nn.Module) -> Any:
    """Return the config of ``model``'s text tower (a VLM's text config, else its own)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def text_tower(model: nn.Module) -> Optional[nn.Module]:
    """Return the decoder stack (embeddings, layers, norm, rotary) of a causal LM or a VLM."""
    inner = getattr(model, "model", None)
    for name in ("language_model", "text_model"):
        tower = getattr(inner, name, None)
        if isinstance(tower, nn.Module) and hasattr(tower, "layers"):
            return tower
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "layers") else None


def mrope_rows(model: nn.Module) -> Optional[torch.Tensor]:
    """Return the position row (0 t, 1 h, 2 w) of each rotary frequency of an M-RoPE tower.

    None for a 1-D RoPE tower. Kept on the model's device, made once per model.
    """
    if text_config(model).model_type not in _MROPE_TYPES:
        return None
    rows = model.__dict__.get("_owned_mrope_rows")
    if rows is None:
        rot = text_tower(model).rotary_emb
        rows = torch.cat([torch.full((int(n),), i % 3, dtype=torch.long)
                          for i, n in enumerate(rot.mrope_section)]).to(rot.inv_freq.device)
        model.__dict__["_owned_mrope_rows"] = rows
    return rows


def position_rows(model: nn.Module) -> int:
    """Position rows a bounded cache for ``model`` keeps: 3 for M-RoPE, else 1."""
    return 3 if mrope_rows(model) is not None else 1


def unsupported(model: nn.Module) -> Optional[str]:
    """Why ``model`` cannot take the owned decode step, or None if it can."""
    cfg = text_config(model)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in MODEL_TYPES:
        return f"model type {mtype!r} is not one of {MODEL_TYPES}"
    if getattr(cfg, "use_sliding_window", False) or any(
            t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window attention layers"
    inner = text_tower(model)
    head = getattr(model, "lm_head", None)
    if inner is None or type(head) is not nn.Linear:
        return "no text tower with .layers / plain nn.Linear lm_head"
    rot = getattr(inner, "rotary_emb", None)
    if getattr(rot, "rope_type", None) not in _ROPE_TYPES or not hasattr(rot, "inv_freq"):
        return f"rotary embedding type {getattr(rot, 'rope_type', None)!r}"
    if mtype in _MROPE_TYPES and sum(getattr(rot, "mrope_section", None) or [0]) \
            != rot.inv_freq.numel():
        return "M-RoPE sections do not cover the rotary frequencies"
    if not _norm_ok(getattr(inner, "norm", None)):
        return "final norm is not an RMSNorm of the family"
    for i, layer in enumerate(inner.layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None or _qkv(attn) is None \
                or type(getattr(attn, "o_proj", None)) is not nn.Linear:
            return f"layer {i}: attention projections are neither plain nor fused q/k/v"
        if getattr(attn, "layer_idx", None) != i or hasattr(attn, "q_norm"):
            return f"layer {i}: attention layout differs (layer_idx / q_norm)"
        if type(getattr(mlp, "act_fn", None)).__name__ not in ("SiLU", "SiLUActivation") \
                or gated_mlp_weights(mlp) is None:
            return f"layer {i}: MLP is not a SiLU-gated MLP"
        if not (_norm_ok(getattr(layer, "input_layernorm", None))
                and _norm_ok(getattr(layer, "post_attention_layernorm", None))):
            return f"layer {i}: norms are not RMSNorms of the family"
    return None


def _bounded(model: nn.Module, cache: Any, pos: Optional[torch.Tensor]) -> bool:
    """Whether ``cache`` is a bounded cache whose positions agree with this call's ``pos``.

    A 1-row cache takes implicit or 1-D positions. An M-RoPE cache (3 rows) takes text
    tokens at 1-D positions (the three rows equal: 1-D RoPE) and 3-row positions that the
    adapter gave the cache too (``set_next_positions``: image tokens).
    """
    from ros2_infmllm.memory.cache import BoundedCache
    if not isinstance(cache, BoundedCache):
        return False
    rows = position_rows(model)
    if cache.pos_rows != rows:
        return False
    if pos is not None and pos.dim() == 3:
        return rows == 3 and cache.positions_given
    return not cache.positions_given


def _takes(model: nn.Module, args: tuple, kwargs: dict) -> Optional[Any]:
    """Return the cache if the owned forward serves this call, else None.

    One-token steps always; chunks of several tokens when the model was installed with
    ``chunks=True``; token ids or input embeddings, never both.
    """
    if args or torch.is_grad_enabled() or not set(kwargs) <= _FORWARD_KW:
        return None
    ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
    pos = kwargs.get("position_ids")
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if (ids is None) == (embeds is None) or kwargs.get("attention_mask") is not None \
            or kwargs.get("use_cache") is False or kwargs.get("return_dict") is False:
        return None
    if (ids if ids is not None else embeds).dim() != (2 if ids is not None else 3):
        return None
    batch, t = (ids if ids is not None else embeds).shape[:2]
    if batch != 1 or t < 1 or (t > 1 and not model.__dict__.get("_owned_chunks", False)):
        return None
    if pos is not None and tuple(pos.shape) not in ((1, t), (3, 1, t)):
        return None
    return cache if _bounded(model, cache, pos) else None


def _part(fn, mode: Optional[str], t: int, *args):
    """``fn(*args)``: compiled for one-token steps (one static shape), eager for chunks."""
    return call_compiled(fn, mode, *args) if t == 1 else fn(*args)


def _kept_rows(h: torch.Tensor, keep: Any) -> torch.Tensor:
    """Select the rows of ``h`` ``[1, t, H]`` whose logits ``logits_to_keep`` asks for."""
    if isinstance(keep, torch.Tensor):
        return h[:, keep]
    return h if not keep else h[:, -int(keep):]


def wants_logits(keep: Any) -> bool:
    """Whether ``logits_to_keep`` asks for any row (an empty index list asks for none)."""
    return not (isinstance(keep, torch.Tensor) and keep.numel() == 0)


def start_layer(layer: nn.Module, x: torch.Tensor, d: Optional[torch.Tensor], cos, sin,
                mode: Optional[str], lin) -> tuple:
    """Add the previous layer's MLP output ``d`` to ``x``, norm, project and rotate q / k.

    Returns ``(x, q, k, v)``: the residual stream and the layer's rotated queries and
    keys and its values, ``[1, heads, t, D]``.
    """
    attn, norm = layer.self_attn, layer.input_layernorm
    ws, bs = _qkv(attn)
    dim = attn.head_dim
    n_q = attn.q_proj.out_features // dim
    n_kv = attn.k_proj.out_features // dim
    t = x.shape[1]
    x, h = _part(_norm_in, mode, t, x, d, norm.weight, float(norm.variance_epsilon))
    q, k, v = _part(_rope_qkv, mode, t, tuple(lin(h, w) for w in ws), bs, cos, sin,
                    (n_q, n_kv, dim))
    return x, q, k, v


def attend(cache: Any, attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           scores_here: bool, masks: dict) -> torch.Tensor:
    """Update the cache, give the scores its layer asked for, attend: ``[1, t, heads * D]``.

    A chunk (``t > 1``) attends with a bottom-right causal mask, as transformers' SDPA path
    masks a chunk that follows cached tokens; ``masks`` keeps the masks made, by
    ``(t, keys)``.
    """
    from ros2_infmllm.memory import scoring
    keys, values = cache.update(k, v, attn.layer_idx)
    if scores_here:
        scoring.give_scores(cache.layers[attn.layer_idx], q, keys, attn.scaling, None)
    n_q, t = q.shape[1], q.shape[2]
    mask = None
    if t > 1:
        shape = (t, keys.shape[2])
        mask = masks.get(shape)
        if mask is None:
            mask = torch.ones(shape, dtype=torch.bool, device=keys.device).tril(shape[1] - t)
            masks[shape] = mask
    o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling,
                                       enable_gqa=keys.shape[1] != n_q)
    return o.transpose(1, 2).reshape(1, t, n_q * q.shape[-1])


def finish_layer(layer: nn.Module, x: torch.Tensor, o: torch.Tensor, mode: Optional[str],
                 lin) -> tuple[torch.Tensor, torch.Tensor]:
    """Project the attention output ``o``, add it, norm, run the MLP: ``(x, d)``.

    ``d`` (the MLP output) is added by the next :func:`start_layer` or the final norm.
    """
    attn, mlp, norm = layer.self_attn, layer.mlp, layer.post_attention_layernorm
    t = x.shape[1]
    x, h = _part(_norm_post, mode, t, x, lin(o, attn.o_proj.weight), attn.o_proj.bias,
                 norm.weight, float(norm.variance_epsilon))
    w_in, b_in, w_up, b_up, w_down, b_down = gated_mlp_weights(mlp)
    gu = (lin(h, w_in),) if w_up is None else (lin(h, w_in), lin(h, w_up))
    a = _part(_silu_mul, mode, t, gu, (b_in,) if w_up is None else (b_in, b_up))
    d = lin(a, w_down)
    return x, d if b_down is None else d + b_down


def final_norm(norm: nn.Module, x: torch.Tensor, d: torch.Tensor, mode: Optional[str],
               t: int) -> torch.Tensor:
    """Add the last residual and apply the tower's closing ``norm`` to the kept rows ``x``, ``d``.

    ``t`` is the step's own row count, not the kept rows': a chunk's last row is a view
    whose strides change with the chunk's length, and compiling each would recompile,
    then fail hard; so chunks run it eagerly.
    """
    return _part(_norm_in, mode, t, x, d, norm.weight, float(norm.variance_epsilon))[1]


def rope_tables(model: nn.Module, position_ids: torch.Tensor, dtype: torch.dtype,
                mode: Optional[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos / sin ``[1, t, D]`` of 1-D positions ``[1, t]`` or M-RoPE positions ``[3, 1, t]``."""
    rot = text_tower(model).rotary_emb
    scaling = float(rot.attention_scaling)
    if position_ids.dim() == 3:
        return _mrope_cos_sin(position_ids, mrope_rows(model), rot.inv_freq, scaling, dtype)
    return _part(_cos_sin, mode, position_ids.shape[1], position_ids, rot.inv_freq, scaling,
                 dtype)


def decode_step(model: nn.Module, input_ids: Optional[torch.Tensor], cache: Any,
                position_ids: Optional[torch.Tensor] = None,
                logits_to_keep: Any = 1,
                inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``t`` tokens through ``model`` on the bounded ``cache``: logits ``[1, k, V]``.

    The tokens are ``input_ids`` ``[1, t]`` or their embeddings ``inputs_embeds``
    ``[1, t, H]``; positions ``[1, t]``, M-RoPE ``[3, 1, t]`` or None (the cache's next).
    Same result as ``model(..., cache=cache, logits_to_keep=...).logits`` (within the
    dtype's rounding: the compiled functions keep float32 between fused ops, the Triton
    GEMV sums in another order), with the same calls to ``cache.update`` and the same
    score hand-off. A chunk (``t > 1``) runs the same functions eagerly (one compiled
    shape per function is all the step wants), through the model's chunk graphs
    (``chunk_graph.py``) when it has some for that many rows. A chunk that wants no logits
    stops after the last layer's keys and values: the rest would only feed the LM head.
    """
    from ros2_infmllm.memory import scoring
    mode = model.__dict__.get("_owned_decode_mode")
    lin = functools.partial(linear, triton=model.__dict__.get("_owned_decode_triton", False))
    tower, cfg = text_tower(model), text_config(model)
    x = tower.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    t = x.shape[1]
    if position_ids is None:
        start = cache.get_seq_length()
        position_ids = torch.arange(start, start + t, dtype=torch.long,
                                    device=x.device).unsqueeze(0)
    cos, sin = rope_tables(model, position_ids, x.dtype, mode)
    scores_here = getattr(cfg, "_attn_implementation", None) == scoring.ATTN_NAME
    head = model.lm_head
    want = wants_logits(logits_to_keep)
    graphs = model.__dict__.get("_chunk_graphs")
    if t > 1 and graphs is not None and graphs.size_for(t) is not None:
        h = graphs.run(x, cos, sin, cache, scores_here, want)
        h = None if h is None else _kept_rows(h, logits_to_keep)
    else:
        layers = tower.layers[:cfg.num_hidden_layers]
        masks: dict = {}
        d = None
        for i, layer in enumerate(layers):
            x, q, k, v = start_layer(layer, x, d, cos, sin, mode, lin)
            o = attend(cache, layer.self_attn, q, k, v, scores_here, masks)
            if not want and i == len(layers) - 1:
                break
            x, d = finish_layer(layer, x, o, mode, lin)
        h = None if not want else \
            final_norm(tower.norm, _kept_rows(x, logits_to_keep), _kept_rows(d, logits_to_keep),
                       mode, t)
    if h is None:                          # no logits wanted (a frame, a fed-back turn)
        return x.new_zeros((1, 0, head.out_features))
    logits = lin(h, head.weight)
    return logits if head.bias is None else logits + head.bias


def install_owned_decode(model: nn.Module, mode: Optional[str] = None,
                         triton_gemv: bool = True, chunks: bool = False) -> bool:
    """Give ``model`` (this instance only) the owned decode step (and chunk forward).

    ``mode``: ``torch.compile`` mode of the compiled parts (None / ``"default"`` or a
    ``-no-cudagraphs`` mode). ``triton_gemv``: the projections run as the Triton GEMV
    (:func:`linear`) on CUDA, else as ``F.linear`` (cuBLAS). ``chunks``: multi-token
    chunks (frames, questions) take the owned forward too; it launches fewer kernels and
    far less Python per layer than the class's forward, which is what a chunk costs on a
    GPU that waits for the host (the question's time to first token). Returns True if
    installed (or already installed; ``chunks=True`` then turns chunks on), False if the
    model is not supported (:func:`unsupported` says why). The instance's ``forward``
    keeps the class's signature; other calls (other caches, M-RoPE positions, masks,
    embeddings, gradients) go to the class's ``forward``. ``model.owned_decode_steps``
    counts the one-token calls served (a CUDA-graph replay makes no call),
    ``model.owned_chunks`` the chunks.
    """
    if mode is not None and "cudagraphs" not in mode and mode != "default":
        raise ValueError(f"mode {mode!r} would capture CUDA graphs of its own; use the "
                         "default or a '-no-cudagraphs' mode")
    if "_owned_decode_mode" in model.__dict__:
        model._owned_chunks = model._owned_chunks or bool(chunks)
        return True
    if unsupported(model) is not None:
        return False
    original = type(model).forward

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        cache = _takes(self, args, kwargs)
        if cache is None:
            return original(self, *args, **kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        logits = decode_step(self, ids, cache, kwargs.get("position_ids"),
                             kwargs.get("logits_to_keep", 0), embeds)
        if (ids if ids is not None else embeds).shape[1] == 1:
            self.owned_decode_steps += 1
        else:
            self.owned_chunks += 1
        return CausalLMOutputWithPast(logits=logits)

    model._owned_decode_mode = None if mode == "default" else mode
    model._owned_decode_triton = bool(triton_gemv)
    model._owned_chunks = bool(chunks)
    model.owned_decode_steps = 0
    model.owned_chunks = 0
    model.forward = types.MethodType(forward, model)
    return True
