"""Performance benchmarks: ``infmllm-eval bench <what>`` and ``infmllm-eval bench-memory``.

Subcommands (each writes ``bench_<what>.json`` + ``.md`` + ``.png`` into ``--out-dir``):

- ``memory`` (= ``bench-memory``): cache bytes, chunk latency and peak memory at 10k / 100k /
  1M streamed tokens per policy, then decode speed on the same caches (issue 5).
- ``decode``: batch-1 decode tokens/s per policy at each budget, eager and CUDA-graph, and
  the fraction of the HBM roofline (copy bandwidth measured in the same run; issue 9).
- ``ingest``: VLM frame ingest over a time-compressed 1-hour stream, per-policy comparison,
  scoring and compaction cost, torch.profiler table (issue 9).
- ``cpu``: the bundled default model through the engine on this CPU (ingest, answer).
- ``engine``: ``StreamingSession`` as the node drives it against the bench fast path (decode
  tok/s and roofline, time to first token, no-trace cost, VL ingest per frame; issue 20).
- ``report``: re-render Markdown and plots from existing JSON files.

Weights are random in real model shapes: speed does not depend on weight values.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from ros2_infmllm.eval.bench.common import DTYPES, POLICY_ORDER
from ros2_infmllm.eval.common import add_param_option, cli_overrides, csv_list

WHATS = ("memory", "decode", "ingest", "cpu", "engine", "report")


def _policies(text: str) -> list:
    """Policy names; ``name@N`` runs it with ``decode_slack=N`` (``h2o@1``: per-step eviction)."""
    from ros2_infmllm.memory.policies import POLICIES
    names = csv_list(str)(text)
    bad = [n for n in names if n.partition("@")[0] not in POLICIES
           or (n.partition("@")[2] and not n.partition("@")[2].isdigit())]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown policies {bad}; valid: {sorted(POLICIES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``infmllm-eval bench``."""
    ap = argparse.ArgumentParser(prog="infmllm-eval bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)

    def common(p, shape: str) -> None:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--dtype", default="auto", choices=["auto"] + sorted(DTYPES),
                       help="auto: bfloat16 on cuda, float32 on cpu")
        p.add_argument("--shape", default=shape, help="model shape (random weights)")
        p.add_argument("--out-dir", default=os.path.join("results", "bench"))
        p.add_argument("--tag", default="", help="suffix of the output names (e.g. _cpu)")
        p.add_argument("--smoke", action="store_true", help="seconds-long CPU version (tests)")
        add_param_option(p)

    p = sub.add_parser("memory", help="bounded memory at 10k/100k/1M streamed tokens")
    common(p, "7b")
    p.add_argument("--policies", type=_policies, default=list(POLICY_ORDER))
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--checkpoints", type=csv_list(int), default=[10_000, 100_000, 1_000_000])
    p.add_argument("--decode-steps", type=int, default=128)
    p.add_argument("--full-limit", type=int, default=100_000,
                   help="tokens the growing full cache streams at most")
    p.add_argument("--no-graphs", action="store_true")

    p = sub.add_parser("decode", help="decode tokens/s per policy and budget, HBM roofline")
    common(p, "7b")
    p.add_argument("--policies", type=_policies, default=list(POLICY_ORDER) + ["h2o@1"])
    p.add_argument("--budgets", type=csv_list(int), default=[1024, 4096])
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--no-graphs", action="store_true")
    p.add_argument("--assumed-peak-gbs", type=float, default=3350.0,
                   help="datasheet HBM bandwidth stated beside the measured copy bandwidth")
    p.add_argument("--fused-policies", type=_policies, default=[],
                   help="run these again with q/k/v and gate/up weights fused (<name>+fused)")
    p.add_argument("--compile-policies", type=_policies, default=[],
                   help="run these last with the one-token norms, MLPs and rotary embedding "
                   "compiled by inductor, on the fused weights if --fused-policies ran "
                   "(<name>[+fused]+compiled)")
    p.add_argument("--own-policies", type=_policies, default=[],
                   help="run these after the compiled rows with the owned one-token decode "
                   "step of accel/llama_decode.py (<name>[+fused]+owned)")
    p.add_argument("--compile-mode", default="default",
                   choices=["default", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode of --compile-policies and --own-policies")
    p.add_argument("--profile", action="store_true",
                   help="torch.profiler kernel summary of eager inf_mllm steps (first budget)")

    p = sub.add_parser("ingest", help="VLM frame ingest over a time-compressed hour")
    common(p, "2b")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seconds", type=float, default=3600.0)
    p.add_argument("--frames", type=int, default=1800, help="frames sampled from the stream")
    p.add_argument("--compare", type=_policies, default=list(POLICY_ORDER))
    p.add_argument("--compare-frames", type=int, default=120)
    p.add_argument("--grid", type=int, default=28, help="patches per side (28: 392 px)")
    p.add_argument("--no-profile", action="store_true")

    p = sub.add_parser("cpu", help="bundled default model through the engine on this CPU")
    p.add_argument("--out-dir", default=os.path.join("results", "bench"))
    p.add_argument("--tag", default="")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--compare", type=csv_list(str), default=[],
                   help="policy specs, each optionally @dtype, whose ingest is then timed "
                        "side by side on the same frames (e.g. inf_mllm@float32,"
                        "inf_mllm@bfloat16,inf_mllm:novelty=0,streaming_llm)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="the timed session's dtype (auto: as the node picks it)")
    p.add_argument("--profile-frames", type=int, default=0,
                   help="then profile this many frames: ms per frame by op group")
    add_param_option(p)

    p = sub.add_parser("engine", help="the node's path (StreamingSession) vs the bench fast path")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out-dir", default=os.path.join("results", "bench"))
    p.add_argument("--tag", default="")
    p.add_argument("--smoke", action="store_true", help="seconds-long CPU version (tests)")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--questions", type=int, default=3, help="asks per policy")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--question-tokens", type=int, default=64)
    p.add_argument("--bench-steps", type=int, default=256,
                   help="timed steps of the bench fast path per policy")
    p.add_argument("--ingest-frames", type=int, default=70,
                   help="frames per policy and shape; odd ones with chunk graphs off")
    p.add_argument("--frame-px", type=int, default=392, help="frame side (392: 196 tokens)")
    p.add_argument("--shapes", type=csv_list(str), default=["2b", "7b"],
                   help="Qwen2-VL shapes of the ingest part")
    p.add_argument("--no-eager-before", action="store_true",
                   help="skip the engine's eager ask on the plain model (the 'before' row)")
    add_param_option(p)

    p = sub.add_parser("report", help="re-render Markdown + PNG from JSON files")
    p.add_argument("files", nargs="+")
    return ap


def _saver(path: Path, meta: dict):
    def save(result: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(result, meta=meta), indent=1, default=str))
        tmp.replace(path)
    return save


