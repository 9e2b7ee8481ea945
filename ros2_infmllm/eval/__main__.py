"""``infmllm-eval <task>`` / ``python -m ros2_infmllm.eval <task>``: the evaluation suite.

Tasks: perplexity, memory-qa, replay, report, make-bag, corpus; ``bench`` and
``bench-memory`` are handed to ``ros2_infmllm.eval.bench`` (the performance benchmarks).
Every task writes JSON (with seed, model, policy parameters, versions, device and command
line) plus Markdown and PNG beside it; ``--smoke`` runs a CPU-sized version for CI.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ros2_infmllm.eval.common import (add_param_option, cli_overrides, csv_list, model_label,
                                      resolve_device, run_metadata, write_json)

TASKS = ('perplexity', 'memory-qa', 'replay', 'report', 'make-bag', 'corpus', 'bench',
         'bench-memory')
FORWARDED = ('bench', 'bench-memory')
DEFAULT_BAG = Path('data') / 'sample_bag'


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument('--model', default='default',
                   help='default (qwen2.5-0.5b) | smollm2-135m | qwen2.5-1.5b | tiny-random | '
                        'PATH.gguf | local model')
    p.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    p.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    p.add_argument('--seed', type=int, default=0)
    add_param_option(p)
    p.add_argument('--out', default=out, help='result JSON (Markdown and PNG written beside)')
    p.add_argument('--smoke', action='store_true', help='fast CPU mode for CI (< 1 min)')
    p.add_argument('--no-progress', action='store_true', help='hide progress bars')


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every task."""
    ap = argparse.ArgumentParser(prog='infmllm-eval', description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='task', metavar='TASK')
    sub.required = True

    p = sub.add_parser('perplexity', help='streaming perplexity over a long real text')
    _common(p, 'results/perplexity.json')
    p.add_argument('--corpus', default='data/corpus_stdlib.txt.xz',
                   help='corpus file (.txt or .txt.xz); built from this Python if missing')
    p.add_argument('--tokens', type=int, default=1_000_000, help='tokens to evaluate')
    p.add_argument('--policies', type=csv_list(str),
                   default=['full_in_window', 'window', 'streaming_llm', 'h2o', 'snapkv',
                            'inf_mllm'])
    p.add_argument('--budgets', type=csv_list(int), default=[256, 512, 1024, 2048])
    p.add_argument('--chunk', type=int, default=256, help='tokens per streamed chunk')
    p.add_argument('--block', type=int, default=10_000, help='tokens per perplexity block')
    p.add_argument('--batch', type=int, default=8, help='windows per forward (reference)')

    p = sub.add_parser('memory-qa', help='long-memory QA: accuracy against distance')
    _common(p, 'results/memory_qa.json')
    p.add_argument('--policies', type=csv_list(str),
                   default=['full', 'streaming_llm', 'inf_mllm'])
    p.add_argument('--budget', type=int, default=1024)
    p.add_argument('--distances', type=csv_list(int), default=[5, 20, 50, 100, 200, 300],
                   help='rounds between a fact and its question')
    p.add_argument('--streams', type=int, default=12, help='seeded conversations per policy')
    p.add_argument('--per-distance', type=int, default=2,
                   help='questions per distance in each conversation')
    p.add_argument('--mention-every', type=int, default=25,
                   help='rounds between passing mentions of a fact\'s subject (0 = never)')
    p.add_argument('--warmup', type=int, default=60,
                   help='distractor rounds before the first fact (the memory is full by then)')
    p.add_argument('--rounds-per-chunk', type=int, default=1,
                   help='consecutive non-question rounds prefilled as one chunk')
    p.add_argument('--questions-in-stream', action='store_true',
                   help='append questions and answers to the stream (default: each question '
                        'probes a copy of the memory)')

    p = sub.add_parser('replay', help='replay a rosbag2 bag into the node (or the engine)')
    _common(p, 'results/replay.json')
    p.add_argument('--bag', default=str(DEFAULT_BAG), help='rosbag2 directory (sqlite3/mcap)')
    p.add_argument('--questions', default=None,
                   help='YAML/JSONL question file (default: the sample bag\'s)')
    p.add_argument('--topics', type=csv_list(str), default=None, help='camera topics to feed')
    p.add_argument('--offline', action='store_true',
                   help='feed the engine directly at bag time (no ROS, fastest)')
    p.add_argument('--rate', type=float, default=1.0, help='replay speed factor (DDS mode)')
    p.add_argument('--frame-rate', type=float, default=2.0,
                   help='frames per second ingested (offline mode subsamples to this)')
    p.add_argument('--node', default='/infmllm', help='node name whose ~/query is called')
    p.add_argument('--policy', default='inf_mllm')
    p.add_argument('--budget', type=int, default=1024)
    p.add_argument('--max-new-tokens', type=int, default=24)
    p.add_argument('--timeout', type=float, default=60.0, help='seconds per query (DDS)')
    p.add_argument('--save-memory', default=None, metavar='PATH',
                   help='offline: save the memory (and the replay position) at --save-at')
    p.add_argument('--save-at', type=float, default=0.0, metavar='T',
                   help='bag seconds at which --save-memory saves')
    p.add_argument('--restore-memory', default=None, metavar='PATH',
                   help='offline: restore a --save-memory snapshot and resume the replay there')

    p = sub.add_parser('report', help='regenerate docs/results.md from docs/results/*.json')
    p.add_argument('--results', default='docs/results', help='folder of result JSON files')
    p.add_argument('--out', default='docs/results.md')

    p = sub.add_parser('make-bag', help='write the bundled sample camera bag')
    p.add_argument('--out', default=str(DEFAULT_BAG))
    p.add_argument('--storage', choices=['sqlite3', 'mcap'], default='sqlite3')
    p.add_argument('--duration', type=float, default=None,
                   help='seconds of bag time (default: the whole scene)')
    p.add_argument('--rate', type=float, default=10.0)
    p.add_argument('--seed', type=int, default=None, help="default: the scene's")
    p.add_argument('--scene', choices=['sample', 'heldout', 'yard'], default='sample',
                   help='bundled scene (eval/scenario.py SCENES)')
    p.add_argument('--no-second-camera', action='store_true')
    p.add_argument('--overwrite', action='store_true')
    p.add_argument('--if-missing', action='store_true',
                   help='do nothing when the bag already exists and spans the scene')

    p = sub.add_parser('corpus', help='write the perplexity corpus (CPython Lib/*.py)')
    p.add_argument('--out', default='data/corpus_stdlib.txt.xz')
    for name in FORWARDED:
        sub.add_parser(name, help='performance benchmarks (ros2_infmllm.eval.bench)',
                       add_help=False)
    return ap


