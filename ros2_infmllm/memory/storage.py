"""Key, value and metadata buffers of one or several cache layers, with a leading layer dim.

Why one shape for both: the compaction (``compaction.py``) runs on a :class:`Buffers` of
any number of layers, so one layer (its own ``Buffers`` of one) and every layer at once
(the :class:`Stack`, one allocation per role) go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Buffers:
    """Per-layer buffers ``[L, ...]``; ``cap`` is the token capacity.

    ``keys`` / ``values`` ``[L, H, cap, D]``, ``meta`` ``[L, R + 2, H, cap]`` int64 (the
    position rows, then arrival index and dense source), ``scores`` and ``att``
    ``[L, H, cap]`` float32 (the policy's running scores, the decode attention per slot).
    """

    keys: torch.Tensor
    values: torch.Tensor
    meta: torch.Tensor
    scores: torch.Tensor
    att: torch.Tensor

    @classmethod
    def zeros(cls, n_layers: int, heads: int, capacity: int, k_dim: int, v_dim: int,
              rows: int, dtype: torch.dtype, device: torch.device) -> "Buffers":
        """Allocate zeroed buffers for ``n_layers`` layers of ``capacity`` tokens."""
        return cls(
            keys=torch.zeros((n_layers, heads, capacity, k_dim), dtype=dtype, device=device),
            values=torch.zeros((n_layers, heads, capacity, v_dim), dtype=dtype, device=device),
            meta=torch.zeros((n_layers, rows + 2, heads, capacity), dtype=torch.long,
                             device=device),
            scores=torch.zeros((n_layers, heads, capacity), dtype=torch.float32, device=device),
            att=torch.zeros((n_layers, heads, capacity), dtype=torch.float32, device=device))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every buffer, keys first."""
        return self.keys, self.values, self.meta, self.scores, self.att

    def layer(self, i: int) -> "Buffers":
        """Return views of layer ``i`` alone (a ``Buffers`` of one layer)."""
        return Buffers(*(t[i:i + 1] for t in self.tensors()))

    def copy_prefix(self, other: "Buffers", n: int) -> None:
        """Copy the first ``n`` tokens of every buffer of ``other`` into these."""
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            mine[:, :, :n] = theirs[:, :, :n]
        for mine, theirs in ((self.meta, other.meta), (self.scores, other.scores),
                             (self.att, other.att)):
            mine[..., :n] = theirs[..., :n]

    def nbytes(self) -> int:
        """Bytes of all buffers."""
        return sum(t.numel() * t.element_size() for t in self.tensors())


class Stack:
    """One allocation per buffer role shared by the layers (layer ``i`` uses index ``i``).

    Lets compaction gather every layer's kept tokens in one op. ``spec`` is what a layer
    must match to join (heads, key/value dims, dtype, device, capacity); a layer that
    does not match or later reallocates uses its own buffers, and the stack stops serving
    batched compaction.
    """

    def __init__(self, n_layers: int, spec: tuple, rows: int, device: torch.device):
        """Allocate every layer's slot; ``spec`` is ``(H, Dk, Dv, dtype, device name, cap)``."""
        heads, k_dim, v_dim, dtype, _, capacity = spec
        self.spec = spec
        self.buffers = Buffers.zeros(n_layers, heads, capacity, k_dim, v_dim, rows, dtype,
                                     device)
        self.members = [False] * n_layers    # layers that took their slot
        self.refused = False                 # a layer did not match ``spec``

    def slot_bytes(self) -> int:
        """Bytes of one layer's slot (all roles)."""
        return self.buffers.layer(0).nbytes()
