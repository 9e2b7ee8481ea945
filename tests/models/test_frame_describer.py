"""The OpenCV frame describer on the sample scene's rendered frames (real OpenCV detectors)."""

import numpy as np
import pytest

from ros2_infmllm.eval.scenario import Scenario, SceneRenderer
from ros2_infmllm.models.frame_describer import (FrameDescriber, format_stamp, frame_tag,
                                                 marker_ids)

RENDER = SceneRenderer(Scenario(), width=320, height=240, seed=0)


def _line(describer, t, camera='front'):
    return describer.describe(RENDER.render(t), 1_700_000_000.0 + t, camera)


@pytest.mark.parametrize('t,want', [
    (82.0, "red box on the left, ArUco marker 17 on the right"),
    (113.0, "blue box on the left, ArUco marker 42 on the right"),
    (223.0, "green box on the left, ArUco marker 7 on the right"),
    (173.0, "QR code 'DOCK B'"),
    (98.0, "QR code 'PARCEL FOR ANNA'"),
    (128.0, "QR code 'GATE CODE 4711'"),
    (150.0, "nothing in view"),
])
def test_scene_events_are_named_with_their_place(t, want):
    desc = FrameDescriber().analyse(RENDER.render(t), 'front')
    assert desc.content() == want


def test_light_levels_follow_brightness():
    d = FrameDescriber()
    assert d.analyse(RENDER.render(235.0)).light() == 'dark'          # lights dimmed event
    assert d.analyse(RENDER.render(150.0)).light() != 'dark'
    white = np.full((64, 64, 3), 250, np.uint8)
    assert d.analyse(white).light() == 'bright light'


def test_unchanged_frames_become_short_no_change_lines_per_camera():
    d = FrameDescriber()
    first = _line(d, 82.0)
    assert first.startswith(frame_tag(1_700_000_082.0, 'front'))
    assert 'ArUco marker 17' in first and first.endswith('first frame.')
    lines = [_line(d, 82.0 + 0.5 * i) for i in range(1, 6)]
    assert any(line.endswith('] no change.') for line in lines)
    assert _line(d, 82.0, camera='rear').endswith('first frame.')   # cameras are separate
    changed = _line(d, 173.0)
    assert "QR code 'DOCK B'" in changed
    d.reset()
    assert _line(d, 173.5).endswith('first frame.')
    keep = FrameDescriber(report_unchanged=False)
    assert [_line(keep, 150.0 + i) for i in range(3)][-1].endswith(('still.', 'motion.'))


def test_motion_is_coarse_so_sensor_noise_reads_still():
    d = FrameDescriber()
    d.analyse(RENDER.render(150.0))
    assert d.analyse(RENDER.render(150.0)).movement() == 'still'
    assert d.analyse(RENDER.render(82.0)).movement() == 'much motion'   # the red box appears


def test_stamp_format_and_bad_images():
    assert format_stamp(3723.46) == '01:02:03.5'
    d = FrameDescriber()
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), [[1]]):
        with pytest.raises(ValueError):
            d.analyse(bad)


@pytest.mark.parametrize('nothing', [None, np.empty((0, 1), dtype=np.int32)],
                         ids=['opencv4-none', 'opencv5-empty'])
def test_marker_ids_reads_both_nothing_found_conventions(nothing):
    assert marker_ids(nothing) == []
    assert marker_ids(np.array([[17], [42]], dtype=np.int32)) == [17, 42]
