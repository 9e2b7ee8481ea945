"""Answer matching, evidence precision and percentiles used by every eval task."""
import pytest

from ros2_infmllm.eval.scoring import evidence_precision, match_answer, numbers_in, percentile


@pytest.mark.parametrize('answer,expected,kind,ok', [
    ('Blue', 'blue', 'exact', True),
    ('It was blue.', 'blue', 'exact', False),
    ('It was blue.', 'blue', 'contains', True),
    ('It was blueish.', 'blue', 'contains', False),
    ('The QR code says "DOCK B".', 'dock b', 'contains', True),
    ('shelf #3', r'shelf\W*3', 'regex', True),
    ('shelf 4', r'shelf\W*3', 'regex', False),
    ('The marker id is 17.', 17, 'numeric', True),
    ('The marker id is 71.', 17, 'numeric', False),
    ('three markers', 3, 'numeric', True),
    ('17, 42 and 7', [17, 42, 7], 'list', True),
    ('17 and 42', [17, 42, 7], 'list', False),
])
def test_match_kinds(answer, expected, kind, ok):
    assert match_answer(answer, expected, kind) is ok


def test_numeric_tolerance():
    assert match_answer('about 12.4 s', 12.0, 'numeric', tolerance=0.5)
    assert not match_answer('about 12.6 s', 12.0, 'numeric', tolerance=0.5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='unknown match kind'):
        match_answer('x', 'x', 'fuzzy')
    with pytest.raises(ValueError, match='must be a number'):
        match_answer('x', 'seven-ish', 'numeric')
    with pytest.raises(ValueError, match='must be a list'):
        match_answer('x', 'abc', 'list')


def test_numbers_in_words_and_digits():
    assert sorted(numbers_in('two boxes and 3.5 m')) == [2.0, 3.5]


def test_evidence_precision():
    assert evidence_precision([11.0, 12.0, 50.0, 99.0], [[10, 16], [45, 51]]) == 0.75
    assert evidence_precision([16.4], [[10, 16]], slack=0.5) == 1.0
    assert evidence_precision([16.6], [[10, 16]], slack=0.5) == 0.0
    assert evidence_precision([], [[10, 16]]) is None
    with pytest.raises(ValueError):
        evidence_precision([1.0], [[5, 2]])


def test_percentile():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    assert percentile([], 50) is None


@pytest.mark.parametrize('answer,expected,kind,others,ok', [
    # the luck that contains alone rewarded: another colour named beside the expected one
    ('a red van with a blue box in the centre', 'blue', 'contains', ['red', 'green'], False),
    ('The box was blue.', 'blue', 'contains', ['red', 'green'], True),
    # ids and numbers compare as numbers: 17 is not 7, and listing two ids is wrong
    ('marker 17', 17, 'numeric', [7, 42], True),
    ('17 or 42', 17, 'numeric', [7, 42], False),
    ('It was 7.', 17, 'numeric', [7, 42], False),
    # names; a candidate that is part of the expected text is not "another"
    ('For Anna, not Ben.', 'ANNA', 'contains', ['BEN'], False),
    ('DOCK B', 'DOCK B', 'contains', ['B', 'DOCK A'], True),
    ('DOCK B and DOCK A', 'DOCK B', 'contains', ['DOCK A'], False),
    ('17, 42 and 7', [17, 42], 'list', [7], False),
])
def test_another_candidate_makes_an_answer_wrong(answer, expected, kind, others, ok):
    assert match_answer(answer, expected, kind, others=others) is ok


def test_candidates_by_kind_in_a_question_file(tmp_path):
    from ros2_infmllm.eval.questions import load_questions
    path = tmp_path / 'q.yaml'
    path.write_text('candidates:\n  colour: [red, blue]\nquestions:\n'
                    '  - {t: 1, question: "Colour?", expected: blue, kind: colour}\n'
                    '  - {t: 2, question: "Colour?", expected: red, candidates: [red, pink]}\n')
    q1, q2 = load_questions(path)
    assert q1.candidates == ['red', 'blue'] and q2.candidates == ['red', 'pink']
    assert q1.score('blue') and not q1.score('blue and red')
    assert not q2.score('red or pink')
    path.write_text('questions:\n  - {t: 1, question: "Colour?", expected: blue, kind: colour}\n')
    with pytest.raises(ValueError, match='no candidates'):
        load_questions(path)
    path.write_text('questions:\n  - {t: 1, question: "C?", expected: blue, candidates: [red]}\n')
    with pytest.raises(ValueError, match='not among its candidates'):
        load_questions(path)


def test_time_answer_within_tolerance_and_no_other_time():
    """A "when" answer: one time of day within the tolerance; several times are wrong."""
    assert match_answer('At 22:14:45.', '22:14:40', 'time', 10.0)
    assert match_answer('22:14:40.5', '22:14:40', 'time', 10.0)
    assert not match_answer('22:14:55', '22:14:40', 'time', 10.0)
    assert not match_answer('22:14:40 or 22:17:13', '22:14:40', 'time', 10.0)
    assert not match_answer('about 80 seconds in', '22:14:40', 'time', 10.0)
    assert match_answer('23:59:58', '00:00:03', 'time', 10.0)      # across midnight
    with pytest.raises(ValueError):
        match_answer('', 'soon', 'time', 10.0)
