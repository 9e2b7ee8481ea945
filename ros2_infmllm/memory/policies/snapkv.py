"""SnapKV-style selection: pooled window score, no bias, no re-positioning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..selection import local_sum
from .base import Policy, SelectionInput
from .spec import AUTO_RECENT, BUDGET, KERNEL, N_RECENT, N_SINK, REPOSITION, WINDOW


@dataclass
class SnapKVPolicy(Policy):
    """SnapKV (Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", 2024).

    The last ``window`` queries of a chunk score every cached token; scores are pooled
    with a local sum of width ``kernel``; the best tokens plus the ``n_recent`` newest are
    kept. Kept keys keep their rotation and new tokens continue from the largest position
    seen, so positions keep growing with the stream and eventually exceed the model's
    trained range (callers must pass ``position_ids`` from ``cache.next_position()``).

    Parameters
    ----------
    budget : int
        Tokens kept per layer after compaction.
    window : int
        Trailing queries of each chunk whose attention is scored (observation window).
    kernel : int
        Odd width of the local-sum pooling.
    n_recent : int
        Newest tokens always kept; -1 (default): ``min(32, budget // 4)`` (the
        observation window).
    n_sink : int
        First tokens always kept.
    reposition : bool
        False in SnapKV; may be turned on for comparison.
    """

    budget: int = BUDGET(1024)
    window: int = WINDOW(32)
    kernel: int = KERNEL(7)
    n_recent: int = N_RECENT(AUTO_RECENT)
    n_sink: int = N_SINK(0)
    reposition: bool = REPOSITION(False)

    name: ClassVar[str] = "snapkv"
    recent: ClassVar[int] = 32
    score_mode: ClassVar[str | None] = "window"

    def priority(self, inp: SelectionInput) -> torch.Tensor:
        """Pooled window score."""
        return local_sum(inp.scores, self.kernel)
