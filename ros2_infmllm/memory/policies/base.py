"""Base class of the eviction policies: validation and the shared selection plumbing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..selection import shared_top_k, top_k_per_head
from .spec import AUTO_RECENT, knobs


SELECTIONS = ("per_head", "shared")


@dataclass
class SelectionInput:
    """What a policy may look at when a layer compacts.

    Parameters
    ----------
    scores : torch.Tensor or None
        ``[H_kv, T]`` float32: window scores of the last scored chunk (``score_mode ==
        "window"``), those scores plus the decayed relevance carried from earlier chunks
        (``"window"`` with ``carry > 0``), or attention accumulated over every step
        (``"all"``); None for policies that need no scores.
    age : torch.Tensor
        ``[H_kv, T]`` int64: tokens between each cached token and the newest one (0 = newest).
    length : int
        Number of cached tokens ``T``.
    values : torch.Tensor or None
        ``[H_kv, T, D]`` value vectors of the cached tokens, for policies whose
        :attr:`Policy.needs_values` is true (novelty against the recent window); else None.
    landmarks : torch.Tensor or None
        ``[H_kv, T]`` bool: the tokens of the landmarks the cache was given
        (:meth:`~ros2_infmllm.memory.cache.BoundedCache.set_landmarks`) that fit the
        policy's ``landmarks`` share, forced kept; None when there are none.
    """

    scores: torch.Tensor | None
    age: torch.Tensor
    length: int
    values: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None


@dataclass
class Policy:
    """Common base of every eviction policy.

    Subclasses are dataclasses whose fields are their parameters, each declared with
    :func:`~.spec.knob` (type, default, range, description: the node parameters, the engine
    config and the eval ``--param`` are derived from them); they set the class attributes
    below and override :meth:`priority`. Validation runs on construction.

    Class attributes
    ----------------
    name : str
        Registry name used by :func:`make_policy`.
    score_mode : {None, "window", "all"}
        None: no attention scores needed. "window": softmax of the last ``window`` queries
        of a chunk that will be followed by compaction. "all": every query of every
        forward, accumulated (H2O); that per-step cost is part of that baseline.
    compacts : bool
        False only for the growing reference cache.
    recent : int
        ``n_recent`` when it is left at ``-1`` (``AUTO_RECENT``, the default), at most
        ``budget // 4``: a small budget keeps room for the tokens chosen by score. The one
        rule for the node, the engine and every eval task.
    """

    name: ClassVar[str] = "base"
    score_mode: ClassVar[str | None] = None
    compacts: ClassVar[bool] = True
    recent: ClassVar[int] = 0

    def __post_init__(self) -> None:
        """Resolve an automatic ``n_recent``; validate parameters as soon as the policy exists."""
        if getattr(self, "n_recent", None) == AUTO_RECENT:
            knobs(type(self))["budget"].check(self.budget)
            self.n_recent = min(self.recent, self.budget // 4)
        self.validate()

    # -- parameters shared by most policies (subclass fields override these) --
    @property
    def capacity(self) -> int | None:
        """Tokens kept per layer after compaction (None = unbounded)."""
        return getattr(self, "budget", None) if self.compacts else None

    def forced(self) -> tuple[int, int]:
        """``(n_sink, n_recent)`` always kept."""
        return int(getattr(self, "n_sink", 0)), int(getattr(self, "n_recent", 0))

    @property
    def scoring_window(self) -> int:
        """Number of trailing queries whose attention is scored."""
        return int(getattr(self, "window", 1))

    @property
    def keeps_scores(self) -> bool:
        """Whether scores persist through compactions (accumulated, not replaced)."""
        return self.score_mode == "all" or float(getattr(self, "carry", 0.0)) > 0.0

    def carry_factor(self, tokens: int) -> float:
        """Share of the carried scores kept after ``tokens`` more tokens of stream.

        1 for H2O's plain sum; ``carry ** (tokens / budget)`` for a window policy with
        ``carry``, so relevance fades per token streamed, whatever the chunk sizes.
        """
        if self.score_mode == "all":
            return 1.0
        carry = float(getattr(self, "carry", 0.0))
        return carry ** (tokens / float(self.capacity)) if carry > 0 and tokens > 0 else 1.0

    def score_weight(self, scored_tokens: int) -> float:
        """Weight of a new window score before it joins the carried relevance.

        Why: softmax attention spreads about 1/t over t cached tokens, so while the cache
        fills, the first tokens would collect up to budget/t times the relevance that later
        tokens get from a chunk, and a carrying policy would keep them for their earliness,
        not their relevance. ``min(1, t / budget)`` puts every chunk on the full cache's
        scale; once the cache holds the budget it is 1, so the steady state is unchanged.
        1 for policies that replace their scores or sum every step (H2O).
        """
        if self.score_mode != "window" or not self.keeps_scores or not self.capacity:
            return 1.0
        return min(1.0, scored_tokens / float(self.capacity))

    @property
    def landmark_tokens(self) -> int:
        """Most landmark tokens kept per compaction: the ``landmarks`` share of the budget.

        At most what the sinks and the recent tokens leave; 0 for a policy without a
        ``landmarks`` parameter (it ignores landmarks).
        """
        share = float(getattr(self, "landmarks", 0.0))
        if share <= 0 or not self.capacity:
            return 0
        n_sink, n_recent = self.forced()
        return max(0, min(int(share * self.capacity), self.capacity - n_sink - n_recent))

    @property
    def needs_values(self) -> bool:
        """Whether :meth:`priority` reads the cached value vectors (``SelectionInput.values``)."""
        return float(getattr(self, "novelty", 0.0)) > 0.0

    @property
    def repositions(self) -> bool:
        """Whether kept tokens get contiguous positions after compaction."""
        return bool(getattr(self, "reposition", False)) and self.compacts

    def validate(self) -> None:
        """Check every parameter against its knob; raise ValueError/TypeError with the reason.

        Each field's type and range come from its :func:`~.spec.knob` declaration; the one
        rule across fields (the forced tokens fit in the budget) is checked here.
        """
        for spec in knobs(type(self)).values():
            spec.check(getattr(self, spec.name))
        if "budget" in {f.name for f in dataclasses.fields(self)}:
            n_sink, n_recent = self.forced()
            if n_sink + n_recent > self.budget:
                raise ValueError(
                    f"{self.name}: budget ({self.budget}) must be >= n_sink + n_recent "
                    f"({n_sink} + {n_recent} = {n_sink + n_recent})")

    def params(self) -> dict[str, Any]:
        """Parameters as a plain dict (for describe / reports)."""
        return dataclasses.asdict(self)

    def priority(self, inp: SelectionInput) -> torch.Tensor:
        """Return ``[H_kv, T]`` priorities, higher is kept. The one hook a policy overrides."""
        raise NotImplementedError

    def select(self, inp: SelectionInput, min_recent: int = 0) -> torch.Tensor:
        """Return the indices ``[rows, budget]`` (ascending per row) of the tokens to keep.

        Rows are KV heads (of one layer, or of every layer when the cache compacts them
        together). ``min_recent`` newest tokens are kept too (tokens no scores have judged
        yet), at most ``budget - n_sink``, and so are ``inp.landmarks`` (the cache gives
        at most :attr:`landmark_tokens` of them). With ``selection == "shared"`` every row
        keeps the same tokens, chosen by the mean of the rows' normalised priorities.
        """
        n_sink, n_recent = self.forced()
        n_recent = max(n_recent, min(int(min_recent), self.capacity - n_sink))
        priority = self.priority(inp)
        marks = inp.landmarks if self.landmark_tokens else None
        if getattr(self, "selection", "per_head") == "shared":
            return shared_top_k(priority, self.capacity, n_sink, n_recent, marks)
        return top_k_per_head(priority, self.capacity, n_sink, n_recent, marks)
