"""Streaming perplexity: reference == full cache when the text fits, batching exact, CLI."""
import json
import math

import numpy as np
import pytest

from ros2_infmllm.eval.__main__ import main
from ros2_infmllm.eval.common import load_eval_model
from ros2_infmllm.eval.corpus import build_corpus, describe_corpus, load_corpus
from ros2_infmllm.eval.perplexity import (block_ppl, build_policy, coarse_worst_over_median,
                                          stream_nll, summarise, tokenize, window_nll)


@pytest.fixture(scope='module')
def tiny():
    model, tok = load_eval_model('tiny-random', device='cpu', seed=0)
    from ros2_infmllm.memory import use_scoring_attention
    use_scoring_attention(model)
    text = ('def f(x):\n    return x * 2  # doubles\n' * 40)
    return model, tok, tokenize(tok, text, 400)


def test_reference_equals_full_cache_when_text_fits_tiny(tiny):
    model, _, ids = tiny
    full = stream_nll(model, ids, build_policy('full', 0), 64, 'cpu', progress=False)
    ref = window_nll(model, ids, 1024, 64, 'cpu', progress=False)
    inf = stream_nll(model, ids, build_policy('inf_mllm', 1024), 64, 'cpu', progress=False)
    assert full.shape == (len(ids) - 1,)
    np.testing.assert_allclose(ref, full, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inf, full, rtol=1e-4, atol=1e-4)


def test_reference_window_batched_matches_loop_tiny(tiny):
    import torch
    import torch.nn.functional as F
    model, _, ids = tiny
    budget, chunk = 96, 32
    batched = window_nll(model, ids, budget, chunk, 'cpu', batch=4, progress=False)
    single = window_nll(model, ids, budget, chunk, 'cpu', batch=1, progress=False)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
    s = 6 * chunk                      # one window by hand: exact previous budget tokens
    x = torch.as_tensor(ids[s - budget:s + chunk]).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, -chunk:]
    want = F.cross_entropy(logits, torch.as_tensor(ids[s + 1:s + chunk + 1]), reduction='none')
    np.testing.assert_allclose(batched[s:s + chunk], want.numpy(), rtol=1e-4, atol=1e-4)


def test_bounded_policy_differs_beyond_budget_tiny(tiny):
    model, _, ids = tiny
    full = stream_nll(model, ids, build_policy('full', 0), 32, 'cpu', progress=False)
    sl = stream_nll(model, ids, build_policy('streaming_llm', 64), 32, 'cpu', progress=False)
    np.testing.assert_allclose(sl[:64], full[:64], rtol=1e-4, atol=1e-4)
    assert np.abs(sl[128:] - full[128:]).max() > 1e-3


def test_block_statistics():
    nll = np.log(np.array([2.0] * 10 + [4.0] * 10))
    assert block_ppl(nll, 10) == pytest.approx([2.0, 4.0])
    assert block_ppl(nll, 50) == pytest.approx([math.sqrt(8.0)])
    s = summarise(nll, 5)
    assert s['worst_over_median'] == pytest.approx(4.0 / 3.0)
    assert s['tokens'] == 20


def test_coarse_blocks_merge_by_geometric_mean():
    """One hard 10k block among easy ones: large ratio per block, smaller per 50k."""
    blocks = [2.0] * 19 + [8.0]
    assert coarse_worst_over_median(blocks, 10_000, span=10_000) == pytest.approx(4.0)
    merged_hard = math.exp((4 * math.log(2.0) + math.log(8.0)) / 5)
    assert coarse_worst_over_median(blocks, 10_000) == pytest.approx(merged_hard / 2.0)
    assert coarse_worst_over_median(blocks[:15], 10_000) is None      # 3 merged blocks


def test_build_policy_scales_recent_and_rejects_unknown():
    p = build_policy('inf_mllm', 256, {'bias': 2.0, 'kernel': 3})
    assert p.budget == 256 and p.n_recent == 64 and p.bias == 2.0 and p.kernel == 3
    assert build_policy('inf_mllm', 2048).n_recent == 256
    assert build_policy('snapkv', 2048).n_recent == 32          # its own default, not 256
    assert build_policy('streaming_llm', 256, {'kernel': 3}).n_sink == 4   # not its knob
    with pytest.raises(ValueError, match='unknown policy'):
        build_policy('lru', 256)
    with pytest.raises(ValueError, match="unknown policy parameter.*'nonsense'"):
        build_policy('inf_mllm', 256, {'nonsense': 1})
    with pytest.raises(ValueError, match="'streaming_llm' has no parameter"):
        build_policy('streaming_llm:kernel=3', 256)


def test_corpus_is_deterministic(tmp_path):
    lib = tmp_path / 'lib'
    lib.mkdir()
    (lib / 'b.py').write_text('y = 2\n')
    (lib / 'a.py').write_text('x = 1\n')
    info = build_corpus(tmp_path / 'c.txt.xz', lib_dir=lib)
    text = load_corpus(tmp_path / 'c.txt.xz')
    assert text.index('Lib/a.py') < text.index('Lib/b.py')
    assert info['n_files'] == 2 and info == describe_corpus(text, tmp_path / 'c.txt.xz')
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / 'missing.txt')


def test_perplexity_cli_smoke_tiny(tmp_path):
    lib = tmp_path / 'lib'
    lib.mkdir()
    (lib / 'm.py').write_text('"""Doc."""\n' + 'def g(a, b):\n    return a + b\n' * 200)
    corpus = tmp_path / 'corpus.txt'
    build_corpus(corpus, lib_dir=lib)
    out = tmp_path / 'ppl.json'
    rc = main(['perplexity', '--smoke', '--no-progress', '--corpus', str(corpus),
               '--out', str(out), '--policies', 'full_in_window,streaming_llm,inf_mllm'])
    assert rc == 0
    res = json.loads(out.read_text())
    meta = res['meta']
    assert meta['seed'] == 0 and meta['model'] == 'tiny-random'
    assert 'torch' in meta['versions'] and meta['device']['device'] == 'cpu'
    assert 'perplexity' in meta['command']
    assert res['corpus']['n_files'] == 1
    assert {(r['policy'], r['budget']) for r in res['runs']} == {
        (p, b) for p in ('full_in_window', 'streaming_llm', 'inf_mllm') for b in (64, 128)}
    inf = next(r for r in res['runs'] if r['policy'] == 'inf_mllm')
    assert inf['params']['budget'] == 64 and 'bias' in inf['params']
    assert 'ppl_vs_reference' in inf and inf['tokens'] == 2048
    assert (tmp_path / 'ppl.png').stat().st_size > 1000
    assert '| 64 | inf_mllm |' in (tmp_path / 'ppl.md').read_text()
