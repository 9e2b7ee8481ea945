"""Sliding window: keep the most recent ``budget`` tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Policy, SelectionInput
from .spec import BUDGET, REPOSITION


@dataclass
class WindowPolicy(Policy):
    """Sliding-window cache (the classic local-attention baseline).

    Parameters
    ----------
    budget : int
        Tokens kept per layer after compaction (the most recent ones).
    reposition : bool
        Re-assign contiguous positions 0..n-1 to the kept tokens (exact RoPE re-rotation).
    """

    budget: int = BUDGET(1024)
    reposition: bool = REPOSITION(True)

    name: ClassVar[str] = "window"

    def priority(self, inp: SelectionInput) -> torch.Tensor:
        """Newer is better."""
        return -inp.age.float()
