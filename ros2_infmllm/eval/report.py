"""Render docs/results.md (and every plot) from the result JSON files in one command.

Why regenerate instead of editing by hand: every figure in the results page then comes
from a JSON file that records how it was made (command, seed, model, versions, device).
Files are grouped by task (``meta.task``); unknown tasks, e.g. the performance
benchmarks' ``bench_*.json``, are rendered generically as tables of their scalar fields.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

SECTIONS = (('perplexity', 'Streaming perplexity (paper Fig. 5 analogue)'),
            ('memory-qa', 'Long-memory QA'),
            ('replay', 'Rosbag replay'),
            ('grid', 'inf_mllm settings against both bars'))


def _module(task: str):
    from ros2_infmllm.eval import frontier, memory_qa, perplexity, replay
    return {'perplexity': perplexity, 'memory-qa': memory_qa, 'replay': replay,
            'grid': frontier}.get(task)


def load_results(folder: Path) -> list:
    """Return ``(path, data)`` for every ``*.json`` in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f'results folder not found: {folder}')
    out = []
    for path in sorted(folder.glob('*.json')):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f'{path}: not valid JSON ({exc})') from exc
        out.append((path, data))
    return out


def task_of(path: Path, data) -> str:
    """Task name of a result file: ``meta.task``, else ``bench`` for bench_*, else 'other'."""
    if isinstance(data, dict):
        meta = data.get('meta')
        if isinstance(meta, dict) and meta.get('task'):
            return str(meta['task'])
    return 'bench' if path.name.startswith('bench') else 'other'


def _provenance(path: Path, data: dict, rel: Path) -> str:
    meta = data.get('meta', {}) if isinstance(data, dict) else {}
    if not isinstance(meta, dict) or not meta:
        return f'Source: `{_rel(path, rel)}`.\n'
    dev = meta.get('device') or {}
    where = dev.get('gpu') or dev.get('cpu') or dev.get('device') if isinstance(dev, dict) \
        else dev
    vers = meta.get('versions') or {}
    vtxt = ', '.join(f'{k} {v}' for k, v in vers.items() if k in (
        'python', 'torch', 'transformers')) if isinstance(vers, dict) else ''
    return (f"Source: `{_rel(path, rel)}` (git `{meta.get('git')}`, {where}, {vtxt}).  \n"
            f"Command: `{meta.get('command', '?')}`\n")


def _rel(path: Path, rel: Path) -> str:
    try:
        return str(path.resolve().relative_to(rel.resolve()))
    except ValueError:
        return str(path)


def _scalars(obj, prefix: str = '', out: Optional[dict] = None, depth: int = 0) -> dict:
    out = {} if out is None else out
    if isinstance(obj, dict) and depth < 4:
        for k, v in obj.items():
            if k in ('meta',):
                continue
            _scalars(v, f'{prefix}{k}.' if prefix or depth else f'{k}.', out, depth + 1)
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        if len(out) < 60:
            out[prefix.rstrip('.')] = obj
    return out


def generic_markdown(data) -> str:
    """Render any result (benchmarks) as tables: lists of dicts as rows, then scalar fields."""
    lines = []
    if isinstance(data, dict):
        rows = None
        for key in ('runs', 'results', 'rows'):
            if isinstance(data.get(key), list) and data[key] and all(
                    isinstance(r, dict) for r in data[key]):
                rows = data[key]
                break
        if rows:
            cols = [c for c in rows[0] if all(not isinstance(r.get(c), (dict, list))
                                              for r in rows)][:10]
            lines += ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
            for r in rows:
                lines.append('| ' + ' | '.join(_fmt(r.get(c)) for c in cols) + ' |')
            lines.append('')
        scal = {k: v for k, v in _scalars({k: v for k, v in data.items()
                                           if k not in ('runs', 'results', 'rows')}).items()}
        if scal:
            lines += ['| field | value |', '|---|---|']
            lines += [f'| {k} | {_fmt(v)} |' for k, v in scal.items()]
    elif isinstance(data, list):
        lines.append(f'{len(data)} entries.')
    return '\n'.join(lines) + '\n'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v).replace('|', '\\|')


def _model_name(model) -> str:
    """Short model label of a result's meta (a GGUF file name, a model: name, a path)."""
    name = Path(str(model or 'unknown')).name
    for known, label in (('SmolLM2-135M', 'smollm2-135m'), ('0.5B', 'qwen2.5-0.5b'),
                         ('1.5B', 'qwen2.5-1.5b')):
        if known.lower() in name.lower():
            return label
    return name


