"""Question files: YAML and JSONL parsing and validation."""
import json

import pytest

from ros2_infmllm.eval.questions import load_questions


def test_jsonl_and_yaml(tmp_path):
    p = tmp_path / 'q.jsonl'
    p.write_text('\n'.join(json.dumps(d) for d in [
        {'t': 5, 'question': 'b?', 'expected': 3, 'match': 'numeric'},
        {'t': 1, 'question': 'a?', 'expected': 'red', 'evidence': [[0, 1]]}]))
    qs = load_questions(p)
    assert [q.question for q in qs] == ['a?', 'b?']
    assert qs[0].score('It is red') and not qs[1].score('four')
    y = tmp_path / 'q.yaml'
    y.write_text('camera: /cam\nquestions:\n  - {t: 2, question: "c?", expected: x}\n')
    assert load_questions(y)[0].camera == '/cam'


@pytest.mark.parametrize('entry,msg', [
    ({'question': 'a', 'expected': 1}, 'missing'),
    ({'t': 1, 'question': 'a', 'expected': 1, 'match': 'fuzzy'}, 'match'),
    ({'t': 1, 'question': 'a', 'expected': 1, 'evidence': [[3, 1]]}, 'evidence'),
    ({'t': -1, 'question': 'a', 'expected': 1}, 't must be'),
    ({'t': 1, 'question': 'a', 'expected': 'x', 'match': 'numeric'}, 'number'),
])
def test_bad_entries(tmp_path, entry, msg):
    p = tmp_path / 'q.jsonl'
    p.write_text(json.dumps(entry))
    with pytest.raises(ValueError, match=msg):
        load_questions(p)
