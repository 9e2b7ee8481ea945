"""Fused input projections for batch-1 decode: one GEMV for q/k/v and one for gate/up.

At batch 1 every linear layer is a matrix-vector product that streams its weights once;
three launches for q, k and v (two for gate and up) read the same input and each pays a
launch and a partly idle tail. :func:`fuse_projections` concatenates those weights into
one matrix per group (the originals are freed, so memory does not grow) and replaces the
group's modules with :class:`FusedPart` views of it. The model's own ``forward`` code is
untouched: the first part called with an input computes the whole group's output once
and the sibling parts called with the same input tensor take their slice of it; a part
called with any other input (another order, another caller) computes its own slice, so
the result never depends on the call order, only the speed does. For inference only (no
gradients through the parts, state-dict keys change).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class FusedGroup(nn.Module):
    """One concatenated weight ``[sum(out), in]`` (and bias) shared by the group's parts."""

    def __init__(self, linears: list[nn.Linear]):
        """Concatenate ``linears`` (same input size, dtype and device)."""
        super().__init__()
        self.sizes = [lin.out_features for lin in linears]
        self.weight = nn.Parameter(torch.cat([lin.weight.detach() for lin in linears]),
                                   requires_grad=False)
        biases = [lin.bias for lin in linears]
        if any(b is not None for b in biases):
            self.bias = nn.Parameter(torch.cat([
                b.detach() if b is not None else torch.zeros(n, dtype=self.weight.dtype,
                                                             device=self.weight.device)
                for b, n in zip(biases, self.sizes)]), requires_grad=False)
        else:
            self.bias = None
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self._input: Optional[torch.Tensor] = None
        self._parts: list = []
        self._taken: set[int] = set()

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Output of part ``index`` for input ``x`` (the group's GEMV runs once per input)."""
        if x is not self._input or index in self._taken:
            out = F.linear(x, self.weight, self.bias)
            self._input, self._parts, self._taken = x, list(out.split(self.sizes, dim=-1)), set()
        y = self._parts[index]
        self._taken.add(index)
        if len(self._taken) == len(self.sizes):        # every part served: drop references
            self._input, self._parts, self._taken = None, [], set()
        return y

    def slice_weight(self, index: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weight (and bias) rows of part ``index`` (views of the fused tensors)."""
        a, n = self.offsets[index], self.sizes[index]
        return self.weight[a:a + n], (self.bias[a:a + n] if self.bias is not None else None)


class FusedPart(nn.Module):
    """Stands in for one ``nn.Linear`` of a fused group."""

    def __init__(self, group: FusedGroup, index: int, in_features: int):
        """Part ``index`` of ``group``."""
        super().__init__()
        self.index = index
        self.in_features = in_features
        self.out_features = group.sizes[index]
        object.__setattr__(self, "group", group)    # not a submodule: no double listing

    @property
    def weight(self) -> torch.Tensor:
        """Return this part's rows of the fused matrix, as a view."""
        return self.group.slice_weight(self.index)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the slice of the group's output for ``x``."""
        return self.group.part(x, self.index)


def fuse_projections(model: nn.Module) -> int:
    """Fuse q/k/v and gate/up projections of every decoder layer in place; return groups fused.

    A group is fused only when all its members are plain ``nn.Linear`` layers with the
    same input size, dtype and device (Llama, Qwen2, Qwen2-VL, Mistral layouts);
    anything else is left as it is. Idempotent.
    """
    fused = 0
    for parent in list(model.modules()):
        for names in GROUPS:
            mods = [getattr(parent, n, None) for n in names]
            if not all(type(m) is nn.Linear for m in mods):
                continue
            ref = mods[0]
            if any(m.in_features != ref.in_features or m.weight.dtype != ref.weight.dtype
                   or m.weight.device != ref.weight.device for m in mods):
                continue
            with torch.no_grad():
                group = FusedGroup(mods)
            setattr(parent, "fused_" + "_".join(n.split("_")[0] for n in names), group)
            for i, n in enumerate(names):
                setattr(parent, n, FusedPart(group, i, ref.in_features))
            fused += 1
    return fused