def perplexity_headline(results: list) -> str:
    """One table of every perplexity run across files, compared with the reference.

    Runs are comparable when model, corpus, chunk and budget agree. A long run's first ``n``
    tokens are also compared with shorter runs (its block perplexities give that prefix
    exactly when the block size divides ``n``), marked "prefix".
    """
    import math
    from ros2_infmllm.eval.perplexity import REFERENCE
    runs = []
    for path, data in results:
        if task_of(path, data) != 'perplexity' or not isinstance(data, dict):
            continue
        sha = (data.get('corpus') or {}).get('sha256')
        model = _model_name((data.get('meta') or {}).get('model'))
        for r in data.get('runs', []):
            runs.append(dict(r, file=path.stem, sha=sha, model=model, chunk=data.get('chunk'),
                             block=data.get('block'), prefix=False))
    extra = []
    for r in runs:
        for n in sorted({o['tokens'] for o in runs if o['tokens'] < r['tokens']}):
            if r['block'] and n % r['block'] == 0 and n // r['block'] <= len(r['block_ppl']):
                logs = [math.log(x) for x in r['block_ppl'][:n // r['block']]]
                extra.append(dict(r, tokens=n, ppl=math.exp(sum(logs) / len(logs)),
                                  prefix=True, worst_over_median=None))
    allruns = runs + extra
    if not allruns:
        return ''
    lines = ['| model | tokens | budget | policy | perplexity | vs full_in_window '
             '| worst/median block | worst block / same block of full_in_window | from |',
             '|---|---:|---:|---|---:|---:|---:|---:|---|']
    seen = set()
    for r in sorted(allruns, key=lambda r: (r['model'], -r['tokens'], r['budget'], r['prefix'],
                                            r['policy'])):
        key = (r['model'], r['tokens'], r['budget'], r['policy'], r['sha'], r['chunk'])
        if key in seen:
            continue
        seen.add(key)
        ref = next((o for o in allruns if o['policy'] == REFERENCE and o['tokens'] == r['tokens']
                    and o['budget'] == r['budget'] and o['sha'] == r['sha']
                    and o['chunk'] == r['chunk'] and o['model'] == r['model']), None)
        vs = '' if ref is None or ref is r else f"{100 * (r['ppl'] / ref['ppl'] - 1):+.2f}%"
        wm = '' if r['worst_over_median'] is None else f"{r['worst_over_median']:.3f}"
        wr = ''
        if ref is not None and ref is not r and r['block'] == ref['block']:
            n = r['tokens'] // r['block'] if r['block'] else 0
            pairs = list(zip(r['block_ppl'][:n], ref['block_ppl'][:n]))
            if pairs:
                wr = f"{max(a / b for a, b in pairs):.3f}"
        src = f"{r['file']}" + (' (prefix of a longer run)' if r['prefix'] else '')
        lines.append(f"| {r['model']} | {r['tokens']:,} | {r['budget']} | {r['policy']} | "
                     f"{r['ppl']:.3f} | "
                     f"{vs} | {wm} | {wr} | {src} |")
    return '\n'.join(lines) + '\n'


def combined_perplexity_plot(items: list, png: Path) -> Optional[Path]:
    """Plot together the runs of the longest token count found in several files."""
    from ros2_infmllm.eval import perplexity
    groups: dict = {}
    for _, data in items:
        key = (data.get('n_tokens'), data.get('chunk'), data.get('block'),
               (data.get('corpus') or {}).get('sha256'))
        groups.setdefault(key, []).append(data)
    key = max(groups, key=lambda k: (k[0] or 0, len(groups[k])))
    if len(groups[key]) < 2:
        return None
    merged = dict(groups[key][0], runs=[r for d in groups[key] for r in d['runs']])
    return perplexity.plot(merged, png)


def render(results: list, md_path: Path) -> str:
    """Return the Markdown of the results page and write every plot beside the JSON."""
    docs = md_path.parent
    parts = ['# Results', '',
             'Generated by `infmllm-eval report` from the JSON files in '
             f'`{_rel(results[0][0].parent, docs) if results else "docs/results"}/`; '
             'do not edit by hand. See [eval.md](eval.md) for how each task works and how '
             'to rerun it.', '']
    by_task: dict = {}
    for path, data in results:
        by_task.setdefault(task_of(path, data), []).append((path, data))
    order = [t for t, _ in SECTIONS] + sorted(t for t in by_task if t not in dict(SECTIONS))
    titles = dict(SECTIONS)
    for task in order:
        items = by_task.get(task)
        if not items:
            continue
        bench = task == 'bench' or all(p.name.startswith('bench') for p, _ in items)
        title = titles.get(task) or ('Benchmarks' + ('' if task == 'bench' else f': {task}')
                                     if bench else task)
        parts += [f'## {title}', '']
        if task == 'perplexity' and len(items) > 1:
            parts += ['### All perplexity runs compared', '', perplexity_headline(results),
                      'Worst/median block compares the blocks of one run with each other, so '
                      'it mostly measures how different the corpus files are (the full cache '
                      'has it too); the worst block against the same block of full_in_window '
                      'measures what the bounded memory loses, block by block.', '']
            png = combined_perplexity_plot(items, items[0][0].parent / 'perplexity_combined.png')
            if png is not None:
                parts += [f'![longest runs together]({_rel(png, docs)})', '']
        mod = _module(task)
        for path, data in items:
            parts += [f'### {path.stem}', '']
            if isinstance(data, dict) and data.get('complete') is False:
                parts += ['*Partial: the run stopped at its time limit; the runs listed '
                          'completed.*', '']
            if mod is not None:
                png = path.with_suffix('.png')
                mod.plot(data, png)
                parts.append(mod.markdown(data, _rel(png, docs)))
            else:
                for img in sorted(path.parent.glob(path.stem + '*.png')):
                    parts.append(f'![{img.stem}]({_rel(img, docs)})\n')
                parts.append(generic_markdown(data))
            parts += [_provenance(path, data, docs), '']
    return '\n'.join(parts).rstrip() + '\n'


def write_report(results_dir: Path, out: Path) -> Path:
    """Regenerate ``out`` from ``results_dir/*.json``."""
    results = load_results(Path(results_dir))
    if not results:
        raise FileNotFoundError(f'no *.json result files in {results_dir}')
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, out))
    return out
