"""Generated question journals: each row is refused with a reason or replayed within limits.

The journal beside the snapshot is a file anyone with write access to the folder can edit;
the restarted node replays it. Whatever it holds (any JSON, any bytes), reading it never
raises, and every question it yields is within the limits a fresh question meets.
scripts/persistence_probe.py runs more cases.
"""

from __future__ import annotations

import json

from fuzzing import TEXT, count, examples
from hypothesis import given
from hypothesis import strategies as st

from ros2_infmllm.engine.persistence import Persistence, journal_path
from ros2_infmllm.engine.questions import QuestionLimits

LIMITS = QuestionLimits(max_chars=1000, max_new_tokens=64, queue_size=8)
SCALARS = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | TEXT
ROW = st.fixed_dictionaries(
    {"question": TEXT | SCALARS, "max_new_tokens": SCALARS | st.integers(-5, 200_000)},
    optional={"camera": TEXT | SCALARS}) | SCALARS | st.lists(SCALARS, max_size=3)
JOURNAL = st.lists(ROW, max_size=80).map(lambda rows: json.dumps(rows).encode()) | \
    st.binary(max_size=300) | st.recursive(SCALARS, lambda c: st.lists(c, max_size=4),
                                           max_leaves=20).map(
        lambda v: json.dumps(v).encode())


def check_journal(folder, data: bytes) -> tuple[int, int]:
    """Write ``data`` as a journal, read it back; return (replayed, refused)."""
    path = str(folder / "m.safetensors")
    with open(journal_path(path), "wb") as f:
        f.write(data)
    store = Persistence(path)
    taken = store.read_journal(LIMITS)
    assert len(taken) <= LIMITS.queue_size
    for q in taken:
        assert isinstance(q.question, str) and q.question.strip()
        assert len(q.question) <= LIMITS.max_chars
        assert isinstance(q.max_new_tokens, int) and 1 <= q.max_new_tokens <= 64
        assert isinstance(q.camera, str) and len(q.camera) <= 256
    st_ = store.status()
    assert st_.journal_replayed == len(taken)
    assert taken or st_.journal_refused or st_.journal_error or data.strip() in (b"[]",)
    return len(taken), st_.journal_refused


@examples(300)
@given(data=JOURNAL)
def test_any_journal_is_refused_or_replayed_within_limits(tmp_path_factory, data):
    count("journal")
    check_journal(tmp_path_factory.mktemp("j"), data)
