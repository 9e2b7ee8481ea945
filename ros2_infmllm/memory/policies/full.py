"""The reference: keep everything (the cache grows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Policy, SelectionInput


@dataclass
class FullPolicy(Policy):
    """Full cache: never evicts; the quality reference and the memory worst case.

    No parameters. Buffers grow by amortised doubling.
    """

    name: ClassVar[str] = "full"
    compacts: ClassVar[bool] = False

    def priority(self, inp: SelectionInput) -> torch.Tensor:
        """Never called: this policy does not compact."""
        raise RuntimeError("the full policy never compacts")