def _forward_bench(task: str, argv: list) -> int:
    """Hand ``bench`` / ``bench-memory`` to the benchmark module, imported only now."""
    try:
        mod = importlib.import_module('ros2_infmllm.eval.bench')
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith('ros2_infmllm.eval.bench'):
            print(f'error: {task}: the benchmarks (ros2_infmllm.eval.bench) are not installed '
                  'in this checkout', file=sys.stderr)
            return 2
        raise
    entry = getattr(mod, 'main', None)
    if entry is None:
        print(f'error: {task}: ros2_infmllm.eval.bench has no main(argv)', file=sys.stderr)
        return 2
    rc = entry([task] + argv) if task == 'bench-memory' else entry(argv)
    return int(rc or 0)


def _write(result: dict, out: str, module) -> None:
    out_json = write_json(out, result)
    png = out_json.with_suffix('.png')
    module.plot(result, png)
    out_json.with_suffix('.md').write_text(module.markdown(result, png.name))
    print(f'wrote {out_json}, {out_json.with_suffix(".md")}, {png}')


def cmd_perplexity(args) -> int:
    """Run the perplexity task."""
    from ros2_infmllm.eval import corpus as corpus_mod
    from ros2_infmllm.eval import perplexity
    from ros2_infmllm.eval.common import load_eval_model
    if args.smoke:
        args.model = 'tiny-random' if args.model == 'default' else args.model
        args.tokens, args.budgets, args.chunk, args.block = 2048, [64, 128], 32, 512
        args.device = 'cpu' if args.device == 'auto' else args.device
    overrides = cli_overrides(args)
    device = resolve_device(args.device)
    path = corpus_mod.ensure_corpus(args.corpus)
    text = corpus_mod.load_corpus(path)
    model, tok = load_eval_model(args.model, device=device, dtype=args.dtype, seed=args.seed)
    meta = run_metadata('perplexity', args.seed, model_label(args.model), device,
                        argv=args.command_argv, dtype=args.dtype, smoke=args.smoke)
    info = corpus_mod.describe_corpus(text, Path(path).name)

    def save(partial: dict) -> None:
        write_json(args.out, dict(partial, meta=meta, corpus=info, complete=False))

    res = perplexity.run(model, tok, text, policies=args.policies, budgets=args.budgets,
                         n_tokens=args.tokens, chunk=args.chunk, block=args.block,
                         device=device, batch=args.batch, overrides=overrides,
                         progress=not args.no_progress, on_run=save)
    res.update(meta=meta, corpus=info, complete=True)
    _write(res, args.out, perplexity)
    for r in res['runs']:
        print(f"{r['policy']:>15}@{r['budget']:<5} ppl {r['ppl']:8.3f}  worst/median "
              f"{r['worst_over_median']:.3f}  {r['tokens_per_s']:.0f} tok/s")
    return 0


