"""Side by side: replays of one bag under several memory policies and the full-cache oracle.

Why: the demo's point is that inf_mllm keeps what streaming_llm forgets. One table (per
question: expected answer, each policy's answer and verdict) and one picture (verdict
against how far back the evidence lies) show it at a glance. The full cache, replayed
offline on the same frames, is the oracle: a question it misses measures the model and
the prompt, not the memory, so such questions are counted apart from the memory's score.

    python -m ros2_infmllm.eval.sidebyside results/demo_inf_mllm.json \
        results/demo_streaming_llm.json --oracle results/demo_full_offline.json \
        --out results/demo_side_by_side.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from ros2_infmllm.eval.common import save_figure


def _label(result: dict) -> str:
    return str(result.get('config', {}).get('policy') or result.get('meta', {}).get('policy'))


def how_far_back(rec: dict) -> Optional[float]:
    """Seconds of bag time from the end of the question's evidence to the question."""
    ev = rec.get('expected_evidence') or []
    return round(rec['t'] - max(e[1] for e in ev), 1) if ev else None


#: the families of the questions over time (tag ``temporal``), scored apart (issue 40)
FAMILIES = ('first', 'last', 'count', 'order', 'when', 'still')


def combine(runs: Sequence[dict], oracle: Optional[dict] = None) -> dict:
    """Merge replays of the same questions into rows and per-policy scores.

    Scores split the questions the oracle answered (what the memory is measured on) from
    those it missed (the model and prompt fail even with every frame in memory). ``far``
    and ``recent`` count the what-was questions; the questions over time (tag
    ``temporal``) are scored apart: all, far, and per family (:data:`FAMILIES`).
    """
    columns = [_label(r) for r in runs] + (['full (oracle)'] if oracle else [])
    sources = list(runs) + ([oracle] if oracle else [])
    by_id = [{rec['id']: rec for rec in r['records']} for r in sources]
    ids = [rec['id'] for rec in sources[0]['records']]
    rows = []
    for qid in ids:
        first = by_id[0][qid]
        cells = {}
        for col, recs in zip(columns, by_id):
            rec = recs.get(qid)
            cells[col] = None if rec is None else {
                'answer': rec.get('answer') or rec.get('error', ''),
                'correct': bool(rec.get('correct')), 'latency_s': rec.get('latency_s'),
                'evidence_precision': rec.get('evidence_precision')}
        oracle_ok = None if not oracle or cells['full (oracle)'] is None \
            else cells['full (oracle)']['correct']
        rows.append({'id': qid, 'question': first['question'], 'expected': first['expected'],
                     'tags': first.get('tags', []), 'seconds_back': how_far_back(first),
                     'oracle_correct': oracle_ok, 'answers': cells})
    scores = {}
    for col in columns:
        sc: dict = {}
        answered = [r for r in rows if r['answers'][col] is not None]
        what_was = [r for r in answered if 'temporal' not in r['tags']]
        for tag in ('far', 'recent'):
            mine = [r for r in what_was if tag in r['tags']]
            ok = [r for r in mine if r['answers'][col]['correct']]
            sc[tag] = [len(ok), len(mine)]
            if oracle:
                kept = [r for r in mine if r['oracle_correct']]
                sc[f'{tag}_oracle_answered'] = [sum(r['answers'][col]['correct']
                                                    for r in kept), len(kept)]
        over_time = [r for r in answered if 'temporal' in r['tags']]
        if over_time:
            groups = {'temporal': over_time,
                      'temporal_far': [r for r in over_time if 'far' in r['tags']]}
            groups.update({f: [r for r in over_time if f in r['tags']] for f in FAMILIES})
            for key, mine in groups.items():
                sc[key] = [sum(r['answers'][col]['correct'] for r in mine), len(mine)]
        scores[col] = sc
    src = [{'policy': _label(r), 'mode': r.get('mode'), 'bag': r.get('bag'),
            'summary': r.get('summary'), 'stats': {k: v for k, v in r.get('stats', {}).items()
                                                   if k in ('frames_fed', 'frames_in_bag',
                                                            'frames_dropped')}}
           for r in sources]
    bag = Path(str(runs[0].get('bag', ''))).name
    return {'bag': bag, 'columns': columns, 'rows': rows, 'scores': scores, 'runs': src,
            'oracle_missed': [r['id'] for r in rows if r['oracle_correct'] is False]}


def fed_rate(runs: Sequence[dict], default: float) -> float:
    """Frames fed per second of bag time (mean over ``runs``), for the oracle's replay."""
    rates = []
    for r in runs:
        fed = (r.get('stats') or {}).get('frames_fed')
        last = max((rec['t'] for rec in r.get('records', [])), default=0.0)
        if isinstance(fed, (int, float)) and fed > 0 and last > 0:
            rates.append(fed / last)
    return round(sum(rates) / len(rates), 3) if rates else default


def _cut(text: str, n: int) -> str:
    text = ' '.join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + '~'


def _score_text(sc: dict) -> str:
    far, rec = sc['far'], sc['recent']
    text = f"far {far[0]}/{far[1]}, recent {rec[0]}/{rec[1]}"
    if 'far_oracle_answered' in sc:
        fo, ro = sc['far_oracle_answered'], sc['recent_oracle_answered']
        text += f" (on the oracle's answered: far {fo[0]}/{fo[1]}, recent {ro[0]}/{ro[1]})"
    if 'temporal' in sc:
        t, tf = sc['temporal'], sc['temporal_far']
        fams = ', '.join(f"{f} {sc[f][0]}/{sc[f][1]}" for f in FAMILIES if sc[f][1])
        text += f"; over time {t[0]}/{t[1]} (far {tf[0]}/{tf[1]}): {fams}"
    return text


