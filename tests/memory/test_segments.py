"""Segment bookkeeping (memory/segments.py): runs extend only when contiguous, and writing
them fills the metadata rows of one layer or of a stack of layers alike."""

import torch

from ros2_infmllm.memory.segments import Segment, write_segments


def test_segment_extends_only_a_contiguous_run_of_one_source():
    seg = Segment(start=4, end=7, position=10, arrival=20, source=2)
    assert seg.extends_to(7, 13, 23, 2)
    assert not seg.extends_to(8, 14, 24, 2)      # a gap in the buffer
    assert not seg.extends_to(7, 15, 23, 2)      # a jump in position (explicit positions)
    assert not seg.extends_to(7, 13, 30, 2)      # a jump in arrival
    assert not seg.extends_to(7, 13, 23, 3)      # another source


def test_write_segments_fills_positions_arrival_and_source_rows():
    rows, heads = 3, 2
    segs = [Segment(0, 3, 5, 100, 1), Segment(3, 5, 0, 200, 4)]
    meta = torch.full((rows + 2, heads, 6), -1, dtype=torch.long)
    write_segments(meta, segs, rows)
    assert meta[:rows, :, :5].tolist() == [[[5, 6, 7, 0, 1]] * heads] * rows
    assert meta[rows, :, :5].tolist() == [[100, 101, 102, 200, 201]] * heads
    assert meta[rows + 1, :, :5].tolist() == [[1, 1, 1, 4, 4]] * heads
    assert (meta[..., 5] == -1).all()
    stack = torch.full((4, rows + 2, heads, 6), -1, dtype=torch.long)
    write_segments(stack, segs, rows)
    assert all(torch.equal(layer, meta) for layer in stack)
