"""Scoring of free-text answers and evidence stamps against a question file's expectations.

Why lenient matching kinds: small models answer in sentences; a question names how its
answer is checked (exact / contains / regex / numeric / list) so that scoring is explicit.
Why candidates: leniency alone rewards luck ("a red van with a blue box" contains "blue"),
so a question may declare the other answers of its kind (colours, ids, names); an answer
that also names one of them is wrong. A ``time`` answer (when did it happen) is a time of
day, right within ``tolerance`` seconds; every time it names must be, so listing several
times is wrong too.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Optional, Sequence

MATCH_KINDS = ('exact', 'contains', 'regex', 'numeric', 'list', 'time')
_NUM_RE = re.compile(r'[-+]?\d+(?:\.\d+)?')
_TIME_RE = re.compile(r'(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?(?![\d:])')
_DAY = 86400.0
_WORDS = {'zero': 0, 'one': 1, 'two': 2, 'three': 3, 'four': 4, 'five': 5, 'six': 6,
          'seven': 7, 'eight': 8, 'nine': 9, 'ten': 10, 'eleven': 11, 'twelve': 12}


def normalise(text: str) -> str:
    """Lower-case, drop punctuation except digits/letters/spaces, collapse whitespace."""
    text = re.sub(r'[^0-9a-z]+', ' ', str(text).lower())
    return ' '.join(text.split())


def numbers_in(text: str) -> list:
    """Return the numbers written in ``text`` (digits, and the words zero..twelve)."""
    vals = [float(m) for m in _NUM_RE.findall(str(text))]
    vals += [float(_WORDS[w]) for w in normalise(text).split() if w in _WORDS]
    return vals


def times_in(text: str) -> list:
    """Return the times of day written in ``text`` (``HH:MM`` or ``HH:MM:SS[.s]``) in seconds."""
    return [int(h) * 3600.0 + int(m) * 60.0 + float(sec or 0.0)
            for h, m, sec in _TIME_RE.findall(str(text))]


def names_other(answer: str, expected, others: Sequence) -> bool:
    """Return whether ``answer`` names a candidate in ``others`` besides ``expected``.

    Numbers are compared as numbers (``17`` does not name ``7``), text as whole normalised
    words; a candidate that is part of the expected answer itself is not counted.
    """
    wanted = [normalise(e) for e in (expected if isinstance(expected, (list, tuple))
                                     else [expected])]
    words = f' {normalise(answer)} '
    nums = set(numbers_in(answer))
    for other in others:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            if float(other) in nums and all(float(other) not in numbers_in(w)
                                            for w in wanted):
                return True
            continue
        text = normalise(other)
        if text and f' {text} ' in words and not any(f' {text} ' in f' {w} ' for w in wanted):
            return True
    return False


def match_answer(answer: str, expected, kind: str = 'contains',
                 tolerance: float = 0.0, others: Sequence = ()) -> bool:
    """Return whether ``answer`` matches ``expected`` under match ``kind``.

    exact: equal after normalisation. contains: the normalised expected text occurs in the
    normalised answer as whole words. regex: ``re.search`` (case-insensitive) on the raw
    answer. numeric: some number in the answer is within ``tolerance`` of expected.
    list: every item of ``expected`` (a list) is contained in the answer. time: the answer
    names at least one time of day and every one is within ``tolerance`` seconds of the
    ``HH:MM:SS`` expected (across midnight too). Whatever the
    kind, an answer that also names a candidate in ``others`` (:func:`names_other`) is wrong.
    """
    if others and answer and names_other(str(answer), expected, others):
        return False
    if kind not in MATCH_KINDS:
        raise ValueError(f'unknown match kind {kind!r}; use one of {MATCH_KINDS}')
    answer = '' if answer is None else str(answer)
    if kind == 'exact':
        return normalise(answer) == normalise(expected)
    if kind == 'contains':
        needle = normalise(expected)
        if not needle:
            raise ValueError('contains: expected text is empty')
        return f' {needle} ' in f' {normalise(answer)} '
    if kind == 'regex':
        return re.search(str(expected), answer, flags=re.IGNORECASE) is not None
    if kind == 'numeric':
        try:
            target = float(expected)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'numeric: expected must be a number, got {expected!r}') from exc
        return any(math.isclose(v, target, abs_tol=float(tolerance)) or v == target
                   for v in numbers_in(answer))
    if kind == 'time':
        target = times_in(str(expected))
        if len(target) != 1:
            raise ValueError(f'time: expected must be one HH:MM:SS time, got {expected!r}')
        said = times_in(answer)
        return bool(said) and all(
            min(abs(t - target[0]), _DAY - abs(t - target[0])) <= float(tolerance)
            for t in said)
    if isinstance(expected, (str, bytes)) or not isinstance(expected, Iterable):
        raise ValueError(f'list: expected must be a list, got {expected!r}')
    items = list(expected)
    if not items:
        raise ValueError('list: expected list is empty')
    return all(match_answer(answer, item, 'contains') for item in items)


def evidence_precision(stamps: Sequence[float], ranges: Sequence[Sequence[float]],
                       slack: float = 0.5) -> Optional[float]:
    """Fraction of evidence stamps inside any expected [start, end] range (+- ``slack`` s).

    Returns None when there is nothing to judge (no stamps, or no expected ranges).
    """
    if not stamps or not ranges:
        return None
    for r in ranges:
        if len(r) != 2 or r[0] > r[1]:
            raise ValueError(f'evidence range must be [start, end] with start <= end: {r}')
    hits = sum(1 for s in stamps
               if any(lo - slack <= s <= hi + slack for lo, hi in ranges))
    return hits / len(stamps)


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Interpolate the ``q``-th percentile linearly; None when there are no values."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f'percentile q must be in [0, 100], got {q}')
    pos = (len(vals) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)
