"""Runs of tokens appended with implicit positions whose metadata is not on the device yet.

Why: a decode step appends one token at the next position; writing its metadata (positions,
arrival index, source) to the device every step would cost a few small kernels per layer
and token. A :class:`Segment` records such a run on the host instead, and
:func:`write_segments` writes the runs when the metadata is read (compaction, evidence
tally, the sources still in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Segment:
    """Buffer slots ``start:end`` holding consecutive positions and arrivals of one source."""

    start: int
    end: int
    position: int      # RoPE position of slot ``start`` (every position row)
    arrival: int       # arrival index in the stream of slot ``start``
    source: int        # dense source index of every token in the run

    def extends_to(self, slot: int, position: int, arrival: int, source: int) -> bool:
        """Whether a token at ``slot`` with these values continues this run."""
        offset = slot - self.start
        return self.end == slot and self.source == source \
            and self.position + offset == position and self.arrival + offset == arrival


def write_segments(meta: torch.Tensor, segments: list[Segment], rows: int) -> None:
    """Write ``segments`` into ``meta`` (``[..., rows + 2, H, cap]``, one layer or a stack).

    Rows ``0..rows-1`` get the positions, row ``rows`` the arrival index and row ``rows + 1``
    the source, as :class:`~ros2_infmllm.memory.cache.BoundedLayer` lays its metadata out.
    """
    heads = meta.shape[-2]
    for seg in segments:
        ramp = torch.arange(seg.end - seg.start, device=meta.device)
        meta[..., :rows, :, seg.start:seg.end] = (ramp + seg.position).expand(rows, heads, -1)
        meta[..., rows, :, seg.start:seg.end] = ramp + seg.arrival
        meta[..., rows + 1, :, seg.start:seg.end] = seg.source
