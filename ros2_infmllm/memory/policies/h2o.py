"""H2O: heavy hitters by attention accumulated over every step, plus recent tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Policy, SelectionInput
from .spec import AUTO_RECENT, BUDGET, N_RECENT, N_SINK, REPOSITION


@dataclass
class H2OPolicy(Policy):
    """H2O (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference", 2023).

    Every forward (prefill chunks and every decode step) adds the attention each cached
    token received from every query (GQA groups averaged) to its running total; the
    tokens with the largest totals are kept along with the ``n_recent`` newest ones.
    Computing the attention probabilities of all queries at every step is this
    baseline's inherent extra cost. Evictions follow the cache's schedule (after each
    chunk, every ``decode_slack`` decode steps); the paper's greedy one-token-per-step
    eviction is ``BoundedCache(..., decode_slack=1)``.

    Parameters
    ----------
    budget : int
        Tokens kept per layer after compaction.
    n_recent : int
        Newest tokens always kept; -1 (default): ``min(256, budget // 4)``.
    n_sink : int
        First tokens always kept (0 in the paper).
    reposition : bool
        Re-assign contiguous positions to kept tokens (keeps positions in range).
    """

    budget: int = BUDGET(1024)
    n_recent: int = N_RECENT(AUTO_RECENT)
    n_sink: int = N_SINK(0)
    reposition: bool = REPOSITION(True)

    name: ClassVar[str] = "h2o"
    recent: ClassVar[int] = 256
    score_mode: ClassVar[str | None] = "all"

    def priority(self, inp: SelectionInput) -> torch.Tensor:
        """Accumulated attention."""
        return inp.scores