def cmd_memory_qa(args) -> int:
    """Run the long-memory QA task."""
    from ros2_infmllm.eval import memory_qa
    from ros2_infmllm.eval.common import load_eval_model
    if args.smoke:
        args.model = 'tiny-random' if args.model == 'default' else args.model
        args.distances, args.streams, args.per_distance, args.budget = [3, 30], 1, 1, 96
        args.warmup = 10
        args.device = 'cpu' if args.device == 'auto' else args.device
    overrides = cli_overrides(args)
    device = resolve_device(args.device)
    model, tok = load_eval_model(args.model, device=device, dtype=args.dtype, seed=args.seed)
    meta = run_metadata('memory-qa', args.seed, model_label(args.model), device,
                        argv=args.command_argv, dtype=args.dtype, smoke=args.smoke)

    def save(partial: dict) -> None:
        write_json(args.out, dict(partial, meta=meta, complete=False))

    res = memory_qa.run(model, tok, policies=args.policies, budget=args.budget,
                        distances=args.distances, streams=args.streams,
                        per_distance=args.per_distance, mention_every=args.mention_every,
                        warmup=args.warmup, seed=args.seed, device=device,
                        overrides=overrides,
                        progress=not args.no_progress, on_run=save,
                        in_stream=args.questions_in_stream,
                        rounds_per_chunk=args.rounds_per_chunk)
    res.update(meta=meta, complete=True)
    _write(res, args.out, memory_qa)
    for r in res['runs']:
        acc = ', '.join(f"{d}:{a:.2f}" for d, a in r['accuracy_by_distance'].items())
        print(f"{r['policy']:>15} accuracy {r['accuracy']:.3f}  by distance {acc}")
    return 0


def cmd_replay(args) -> int:
    """Run the replay task (offline through the engine, or over DDS into a node)."""
    from ros2_infmllm.eval import replay
    res = replay.run_from_args(args)
    _write(res, args.out, replay)
    print(replay.table(res))
    return 0


def cmd_report(args) -> int:
    """Regenerate docs/results.md (and every plot) from the result JSON files."""
    from ros2_infmllm.eval import report
    out = report.write_report(Path(args.results), Path(args.out))
    print(f'wrote {out}')
    return 0


def _bag_seconds(path: Path):
    """Return the seconds a bag spans (None when it cannot be read)."""
    from rosbags.rosbag2 import Reader
    try:
        with Reader(path) as reader:
            return reader.duration / 1e9
    except Exception:       # noqa: BLE001 - an unreadable bag is written again
        return None


def cmd_make_bag(args) -> int:
    """Write the sample bag (skipped with --if-missing when it exists)."""
    from ros2_infmllm.eval.make_sample_bag import write_sample_bag
    from ros2_infmllm.eval.scenario import SCENES
    out = Path(args.out)
    overwrite = args.overwrite
    if out.exists() and args.if_missing:
        # a bag written before its scene grew (questions asked after its end) is rewritten
        want = args.duration if args.duration is not None else SCENES[args.scene].duration
        if not (out / 'metadata.yaml').is_file():
            print(f'{out} exists and is not a bag (no metadata.yaml); nothing written: '
                  'choose another --out or remove it', file=sys.stderr)
            return 2
        have = _bag_seconds(out)
        if have is not None and have >= want - 1.0:
            print(f'{out} exists; nothing to do')
            return 0
        print(f'{out} spans {have} s of the {want} s scene; writing it again')
        overwrite = True
    info = write_sample_bag(out, duration=args.duration, rate=args.rate, seed=args.seed,
                            storage=args.storage, overwrite=overwrite, progress=True,
                            scene=args.scene, second_camera=not args.no_second_camera)
    print(f"wrote {info['path']} ({info['storage']}): {info['counts']}")
    return 0


def cmd_corpus(args) -> int:
    """Write the perplexity corpus."""
    from ros2_infmllm.eval.corpus import build_corpus
    info = build_corpus(args.out)
    print(f"wrote {args.out}: {info['n_files']} files, {info['chars']:,} chars, "
          f"sha256 {info['sha256'][:16]}")
    return 0


COMMANDS = {'perplexity': cmd_perplexity, 'memory-qa': cmd_memory_qa, 'replay': cmd_replay,
            'report': cmd_report, 'make-bag': cmd_make_bag, 'corpus': cmd_corpus}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the task and its options, run it, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        return _forward_bench(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    args.command_argv = ['infmllm-eval'] + argv      # recorded in every result file
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    t0 = time.perf_counter()
    try:
        rc = COMMANDS[args.task](args)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f'error: {args.task}: {exc}', file=sys.stderr)
        return 2
    except RuntimeError as exc:                 # e.g. no node / no interfaces for replay
        print(f'error: {args.task}: {exc}', file=sys.stderr)
        return 1
    print(f'{args.task} done in {time.perf_counter() - t0:.1f} s')
    return rc


if __name__ == '__main__':
    sys.exit(main())
