"""Long-memory QA: seeded conversations place facts at the stated distances; CLI smoke."""
import json

import pytest

from ros2_infmllm.eval.__main__ import main
from ros2_infmllm.eval.memory_qa import FACTS, make_conversation


def test_conversation_places_facts_at_distances():
    conv = make_conversation(3, [5, 40, 120], per_distance=2, mention_every=10)
    again = make_conversation(3, [5, 40, 120], per_distance=2, mention_every=10)
    assert [r.text for r in conv.rounds] == [r.text for r in again.rounds]
    assert [r.text for r in conv.rounds] != [
        r.text for r in make_conversation(4, [5, 40, 120], 2, 10).rounds]
    qs = [(i, r) for i, r in enumerate(conv.rounds) if r.kind == 'question']
    assert sorted(r.distance for _, r in qs) == [5, 5, 40, 40, 120, 120]
    leads = [lead for _, lead in FACTS]
    assert not any(a != b and b.startswith(a) for a in leads for b in leads)
    assert len({q.text for _, q in qs}) == len(qs)          # one lead-in per fact
    for i, q in qs:
        subject = dict((lead, subj) for subj, lead in FACTS)[q.text]
        fact = conv.rounds[i - q.distance]
        assert fact.kind == 'fact'
        assert fact.text == f'{q.text} {q.answer}.\n'
        between = conv.rounds[i - q.distance + 1:i]
        assert all(q.answer not in r.text for r in between)
        assert all(r.kind != 'fact' or not r.text.startswith(q.text) for r in between)
        if q.distance > 20:
            assert any(r.kind == 'mention' and subject in r.text for r in between)
    quiet = make_conversation(3, [40], per_distance=1, mention_every=0)
    assert not any(r.kind == 'mention' for r in quiet.rounds)


def test_conversation_rejects_bad_input():
    with pytest.raises(ValueError):
        make_conversation(0, [0])
    with pytest.raises(ValueError):
        make_conversation(0, [5], per_distance=0)
    with pytest.raises(ValueError):
        make_conversation(0, list(range(1, 10)), per_distance=2)


def test_memory_qa_cli_smoke_tiny(tmp_path):
    out = tmp_path / 'mqa.json'
    assert main(['memory-qa', '--smoke', '--no-progress', '--out', str(out)]) == 0
    res = json.loads(out.read_text())
    assert res['meta']['task'] == 'memory-qa' and res['budget'] == 96
    assert [r['policy'] for r in res['runs']] == ['full', 'streaming_llm', 'inf_mllm']
    for r in res['runs']:
        assert set(r['accuracy_by_distance']) == {'3', '30'}
        assert len(r['records']) == 2
        assert all(rec['expected'].isalpha() for rec in r['records'])
    bounded = res['runs'][1]['records'][-1]
    assert bounded['cache_tokens'] <= 96 + 64
    assert (tmp_path / 'mqa.png').exists() and '| inf_mllm |' in (tmp_path / 'mqa.md').read_text()


def test_policy_spec_and_warmup():
    from ros2_infmllm.eval.common import split_policy_spec
    from ros2_infmllm.eval.perplexity import build_policy
    assert split_policy_spec('inf_mllm') == ('inf_mllm', {})
    assert split_policy_spec('inf_mllm:carry=0.9:selection=shared') == (
        'inf_mllm', {'carry': 0.9, 'selection': 'shared'})
    pol = build_policy('inf_mllm:carry=0.5:budget=9', 256, {'carry': 0.1, 'bias': 2.0})
    assert (pol.budget, pol.carry, pol.bias) == (256, 0.5, 2.0)
    pol = build_policy('inf_mllm:reposition=False', 256)
    assert pol.reposition is False
    conv = make_conversation(1, [5, 40], per_distance=1, warmup=30)
    first_fact = next(i for i, r in enumerate(conv.rounds) if r.kind == 'fact')
    assert first_fact > 30 and all(r.kind == 'distractor' for r in conv.rounds[:30])
    with pytest.raises(ValueError):
        make_conversation(0, [5], warmup=-1)


def test_markdown_lists_relabelled_runs_and_merged_invocations():
    """A run relabelled with the spec that reproduces it, and a file merged from two
    invocations, say so under the table."""
    from ros2_infmllm.eval import memory_qa
    runs = [{'policy': 'inf_mllm:carry=0.9', 'accuracy': 0.5,
             'accuracy_by_distance': {'5': 1.0, '300': 0.0}, 'label_note': 'old defaults'},
            {'policy': 'streaming_llm', 'accuracy': 0.5,
             'accuracy_by_distance': {'5': 1.0, '300': 0.0}}]
    result = {'budget': 1024, 'distances': [5, 300], 'streams': 2, 'per_distance': 1,
              'mention_every': 25, 'runs': runs,
              'meta': {'seed': 0, 'model': 'm', 'merged_from': 'two runs'}}
    text = memory_qa.markdown(result)
    assert '| inf_mllm:carry=0.9 | 50% | 100% | 0% |' in text
    assert '- `inf_mllm:carry=0.9`: old defaults' in text and '- merged: two runs' in text
    assert 'streaming_llm`:' not in text
