"""Attention function that also scores cached tokens for the cache that asked.

Registered as ``"infmllm_sdpa"`` with transformers' ``AttentionInterface`` (and the SDPA
mask builder under the same name), so any model using the attention interface can be
switched to it with :func:`use_scoring_attention`; no model code is patched.

Hand-off: a :class:`~ros2_infmllm.memory.cache.BoundedLayer` that wants scores for the
current forward sets its ``score_request`` (a :class:`ScoreRequest`) in ``update`` and
names itself on the keys that ``update`` returns (their attribute :data:`LAYER_ATTR`):
the model hands those keys to its attention call, which finds the layer on them (every
family passes the cache's keys on unchanged; not every one passes its attention keyword
arguments to ``Cache.update``), computes
``softmax(q_window . K^T * scaling + causal mask)`` for only the last ``window`` queries
(all queries for H2O), sums over those queries, averages the GQA group of each KV head,
gives the ``[H_kv, T]`` result to the layer, clears the request, and then returns
transformers' own SDPA output. Cost: ``window x T`` logits per head, versus ``q x T`` for
an eager prefill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTN_NAME = "infmllm_sdpa"
LAYER_ATTR = "bounded_cache_layer"   # attribute of a layer's returned keys: that layer


@dataclass(frozen=True)
class ScoreRequest:
    """What a cache layer wants from its next attention call.

    ``n_queries``: the window of last queries to score (None = all queries).
    ``query_only``: the layer takes the call's query instead (``receive_query``) and scores
    it later with the queries of the steps after it, in one batch.
    """

    n_queries: int | None
    query_only: bool = False


_FUTURE: dict[tuple, torch.Tensor] = {}     # (w, length, device) -> causal mask, see _future
_FUTURE_KEPT = 64


def _future(w: int, length: int, device: torch.device) -> torch.Tensor:
    """``[w, length]`` True where key ``j`` follows query ``i`` (the last ``w`` of ``length``).

    Kept per shape: a question scores every layer at the same shape, and on a GPU the five
    small kernels that build the mask cost more host time than the masking itself.
    """
    key = (w, length, str(device))
    mask = _FUTURE.get(key)
    if mask is None:
        if len(_FUTURE) >= _FUTURE_KEPT:
            _FUTURE.clear()
        rows = torch.arange(w, device=device).unsqueeze(1) + (length - w)
        cols = torch.arange(length, device=device).unsqueeze(0)
        mask = _FUTURE[key] = cols > rows
    return mask


def window_scores(query: torch.Tensor, key: torch.Tensor, n_queries: int | None,
                  scaling: float | None, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of the last ``n_queries`` queries, summed over them: ``[H_kv, T]`` float32.

    ``query`` is ``[1, H_q, q, D]``, ``key`` ``[1, H_kv, T, D]``; GQA groups are averaged.
    As in eager attention, logits are computed in the model dtype and the softmax in
    float32. The causal mask assumes the queries are the last ``q`` tokens of the keys
    unless a 4-D ``attention_mask`` is given, whose rows are used instead. One batched
    matmul over the KV heads; the keys are neither copied nor repeated per query head.
    """
    _, n_q_heads, q_len, head_dim = query.shape
    n_kv, length = key.shape[1], key.shape[2]
    w = q_len if n_queries is None else min(n_queries, q_len)
    groups = n_q_heads // n_kv
    if scaling is None:
        scaling = head_dim ** -0.5
    qw = query[0, :, q_len - w:].reshape(n_kv, groups * w, head_dim)
    logits = torch.bmm(qw, key[0].transpose(1, 2)) * scaling           # [H_kv, g * w, T]
    logits = logits.float().view(n_kv, groups, w, length)
    if attention_mask is not None and attention_mask.dim() == 4:
        m = attention_mask[0, :, attention_mask.shape[-2] - w:, :length]   # [1 or H, w, T]
        if m.shape[0] > 1:
            m = m.view(n_kv, groups, w, length)
        if m.dtype == torch.bool:
            logits = logits.masked_fill(~m, float("-inf"))
        else:
            logits = logits + m.float()
    elif w > 1:
        logits = logits.masked_fill(_future(w, length, key.device), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return probs.sum(dim=2).mean(dim=1)


def give_scores(layer: Any, query: torch.Tensor, key: torch.Tensor, scaling: float | None,
                attention_mask: torch.Tensor | None) -> bool:
    """Hand this attention call's window scores to ``layer`` if it has a ``score_request``.

    What the scoring attention does before its SDPA; also called by attention code
    outside transformers' attention interface (``accel/llama_decode.py``). ``layer`` is
    the cache layer this call attends over (None: none). Returns whether it was served.
    """
    request = None if layer is None else layer.score_request
    if request is None:
        return False
    layer.score_request = None
    if key.shape[0] != 1 or key.shape[2] != layer.length:
        raise RuntimeError(
            f"scoring attention: key length {key.shape[2]} (batch {key.shape[0]}) does not "
            f"match the cache layer awaiting scores ({layer.length} tokens, batch 1)")
    if request.query_only:
        layer.receive_query(query, scaling if scaling is not None else query.shape[-1] ** -0.5)
        return True
    with torch.no_grad():
        scores = window_scores(query, key, request.n_queries, scaling, attention_mask)
    layer.receive_scores(scores)
    return True


def scoring_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                              value: torch.Tensor, attention_mask: torch.Tensor | None,
                              dropout: float = 0.0, scaling: float | None = None,
                              is_causal: bool | None = None, **kwargs):
    """SDPA attention that first hands window scores to the cache layer that asked for them."""
    give_scores(getattr(key, LAYER_ATTR, None), query, key, scaling, attention_mask)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, is_causal=is_causal, **kwargs)


_registered = False


def register() -> None:
    """Register the attention function and its (SDPA) mask builder once."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTN_NAME, scoring_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_NAME, sdpa_mask)
    _registered = True


def use_scoring_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch ``model`` (and its sub-configs) to the scoring attention; returns the model."""
    register()
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        try:
            setter(ATTN_NAME)
            return model
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    config = model.config
    config._attn_implementation = ATTN_NAME
    text = config.get_text_config() if hasattr(config, "get_text_config") else None
    if text is not None and text is not config:
        text._attn_implementation = ATTN_NAME
    return model
