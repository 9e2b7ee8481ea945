"""The report renders every result JSON (own tasks and generic benchmarks); CLI plumbing."""
import json
import sys

import pytest

from ros2_infmllm.eval.__main__ import main
from ros2_infmllm.eval.common import run_metadata
from ros2_infmllm.eval.report import generic_markdown, perplexity_headline, write_report


def _ppl(policy, tokens, blocks, sha='abc'):
    return {'policy': policy, 'budget': 1024, 'params': {}, 'tokens': tokens,
            'ppl': blocks[0] if len(blocks) == 1 else
            float(__import__('math').exp(sum(__import__('math').log(b) for b in blocks)
                                         / len(blocks))),
            'block_ppl': blocks, 'worst_over_median': 1.0, 'seconds': 1.0,
            'tokens_per_s': 1.0}


def _write(path, runs, tokens, task='perplexity', **extra):
    data = {'n_tokens': tokens, 'chunk': 256, 'block': 10, 'runs': runs,
            'corpus': {'sha256': 'abc', 'n_files': 1},
            'meta': run_metadata(task, 0, 'm', argv=['x', task])}
    data.update(extra)
    path.write_text(json.dumps(data))


def test_report_regenerates_page_with_plots_and_bench(tmp_path):
    res = tmp_path / 'results'
    res.mkdir()
    _write(res / 'p_long.json', [_ppl('inf_mllm', 40, [2.0, 2.0, 8.0, 8.0])], 40)
    _write(res / 'p_short.json', [_ppl('full_in_window', 20, [2.0, 3.0])], 20, complete=False)
    (res / 'bench_decode.json').write_text(json.dumps(
        {'rows': [{'policy': 'inf_mllm', 'tokens_per_s': 123.4}], 'gpu': 'H100'}))
    out = write_report(res, tmp_path / 'results.md')
    md = out.read_text()
    assert (res / 'p_long.png').stat().st_size > 1000
    assert '## Benchmarks' in md and '| inf_mllm | 123.4 |' in md and '| gpu | H100 |' in md
    assert '*Partial' in md
    # the long run's first 20 tokens (2 blocks of 10) compared with the short reference
    assert '| 20 | 1024 | inf_mllm | 2.000 | -18.35% |' in md
    assert md.index('Streaming perplexity') < md.index('Benchmarks')


def test_headline_needs_matching_corpus():
    a = ('a', {'meta': {'task': 'perplexity'}, 'chunk': 1, 'block': 10,
               'corpus': {'sha256': 'x'}, 'runs': [_ppl('full_in_window', 10, [2.0])]})
    b = ('b', {'meta': {'task': 'perplexity'}, 'chunk': 1, 'block': 10,
               'corpus': {'sha256': 'y'}, 'runs': [_ppl('inf_mllm', 10, [3.0])]})
    from pathlib import Path
    md = perplexity_headline([(Path(a[0] + '.json'), a[1]), (Path(b[0] + '.json'), b[1])])
    assert '| 10 | 1024 | inf_mllm | 3.000 |  |' in md


def test_generic_markdown_of_nested_scalars():
    md = generic_markdown({'a': {'b': 1.23456}, 'c': 'x|y'})
    assert '| a.b | 1.235 |' in md and 'x\\|y' in md


def test_report_errors(tmp_path):
    assert main(['report', '--results', str(tmp_path / 'none')]) == 2
    (tmp_path / 'bad.json').write_text('{')
    assert main(['report', '--results', str(tmp_path), '--out', str(tmp_path / 'r.md')]) == 2


def test_metadata_records_run():
    meta = run_metadata('perplexity', 7, 'm', argv=['/x/ros2_infmllm/eval/__main__.py', 'a'])
    assert meta['seed'] == 7 and meta['command'] == 'infmllm-eval a'
    assert 'torch' in meta['versions'] and 'cpu_count' in meta['device']


def test_bench_forwarding(monkeypatch, capsys):
    seen = {}
    fake = type(sys)('ros2_infmllm.eval.bench')
    fake.main = lambda argv: seen.setdefault('argv', argv) and 0
    monkeypatch.setitem(sys.modules, 'ros2_infmllm.eval.bench', fake)
    assert main(['bench', '--quick']) == 0 and seen['argv'] == ['--quick']
    seen.clear()
    assert main(['bench-memory', '-x']) == 0 and seen['argv'] == ['bench-memory', '-x']
    monkeypatch.setitem(sys.modules, 'ros2_infmllm.eval.bench', None)
    assert main(['bench']) == 2
    assert 'not installed' in capsys.readouterr().err


def test_make_bag_if_missing(tmp_path, capsys):
    out = tmp_path / 'bag'
    assert main(['make-bag', '--out', str(out), '--duration', '2', '--no-second-camera']) == 0
    assert main(['make-bag', '--out', str(out), '--duration', '2', '--if-missing']) == 0
    assert 'nothing to do' in capsys.readouterr().out
    assert main(['make-bag', '--out', str(out)]) == 2


def test_make_bag_if_missing_never_writes_over_a_folder_that_is_not_a_bag(tmp_path, capsys):
    out = tmp_path / 'notes'
    out.mkdir()
    (out / 'mine.txt').write_text('keep me')
    assert main(['make-bag', '--out', str(out), '--if-missing']) == 2
    assert 'is not a bag' in capsys.readouterr().err
    assert (out / 'mine.txt').read_text() == 'keep me'


def test_unknown_task_exits():
    with pytest.raises(SystemExit):
        main(['nonsense'])
