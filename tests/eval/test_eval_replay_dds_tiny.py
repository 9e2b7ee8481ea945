"""DDS replay across processes: the real node (tiny-test model) in one, the replay in another."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest

from ros2_infmllm.eval.make_sample_bag import write_sample_bag

pytest.importorskip('rclpy')
pytest.importorskip('ros2_infmllm_msgs.srv', reason='interfaces not built (./setup.sh)')
pytest.importorskip('ros2_infmllm.ros.node', reason='node not installed')

QUESTIONS = """
camera: /camera/image_raw
questions:
  - id: red
    t: 13.0
    question: Which ArUco marker id is next to the red box?
    expected: 17
    match: numeric
    evidence: [[10.0, 16.0]]
"""


def test_dds_replay_into_node_tiny(tmp_path):
    write_sample_bag(tmp_path / 'bag', duration=16.0, rate=5.0, second_camera=False)
    (tmp_path / 'q.yaml').write_text(QUESTIONS)
    (tmp_path / 'params.yaml').write_text(
        "/**:\n  ros__parameters:\n    use_sim_time: true\n    model: 'tiny-test'\n"
        "    device: 'cpu'\n    frame_rate: 2.0\n    image_topics: ['/camera/image_raw']\n"
        "    memory_view_rate: 2.0\n"
        "    memory:\n      policy: 'inf_mllm'\n      budget: 256\n      n_recent: 64\n")
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50))
    node = subprocess.Popen([sys.executable, '-m', 'ros2_infmllm.ros.launch', '--params-file',
                             str(tmp_path / 'params.yaml')], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out = tmp_path / 'replay.json'
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, '-m', 'ros2_infmllm.eval', 'replay', '--bag',
                             str(tmp_path / 'bag'), '--questions', str(tmp_path / 'q.yaml'),
                             '--rate', '4', '--timeout', '60', '--no-progress', '--out',
                             str(out)], env=env, timeout=240).returncode
        assert rc == 0, f'replay failed after {time.monotonic() - t0:.0f} s'
    finally:
        os.killpg(node.pid, signal.SIGINT)
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
    res = json.loads(out.read_text())
    assert res['mode'] == 'dds' and res['stats']['frames_published'] == 80
    (rec,) = res['records']
    assert 'error' not in rec, rec
    assert rec['latency_s'] > 0 and all(0.0 <= s <= 16.0 for s in rec['evidence'])
    # the node's ~/memory_view picture after the answer, saved as the offline replay does
    assert rec['memory_timeline'] == 'replay_memory/memory_timeline_q1.png', res['stats']
    for name in ('memory_timeline_q1.png', 'memory_timeline.png'):
        img = cv2.imread(str(tmp_path / 'replay_memory' / name))
        assert img is not None and img.shape[1] == 960 and img.std() > 5
