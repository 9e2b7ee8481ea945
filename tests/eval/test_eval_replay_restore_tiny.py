"""Offline replay saves the memory at bag time T and a second process resumes from it.

The answers to the questions after T must equal those of one uninterrupted run (issue
38): the snapshot carries the whole memory (cache, sources, describer state), the replay's
position file which frames and questions came before T. Tiny-test model, a short bag of
the sample scene.
"""
import json
import subprocess
import sys

import pytest

from ros2_infmllm.eval.__main__ import main
from ros2_infmllm.eval.make_sample_bag import write_sample_bag

QUESTIONS = """
camera: /camera/image_raw
questions:
  - id: before
    t: 3.0
    question: What do you see?
    expected: gray
  - id: after
    t: 8.0
    question: What colour was the box?
    expected: red
  - id: last
    t: 11.0
    question: What changed since the start?
    expected: box
"""
SAVE_AT = 5.0


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp('replay_restore')
    write_sample_bag(root / 'bag', duration=12.0, rate=2.0, storage='mcap',
                     second_camera=False, width=96, height=72)
    (root / 'q.yaml').write_text(QUESTIONS)
    return root


def _args(bag, out, *extra):
    return ['replay', '--offline', '--model', 'tiny-test', '--device', 'cpu',
            '--bag', str(bag / 'bag'), '--questions', str(bag / 'q.yaml'),
            '--frame-rate', '1', '--budget', '192', '--max-new-tokens', '6',
            '--no-progress', '--out', str(out), *extra]


def _answers(path):
    res = json.loads(path.read_text())
    return {r['id']: (r['answer'], r['evidence']) for r in res['records']}, res['stats']


def test_save_at_t_restore_in_second_process_answers_as_uninterrupted(bag):
    """The run that saves at T goes on uninterrupted (a save copies, it changes nothing)."""
    snap = bag / 'memory.safetensors'
    assert main(_args(bag, bag / 'saved.json', '--save-memory', str(snap),
                      '--save-at', str(SAVE_AT))) == 0
    reference, stats = _answers(bag / 'saved.json')
    assert sorted(reference) == ['after', 'before', 'last']
    assert stats['saved_at_s'] >= SAVE_AT and snap.exists()
    # a second process: restore at T, answer what comes after
    subprocess.run([sys.executable, '-m', 'ros2_infmllm.eval',
                    *_args(bag, bag / 'restored.json', '--restore-memory', str(snap))],
                   check=True, timeout=300)
    restored, rstats = _answers(bag / 'restored.json')
    assert rstats['restored_at_s'] == stats['saved_at_s']
    assert sorted(restored) == ['after', 'last']
    assert restored == {k: reference[k] for k in ('after', 'last')}
