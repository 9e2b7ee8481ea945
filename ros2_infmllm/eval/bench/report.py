"""Markdown tables and PNG plots from the benchmark JSON files."""
from __future__ import annotations

import json
from pathlib import Path

from ros2_infmllm.eval.common import save_figure


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _mib(v) -> str:
    return "-" if v is None else f"{v / 2 ** 20:.1f}"


def render(path: Path) -> str:
    """Write ``<name>.md`` and ``<name>.png`` beside ``path``; return the Markdown."""
    data = json.loads(Path(path).read_text())
    what = data.get("meta", {}).get("task") or Path(path).stem.split("_")[1]
    fn = {"memory": _memory, "decode": _decode, "ingest": _ingest, "cpu": _cpu,
          "engine": _engine}[what]
    png = Path(path).with_suffix(".png")
    md = fn(data, png)
    m = data.get("meta", {})
    head = (f"# bench {what}\n\ndevice: {m.get('device')}; torch {m.get('torch')}; "
            f"transformers {m.get('transformers')}; {m.get('utc')}\n\n"
            f"command: `{m.get('command')}`\n\n")
    text = head + md + (f"\n![plot]({png.name})\n" if png.exists() else "")
    Path(path).with_suffix(".md").write_text(text)
    return text


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _memory(d: dict, png: Path) -> str:
    rows = ["| policy | tokens | KV MiB | cache MiB | kept | chunk p50 ms | chunk p95 ms | "
            "peak dev MiB |", "|---|---|---|---|---|---|---|---|"]
    for name, r in d["policies"].items():
        for p in r["points"]:
            rows.append(f"| {name} | {p['tokens']} | {_mib(p['kv_bytes'])} | "
                        f"{_mib(p['cache_bytes'])} | {p['kept_tokens']} | "
                        f"{_f(p['chunk_ms_p50'])} | {_f(p['chunk_ms_p95'])} | "
                        f"{_mib(p['peak_device_bytes'])} |")
        if r.get("stopped"):
            rows.append(f"| {name} | stopped: {r['stopped'][:60]} | | | | | | |")
    dec = ["", "| policy | decode tok/s (eager) | decode tok/s (CUDA graph) | "
           "KV(last)/KV(first) |",
           "|---|---|---|---|"]
    for name, r in d["policies"].items():
        dec.append(f"| {name} | {_f((r.get('decode') or {}).get('tokens_per_s'), 1)} | "
                   f"{_f((r.get('decode_graph') or {}).get('tokens_per_s'), 1)} | "
                   f"{_f(r.get('kv_ratio_last_first'), 4)} |")
    ratios = d.get("ratios", {})
    rat = ["", "Ratios (one run): " + "; ".join(
        f"{k} = {_f(v, 3)}" for k, v in ratios.items() if not isinstance(v, dict))]
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in d["policies"].items():
        xs = [p["tokens"] for p in r["points"]]
        ax[0].plot(xs, [p["kv_bytes"] / 2 ** 20 for p in r["points"]], "o-", label=name)
        ax[1].plot(xs, [p["chunk_ms_p50"] for p in r["points"]], "o-", label=name)
    for a, t in zip(ax, ("KV cache MiB", "chunk latency p50 ms")):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("streamed tokens")
        a.set_title(t)
        a.legend(fontsize=7)
    save_figure(fig, png)
    return "\n".join(rows + dec + rat) + "\n"


