"""The one compaction: cut the layers of a :class:`~.storage.Buffers` back to the budget.

Used for every layer at once (the shared stack, the usual case: all layers see the same
chunk) and for one layer alone (its own buffers, a ``Buffers`` of one), by prefill, decode
and the CUDA-graph runner alike (all through ``BoundedCache.compact`` /
``compact_pending``). Selection, M-RoPE re-packing and the metadata gather run once over
all the layers given; keys and values are gathered and re-rotated per group of layers
(a bounded scratch), with no host synchronisation: the M-RoPE next positions stay on the
device (:class:`DeviceInts`) until a caller reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .policies import Policy
from .policies.base import SelectionInput
from .rope import RopeSpec, repack_positions
from .storage import Buffers

_GROUP_ELEMENTS = 1 << 23   # kept key elements gathered + re-rotated per step of a group


class DeviceInts:
    """Integers a compaction left on the device, read to the host together on first use."""

    def __init__(self, values: torch.Tensor):
        """Hold ``values`` (a 1-D integer tensor); nothing is read yet."""
        self.values = values
        self.host: list[int] | None = None

    def get(self, i: int) -> int:
        """Entry ``i`` (the first call reads every entry in one transfer)."""
        if self.host is None:
            self.host = self.values.tolist()
        return int(self.host[i])


class Scratch:
    """Compaction scratch tensors, made once per role and shape, reused by every call."""

    def __init__(self):
        """Start with no scratch."""
        self.tensors: dict[tuple, torch.Tensor] = {}

    def get(self, role: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """Scratch ``role`` of ``shape`` with the dtype and device of ``like``."""
        key = (role, shape, like.dtype, str(like.device))
        buf = self.tensors.get(key)
        if buf is None:
            buf = self.tensors[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def nbytes(self) -> int:
        """Bytes of all scratch tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass
class Compacted:
    """What one compaction left: the same for every layer it ran over.

    ``next_position``: the next RoPE position (an int, a :class:`DeviceInts` per layer for
    M-RoPE, None when the policy keeps positions). ``scored_len`` / ``unscored`` as in
    :func:`scored_after_compaction`.
    """

    kept: int
    evicted: int
    next_position: int | DeviceInts | None
    scored_len: int
    unscored: int


def scored_after_compaction(policy: Policy, scored: int, unscored: int,
                            kept: int) -> tuple[int, int]:
    """``(scored_len, unscored)`` of a layer after a compaction kept ``kept`` tokens.

    The compaction is ``policy.select(inp, min_recent=unscored)``.

    Kept indices are ascending, so the kept unscored tokens (all of them, or the newest
    ``budget - n_sink`` and any unscored sinks) end the buffer.
    """
    if policy.score_mode is None:
        return 0, 0
    n_sink = policy.forced()[0]
    if unscored <= policy.capacity - n_sink:
        return kept - unscored, unscored
    left = min(n_sink, scored)
    return left, kept - left


def compact(buffers: Buffers, policy: Policy, rope: RopeSpec | None, rows: int, length: int,
            arrived: int, scored_len: int, scratch: Scratch,
            landmarks: torch.Tensor | None = None) -> Compacted:
    """Keep ``policy.capacity`` of the first ``length`` tokens of every layer of ``buffers``.

    Every layer holds ``length`` tokens, has seen ``arrived`` and has valid scores for the
    first ``scored_len`` (the newest ones since are forced kept); their metadata must be
    written (no pending segments). ``landmarks``: flat sorted arrival bounds ``[lo0, hi0,
    lo1, ...]`` of ranges whose tokens the policy keeps (``Policy.landmark_tokens``). The
    kept tokens move to the front of the same buffers; with re-positioning their positions
    are re-packed and their keys re-rotated by the position change.
    """
    n = length
    n_layers, h = buffers.keys.shape[0], buffers.keys.shape[1]
    k_dim, v_dim = buffers.keys.shape[-1], buffers.values.shape[-1]
    meta = buffers.meta[..., :n]                                           # [L, R+2, H, n]
    age = ((arrived - 1) - meta[:, rows]).reshape(n_layers * h, n)
    scores = None
    unscored = 0
    if policy.score_mode is not None:
        unscored = n - scored_len
        if unscored and not policy.keeps_scores:
            buffers.scores[:, :, scored_len:n] = 0.0         # slots of earlier tokens
        scores = buffers.scores[:, :, :n].reshape(n_layers * h, n)
    values = buffers.values[:, :, :n].reshape(n_layers * h, n, v_dim) \
        if policy.needs_values else None
    marks = None
    if landmarks is not None:
        arrival = meta[:, rows].reshape(n_layers * h, n).contiguous()
        inside = torch.searchsorted(landmarks.to(arrival.dtype), arrival, right=True)
        marks = inside % 2 == 1                         # odd: between some lo and its hi
    inp = SelectionInput(scores=scores, age=age, length=n, values=values, landmarks=marks)
    idx = policy.select(inp, min_recent=unscored)
    k = idx.shape[-1]
    idx = idx.view(n_layers, h, k)
    kept_meta = torch.gather(meta, 3, idx.unsqueeze(1).expand(-1, rows + 2, -1, -1))
    if scores is not None:          # kept scores stay valid for the next compaction
        buffers.scores[:, :, :k] = buffers.scores[:, :, :n].gather(2, idx)
    delta = None
    next_pos: int | DeviceInts | None = None
    if policy.repositions:
        old_pos = kept_meta[:, :rows]                                      # [L, R, H, k]
        if rows == 1:
            new_pos = torch.arange(k, device=meta.device).expand(n_layers, 1, h, k)
            next_pos = k
        else:
            src = kept_meta[:, rows + 1]
            run_start = torch.ones_like(src, dtype=torch.bool)
            run_start[..., 1:] = src[..., 1:] != src[..., :-1]
            flat_pos = old_pos.transpose(0, 1).reshape(rows, n_layers * h, k)
            new_pos = repack_positions(flat_pos, run_start.reshape(n_layers * h, k))
            new_pos = new_pos.view(rows, n_layers, h, k).transpose(0, 1)
            next_pos = DeviceInts(new_pos.amax(dim=(1, 2, 3)) + 1) if k else 0
        delta = new_pos - old_pos
        kept_meta[:, :rows] = new_pos
    buffers.meta[..., :k] = kept_meta
    per_layer = max(1, h * k * max(k_dim, v_dim))
    group = max(1, min(n_layers, _GROUP_ELEMENTS // per_layer))
    for g0 in range(0, n_layers, group):
        g1 = min(n_layers, g0 + group)
        g = g1 - g0
        gidx = idx[g0:g1].unsqueeze(-1)
        kk = scratch.get("sk", (group, h, k, k_dim), buffers.keys)[:g]
        torch.gather(buffers.keys[g0:g1, :, :n], 2, gidx.expand(-1, -1, -1, k_dim), out=kk)
        if delta is not None:
            d = delta[g0:g1].transpose(0, 1).reshape(rows, g * h, k)
            rope.rotate_(kk.view(g * h, k, k_dim), d)
        buffers.keys[g0:g1, :, :k] = kk
        vv = scratch.get("sv", (group, h, k, v_dim), buffers.values)[:g]
        torch.gather(buffers.values[g0:g1, :, :n], 2, gidx.expand(-1, -1, -1, v_dim), out=vv)
        buffers.values[g0:g1, :, :k] = vv
    scored, unscored = scored_after_compaction(policy, scored_len, unscored, k)
    return Compacted(kept=k, evicted=n - k, next_position=next_pos, scored_len=scored,
                     unscored=unscored)
