"""scripts/far_recall.py: hits summed per policy, per frame rate and per far question."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'scripts'))

import far_recall  # noqa: E402


def _run(policy, rate, far_ok, recent_ok):
    recs = [{'id': f'f{i}', 'tags': ['far'], 'correct': ok} for i, ok in enumerate(far_ok)]
    recs += [{'id': f'r{i}', 'tags': ['recent'], 'correct': ok}
             for i, ok in enumerate(recent_ok)]
    return {'policy': policy, 'frame_rate': rate, 'records': recs}


def test_recall_table_sums_far_and_recent_hits():
    runs = [_run('a', 0.4, [True, False], [True]), _run('a', 0.5, [True, True], [False]),
            _run('b', 0.4, [False, False], [True])]
    table = far_recall.recall_table(runs, ['a', 'b'])
    assert table['a'] == {'far_correct': 3, 'far_asked': 4, 'recent_correct': 1,
                          'recent_asked': 2, 'far_by_rate': {'0.4': 1, '0.5': 2},
                          'far_by_question': {'f0': 2, 'f1': 1}}
    assert table['b']['far_correct'] == 0 and table['b']['recent_correct'] == 1
    assert far_recall.far_hits(runs[1]['records']) == 2
