"""The side-by-side picture keeps every question readable: close marks are spread apart."""
from ros2_infmllm.eval.sidebyside import _spread


def test_close_marks_are_spread_in_order_and_far_ones_kept():
    back = [1.0, 1.0, 0.0, 155.0, 130.0, None, 1.5]
    x = _spread(back)
    assert x[5] is None
    assert x[2] == 0.0 and x[3] == 155.0 and x[4] == 130.0     # already apart: unchanged
    near = sorted(x[i] for i in (0, 1, 2, 6))
    gap = 0.03 * 155.0
    assert all(b - a >= gap - 1e-9 for a, b in zip(near, near[1:]))
    assert near[-1] - near[0] < 4 * gap                          # moved no more than needed


def test_nothing_known_is_returned_as_is():
    assert _spread([None, None]) == [None, None]
    assert _spread([]) == []
