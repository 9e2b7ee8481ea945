"""The node's spin loop outlives an entity destroyed while the executor used it."""
import pytest

pytest.importorskip('rclpy')
from rclpy.exceptions import InvalidHandle  # noqa: E402

from ros2_infmllm.ros import node as node_mod  # noqa: E402


class FlakyExecutor:
    """Raises InvalidHandle from its first ``spin``, as rclpy does after such a race."""

    def __init__(self):
        self.spins = 0

    def spin(self):
        self.spins += 1
        if self.spins == 1:
            raise InvalidHandle('cannot use Destroyable because destruction was requested')


class LoggingNode:
    def __init__(self):
        self.warnings = []

    def get_logger(self):
        return self

    def warning(self, text):
        self.warnings.append(text)


def test_spin_goes_on_after_invalid_handle(monkeypatch):
    monkeypatch.setattr(node_mod.rclpy, 'ok', lambda: True)
    executor, node = FlakyExecutor(), LoggingNode()
    node_mod.spin(executor, node)
    assert executor.spins == 2
    assert len(node.warnings) == 1 and 'destroyed while in use' in node.warnings[0]


def test_other_errors_still_end_the_spin(monkeypatch):
    monkeypatch.setattr(node_mod.rclpy, 'ok', lambda: True)

    class Broken(FlakyExecutor):
        def spin(self):
            raise RuntimeError('bug')
    with pytest.raises(RuntimeError):
        node_mod.spin(Broken(), LoggingNode())