def _smoke(args) -> None:
    args.device = "cpu"
    args.shape = "tiny"
    args.dtype = "float32"
    if args.what == "memory":
        args.checkpoints, args.chunk, args.budget = [256, 1024], 64, 128
        args.decode_steps, args.full_limit = 8, 1024
    elif args.what == "decode":
        args.budgets, args.steps, args.chunk = [64], 8, 32
    elif args.what == "ingest":
        args.frames, args.compare_frames, args.grid, args.budget = 12, 6, 4, 64
        args.compare = ["inf_mllm", "window", "full"]
    elif args.what == "engine":
        args.budget, args.questions, args.max_new_tokens, args.question_tokens = 64, 1, 8, 32
        args.bench_steps, args.ingest_frames, args.frame_px = 8, 6, 56
        args.shapes = ["tiny"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; ``argv[0] == "bench-memory"`` means ``memory``."""
    argv = list(argv or [])
    if argv and argv[0] == "bench-memory":
        argv[0] = "memory"
    parser = build_parser()
    args = parser.parse_args(argv)
    from ros2_infmllm.eval.bench import report
    if args.what == "report":
        for f in args.files:
            print(report.render(Path(f)))
        return 0
    out = Path(args.out_dir) / f"bench_{args.what}{args.tag}.json"
    if getattr(args, "smoke", False):
        _smoke(args)
    try:
        over = cli_overrides(args)           # after --smoke: a --param budget=N wins
    except ValueError as exc:
        parser.error(f"--param: {exc}")
    if args.what == "cpu":
        from ros2_infmllm.eval.bench.common import meta
        from ros2_infmllm.eval.bench.ingest import bench_cpu
        bench_cpu(args.frames, args.questions, args.max_new_tokens, args.budget,
                  _saver(out, meta("cpu", "cpu", argv)), compare=args.compare, overrides=over,
                  dtype=args.dtype, profile_frames=args.profile_frames)
        _show(out)
        return 0
    if args.what == "engine":
        from ros2_infmllm.eval.bench import common
        from ros2_infmllm.eval.bench.engine import bench_engine
        device = common.pick_device(args.device)
        bench_engine(device, args.budget, args.questions, args.max_new_tokens,
                     args.question_tokens, args.bench_steps, args.ingest_frames, args.frame_px,
                     not args.no_eager_before, _saver(out, common.meta("engine", device, argv)),
                     shapes=tuple(args.shapes), overrides=over)
        _show(out)
        return 0
    import torch

    from ros2_infmllm.eval.bench import common, runs
    device = common.pick_device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else (
        torch.bfloat16 if device.startswith("cuda") else torch.float32)
    info = common.meta(args.what, device, argv, shape=args.shape, dtype=str(dtype))
    save = _saver(out, info)
    graphs = device.startswith("cuda") and not getattr(args, "no_graphs", True)
    if args.what in ("memory", "decode"):
        model = common.llama_model(args.shape, device, dtype)
        info["weight_bytes"] = common.weight_bytes(model)
        if args.what == "memory":
            runs.bench_memory(model, device, args.policies, args.budget, args.chunk,
                              args.checkpoints, args.decode_steps, graphs, args.full_limit,
                              save, overrides=over)
        else:
            info["assumed_peak_gbs"] = args.assumed_peak_gbs
            prof = None
            if args.profile:
                prof = str(out.with_name(out.stem + "_profile.txt"))
                out.parent.mkdir(parents=True, exist_ok=True)
                Path(prof).write_text("")
            runs.bench_decode(model, device, args.policies, args.budgets, args.steps, graphs,
                              args.chunk, save, fused_policies=args.fused_policies,
                              profile_path=prof, compile_policies=args.compile_policies,
                              compile_mode=args.compile_mode,
                              own_policies=args.own_policies, overrides=over)
    else:
        from ros2_infmllm.eval.bench.ingest import bench_ingest
        model = common.vl_model(args.shape, device, dtype)
        info["params"] = common.n_params(model)
        bench_ingest(model, device, args.budget, args.fps, args.seconds, args.frames,
                     args.compare, args.compare_frames, args.grid,
                     None if args.no_profile else str(out.with_name(out.stem + "_profile.txt")),
                     save, overrides=over)
    _show(out)
    return 0


def _show(out: Path) -> None:
    """Print the Markdown report (plots need matplotlib; without it, the raw JSON path)."""
    from ros2_infmllm.eval.bench import report
    if os.environ.get("INFMLLM_BENCH_NO_REPORT"):
        print(f"wrote {out} (INFMLLM_BENCH_NO_REPORT set: render later with `bench report`)")
        return
    try:
        print(report.render(out))
    except ImportError as exc:
        print(f"wrote {out} (no report: {exc})")
