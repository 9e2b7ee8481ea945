"""The measurements: bounded-memory streaming, decode speed, frame ingest (random weights)."""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

from ros2_infmllm.eval.bench.common import (copy_bandwidth, peak_mem, percentile, reset_peak,
                                            sync, timed, weight_bytes, weight_bytes_read)
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg


def _forward(model, kw: str, ids: torch.Tensor, cache, position: Optional[int] = None):
    with torch.no_grad():
        if position is None:
            return model(input_ids=ids, use_cache=True, **{kw: cache}).logits
        pos = torch.arange(position, position + ids.shape[1], device=ids.device).unsqueeze(0)
        return model(input_ids=ids, position_ids=pos, use_cache=True, **{kw: cache}).logits


def decode_rate(model, cache, steps: int, device: str, graphs: bool = False,
                warmup: int = 4) -> dict:
    """Greedy decode ``steps`` tokens one at a time; tokens/s over the timed steps.

    The next token stays on the device (argmax, no host sync per step); the host reads
    only the cache's own integers. With ``graphs`` the CUDA-graph runner replays captured
    steps (``accel/cuda_graph.py``); its first ``decode_slack`` steps capture, so
    ``warmup`` should cover one compaction cycle. With graphs on cuda every timed step is
    also bracketed by device events and classified by what the runner did (``replay``,
    ``compact+replay``, ``eager``, ``capture``): ``steps_by_kind`` gives count and median
    device milliseconds of each, ``window`` the runner's counts over the timed steps.
    """
    kw = cache_kwarg(model)
    token = torch.ones((1, 1), dtype=torch.long, device=device)
    pos_buf = torch.zeros((1, 1), dtype=torch.long, device=device)
    runner = None
    if graphs:
        from ros2_infmllm.accel.cuda_graph import GraphDecodeRunner
        runner = GraphDecodeRunner(model, cache)
    events = graphs and str(device).startswith("cuda")
    log: list = []

    def counts() -> tuple:
        return (runner.replays, runner.eager_steps, runner.captures, runner.compactions)

    def one(timed_step: bool = False) -> None:
        nonlocal token
        with torch.no_grad():
            pos = cache.next_position()
            if runner is not None:
                before = counts()
                if timed_step and events:
                    e0, e1 = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                    e0.record()
                logits = runner.step(token, pos)
                if timed_step and events:
                    e1.record()
                    d = [a - b for a, b in zip(counts(), before)]
                    kind = "replay" if d[0] else "eager" if d[1] else "capture"
                    log.append(("compact+" if d[3] else "") + kind)
                    log.append((e0, e1))
            else:
                pos_buf.fill_(pos)
                logits = model(input_ids=token, position_ids=pos_buf, use_cache=True,
                               **{kw: cache}).logits
            token = logits[:, -1:].argmax(-1)

    for _ in range(warmup):
        one()
    sync(device)
    start = counts() if runner is not None else None
    t0 = time.perf_counter()
    for _ in range(steps):
        one(True)
    sync(device)
    dt = time.perf_counter() - t0
    out = {"steps": steps, "seconds": dt, "tokens_per_s": steps / dt,
           "kept_tokens_after": cache.layers[0].length}
    if runner is not None:
        out["graph"] = runner.stats()
        out["window"] = dict(zip(("replays", "eager_steps", "captures", "compactions"),
                                 [a - b for a, b in zip(counts(), start)]))
    if log:
        kinds: dict = {}
        for kind, (e0, e1) in zip(log[0::2], log[1::2]):
            kinds.setdefault(kind, []).append(e0.elapsed_time(e1))
        out["steps_by_kind"] = {k: {"n": len(v), "median_ms": percentile(v, 50),
                                    "max_ms": max(v), "total_ms": sum(v)}
                                for k, v in kinds.items()}
    return out


