"""Inf-MLLM: sinks + recent + attention saddles by biased, pooled window score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..selection import age_decay, local_sum, novelty
from .base import SELECTIONS, Policy, SelectionInput
from .spec import AUTO_RECENT, BUDGET, KERNEL, N_RECENT, N_SINK, REPOSITION, WINDOW, knob


@dataclass
class InfMLLMPolicy(Policy):
    """Inf-MLLM (Ning et al., "Inf-MLLM: Efficient Streaming Inference of Multimodal LLMs", 2024).

    After each chunk the last ``window`` queries score every cached token (softmax
    attention summed over the window, per KV head, GQA groups averaged); the scores are
    smoothed by a local sum of width ``kernel`` so whole clusters ("attention saddles")
    survive; then multiplied by ``exp(-bias * age / budget)`` (age in tokens from the newest)
    so the memory keeps following the scene. The ``n_sink`` first and ``n_recent`` newest
    tokens are always kept, the best of the rest fill the budget, and kept tokens get
    contiguous positions with exact RoPE re-rotation.

    Parameters
    ----------
    budget : int
        Tokens kept per layer after compaction.
    n_sink : int
        First tokens always kept.
    n_recent : int
        Newest tokens always kept; -1 (default): ``min(256, budget // 4)``.
    window : int
        Trailing queries of each chunk used to score the cache.
    kernel : int
        Odd width of the local-sum pooling (1 = none).
    bias : float
        Strength of the exponential age decay; a token one budget older than the newest
        has its score multiplied by ``exp(-bias)``; 0 disables it.
    reposition : bool
        Re-assign contiguous positions 0..n-1 to kept tokens (the paper's length extrapolation).
    carry : float
        In [0, 0.999]: share of a token's relevance that survives ``budget`` more tokens of
        stream. 0 scores each compaction by the newest chunk alone (the paper's retrieval
        window); above 0 each chunk's window score is added to the decayed relevance of
        the earlier ones (every chunk is then scored), so a token that an earlier chunk
        found relevant is not evicted as soon as one chunk ignores it.
    novelty : float
        Exponent of the novelty factor ``(1 - max cosine to the recent window) ** novelty``
        that multiplies each older token's score before pooling (value vectors, centred), so
        an old copy of what the newest ``n_recent`` tokens hold again yields its slot to
        content found nowhere else; 0 disables it.
    selection : {"per_head", "shared"}
        ``per_head``: every KV head of every layer keeps its own best tokens (equal
        counts). ``shared``: one token set for all layers and heads, ranked by the mean of
        their normalised priorities, so a kept token is whole (every layer can use it).
    landmarks : float
        Share of the budget that the caller's landmarks may hold, forced kept (best rank
        first; :meth:`~ros2_infmllm.memory.cache.BoundedCache.set_landmarks`). Why: the
        window's attention follows what the scene shows now, and the biased score lets the
        old frames go in order of age, so the first sighting of a thing, or the frame where
        it left, is evicted like any old frame; "what came first", "how many times" and
        "when did it leave" need exactly those few tokens. 0 ignores landmarks.
    """

    budget: int = BUDGET(1024)
    n_sink: int = N_SINK(4)
    n_recent: int = N_RECENT(AUTO_RECENT)
    window: int = WINDOW(32)
    kernel: int = KERNEL(7)
    bias: float = knob(1.0, "strength of the bias toward newer tokens", lo=0.0, hi=100.0)
    reposition: bool = REPOSITION(True)
    carry: float = knob(0.0, "relevance left after budget more tokens", lo=0.0, hi=0.999,
                        hi_why="1 would never forget")
    novelty: float = knob(2.0, "exponent of the novelty factor: old copies of recent content "
                          "yield", lo=0.0, hi=16.0)
    selection: str = knob("shared", "shared (one token set for all layers and heads) | "
                          "per_head", choices=SELECTIONS)
    landmarks: float = knob(0.2, "share of the budget for the landmark tokens (first "
                            "sightings, arrivals, departures), forced kept", lo=0.0, hi=0.5)

    name: ClassVar[str] = "inf_mllm"
    recent: ClassVar[int] = 256
    score_mode: ClassVar[str | None] = "window"

    def priority(self, inp: SelectionInput) -> torch.Tensor:
        """Pooled (novelty-weighted) window score with exponential age decay."""
        scores = inp.scores
        if self.novelty > 0:
            if inp.values is None:
                raise ValueError("inf_mllm with novelty > 0 needs SelectionInput.values")
            scores = scores * novelty(inp.values, self.n_sink, self.n_recent) ** self.novelty
        pooled = local_sum(scores, self.kernel)
        return age_decay(pooled, inp.age, self.bias, self.budget)
