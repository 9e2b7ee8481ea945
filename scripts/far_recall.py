"""Far-question recall of the sample bag, per memory policy, over several replay frame rates.

Why several runs: the 135M default model answers a far question right or wrong on small
differences in what it sees (which frames of an event were fed, what it answered before),
so one demo run says little about the memory. Here every policy replays the bag offline
at each frame rate (frames fed per second of bag time; the DDS demo reaches ~0.5 on this
2-core CPU), with the same questions and budget, and the far questions' hits are summed.

    python scripts/far_recall.py                                  # 3 policies x 5 rates, CPU
    python scripts/far_recall.py --rates 0.5 --policies inf_mllm  # one run
    python scripts/far_recall.py --policies inf_mllm,inf_mllm:novelty=0  # policy specs

Writes docs/results/demo_far_recall.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ros2_infmllm.engine import SessionConfig, build_session  # noqa: E402
from ros2_infmllm.eval.common import (csv_list, run_metadata, save_figure,  # noqa: E402
                                      split_policy_spec)
from ros2_infmllm.eval.questions import load_questions, sample_questions_path  # noqa: E402
from ros2_infmllm.eval.replay import pick_topics, run_offline  # noqa: E402


def far_hits(records: list) -> int:
    """Far questions answered right in one replay's records."""
    return sum(r['correct'] for r in records if 'far' in r['tags'])


def recall_table(runs: list, policies: list) -> dict:
    """Per policy: far and recent hits summed over the rates, per rate and per question."""
    out = {}
    for pol in policies:
        mine = [r for r in runs if r['policy'] == pol]
        far = [q for r in mine for q in r['records'] if 'far' in q['tags']]
        recent = [q for r in mine for q in r['records'] if 'recent' in q['tags']]
        by_question: dict = {}
        for q in far:
            by_question[q['id']] = by_question.get(q['id'], 0) + q['correct']
        out[pol] = {'far_correct': sum(q['correct'] for q in far), 'far_asked': len(far),
                    'recent_correct': sum(q['correct'] for q in recent),
                    'recent_asked': len(recent),
                    'far_by_rate': {str(r['frame_rate']): far_hits(r['records']) for r in mine},
                    'far_by_question': by_question}
    return out


def markdown(result: dict) -> str:
    """Summary table (one row per policy) and the per-question hit counts."""
    rates = result['rates']
    tab = result['table']
    lines = [f"Sample bag, offline replay, budget {result['budget']}, model "
             f"`{result['model']}`, frame rates {', '.join(map(str, rates))} "
             f"(frames per second of bag time). `{result['meta']['command']}`", '',
             '| policy | far correct | recent correct | far per rate |',
             '|---|---:|---:|---|']
    for pol, row in tab.items():
        per = ', '.join(str(v) for v in row['far_by_rate'].values())
        lines.append(f"| {pol} | {row['far_correct']}/{row['far_asked']} | "
                     f"{row['recent_correct']}/{row['recent_asked']} | {per} |")
    qids = list(next(iter(tab.values()))['far_by_question'])
    lines += ['', '| far question | ' + ' | '.join(tab) + ' |',
              '|---|' + '---:|' * len(tab)]
    for q in qids:
        lines.append(f'| {q} | ' + ' | '.join(f"{tab[p]['far_by_question'][q]}/{len(rates)}"
                                              for p in tab) + ' |')
    return '\n'.join(lines) + '\n'


def plot(result: dict, png: Path) -> None:
    """Far and recent accuracy per policy, summed over the frame rates."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tab = result['table']
    pols = list(tab)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    x = range(len(pols))
    far = [tab[p]['far_correct'] / max(1, tab[p]['far_asked']) for p in pols]
    rec = [tab[p]['recent_correct'] / max(1, tab[p]['recent_asked']) for p in pols]
    ax.bar([i - 0.2 for i in x], far, 0.4, label='far questions')
    ax.bar([i + 0.2 for i in x], rec, 0.4, label='recent questions')
    ax.set_xticks(list(x))
    ax.set_xticklabels(pols)
    ax.set_ylim(0, 1)
    ax.set_ylabel('fraction correct')
    ax.set_title(f"Sample bag, {len(result['rates'])} replays per policy, budget "
                 f"{result['budget']}", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, png)


def main() -> int:
    """Run every policy at every rate and write the result files."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bag', default=str(REPO / 'data' / 'sample_bag'))
    p.add_argument('--policies', type=csv_list(str), default=['inf_mllm', 'streaming_llm', 'full'])
    p.add_argument('--rates', type=csv_list(float), default=[0.4, 0.45, 0.5, 0.55, 0.6])
    p.add_argument('--budget', type=int, default=1024)
    p.add_argument('--model', default='default')
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', type=Path, default=REPO / 'docs' / 'results' / 'demo_far_recall.json')
    args = p.parse_args()
    bag = Path(args.bag)
    if not bag.exists():
        p.error(f'bag not found: {bag} (make it with `python -m ros2_infmllm.eval make-bag`)')
    questions = load_questions(sample_questions_path())
    topics = pick_topics(bag, questions, None)
    runs = []
    for pol in args.policies:
        for rate in args.rates:
            name, params = split_policy_spec(pol)       # e.g. inf_mllm:novelty=0
            session = build_session(SessionConfig(model=args.model, device=args.device,
                                                  policy=name, budget=args.budget, **params))
            out = run_offline(session, bag, questions, topics, rate, progress=False)
            print(f'{pol:>14} rate {rate:<5} far {far_hits(out["records"])}/'
                  f"{sum('far' in r['tags'] for r in out['records'])}, fed "
                  f"{out['stats']['frames_fed']}, cache {out['stats']['cache_tokens_end']}",
                  flush=True)
            runs.append({'policy': pol, 'frame_rate': rate, 'records': out['records'],
                         'frames_fed': out['stats']['frames_fed'],
                         'cache_tokens_end': out['stats']['cache_tokens_end']})
    result = {'budget': args.budget, 'model': args.model, 'rates': args.rates,
              'policies': args.policies, 'table': recall_table(runs, args.policies),
              'runs': runs, 'meta': run_metadata('far_recall', 0, args.model, args.device,
                                                 policy=args.policies, budget=args.budget)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    args.out.with_suffix('.md').write_text(markdown(result))
    plot(result, args.out.with_suffix('.png'))
    print(markdown(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
