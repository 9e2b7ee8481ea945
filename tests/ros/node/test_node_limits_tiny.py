"""Per-caller rate limits and question length over DDS (tiny-test model, node process).

A caller over its burst is refused at once with the reason and the wait, other callers are
not, every refusal is counted per reason in /diagnostics, and the limit parameters are
validated.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import BASE_PARAMS
from nodeproc import NS


@pytest.fixture(scope='module')
def node_params():
    """A small bucket that refills slowly, so the test meets it in a few questions."""
    return dict(BASE_PARAMS, **{'limits.caller_burst': 3, 'limits.caller_rate': 0.2,
                                'max_question_chars': 50})


def _ask(client, question, caller):
    from ros2_infmllm_msgs.srv import Query
    return client.call(Query, f'{NS}/query', Query.Request(
        question=question, max_new_tokens=2, caller=caller))


def _diagnostics(client):
    from diagnostic_msgs.msg import DiagnosticArray
    got = {}
    done = threading.Event()

    def on(msg):
        for st in msg.status:
            if st.name == f'{NS}: memory':
                got.update({kv.key: kv.value for kv in st.values})
                done.set()

    sub = client.node.create_subscription(DiagnosticArray, '/diagnostics', on, 10)
    assert done.wait(10), 'no /diagnostics'
    client.node.destroy_subscription(sub)
    return got


def test_caller_over_its_burst_is_refused_others_are_not(client, node):
    for i in range(3):
        r = _ask(client, f'question {i}', 'robot_a')
        assert r.success, r.message
    t0 = time.monotonic()
    r = _ask(client, 'one more', 'robot_a')
    assert time.monotonic() - t0 < 3, 'a rate-limited question waited'
    assert not r.success and 'rate limit' in r.message and 'robot_a' in r.message
    assert 'retry in' in r.message
    assert _ask(client, 'my own bucket', 'robot_b').success
    assert _ask(client, 'anonymous', '').success
    r = _ask(client, 'x' * 51, 'robot_c')
    assert not r.success and 'max_question_chars' in r.message
    time.sleep(5.5)                 # 0.2 questions/s: one more after 5 s
    assert _ask(client, 'after the wait', 'robot_a').success
    diag = _diagnostics(client)
    assert int(diag['questions_refused_rate_limited']) == 1
    assert int(diag['questions_refused_too_long']) == 1
    assert int(diag['callers_tracked']) >= 3
    # a CPU node: eager decode and chunks, and a text model has no vision tower to capture
    assert (diag['decode_path'], diag['vision_path'], diag['chunk_path']) == ('eager',) * 3
    assert node.alive()


@pytest.mark.parametrize('values', [{'limits.caller_rate': 0.0},
                                    {'limits.caller_burst': 0},
                                    {'limits.caller_burst': 'many'},
                                    {'limits.caller_rate': float('nan')}])
def test_bad_limit_values_refused(client, values):
    assert not client.set_params(values).successful
    got = client.get_params(['limits.caller_rate', 'limits.caller_burst'])
    assert got == {'limits.caller_rate': 0.2, 'limits.caller_burst': 3}
