"""The evidence tally: attention mass per dense source index, summed on the device.

Why an object of its own: the cache layers add to it when their scores arrive (from the
attention call) and the cache reads, saves and clears it; both hold this one object, so a
layer never needs its cache.
"""

from __future__ import annotations

import torch


class EvidenceTally:
    """Running ``[>= sources]`` float32 sums, grown on the device of the scores added."""

    def __init__(self):
        """Start empty; ``sources`` is kept equal to the cache's count of dense indices."""
        self.values: torch.Tensor | None = None
        self.sources = 1

    def add(self, source: torch.Tensor, scores: torch.Tensor) -> None:
        """Add ``scores`` ``[H, t]`` to the entries of their tokens' ``source`` ``[H, t]``."""
        if self.values is None or self.values.numel() < self.sources \
                or self.values.device != scores.device:
            old = self.values
            self.values = torch.zeros(max(self.sources, 16) * 2, dtype=torch.float32,
                                      device=scores.device)
            if old is not None:
                self.values[:old.numel()] += old.to(scores.device)
        self.values.scatter_add_(0, source.reshape(-1), scores.reshape(-1).float())