def _decode(d: dict, png: Path) -> str:
    bw = d.get("copy_bandwidth") or {}
    m = d.get("meta", {})
    read = d.get("weight_bytes_read")
    lines = [f"weights {d['weight_bytes'] / 1e9:.2f} GB"
             + (f" ({read / 1e9:.2f} GB read per token: no embedding table)" if read else "")
             + f"; measured copy bandwidth {_f(bw.get('gb_per_s'), 0)} GB/s (read + write); "
             f"datasheet peak assumed {_f(m.get('assumed_peak_gbs'), 0)} GB/s. Roofline "
             f"fraction = tokens/s x ({'weight bytes read' if read else 'all weight bytes'} "
             "+ KV bytes read per token) / measured copy bandwidth. Graph = every step of the "
             "timed window (compaction steps included); replay = median device time of the "
             "steps that only replay a graph.",
             "", "| policy | budget | context | eager tok/s | graph tok/s | replay tok/s | "
             "eager roofline | graph roofline | replay roofline | steps in graph window |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        g = r.get("graph") or {}
        kinds = g.get("steps_by_kind") or {}
        mix = ", ".join(f"{k} {v['n']} ({_f(v['median_ms'], 1)} ms)"
                        for k, v in sorted(kinds.items()))
        lines.append(f"| {r['policy']} | {r['budget']} | {r['context']} | "
                     f"{_f(r['eager']['tokens_per_s'], 1)} | "
                     f"{_f(g.get('tokens_per_s'), 1) if 'error' not in g else 'error'} | "
                     f"{_f(r.get('replay_tokens_per_s'), 1)} | "
                     f"{_f(r.get('eager_roofline_fraction'), 3)} | "
                     f"{_f(r.get('graph_roofline_fraction'), 3)} | "
                     f"{_f(r.get('replay_roofline_fraction'), 3)} | {mix or '-'} |")
    lines += ["", "Ratios (one run): " + "; ".join(
        f"{k} = {_f(v, 3)}" for k, v in d.get("ratios", {}).items())]
    for key, what in (("compile", "compiled"), ("owned", "owned decode step")):
        c = d.get(key)
        if c and "error" in c:
            lines += ["", f"{key} failed ({what} rows skipped): {c['error']}"]
        elif c and c.get("installed") is False:
            lines += ["", f"{key}: not installed ({what} rows skipped): {c['modules']}"]
        elif c:
            lines += ["", f"{key} (mode {c['mode']}; modules {c['modules']}): {c['graphs']} "
                      f"graphs, {c['graph_breaks']} graph breaks, compile "
                      f"{_f(c['compile_s'], 1)} s (first {what} step "
                      f"{_f(c['first_step_s'], 1)} s); logits {what} vs before, two decode "
                      f"steps: max |diff| " + ", ".join(_f(v, 4) for v in c["logits_max_abs_diff"])
                      + f" (max |logit| {_f(c['logits_abs_max'], 2)}), same argmax "
                      f"{c['same_argmax']}"
                      + (f"; left eager (compile failed): {c['failed']}" if c.get("failed")
                         else "")]
    for r in d["rows"]:
        p = r.get("profile")
        if p and "error" not in p:
            lines += ["", f"profile {r['policy']} @ {r['budget']} (eager steps, device time "
                      f"per step): {_f(p.get('device_ms_per_step'), 2)} ms in "
                      f"{_f(p.get('kernels_per_step'), 0)} kernels; matmul "
                      f"{_f(p.get('matmul_ms_per_step'), 2)} ms / "
                      f"{_f(p.get('matmul_kernels_per_step'), 0)} kernels "
                      f"({_f(p.get('matmul_gb_per_s'), 0)} GB/s of weights); attention "
                      f"{_f(p.get('attention_ms_per_step'), 2)} ms / "
                      f"{_f(p.get('attention_kernels_per_step'), 0)}; other "
                      f"{_f(p.get('other_ms_per_step'), 2)} ms / "
                      f"{_f(p.get('other_kernels_per_step'), 0)} kernels"]
        elif p:
            lines += ["", f"profile {r['policy']} @ {r['budget']}: {p['error']}"]
    errs = [f"{r['policy']}@{r['budget']}: {r['graph']['error']}" for r in d["rows"]
            if isinstance(r.get("graph"), dict) and "error" in r["graph"]]
    if errs:
        lines += ["", "graph errors: " + "; ".join(errs)]
    plt = _plt()
    budgets = sorted({r["budget"] for r in d["rows"]})
    fig, ax = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4), squeeze=False)
    for a, b in zip(ax[0], budgets):
        rs = [r for r in d["rows"] if r["budget"] == b]
        x = range(len(rs))
        a.bar([i - 0.2 for i in x], [r["eager"]["tokens_per_s"] for r in rs], 0.4,
              label="eager")
        a.bar([i + 0.2 for i in x], [(r.get("graph") or {}).get("tokens_per_s") or 0
                                     for r in rs], 0.4, label="CUDA graph")
        a.set_xticks(list(x), [r["policy"] for r in rs], rotation=30, fontsize=8)
        a.set_title(f"decode tok/s, budget {b}")
        a.legend(fontsize=7)
    save_figure(fig, png)
    return "\n".join(lines) + "\n"