def table(result: dict, width: int = 28) -> str:
    """Plain-text side-by-side table for the terminal, then one score line per column."""
    cols = result['columns']
    head = ['question', 'expected', 'back'] + cols
    rows = [head]
    for r in result['rows']:
        cells = [_cut(r['question'], 40), _cut(str(r['expected']), 10),
                 '-' if r['seconds_back'] is None else f"{r['seconds_back']:.0f}s"]
        for c in cols:
            a = r['answers'][c]
            cells.append('-' if a is None else
                         f"{'OK' if a['correct'] else 'no'} {_cut(a['answer'], width)}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    lines.append('')
    for c in cols:
        lines.append(f"{c}: {_score_text(result['scores'][c])}")
    if result['oracle_missed']:
        lines.append(f"missed by the full-cache oracle (model/prompt, not memory): "
                     f"{', '.join(result['oracle_missed'])}")
    return '\n'.join(lines)


def markdown(result: dict, png_name: Optional[str] = None) -> str:
    """Markdown version of :func:`table`, with the picture."""
    cols = result['columns']
    lines = [f"Bag `{result['bag']}`: each policy's answer, **OK** when correct.", '',
             '| question | expected | evidence back (s) | ' + ' | '.join(cols) + ' |',
             '|---|---|---:|' + '---|' * len(cols)]
    for r in result['rows']:
        cells = []
        for c in cols:
            a = r['answers'][c]
            cells.append('-' if a is None else (('**OK** ' if a['correct'] else 'no: ')
                                                + _cut(a['answer'], 50).replace('|', '/')))
        back = '-' if r['seconds_back'] is None else f"{r['seconds_back']:.0f}"
        lines.append(f"| {r['question']} | {r['expected']} | {back} | " + ' | '.join(cells)
                     + ' |')
    lines.append('')
    lines += [f"- {c}: {_score_text(result['scores'][c])}" for c in cols]
    if result['oracle_missed']:
        lines.append(f"- missed by the full-cache oracle (a model/prompt failure, not the "
                     f"memory's): {', '.join(result['oracle_missed'])}")
    if png_name:
        lines += ['', f'![side by side]({png_name})']
    return '\n'.join(lines) + '\n'


def _spread(values: list) -> list:
    """Positions for ``values`` (None kept) at least 3 % of their range apart, in order.

    Why: the recent questions all lie 0-1 s back, so their marks and labels fell on top
    of each other; a mark moves right only as far as needed to be read on its own.
    """
    known = sorted((v, i) for i, v in enumerate(values) if v is not None)
    if not known:
        return list(values)
    gap = 0.03 * max(1.0, known[-1][0] - known[0][0])
    out = list(values)
    last = None
    for v, i in known:
        out[i] = v if last is None or v - last >= gap else last + gap
        last = out[i]
    return out


def plot(result: dict, png: Path | str) -> Path:
    """One row per column, questions placed by how far back their evidence lies."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cols = result['columns']
    rows = result['rows']
    x = _spread([r['seconds_back'] for r in rows])
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.7 * len(cols)))
    for y, c in enumerate(reversed(cols)):
        for r, rx in zip(rows, x):
            a = r['answers'][c]
            if a is None or rx is None:
                continue
            ok = a['correct']
            ax.scatter(rx, y, s=170, marker='o' if ok else 'X',
                       color='tab:green' if ok else 'tab:red', edgecolor='black', zorder=3)
    for r, rx in zip(rows, x):
        if rx is not None:
            ax.annotate(r['id'], (rx, len(cols) - 0.55), rotation=60,
                        fontsize=7, ha='left', va='bottom')
    ax.set_yticks(range(len(cols)))
    ax.set_yticklabels([f"{c}\n{_score_text(result['scores'][c]).split(' (')[0]}"
                        for c in reversed(cols)], fontsize=8)
    ax.set_ylim(-0.6, len(cols) + 1.4)
    ax.set_xlabel('how far back the evidence lies (s of bag time before the question)\n'
                  'marks closer than 3 % of the axis are spread apart', fontsize=9)
    ax.grid(axis='x', alpha=0.3)
    ax.set_title(f"Bag {result['bag']}: green o = correct, red x = wrong", fontsize=9)
    return save_figure(fig, png)


def write(result: dict, out: Path | str) -> Path:
    """Write ``out`` (JSON) with its Markdown and PNG beside it; return the JSON path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + '\n')
    png = plot(result, out.with_suffix('.png'))
    out.with_suffix('.md').write_text(markdown(result, png.name))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Combine replay JSON files and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs='+', type=Path, help='replay JSON files, one per policy')
    ap.add_argument('--oracle', type=Path, default=None, help='full-cache replay JSON')
    ap.add_argument('--out', type=Path, default=Path('results/demo_side_by_side.json'))
    ap.add_argument('--fed-rate', action='store_true',
                    help='only print the runs\' mean frames fed per second of bag time')
    ap.add_argument('--default-rate', type=float, default=1.0,
                    help='what --fed-rate prints when the runs did not count their frames')
    args = ap.parse_args(argv)
    try:
        runs = [json.loads(p.read_text()) for p in args.runs]
        oracle = json.loads(args.oracle.read_text()) if args.oracle else None
    except (OSError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    if args.fed_rate:
        print(fed_rate(runs, args.default_rate))
        return 0
    result = combine(runs, oracle)
    out = write(result, args.out)
    print(table(result))
    print(f'\nwrote {out}, {out.with_suffix(".md")}, {out.with_suffix(".png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
