"""Measured inf_mllm settings placed against the two evaluation bars (a ``grid`` result).

Why: the perplexity bar (no worse than streaming_llm on long text) and the memory-qa bar
(at least 20 points over streaming_llm 300 rounds after a fact) pull the memory's
parameters in opposite directions; one plot of every measured setting against both shows
where the settings lie and whether any reaches the corner where both hold.

A grid file (``meta.task == "grid"``, e.g. docs/results/inf_mllm_grid_200k.json) has
``rows``, each one setting's perplexity over the first 200,000 corpus tokens at budget
1024 (``ppl_200k_budget_1024``) and its memory-qa accuracy per distance
(``memory_qa_by_distance``, at the row's ``memory_qa_budget``, 512 when absent), and
``references`` with streaming_llm's figures from the same setups: its perplexity, and its
memory-qa accuracy per budget (``memory_qa_by_budget``), so that each row is compared
with streaming_llm at the memory-qa budget it was measured at. ``infmllm-eval report``
renders it with :func:`markdown` and :func:`plot`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ros2_infmllm.eval.common import save_figure

#: The evaluation issue's bars: perplexity no worse than streaming_llm, and memory-qa at
#: 300 rounds at least this many points above streaming_llm.
PPL_BAR_PERCENT = 0.0
RECALL_BAR_POINTS = 20.0
DISTANCE = '300'
DEFAULT_QA_BUDGET = 512


def qa_budget(row: dict) -> int:
    """Memory-qa budget a row was measured at."""
    return int(row.get('memory_qa_budget', DEFAULT_QA_BUDGET))


def points(grid: dict, distance: str = DISTANCE) -> list:
    """Per row with both figures: perplexity over streaming_llm's (%), recall minus its.

    A row whose memory-qa budget has no streaming_llm reference raises KeyError.
    """
    ref = grid['references']
    ppl_ref = ref['ppl_200k_budget_1024']['streaming_llm']
    out = []
    for row in grid['rows']:
        acc = (row.get('memory_qa_by_distance') or {}).get(distance)
        ppl = row.get('ppl_200k_budget_1024')
        if acc is None or ppl is None:
            continue
        budget = qa_budget(row)
        acc_ref = ref['memory_qa_by_budget'][str(budget)]['streaming_llm'][distance]
        ppl_pct = 100.0 * (ppl / ppl_ref - 1.0)
        recall = 100.0 * (acc - acc_ref)
        out.append({'policy': row['policy'], 'memory_qa_budget': budget,
                    'ppl_vs_streaming_pct': round(ppl_pct, 2),
                    'recall_vs_streaming_points': round(recall, 1),
                    'meets_both': ppl_pct <= PPL_BAR_PERCENT and recall >= RECALL_BAR_POINTS})
    return out


def markdown(grid: dict, png_name: Optional[str] = None) -> str:
    """Table of the settings (best perplexity first), a count of those meeting both bars."""
    pts = points(grid)
    ref = grid['references']
    by_budget = ref['memory_qa_by_budget']
    streaming = ', '.join(f"{100 * by_budget[b]['streaming_llm'][DISTANCE]:.0f} % at budget {b}"
                          for b in sorted(by_budget, key=int))
    lines = [grid.get('what', ''), '',
             f"Perplexity relative to streaming_llm "
             f"({ref['ppl_200k_budget_1024']['streaming_llm']}) and recall "
             f"{DISTANCE} rounds after a fact minus streaming_llm's at the same memory-qa "
             f"budget ({streaming}). Bars: perplexity <= {PPL_BAR_PERCENT:+.0f} %, recall >= "
             f"+{RECALL_BAR_POINTS:.0f} points.", '',
             '| setting | perplexity vs streaming_llm | memory-qa budget '
             '| recall at 300 rounds vs streaming_llm | both bars |',
             '|---|---:|---:|---:|---|']
    for p in sorted(pts, key=lambda p: p['ppl_vs_streaming_pct']):
        lines.append(f"| `{p['policy']}` | {p['ppl_vs_streaming_pct']:+.2f} % | "
                     f"{p['memory_qa_budget']} | {p['recall_vs_streaming_points']:+.0f} | "
                     f"{'yes' if p['meets_both'] else 'no'} |")
    lines += ['', f"{sum(p['meets_both'] for p in pts)} of {len(pts)} settings meet both."]
    notes = [r for r in grid['rows'] if r.get('note')]
    if notes:
        lines += [''] + [f"- `{r['policy']}`: {r['note']}" for r in notes]
    if png_name:
        lines += ['', f'![settings against both bars]({png_name})']
    return '\n'.join(lines) + '\n'


def plot(grid: dict, png: Path | str) -> Path:
    """Scatter of the settings with the corner where both bars hold shaded."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pts = points(grid)
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    xs = [p['ppl_vs_streaming_pct'] for p in pts]
    ys = [p['recall_vs_streaming_points'] for p in pts]
    x_lo = min(xs + [PPL_BAR_PERCENT]) - 0.5
    ax.fill_between([x_lo, PPL_BAR_PERCENT], RECALL_BAR_POINTS, 105, color='tab:green',
                    alpha=0.12, label='both bars met')
    ax.axvline(PPL_BAR_PERCENT, color='tab:green', lw=0.8, ls='--')
    ax.axhline(RECALL_BAR_POINTS, color='tab:green', lw=0.8, ls='--')
    for budget, color in ((512, 'tab:blue'), (1024, 'tab:orange')):
        sel = [(x, y) for p, x, y in zip(pts, xs, ys) if p['memory_qa_budget'] == budget]
        if sel:
            ax.scatter([x for x, _ in sel], [y for _, y in sel], color=color, zorder=3,
                       label=f'memory-qa at budget {budget}')
    other = [(x, y) for p, x, y in zip(pts, xs, ys) if p['memory_qa_budget'] not in (512, 1024)]
    if other:
        ax.scatter([x for x, _ in other], [y for _, y in other], color='gray', zorder=3,
                   label='memory-qa at another budget')
    for p, x, y in zip(pts, xs, ys):
        if y != 0:          # the settings with no gain crowd the axis: named in the table
            label = p['policy'].replace('inf_mllm:', '').replace('inf_mllm', 'defaults')
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords='offset points')
    flat = sum(1 for y in ys if y == 0)
    if flat:
        ax.annotate(f'{flat} settings with no gain at {DISTANCE} rounds (see the table)',
                    (min(xs), 0), fontsize=7, xytext=(0, 8), textcoords='offset points')
    ax.set_xlim(x_lo, max(xs + [PPL_BAR_PERCENT]) + 1.0)
    ax.set_ylim(-5, 105)
    ax.set_xlabel('perplexity vs streaming_llm, 200k tokens, budget 1024 (%)')
    ax.set_ylabel(f'recall {DISTANCE} rounds later vs streaming_llm (points)')
    ax.set_title('inf_mllm settings against the two bars', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='upper right')
    return save_figure(fig, png, dpi=110)
