"""eval/frontier.py: settings placed against the perplexity and recall bars."""

import json

import pytest

from ros2_infmllm.eval import frontier
from ros2_infmllm.eval.report import write_report


def _grid(rows):
    return {'what': 'a grid', 'meta': {'task': 'grid'},
            'references': {'ppl_200k_budget_1024': {'streaming_llm': 5.0},
                           'memory_qa_by_budget': {'512': {'streaming_llm': {'300': 0.25}},
                                                   '1024': {'streaming_llm': {'300': 0.5}}}},
            'rows': rows}


def test_points_are_relative_to_streaming_and_flag_both_bars():
    grid = _grid([
        {'policy': 'a', 'ppl_200k_budget_1024': 4.95, 'memory_qa_by_distance': {'300': 0.5}},
        {'policy': 'b', 'ppl_200k_budget_1024': 5.5, 'memory_qa_by_distance': {'300': 1.0}},
        {'policy': 'c', 'ppl_200k_budget_1024': 4.9, 'memory_qa_by_distance': {'300': 0.375}},
        {'policy': 'no recall figure', 'ppl_200k_budget_1024': 4.0,
         'memory_qa_by_distance': {}},
        {'policy': 'd', 'ppl_200k_budget_1024': 4.95, 'memory_qa_by_distance': {'300': 0.625},
         'memory_qa_budget': 1024}])
    pts = {p['policy']: p for p in frontier.points(grid)}
    assert set(pts) == {'a', 'b', 'c', 'd'}
    assert pts['a'] == {'policy': 'a', 'memory_qa_budget': 512, 'ppl_vs_streaming_pct': -1.0,
                        'recall_vs_streaming_points': 25.0, 'meets_both': True}
    # compared with streaming_llm at its own memory-qa budget (0.5 at 1024, not 0.25)
    assert pts['d']['recall_vs_streaming_points'] == 12.5 and not pts['d']['meets_both']
    assert pts['b']['ppl_vs_streaming_pct'] == 10.0 and not pts['b']['meets_both']
    assert pts['c']['recall_vs_streaming_points'] == 12.5 and not pts['c']['meets_both']


def test_report_renders_a_grid_file_as_table_and_plot(tmp_path):
    res = tmp_path / 'results'
    res.mkdir()
    (res / 'grid.json').write_text(json.dumps(_grid([
        {'policy': 'inf_mllm', 'ppl_200k_budget_1024': 5.2,
         'memory_qa_by_distance': {'300': 0.5}, 'note': 'the defaults'}])))
    text = write_report(res, tmp_path / 'results.md').read_text()
    assert '## inf_mllm settings against both bars' in text
    assert '| `inf_mllm` | +4.00 % | 512 | +25 | no |' in text
    assert '0 of 1 settings meet both' in text and '- `inf_mllm`: the defaults' in text
    assert (res / 'grid.png').stat().st_size > 1000


def test_row_at_a_budget_without_reference_raises():
    grid = _grid([{'policy': 'e', 'ppl_200k_budget_1024': 5.0,
                   'memory_qa_by_distance': {'300': 1.0}, 'memory_qa_budget': 2048}])
    with pytest.raises(KeyError, match='2048'):
        frontier.points(grid)
