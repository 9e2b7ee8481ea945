"""The measurements: bounded-memory streaming, decode speed, frame ingest (random weights)."""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

from ros2_infmllm.eval.bench.common import (cache_kw, copy_bandwidth, peak_mem, percentile,
                                            reset_peak, sync, timed, weight_bytes)
from ros2_infmllm.memory import BoundedCache, make_policy, use_scoring_attention
from ros2_infmllm.memory.policies import POLICIES


def policy_for(name: str, budget: int, **over) -> object:
    """Build ``name`` at ``budget`` with the shared defaults (sinks 4, recent budget/4)."""
    base = dict(budget=budget, n_sink=4, n_recent=max(1, budget // 4), window=32, kernel=7)
    base.update(over)
    fields = set(POLICIES[name].__dataclass_fields__)
    return make_policy(name, **{k: v for k, v in base.items() if k in fields})


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
    steps (``models/cuda_graph.py``); its first ``decode_slack`` steps capture, so
    ``warmup`` should cover one compaction cycle.
    """
    kw = cache_kw(model)
    token = torch.ones((1, 1), dtype=torch.long, device=device)
    pos_buf = torch.zeros((1, 1), dtype=torch.long, device=device)
    runner = None
    if graphs:
        from ros2_infmllm.models.cuda_graph import GraphDecodeRunner
        runner = GraphDecodeRunner(model, cache)

    def one() -> None:
        nonlocal token
        with torch.no_grad():
            pos = cache.next_position()
            if runner is not None:
                logits = runner.step(token, pos)
            else:
                pos_buf.fill_(pos)
                logits = model(input_ids=token, position_ids=pos_buf, use_cache=True,
                               **{kw: cache}).logits
            token = logits[:, -1:].argmax(-1)

    for _ in range(warmup):
        one()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    sync(device)
    dt = time.perf_counter() - t0
    out = {"steps": steps, "seconds": dt, "tokens_per_s": steps / dt,
           "kept_tokens_after": cache.layers[0].length}
    if runner is not None:
        out["graph"] = runner.stats()
    return out


def _random_ids(n: int, vocab: int, device: str, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(3, vocab, (1, n), generator=gen).to(device)


def bench_memory(model, device: str, policies: list, budget: int, chunk: int,
                 checkpoints: list, decode_steps: int, graphs: bool,
                 full_limit: int, save: Callable[[dict], None]) -> dict:
    """Stream tokens per policy; cache bytes, chunk latency, peak memory at each checkpoint.

    ``full`` streams only to ``full_limit`` tokens (it grows; beyond that it does not fit)
    and stops cleanly on out-of-memory. After the stream, decode speed is measured on the
    same cache (every policy at the same kept length, side by side).
    """
    use_scoring_attention(model)
    kw = cache_kw(model)
    vocab = model.config.get_text_config().vocab_size
    total = max(checkpoints)
    results: dict = {"budget": budget, "chunk": chunk, "checkpoints": checkpoints,
                     "policies": {}}
    for name in policies:
        gen = torch.Generator().manual_seed(1)
        base, _, slack = name.partition("@")
        cache = BoundedCache(policy_for(base, budget), model.config, max_chunk=chunk,
                             decode_slack=int(slack) if slack else 64)
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
    kw = cache_kw(model)
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
                 graphs: bool, chunk: int, save: Callable[[dict], None]) -> dict:
    """Decode tokens/s per policy and budget, eager and CUDA-graph, with the HBM roofline."""
    use_scoring_attention(model)
    bw = copy_bandwidth(device) if str(device).startswith("cuda") else None
    wbytes = weight_bytes(model)
    res: dict = {"weight_bytes": wbytes, "copy_bandwidth": bw, "rows": []}
    for budget in budgets:
        for name in policies:
            base, _, slack = name.partition("@")       # "h2o@1": evict every decode step
            cache = BoundedCache(policy_for(base, budget), model.config, max_chunk=chunk,
                                 decode_slack=int(slack) if slack else 64)
            # bounded policies: stream past the budget so they run in steady state; full at
            # the same context (budget tokens)
            prefill_to(model, cache, budget if name == "full" else budget + 3 * chunk, chunk,
                       device)
            row: dict = {"policy": name, "budget": budget,
                         "context": cache.layers[0].length}
            row["eager"] = decode_rate(model, cache, steps, device)
            from ros2_infmllm.models.cuda_graph import _BROKEN
            if graphs and name != "full" and _BROKEN:
                row["graph"] = {"error": f"skipped, capture failed earlier: {_BROKEN[0]}"}
            elif graphs and name != "full":
                try:
                    row["graph"] = decode_rate(model, cache, 2 * steps, device, graphs=True,
                                               warmup=2 * (cache.decode_slack + 2) + 4)
                except RuntimeError as exc:
                    row["graph"] = {"error": str(exc)[:300]}
            kv_read = _kv_read_bytes(cache)
            row["kv_bytes_read_per_token"] = kv_read
            for mode in ("eager", "graph"):
                tps = (row.get(mode) or {}).get("tokens_per_s")
                if tps and bw:
                    row[f"{mode}_roofline_fraction"] = tps * (wbytes + kv_read) / (
                        bw["gb_per_s"] * 1e9)
            res["rows"].append(row)
            tqdm.write(f"decode {name} budget {budget}: eager "
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
            inf = (by.get(("inf_mllm", budget), {}).get(mode) or {}).get("tokens_per_s")
            for other in ("h2o", "h2o@1", "streaming_llm", "full"):
                o = (by.get((other, budget), {}).get(mode) or {}).get("tokens_per_s")
                if inf and o:
                    out[f"b{budget}_{mode}_inf_mllm_over_{other}"] = inf / o
    return out
