"""The side-by-side scores: what-was far/recent and the questions over time, apart."""
from ros2_infmllm.eval.sidebyside import combine, table


def _rec(qid, tags, correct):
    return {'id': qid, 'question': qid, 'expected': 'x', 'tags': tags, 'answer': 'x',
            'correct': correct, 'evidence': [], 'expected_evidence': [], 't': 10.0}


def test_families_are_scored_apart_from_what_was():
    recs = [_rec('a', ['far'], True), _rec('b', ['recent'], False),
            _rec('c', ['temporal', 'count', 'far'], True),
            _rec('d', ['temporal', 'when', 'far'], False),
            _rec('e', ['temporal', 'still', 'recent'], True)]
    res = combine([{'policy': 'inf_mllm', 'records': recs}])
    sc = res['scores'][res['columns'][0]]
    assert sc['far'] == [1, 1] and sc['recent'] == [0, 1]      # what-was only
    assert sc['temporal'] == [2, 3] and sc['temporal_far'] == [1, 2]
    assert sc['count'] == [1, 1] and sc['when'] == [0, 1] and sc['first'] == [0, 0]
    assert 'over time 2/3 (far 1/2): count 1/1, when 0/1, still 1/1' in table(res)
