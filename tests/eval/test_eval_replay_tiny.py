"""Offline replay: a generated bag fed to the real engine (tiny-test model) at bag time."""
import json

import cv2
import numpy as np
import pytest

from ros2_infmllm.eval.__main__ import main
from ros2_infmllm.eval.make_sample_bag import write_sample_bag
from ros2_infmllm.eval.replay import pick_topics, summarise
from ros2_infmllm.eval.questions import load_questions

pytest.importorskip('ros2_infmllm.engine')

QUESTIONS = """
camera: /camera/image_raw
questions:
  - id: early
    t: 4.0
    question: What do you see?
    expected: gray
  - id: red
    t: 17.0
    question: Which ArUco marker id is next to the red box?
    expected: 17
    match: numeric
    evidence: [[10.0, 16.0]]
    tags: [far]
"""


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp('replay')
    write_sample_bag(root / 'bag', duration=20.0, rate=5.0, storage='mcap')
    (root / 'q.yaml').write_text(QUESTIONS)
    return root


def test_offline_replay_tiny(bag):
    out = bag / 'replay.json'
    rc = main(['replay', '--offline', '--model', 'tiny-test', '--device', 'cpu',
               '--bag', str(bag / 'bag'), '--questions', str(bag / 'q.yaml'),
               '--frame-rate', '1', '--budget', '256', '--max-new-tokens', '4',
               '--no-progress', '--out', str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res['mode'] == 'offline' and res['topics'] == ['/camera/image_raw']
    assert res['config']['policy'] == 'inf_mllm' and res['config']['budget'] == 256
    assert [r['id'] for r in res['records']] == ['early', 'red']
    st = res['stats']
    # frames at t = 0, 1, ..., 16 s fed (1 Hz of a 5 Hz camera); the last question is asked
    # when the frame at 17 s arrives, and nothing is fed after the last question
    assert st['frames_fed'] == 17 and st['frames_dropped'] == 0
    assert 0 < st['cache_tokens_end'] <= 256 + 512
    for r in res['records']:
        assert all(0.0 <= s <= r['t'] for s in r['evidence'])
        assert r['latency_s'] > 0
    assert res['summary']['questions'] == 2 and res['summary']['latency_p95_s'] > 0
    assert (bag / 'replay.png').exists() and '| red |' in (bag / 'replay.md').read_text()
    # the memory view after each question, and after the last as memory_timeline.png
    pictures = bag / 'replay_memory'
    assert [r['memory_timeline'] for r in res['records']] == [
        'replay_memory/memory_timeline_q1.png', 'replay_memory/memory_timeline_q2.png']
    shapes = {}
    for name in ('memory_timeline_q1.png', 'memory_timeline_q2.png', 'memory_timeline.png'):
        data = (pictures / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n'
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] == 960 and img.shape[0] > 100
        assert img.std() > 5                      # drawn, not a blank canvas
        shapes[name] = data
    assert shapes['memory_timeline.png'] == shapes['memory_timeline_q2.png']
    assert shapes['memory_timeline_q1.png'] != shapes['memory_timeline_q2.png']
    assert 'replay_memory/memory_timeline.png' in (bag / 'replay.md').read_text()


def test_replay_input_errors(bag, capsys):
    qs = load_questions(bag / 'q.yaml')
    with pytest.raises(ValueError, match='not in'):
        pick_topics(bag / 'bag', qs, ['/nope'])
    assert main(['replay', '--offline', '--bag', str(bag / 'missing')]) == 2
    assert 'make-bag' in capsys.readouterr().err
    s = summarise([])
    assert s['questions'] == 0 and s['accuracy'] is None