def profile_decode(model, cache, device: str, steps: int = 4) -> dict:
    """torch.profiler over ``steps`` eager decode steps (no compaction): kernels per step.

    Kernels are grouped as matmul (GEMV/GEMM), attention and other (norms, RoPE,
    elementwise, copies); the device time of each group per step, kernel counts and the
    top kernels table (``table``). Device time per kernel is what a graph replay of the
    same step runs; the replay only removes the launch gaps between them.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    kw = cache_kwarg(model)
    token = torch.ones((1, 1), dtype=torch.long, device=device)
    pos = torch.zeros((1, 1), dtype=torch.long, device=device)

    def step() -> None:
        pos.fill_(cache.next_position())
        with torch.no_grad():
            model(input_ids=token, position_ids=pos, use_cache=True, **{kw: cache})

    budget = cache.policy.capacity
    for _ in range(2 * cache.decode_slack):       # pass the next compaction if it is near
        if budget is None or cache.layers[0].length + steps + 1 < budget + \
                cache.decode_slack and not cache.layers[0].pending:
            break
        step()
    step()
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync(device)
    groups = {"matmul": ("gemm", "gemv", "nvjet", "cutlass", "xmma", "splitk", "sm90_"),
              "attention": ("flash", "fmha", "attention", "sdpa", "efficient_attention")}
    out: dict = {"steps": steps, "kernels_per_step": 0.0}
    per: dict = {}
    for e in prof.events():
        if e.device_type != DeviceType.CUDA:
            continue
        name = e.name.lower()
        us = float(e.time_range.elapsed_us())
        grp = next((g for g, keys in groups.items() if any(k in name for k in keys)),
                   "other")
        cnt, tot = per.get(grp, (0, 0.0))
        per[grp] = (cnt + 1, tot + us)
    total_us = sum(v[1] for v in per.values())
    out["kernels_per_step"] = sum(v[0] for v in per.values()) / steps
    out["device_ms_per_step"] = total_us / steps / 1e3
    for grp, (cnt, tot) in per.items():
        out[f"{grp}_kernels_per_step"] = cnt / steps
        out[f"{grp}_ms_per_step"] = tot / steps / 1e3
    mm = out.get("matmul_ms_per_step")
    if mm:
        out["matmul_gb_per_s"] = weight_bytes_read(model) / (mm / 1e3) / 1e9
    out["table"] = prof.key_averages().table(sort_by="device_time_total", row_limit=40)
    return out


def _random_ids(n: int, vocab: int, device: str, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(3, vocab, (1, n), generator=gen).to(device)


def bench_memory(model, device: str, policies: list, budget: int, chunk: int,
                 checkpoints: list, decode_steps: int, graphs: bool,
                 full_limit: int, save: Callable[[dict], None],
                 overrides: Optional[dict] = None) -> dict:
    """Stream tokens per policy; cache bytes, chunk latency, peak memory at each checkpoint.

    ``full`` streams only to ``full_limit`` tokens (it grows; beyond that it does not fit)
    and stops cleanly on out-of-memory. After the stream, decode speed is measured on the
    same cache (every policy at the same kept length, side by side). Policies are
    ``eval.common.build_policy(name, budget, overrides)``.
    """
    use_scoring_attention(model)
    kw = cache_kwarg(model)
    vocab = model.config.get_text_config().vocab_size
    total = max(checkpoints)
    results: dict = {"budget": budget, "chunk": chunk, "checkpoints": checkpoints,
                     "policies": {}}
    for name in policies:
        gen = torch.Generator().manual_seed(1)
        base, _, slack = name.partition("@")
        cache = BoundedCache(build_policy(base, budget, overrides), model.config,
                             max_chunk=chunk, decode_slack=int(slack) if slack else 64)
        limit = min(total, full_limit) if name == "full" else total
        rec: dict = {"points": [], "stopped": None}
        n_chunks = math.ceil(limit / chunk)
        lat: list = []
        reset_peak(device)
        ck = sorted(c for c in checkpoints if c <= limit)
        streamed = 0
        bar = tqdm(range(n_chunks), desc=f"stream {name}", unit="chunk", mininterval=5)
        try:
            for _ in bar:
                ids = _random_ids(chunk, vocab, device, gen)
                _, dt = timed(lambda: _forward(model, kw, ids, cache), device)
                lat.append(dt)
                streamed += chunk
                if ck and streamed >= ck[0]:
                    ck.pop(0)
                    recent = lat[-32:]
                    rec["points"].append({
                        "tokens": streamed, "kv_bytes": cache.kv_nbytes(),
                        "cache_bytes": cache.nbytes(),
                        "kept_tokens": cache.layers[0].length,
                        "chunk_ms_p50": 1e3 * percentile(recent, 50),
                        "chunk_ms_p95": 1e3 * percentile(recent, 95),
                        "peak_device_bytes": peak_mem(device)})
                    reset_peak(device)
                    bar.write(f"{name}: {streamed} tokens, kv {cache.kv_nbytes() / 2**20:.1f} "
                              f"MiB, chunk p50 {1e3 * percentile(recent, 50):.2f} ms")
        except torch.OutOfMemoryError as exc:
            rec["stopped"] = f"out of memory after {streamed} tokens: {str(exc)[:120]}"
            del cache
            torch.cuda.empty_cache()
            cache = None
        bar.close()
        if cache is not None and decode_steps:
            cache.compact()
            rec["decode"] = decode_rate(model, cache, decode_steps, device)
            if graphs:
                slack = cache.decode_slack
                try:
                    rec["decode_graph"] = decode_rate(model, cache, decode_steps, device,
                                                      graphs=True, warmup=2 * slack + 8)
                except RuntimeError as exc:
                    rec["decode_graph"] = {"error": str(exc)[:300]}
        pts = rec["points"]
        if len(pts) >= 2:
            rec["kv_ratio_last_first"] = pts[-1]["kv_bytes"] / pts[0]["kv_bytes"]
        results["policies"][name] = rec
        cache = None
        if str(device).startswith("cuda"):
            torch.cuda.empty_cache()
        save(results)
    results["ratios"] = memory_ratios(results)
    save(results)
    return results


def _tps(rec: dict, key: str) -> Optional[float]:
    d = rec.get(key) or {}
    return d.get("tokens_per_s")


def memory_ratios(results: dict) -> dict:
    """KV(last)/KV(first checkpoint) per policy; decode inf_mllm/h2o and inf_mllm/streaming_llm."""
    pol = results["policies"]
    kv = {n: r.get("kv_ratio_last_first") for n, r in pol.items()}
    out: dict = {"kv_memory_last_over_first": kv}
    for key in ("decode", "decode_graph"):
        inf = _tps(pol.get("inf_mllm", {}), key)
        for other in ("h2o", "h2o@1", "streaming_llm"):
            o = _tps(pol.get(other, {}), key)
            out[f"{key}_inf_mllm_over_{other}"] = inf / o if inf and o else None
    return out


def prefill_to(model, cache, tokens: int, chunk: int, device: str) -> None:
    """Stream ``tokens`` random tokens into ``cache`` in chunks (then compact)."""
    kw = cache_kwarg(model)
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(2)
    left = tokens
    while left > 0:
        n = min(chunk, left)
        _forward(model, kw, _random_ids(n, vocab, device, gen), cache)
        left -= n
    cache.compact()
    sync(device)


def bench_decode(model, device: str, policies: list, budgets: list, steps: int,
                 graphs: bool, chunk: int, save: Callable[[dict], None],
                 fused_policies: Optional[list] = None,
                 profile_path: Optional[str] = None,
                 compile_policies: Optional[list] = None,
                 compile_mode: Optional[str] = None,
                 own_policies: Optional[list] = None,
                 overrides: Optional[dict] = None) -> dict:
    """Decode tokens/s per policy and budget, eager and CUDA-graph, with the HBM roofline.

    Policies are ``eval.common.build_policy(name, budget, overrides)``.

    The roofline counts the bytes a step must read: weights without the input embedding
    table (one row of it is read) plus the kept KV. ``fused_policies`` are run again
    after the others with q/k/v and gate/up weights fused (``accel/fused_linear.py``),
    as rows named ``<policy>+fused``. ``compile_policies`` are run last with the one-token
    norms, MLPs and rotary embedding compiled by inductor (``accel/compiled_decode.py``,
    ``compile_mode``), on top of the fused weights when fused rows ran: rows
    ``<policy>[+fused]+compiled``; ``res["compile"]`` has the compile time and the logit
    difference compiled vs eager on two decode steps. ``own_policies`` are run after those
    with the owned one-token decode step (``accel/llama_decode.py``: compiled residual +
    norm, RoPE and silu x up, Triton GEMVs, the cache's own update, SDPA), rows
    ``<policy>[+fused]+owned``; ``res["owned"]`` as ``res["compile"]``, against the
    model as it was before (compiled when those rows ran). ``profile_path``: a torch.profiler
    kernel summary of eager steps of ``inf_mllm`` (and its fused / compiled rows) at the
    first budget in the rows, the kernel tables written to that file.
    """
    use_scoring_attention(model)
    bw = copy_bandwidth(device) if str(device).startswith("cuda") else None
    wbytes = weight_bytes(model)
    rbytes = weight_bytes_read(model)
    res: dict = {"weight_bytes": wbytes, "weight_bytes_read": rbytes, "copy_bandwidth": bw,
                 "rows": []}
    plan = [(b, n, False) for b in budgets for n in policies]
    plan += [(b, n, True) for b in budgets for n in (fused_policies or [])]
    plan += [(b, n, "compiled") for b in budgets for n in (compile_policies or [])]
    plan += [(b, n, "owned") for b in budgets for n in (own_policies or [])]
    fused_now = False
    for budget, name, fused in plan:
        if fused is True and not fused_now:
            from ros2_infmllm.accel.fused_linear import fuse_projections
            res["fused_groups"] = fuse_projections(model)
            fused_now = True
        if fused == "compiled" and "compile" not in res:
            try:
                res["compile"] = compile_model(model, device, chunk, compile_mode)
            except Exception as exc:               # noqa: BLE001 - report, skip those rows
                res["compile"] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
                break
            tqdm.write(f"compile: {res['compile']}")
        if fused == "owned" and "owned" not in res:
            try:
                res["owned"] = compile_model(model, device, chunk, compile_mode, owned=True)
            except Exception as exc:               # noqa: BLE001 - report, skip those rows
                res["owned"] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
                break
            tqdm.write(f"owned: {res['owned']}")
            if not res["owned"].get("installed"):
                break
        label = name + ("+fused" if fused_now else "") + (
            "+" + fused if fused in ("compiled", "owned") else "")
        base, _, slack = name.partition("@")       # "h2o@1": evict every decode step
        cache = BoundedCache(build_policy(base, budget, overrides), model.config,
                             max_chunk=chunk, decode_slack=int(slack) if slack else 64)
        # bounded policies: stream past the budget so they run in steady state; full at
        # the same context (budget tokens)
        prefill_to(model, cache, budget if name == "full" else budget + 3 * chunk, chunk,
                   device)
        row: dict = {"policy": label, "budget": budget,
                     "context": cache.layers[0].length}
        row["eager"] = decode_rate(model, cache, steps, device)
        from ros2_infmllm.accel.cuda_graph import capture_failure
        if graphs and name != "full" and capture_failure():
            row["graph"] = {"error": f"skipped, capture failed earlier: {capture_failure()}"}
        elif graphs and name != "full":
            try:
                row["graph"] = decode_rate(model, cache, 2 * steps, device, graphs=True,
                                           warmup=2 * (cache.decode_slack + 2) + 4)
            except RuntimeError as exc:
                row["graph"] = {"error": str(exc)[:300]}
        kv_read = _kv_read_bytes(cache)
        row["kv_bytes_read_per_token"] = kv_read
        per_token = rbytes + kv_read
        for mode in ("eager", "graph"):
            tps = (row.get(mode) or {}).get("tokens_per_s")
            if tps and bw:
                row[f"{mode}_roofline_fraction"] = tps * per_token / (bw["gb_per_s"] * 1e9)
        rep_ms = (((row.get("graph") or {}).get("steps_by_kind") or {}).get("replay")
                  or {}).get("median_ms")
        if rep_ms and bw:
            row["replay_tokens_per_s"] = 1e3 / rep_ms
            row["replay_roofline_fraction"] = 1e3 / rep_ms * per_token / (
                bw["gb_per_s"] * 1e9)
        if profile_path and base == "inf_mllm" and not slack and budget == budgets[0]:
            try:
                prof = profile_decode(model, cache, device)
                table = prof.pop("table", "")
                with open(profile_path, "a") as fh:
                    fh.write(f"== {label}, budget {budget}: {prof.get('steps')} eager decode "
                             f"steps ==\n{table}\n")
                row["profile"] = prof
            except Exception as exc:               # noqa: BLE001 - report, go on
                row["profile"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        res["rows"].append(row)
        tqdm.write(f"decode {label} budget {budget}: eager "
                   f"{row['eager']['tokens_per_s']:.1f} tok/s"
                   + (f", graph {row['graph'].get('tokens_per_s', 0):.1f} tok/s"
                      if 'graph' in row else ""))
        del cache
        if str(device).startswith("cuda"):
            torch.cuda.empty_cache()
        save(res)
    res["ratios"] = decode_ratios(res)
    save(res)
    return res


def compile_model(model, device: str, chunk: int, mode: Optional[str],
                  owned: bool = False) -> dict:
    """``compile_decode(model)``; compile time and logits compiled vs eager on two steps.

    ``owned``: ``install_owned_decode(model)`` instead (``accel/llama_decode.py``), the
    reference being the model as it was before (``installed`` says whether it took).

    Two fresh caches get the same 16-token prefill and two greedy decode steps, the first
    before the change (eager reference), the second after it. Inductor compiles in the
    first compiled decode step: ``compile_s`` = its wall time minus the second's. The
    compiled functions serve every layer (the weights are graph inputs), so this is the
    whole compile cost of the run.
    """
    from torch._dynamo.utils import counters

    from ros2_infmllm.accel.compiled_decode import FAILED, compile_decode
    kw = cache_kwarg(model)
    vocab = model.config.get_text_config().vocab_size
    ids = _random_ids(17, vocab, device, torch.Generator().manual_seed(4))

    def run() -> tuple[list, list]:
        cache = BoundedCache(build_policy("streaming_llm", 64), model.config, max_chunk=chunk)
        _forward(model, kw, ids[:, :16], cache)
        tok, out, times = ids[:, 16:17], [], []
        for pos in (16, 17):
            logits, dt = timed(lambda: _forward(model, kw, tok, cache, position=pos), device)
            tok = logits[:, -1:].argmax(-1)
            out.append(logits)
            times.append(dt)
        return out, times

    ref, eager_s = run()
    graphs0 = counters["stats"]["unique_graphs"]
    if owned:
        from ros2_infmllm.accel.llama_decode import install_owned_decode, unsupported
        why = unsupported(model)
        modules = {"installed": install_owned_decode(model, mode), "unsupported": why}
        if why is not None:
            return {"mode": mode or "default", "modules": modules, "installed": False}
    else:
        modules = compile_decode(model, mode)
    got, times = run()
    return {"mode": mode or "default", "modules": modules, "installed": True,
            "compile_s": times[0] - times[1], "first_step_s": times[0],
            "second_step_s": times[1], "eager_step_s": eager_s[1],
            "graphs": counters["stats"]["unique_graphs"] - graphs0,
            "graph_breaks": sum(counters["graph_break"].values()),
            "failed": sorted(FAILED.values()),
            "logits_max_abs_diff": [float((a.float() - b.float()).abs().max())
                                    for a, b in zip(ref, got)],
            "logits_abs_max": float(ref[0].float().abs().max()),
            "same_argmax": [bool(torch.equal(a.argmax(-1), b.argmax(-1)))
                            for a, b in zip(ref, got)]}


def _kv_read_bytes(cache) -> int:
    """Key + value bytes one decode step reads at the current kept length (all layers)."""
    total = 0
    for layer in cache.layers:
        if layer.key_buf is None:
            continue
        per_tok = layer.n_heads * (layer.k_dim + layer.v_dim) * layer.key_buf.element_size()
        total += per_tok * layer.length
    return total


def decode_ratios(res: dict) -> dict:
    """inf_mllm / h2o and inf_mllm / streaming_llm decode speed per budget and mode."""
    out: dict = {}
    by = {(r["policy"], r["budget"]): r for r in res["rows"]}
    for budget in sorted({r["budget"] for r in res["rows"]}):
        for mode in ("eager", "graph"):
            for sfx in ("", "+fused", "+compiled", "+fused+compiled", "+owned",
                        "+fused+owned"):
                inf = (by.get(("inf_mllm" + sfx, budget), {}).get(mode) or {}).get(
                    "tokens_per_s")
                for other in ("h2o", "h2o@1", "streaming_llm", "full"):
                    o = (by.get((other + sfx, budget), {}).get(mode) or {}).get(
                        "tokens_per_s")
                    if inf and o:
                        out[f"b{budget}_{mode}_inf_mllm{sfx}_over_{other}{sfx}"] = inf / o
    return out
