"""Rescore committed replay results with the current question files' scoring rules.

Why: the verdicts in a result file are those of the scoring at the time it was made; when
the rules get stricter (an answer naming another candidate is now wrong) the published
figures must follow. Each record is matched to its question by id *and* expected answer
(records of an older question file that no longer match are left as they were, and
counted); the summary and the Markdown beside the file are rewritten.

    python scripts/rescore.py docs/results/replay_dds_*.json \
        docs/results/dds_runs/*.json docs/results/demo_far_recall.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import far_recall  # noqa: E402 - scripts/far_recall.py, beside this file
from ros2_infmllm.eval import replay  # noqa: E402
from ros2_infmllm.eval.questions import load_questions, sample_questions_path  # noqa: E402


def rescore_records(records: list, questions: Sequence) -> dict:
    """Rescore ``records`` in place; return counts of changed and unmatched records."""
    by_id = {q.id: q for q in questions}
    changed = unmatched = 0
    for rec in records:
        q = by_id.get(rec.get('id'))
        if q is None or q.expected != rec.get('expected'):
            unmatched += 1
            continue
        ok = bool(q.score(rec.get('answer') or ''))
        if ok != bool(rec.get('correct')):
            changed += 1
            rec['correct_before_rescore'] = bool(rec.get('correct'))
        rec['correct'] = ok
    return {'changed': changed, 'unmatched': unmatched, 'records': len(records),
            'rule': 'an answer naming another candidate of its kind is wrong'}


def rescore_file(path: Path) -> dict:
    """Rescore one replay or far-recall result file in place (and its Markdown)."""
    data = json.loads(path.read_text())
    task = (data.get('meta') or {}).get('task')
    if task == 'replay':
        qfile = REPO / (data.get('questions_file') or sample_questions_path())
        info = rescore_records(data['records'], load_questions(qfile))
        data['summary'] = replay.summarise(data['records'])
        data['rescored'] = info
        path.write_text(json.dumps(data, indent=1) + '\n')
        md = path.with_suffix('.md')
        if md.exists():
            png = path.with_suffix('.png')
            md.write_text(replay.markdown(data, png.name if png.exists() else None))
        return info
    if task == 'far_recall':
        questions = load_questions(sample_questions_path())
        infos = [rescore_records(run['records'], questions) for run in data['runs']]
        info = {k: sum(i[k] for i in infos) for k in ('changed', 'unmatched', 'records')}
        info['rule'] = infos[0]['rule'] if infos else ''
        data['table'] = far_recall.recall_table(data['runs'], data['policies'])
        data['rescored'] = info
        path.write_text(json.dumps(data, indent=1) + '\n')
        md = path.with_suffix('.md')
        if md.exists():
            md.write_text(far_recall.markdown(data))
        return info
    raise ValueError(f'{path}: task {task!r} holds no replay answers to rescore')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Rescore every given file; print what changed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('files', nargs='+', type=Path)
    args = ap.parse_args(argv)
    for path in args.files:
        try:
            info = rescore_file(path)
        except (OSError, ValueError, KeyError) as exc:
            print(f'error: {path}: {exc}', file=sys.stderr)
            return 2
        print(f"{path}: {info['changed']} of {info['records']} verdicts changed, "
              f"{info['unmatched']} records of older questions left as they were")
    return 0


if __name__ == '__main__':
    sys.exit(main())
