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
