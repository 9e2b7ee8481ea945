"""The drop-reason table (issue 23): every reason the node counts is documented, and only those."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'node.md'


def _table_reasons() -> set:
    """Backticked names in the first column of docs/node.md's dropped-frames table."""
    text = DOC.read_text()
    section = text.split('## Dropped frames', 1)[1].split('\n## ', 1)[0]
    rows = [line for line in section.splitlines() if line.startswith('| `')]
    return {name for row in rows for name in re.findall(r'`([a-z_]+)`', row.split('|')[1])}


def _node():
    pytest.importorskip('ros2_infmllm_msgs',
                        reason='interfaces not built: run ./setup.sh, `. install/setup.bash`')
    from ros2_infmllm.ros import node
    return node


def test_every_drop_reason_is_in_the_docs_table_and_nothing_else():
    node = _node()
    assert set(node.DROP_REASONS) == _table_reasons()


def test_decoder_reasons_are_part_of_the_node_reasons():
    node = _node()
    from ros2_infmllm.ros import imaging
    assert set(imaging.REASONS) <= set(node.DROP_REASONS)
    assert len(set(node.DROP_REASONS)) == len(node.DROP_REASONS)


@pytest.fixture
def live_node():
    """An InfMllmNode in this process (own context, no model loaded)."""
    node = _node()
    import rclpy
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=231)
    n = node.InfMllmNode(context=context)
    try:
        yield n
    finally:
        n.destroy_node()
        context.try_shutdown()


class _Session:
    """Stands in for the engine: ingest_frame raises what the test asks for."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def ingest_frame(self, rgb, stamp, camera):
        raise self.error

    def status(self):
        raise RuntimeError('no status in this test')


def _feed(n, topic, msg, compressed, session):
    """Hand one message to the node's runner as its camera callback would; its drops."""
    import time
    runner = n.runner
    runner.start(session)
    runner.set_feeding(True)
    try:
        runner.offer(topic, (msg, compressed), 1.0)
        deadline = time.monotonic() + 10
        while not runner.status().cameras[topic].drops and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        runner.stop('test over')
    return runner.status().cameras[topic].drops


def _png(width: int, height: int) -> bytes:
    import cv2
    import numpy as np
    return cv2.imencode('.png', np.full((height, width, 3), 128, np.uint8))[1].tobytes()


@pytest.mark.parametrize('error, reason', [
    (ValueError('frame must be HxWx3 RGB'), 'frame_rejected'),
    (RuntimeError('CUDA out of memory'), 'model_error'),
])
def test_engine_refusal_and_model_failure_are_told_apart(live_node, error, reason):
    from sensor_msgs.msg import CompressedImage
    topic = live_node.get_parameter('image_topics').value[0]
    msg = CompressedImage(format='png', data=_png(8, 6))
    assert _feed(live_node, topic, msg, True, _Session(error)) == {reason: 1}


@pytest.mark.parametrize('compressed', [True, False], ids=['png_1x1', 'rgb8_1x1'])
def test_one_pixel_frame_is_too_small_not_model_error(live_node, compressed):
    """Issue 23: a 1x1 PNG reached the model and was counted as model_error."""
    from sensor_msgs.msg import CompressedImage, Image
    topic = live_node.get_parameter('image_topics').value[0]
    msg = (CompressedImage(format='png', data=_png(1, 1)) if compressed
           else Image(width=1, height=1, encoding='rgb8', step=3, data=bytes(3)))
    # the session would fail like the describer did: it must not even be reached
    drops = _feed(live_node, topic, msg, compressed, _Session(ValueError('frame too small')))
    assert drops == {'too_small': 1}


def test_extreme_aspect_downscaled_below_two_pixels_is_too_small(live_node):
    from sensor_msgs.msg import Image
    topic = live_node.get_parameter('image_topics').value[0]
    msg = Image(width=4000, height=3, encoding='mono8', step=4000, data=bytes(12000))
    drops = _feed(live_node, topic, msg, False, _Session(RuntimeError('not reached')))
    assert drops == {'too_small': 1}
