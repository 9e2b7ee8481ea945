"""StreamingLLM: attention sinks + recent window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Policy, SelectionInput
from .spec import BUDGET, N_SINK, REPOSITION


@dataclass
class StreamingLLMPolicy(Policy):
    """StreamingLLM (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks").

    Keeps the first ``n_sink`` tokens and the ``budget - n_sink`` most recent ones.

    Parameters
    ----------
    budget : int
        Tokens kept per layer after compaction.
    n_sink : int
        First tokens always kept (attention sinks).
    reposition : bool
        Re-assign contiguous positions in the cache, as the paper does.
    """

    budget: int = BUDGET(1024)
    n_sink: int = N_SINK(4)
    reposition: bool = REPOSITION(True)

    name: ClassVar[str] = "streaming_llm"

    def priority(self, inp: SelectionInput) -> torch.Tensor:
        """Newer is better; sinks are forced by the base class."""
        return -inp.age.float()
