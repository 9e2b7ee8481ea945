"""Shared selection helpers: local-sum pooling, age bias, per-head and shared top-k.

Every policy reduces to "a priority per (KV head, cached token), higher is kept", then
:func:`top_k_per_head` keeps the same number of tokens in every head (so the cache
tensors stay rectangular), with the first ``n_sink`` and last ``n_recent`` forced in;
:func:`shared_top_k` keeps one token set for all heads (and layers, when they compact
together).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def local_sum(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """Sum each score with its ``kernel // 2`` neighbours on each side (1-D pooling).

    Smoothing keeps whole clusters of relevant tokens instead of isolated spikes.
    ``scores`` is ``[H, T]``; the result has the same shape.
    """
    if kernel <= 1:
        return scores
    pad = kernel // 2
    pooled = F.avg_pool1d(scores.unsqueeze(1), kernel_size=kernel, stride=1, padding=pad,
                          count_include_pad=True)
    return pooled.squeeze(1) * kernel


def age_decay(scores: torch.Tensor, age: torch.Tensor, bias: float, scale: float) -> torch.Tensor:
    """Multiply scores by ``exp(-bias * age / scale)`` so newer tokens are preferred.

    ``age`` counts tokens since the newest cached token (0 = newest). ``bias = 0`` leaves
    the scores unchanged.
    """
    if bias == 0:
        return scores
    return scores * torch.exp(-bias * age.to(scores.dtype) / float(scale))


def novelty(values: torch.Tensor, n_sink: int, n_recent: int,
            block_elements: int = 1 << 22) -> torch.Tensor:
    """``1 - max cosine`` between each older token's value and the ``n_recent`` newest ones.

    Why: a stream repeats itself (routine scene lines, boilerplate code), and an old copy of
    something the recent window holds again adds nothing to what attention can read, while
    the repeat keeps attending to it and so keeps it relevant. Values carry no RoPE phase,
    so equal content at different positions compares as equal. Vectors are centred on the
    row's mean first (values share a common direction that would make every pair similar).
    ``values`` is ``[H, T, D]``; the result is ``[H, T]`` float32 in [0, 1], 1 for the sinks
    and the recent tokens (forced kept anyway) and for every token when there is no recent
    window to compare with. Computed in blocks of heads, so the similarity matrix stays
    under ``block_elements`` floats.
    """
    heads, length, _ = values.shape
    out = torch.ones((heads, length), dtype=torch.float32, device=values.device)
    start, stop = min(n_sink, length), max(length - n_recent, 0)
    if n_recent <= 0 or stop <= start:
        return out
    step = max(1, block_elements // max(1, (stop - start) * (length - stop)))
    for h0 in range(0, heads, step):
        v = values[h0:h0 + step].float()
        v = F.normalize(v - v.mean(dim=1, keepdim=True), dim=-1)
        sim = torch.bmm(v[:, start:stop], v[:, stop:].transpose(1, 2)).amax(dim=-1)
        out[h0:h0 + step, start:stop] = (1.0 - sim).clamp_(0.0, 1.0)
    return out


def top_k_per_head(priority: torch.Tensor, n_keep: int, n_sink: int = 0,
                   n_recent: int = 0, forced: torch.Tensor | None = None) -> torch.Tensor:
    """Return the indices ``[H, n_keep]`` (ascending per head) of the tokens to keep.

    The first ``n_sink`` and the last ``n_recent`` tokens always win; then the tokens
    ``forced`` marks (``[H, T]`` or ``[1, T]`` bool: landmarks), as many as fit; the
    remaining slots go to the highest ``priority`` entries of each head independently.
    """
    n_heads, length = priority.shape
    if n_keep >= length:
        idx = torch.arange(length, device=priority.device)
        return idx.unsqueeze(0).expand(n_heads, length).contiguous()
    pri = priority.float().clone()
    pri = torch.nan_to_num(pri, nan=float("-inf"))
    if n_sink > 0:
        pri[:, :min(n_sink, length)] = float("inf")
    if n_recent > 0:
        pri[:, max(length - n_recent, 0):] = float("inf")
    if forced is not None:      # below the sinks and the recent tokens, above any score
        pri.masked_fill_(forced.expand_as(pri) & (pri < float("inf")),
                         torch.finfo(torch.float32).max)
    idx = torch.topk(pri, n_keep, dim=-1, sorted=False).indices
    return torch.sort(idx, dim=-1).values


def shared_top_k(priority: torch.Tensor, n_keep: int, n_sink: int = 0,
                 n_recent: int = 0, forced: torch.Tensor | None = None) -> torch.Tensor:
    """Like :func:`top_k_per_head`, but every row keeps the same tokens.

    Each row (a KV head of a layer) is normalised to sum 1, so every head has an equal
    vote, and the mean over rows ranks the tokens. A token is then in memory everywhere or
    nowhere: the layers that copy a fact out of the context find all of it, where
    independent per-head choices keep scattered fragments of it.
    """
    rows = priority.shape[0]
    pri = torch.nan_to_num(priority.float(), nan=0.0).clamp(min=0.0)
    pri = pri / pri.sum(dim=-1, keepdim=True).clamp(min=1e-30)
    if forced is not None:
        forced = forced.any(dim=0, keepdim=True)
    idx = top_k_per_head(pri.mean(dim=0, keepdim=True), n_keep, n_sink, n_recent, forced)
    return idx.expand(rows, -1).contiguous()