def _ingest(d: dict, png: Path) -> str:
    lines = [f"stream: {d['stream_frames']} frames ({d['fps']} FPS x {d['stream_seconds']} s), "
             f"every {d['stride']}th frame ingested back to back ({d['sampled_frames']} for "
             f"inf_mllm); {d['tokens_per_frame']} LLM tokens per frame; budget {d['budget']}.",
             "", "| policy | frames | ingest p50 ms | p95 ms | max ms | forward p50 ms | "
             "compaction p50 ms | peak dev MiB (first -> last) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in d["policies"].items():
        s, mem = r["steady_total"], r["memory"]
        lines.append(f"| {name} | {r['frames']} | {_f(s['p50_ms'])} | {_f(s['p95_ms'])} | "
                     f"{_f(s['max_ms'])} | {_f(r['forward']['p50_ms'])} | "
                     f"{_f(r['compact']['p50_ms'])} | {_mib(mem[0]['peak_device_bytes'])} -> "
                     f"{_mib(mem[-1]['peak_device_bytes'])} |")
    lines += ["", f"scoring cost / prefill (inf_mllm vs window forward): "
              f"{_f(d.get('scoring_fraction_of_prefill'), 3)}; compaction / prefill: "
              f"{_f(d.get('compaction_fraction_of_prefill'), 3)}"]
    if d.get("profile"):
        lines.append(f"profiler ({d['profile'].get('time_key')}): " + "; ".join(
            f"{k} = {_f(v, 3)}" for k, v in d["profile"].items() if k.endswith("fraction")))
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    inf = d["policies"].get("inf_mllm")
    if inf:
        ser = inf["series"]
        ax[0].plot([s[0] / 60 for s in ser], [s[1] for s in ser], ".", ms=2, label="ingest")
        ax[0].axhline(125, color="r", lw=0.8, label="125 ms (8 FPS)")
        ax[0].set_xlabel("stream position (min)")
        ax[0].set_ylabel("ms")
        ax[0].set_title("inf_mllm frame ingest vs stream position")
        ax[0].legend(fontsize=7)
    for name, r in d["policies"].items():
        mem = [m for m in r["memory"] if m["peak_device_bytes"] is not None]
        if mem:
            ax[1].plot([m["tokens"] for m in mem], [m["peak_device_bytes"] / 2 ** 30
                                                    for m in mem], "o-", ms=3, label=name)
    ax[1].set_xlabel("streamed tokens")
    ax[1].set_ylabel("peak device GiB")
    ax[1].set_title("peak device memory vs stream length")
    ax[1].legend(fontsize=7)
    save_figure(fig, png)
    return "\n".join(lines) + "\n"


def _cpu(d: dict, png: Path) -> str:
    if d.get("error"):
        return f"not run: {d['error']}\n"
    lines = [f"{d['frames']} frames, {d['questions']} questions, max {d['max_new_tokens']} new "
             f"tokens, budget {d['budget']}, {d['threads']} threads, "
             f"{d.get('model_dtype', 'float32')}; load {_f(d['load_s'], 1)} s",
             "", "| what | p50 ms | p95 ms | max ms | n |", "|---|---|---|---|---|"]
    for k in ("ingest", "answer", "first_token"):
        s = d.get(k) or {}
        lines.append(f"| {k} | {_f(s.get('p50_ms'), 0)} | {_f(s.get('p95_ms'), 0)} | "
                     f"{_f(s.get('max_ms'), 0)} | {s.get('n')} |")
    if d.get("compare"):
        lines += ["", "Ingest side by side (same frames, one session per policy, in turn):", "",
                  "| policy | mean ms | p50 ms | p95 ms | vs first | cache tokens |",
                  "|---|---|---|---|---|---|"]
        for r in d["compare"]:
            s = r["ingest"]
            lines.append(f"| {r['policy']} | {_f(r['mean_ms'], 1)} | {_f(s.get('p50_ms'), 1)} | "
                         f"{_f(s.get('p95_ms'), 1)} | {_f(r['ratio_to_first'], 3)} | "
                         f"{r.get('cache_tokens')} |")
    if d.get("profile"):
        from ros2_infmllm.eval.bench.cpu_profile import markdown
        lines += ["", markdown(d["profile"], "Where a frame's ingest goes (torch.profiler, "
                                             "self CPU time by op group)")]
    return "\n".join(lines) + "\n"


def _engine(data: dict, png: Path) -> str:
    """Engine vs bench decode, TTFT, no-trace cost, VL ingest (tables only, no plot)."""
    bw = data.get("copy_bandwidth") or {}
    dec = data.get("decode", {})
    out = [f"decode: {dec.get('shape')} shape, budget {dec.get('budget')}, "
           f"max_new_tokens {dec.get('max_new_tokens')}, {dec.get('question_tokens')}-token "
           f"question on a full memory; copy bandwidth {_f(bw.get('gb_per_s'), 0)} GB/s "
           f"(roofline = bytes read per token / copy bandwidth)\n"]
    before = dec.get("eager_before")
    if before:
        out.append(f"engine before (decode eager, plain model, inf_mllm): "
                   f"{_f(before['tokens_per_s'], 1)} tok/s, first token "
                   f"{_f(1e3 * before['first_token_s'], 1)} ms\n")
    out += ["| policy | engine tok/s | engine / roofline | bench owned+graph tok/s | "
            "bench / roofline | engine / bench | TTFT ms | TTFT ms, chunk graphs off | "
            "prefill ms | decode path | chunks | warm-up s | "
            "deep copy ms -> hold+rewind ms |", "|" + "---|" * 13]
    for r in dec.get("rows", []):
        d = r.get("decode", {})
        out.append(f"| {r['policy']} | {_f(r['engine_tokens_per_s'], 1)} | "
                   f"{_f(r.get('engine_roofline'), 3)} | {_f(r['bench_tokens_per_s'], 1)} | "
                   f"{_f(r.get('bench_roofline'), 3)} | {_f(r['engine_over_bench'], 3)} | "
                   f"{_f(r['first_token_ms'], 1)} | "
                   f"{_f(r.get('first_token_ms_eager_chunks'), 1)} | "
                   f"{_f(r['prefill_ms'], 1)} | {d.get('path')} | {d.get('chunks', 'eager')} | "
                   f"{_f(d.get('warmup_s'), 1)} | "
                   f"{_f(r['deepcopy_ms'], 1)} -> {_f(r['hold_rewind_ms'], 2)} |")
    ing = data.get("ingest", {})
    out += [f"\ningest through `ingest_frame`: {ing.get('frame_px')} px frames, budget "
            f"{ing.get('budget')}, steady state (memory full), vision tower included\n",
            "| shape | policy | tokens/frame | frames | p50 ms | p95 ms | max ms | "
            "chunk graphs off: p50 / p95 ms | vision tower | decode path | chunks |",
            "|" + "---|" * 11]
    for shape, rows in ing.get("shapes", {}).items():
        for name, r in rows.items():
            d = r["decode"]
            vision = d.get("vision", "eager")      # runs before the vision graph: eager
            if d.get("vision_reason"):
                vision += f" ({d['vision_reason']})"
            off = r.get("eager_chunks") or {}
            out.append(f"| {shape} | {name} | {r['tokens_per_frame']} | {r['n']} | "
                       f"{_f(r['p50_ms'], 1)} | {_f(r['p95_ms'], 1)} | {_f(r['max_ms'], 1)} | "
                       f"{_f(off.get('p50_ms'), 1)} / {_f(off.get('p95_ms'), 1)} | "
                       f"{vision} | {d.get('path')} ({d.get('reason') or 'graph'}) | "
                       f"{d.get('chunks', 'eager')} |")
    return "\n".join(out) + "\n"
