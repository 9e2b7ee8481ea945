"""``bench engine``: the node's own path (``StreamingSession``) against the bench fast path.

Drives sessions exactly as the node's worker does: frames through ``ingest_frame`` until
the memory is full, then ``ask`` with ``max_new_tokens`` 128 and a streaming callback.
In one process, on random weights in real shapes (speed does not depend on weight
values):

- decode, Llama-2-7B shape: engine tok/s (``Answer.timings``) next to the bench's owned
  step + CUDA graphs (``runs.decode_rate`` on the same model, after the engine fused it
  and installed the owned step), both against the roofline (weights read + kept KV per
  token, over the copy bandwidth measured in this run); time to first token of a 64-token
  question on a full memory; the cost of leaving a question no trace (the deep copy of the
  whole cache the engine used to make, against ``hold`` + ``rewind``);
- frame ingest per frame (p50 / p95, vision tower included) at the Qwen2-VL-2B and -7B
  shapes through ``ingest_frame``,

and, interleaved in the same sessions (asks and frames alternating), the same questions
and frames with the chunk graphs off (``chunk_graph.chunk_graphs_off``: the eager owned
chunk forward), so the chunk graphs' gain is measured side by side on one machine,

each for inf_mllm, streaming_llm and h2o as every eval task builds them
(``eval.common.build_policy``: the policy's defaults, ``n_recent`` at most budget / 4).
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from ros2_infmllm.accel.chunk_graph import chunk_graphs_off
from ros2_infmllm.eval.bench.common import (QWEN2_VL_2B_TEXT, QWEN2_VL_2B_VISION, VL_TOKENS,
                                            copy_bandwidth, llama_model, percentile, sync,
                                            weight_bytes_read)

#: Qwen2-VL-7B: its language tower and the vision tower projecting into it
QWEN2_VL_7B_TEXT = dict(QWEN2_VL_2B_TEXT, vocab_size=152064, hidden_size=3584,
                        intermediate_size=18944, num_hidden_layers=28,
                        num_attention_heads=28, num_key_value_heads=4)
QWEN2_VL_7B_VISION = dict(QWEN2_VL_2B_VISION, hidden_size=3584)
POLICIES = ("inf_mllm", "streaming_llm", "h2o")


def _policy(name: str, budget: int, overrides: Optional[dict] = None):
    """``name`` at ``budget`` as every eval task builds it (``eval.common.build_policy``)."""
    from ros2_infmllm.eval.common import build_policy
    return build_policy(name, budget, overrides)


def _frames(n: int, side: int, seed: int = 0) -> list:
    """Synthetic RGB frames (drawn once, outside any timing)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def _question(adapter, tokens: int) -> str:
    """Return a question whose chunk (turn + answer prefix) is ``tokens`` long."""
    prefix = adapter.answer_prefix().n_tokens
    base = adapter.text_chunk("", "user").n_tokens + prefix
    words = "what did the camera see near the gate before the parcel arrived "
    text = (words * (tokens // len(words) + 2))[:max(1, tokens - base)]
    if adapter.text_chunk(text, "user").n_tokens + prefix != tokens:
        raise RuntimeError("the bench's tokenizer must be byte-level (one token a character)")
    return text


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _kv_bytes_per_token(session) -> int:
    """Key + value bytes one decode step reads per kept token (all layers)."""
    total = 0
    for layer in session.cache.layers:
        total += layer.n_heads * (layer.k_dim + layer.v_dim) * layer.key_buf.element_size()
    return total


def _fill(session, frames: list, budget: int) -> int:
    """Ingest frames until the memory has been full for a few frames; frames used."""
    i = 0
    while i < len(frames):
        r = session.ingest_frame(frames[i], 10.0 + i, "front")
        i += 1
        if r.cache_tokens >= budget and i >= 8:
            break
    return i


def bench_decode_engine(device: str, budget: int, questions: int, max_new_tokens: int,
                        question_tokens: int, bench_steps: int, eager_before: bool,
                        res: dict, save: Callable[[dict], None],
                        overrides: Optional[dict] = None) -> None:
    """Decode rows at the 7B shape: engine vs bench fast path, TTFT, no-trace cost."""
    from ros2_infmllm.engine import StreamingSession
    from ros2_infmllm.eval.bench.runs import decode_rate, prefill_to
    from ros2_infmllm.memory import BoundedCache, use_scoring_attention
    from ros2_infmllm.models.base import ModelAdapter
    from ros2_infmllm.models.tiny import byte_tokenizer
    shape = "tiny" if device == "cpu" else "7b"
    model = llama_model(shape, device, torch.bfloat16 if device != "cpu" else torch.float32)
    use_scoring_attention(model)
    adapter = ModelAdapter(model, byte_tokenizer(), f"llama-{shape} (random weights)")
    adapter.eos_token_ids = set()          # random weights: run to max_new_tokens
    question = _question(adapter, question_tokens)
    frames = _frames(64, 96)
    res["decode"] = {"shape": shape, "budget": budget, "max_new_tokens": max_new_tokens,
                     "question_tokens": question_tokens, "rows": []}
    streamed = []

    def ask(session, graphs_off: bool = False) -> dict:
        pieces = []
        with chunk_graphs_off(session.adapter.model, graphs_off):
            ans = session.ask(question, max_new_tokens=max_new_tokens, on_token=pieces.append)
        streamed.append(len(pieces))
        return ans.timings

    if eager_before:                       # the plain model, before any fast path exists
        s = StreamingSession(adapter, _policy("inf_mllm", budget, overrides), decode="eager")
        _fill(s, frames, budget)
        t = ask(s)
        res["decode"]["eager_before"] = {"policy": "inf_mllm", "tokens_per_s":
                                         t["decode_tokens_per_s"],
                                         "first_token_s": t["first_token_s"]}
        del s
    wread = weight_bytes_read(model)
    for name in POLICIES:
        t0 = time.perf_counter()
        s = StreamingSession(adapter, _policy(name, budget, overrides))
        build_s = time.perf_counter() - t0
        n_frames = _fill(s, frames, budget)
        timings, eager_chunks = [], []
        for _ in range(questions):             # A/B: chunk graphs on, then off
            timings.append(ask(s))
            eager_chunks.append(ask(s, graphs_off=True))
        tps = [t["decode_tokens_per_s"] for t in timings]
        ttft = [t["first_token_s"] for t in timings]
        # the no-trace cost: what the engine did per question before, and what it does now
        sync(device)
        t1 = time.perf_counter()
        saved = copy.deepcopy(s.cache)
        sync(device)
        deep_s = time.perf_counter() - t1
        del saved
        t1 = time.perf_counter()
        s.cache.hold()
        s.cache.rewind()
        sync(device)
        hold_s = time.perf_counter() - t1
        per_tok = wread + _kv_bytes_per_token(s) * (budget + s.cache.decode_slack // 2)
        row = {"policy": name, "session_build_s": build_s, "frames": n_frames,
               "decode": s.decoder.describe(),
               "engine_tokens_per_s": percentile(tps, 50), "engine_tokens_per_s_all": tps,
               "first_token_ms": 1e3 * percentile(ttft, 50),
               "first_token_ms_all": [1e3 * x for x in ttft],
               "prefill_ms": 1e3 * percentile([t["prefill_s"] for t in timings], 50),
               "first_token_ms_eager_chunks":
                   1e3 * percentile([t["first_token_s"] for t in eager_chunks], 50),
               "first_token_ms_eager_chunks_all": [1e3 * t["first_token_s"]
                                                   for t in eager_chunks],
               "deepcopy_ms": 1e3 * deep_s, "hold_rewind_ms": 1e3 * hold_s,
               "bytes_per_token": per_tok}
        del s
        if device != "cpu":
            torch.cuda.empty_cache()
        # the bench's fast path on the same (now fused + owned) model
        cache = BoundedCache(_policy(name, budget, overrides), model.config, max_chunk=512)
        prefill_to(model, cache, budget + 3 * 512, 512, device)
        graphs = device != "cpu"
        bench = decode_rate(model, cache, bench_steps, device, graphs=graphs,
                            warmup=2 * (cache.decode_slack + 2) + 4)
        row["bench_tokens_per_s"] = bench["tokens_per_s"]
        row["bench_window"] = bench.get("window")
        del cache
        bw = res.get("copy_bandwidth")
        if bw:
            for key in ("engine", "bench"):
                row[f"{key}_roofline"] = row[f"{key}_tokens_per_s"] * per_tok / (
                    bw["gb_per_s"] * 1e9)
        row["engine_over_bench"] = row["engine_tokens_per_s"] / row["bench_tokens_per_s"]
        res["decode"]["rows"].append(row)
        tqdm.write(f"decode {name}: engine {row['engine_tokens_per_s']:.1f} tok/s, bench "
                   f"{row['bench_tokens_per_s']:.1f}, ttft {row['first_token_ms']:.1f} ms "
                   f"(chunk graphs off: {row['first_token_ms_eager_chunks']:.1f}), "
                   f"deepcopy {row['deepcopy_ms']:.1f} ms vs hold {row['hold_rewind_ms']:.2f}")
        save(res)
    res["decode"]["streamed_pieces"] = streamed
    del model, adapter
    if device != "cpu":
        torch.cuda.empty_cache()


def vl_model(text: dict, vision: dict, device: str, dtype: torch.dtype):
    """Random-weight Qwen2-VL of the given towers."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    torch.manual_seed(0)
    cfg = Qwen2VLConfig(text_config=dict(text), vision_config=dict(vision), bos_token_id=None,
                        eos_token_id=None, pad_token_id=None, **VL_TOKENS)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(cfg).to(dtype)
    return model.eval()


def bench_ingest_engine(device: str, budget: int, frames: int, side: int, res: dict,
                        save: Callable[[dict], None], shapes: tuple = ("2b", "7b"),
                        overrides: Optional[dict] = None) -> None:
    """Per-frame ``ingest_frame`` time at the VL shapes, steady state (memory full)."""
    from ros2_infmllm.engine import StreamingSession
    from ros2_infmllm.eval.bench.common import TINY_VL_TEXT, TINY_VL_VISION
    from ros2_infmllm.memory import use_scoring_attention
    from ros2_infmllm.models.qwen2_vl import Qwen2VLAdapter
    from ros2_infmllm.models.tiny import byte_tokenizer
    towers = {"2b": (QWEN2_VL_2B_TEXT, QWEN2_VL_2B_VISION),
              "7b": (QWEN2_VL_7B_TEXT, QWEN2_VL_7B_VISION),
              "tiny": (TINY_VL_TEXT, TINY_VL_VISION)}
    images = _frames(frames, side, seed=1)
    res["ingest"] = {"budget": budget, "frame_px": side, "frames": frames, "shapes": {}}
    for shape in shapes:
        dtype = torch.bfloat16 if device != "cpu" else torch.float32
        model = vl_model(*towers[shape], device, dtype)
        use_scoring_attention(model)
        adapter = Qwen2VLAdapter(model, byte_tokenizer(), f"qwen2-vl-{shape} (random)",
                                 image_max_side=side)
        rows = {}
        for name in POLICIES:
            s = StreamingSession(adapter, _policy(name, budget, overrides))
            per = []
            for i, img in enumerate(images):       # A/B: odd frames with chunk graphs off
                with chunk_graphs_off(model, bool(i % 2)):
                    t0 = time.perf_counter()
                    r = s.ingest_frame(img, 10.0 + i, "front")
                    sync(device)
                per.append(time.perf_counter() - t0)
                tokens = r.tokens
            first = min(len(per) - 1, 2 * budget // tokens + 2)
            steady = [1e3 * x for x in per[first:]]
            on = [x for i, x in enumerate(steady, first) if i % 2 == 0]
            off = [x for i, x in enumerate(steady, first) if i % 2]
            rows[name] = {"tokens_per_frame": tokens, "n": len(on),
                          "p50_ms": percentile(on, 50), "p95_ms": percentile(on, 95),
                          "max_ms": max(on) if on else None, "steady_ms": on,
                          "eager_chunks": {"n": len(off), "p50_ms": percentile(off, 50),
                                           "p95_ms": percentile(off, 95), "steady_ms": off},
                          "decode": s.decoder.describe()}
            tqdm.write(f"ingest {shape} {name}: p50 / p95 ms {_ms(rows[name]['p50_ms'])} / "
                       f"{_ms(rows[name]['p95_ms'])}, chunk graphs off "
                       f"{_ms(percentile(off, 50))} / {_ms(percentile(off, 95))} "
                       f"({tokens} tokens/frame)")
            del s
        res["ingest"]["shapes"][shape] = rows
        save(res)
        del model, adapter
        if device != "cpu":
            torch.cuda.empty_cache()


def bench_engine(device: str, budget: int, questions: int, max_new_tokens: int,
                 question_tokens: int, bench_steps: int, ingest_frames: int, frame_px: int,
                 eager_before: bool, save: Callable[[dict], None],
                 shapes: tuple = ("2b", "7b"), overrides: Optional[dict] = None) -> dict:
    """Run both parts (see the module docstring); return the result dict."""
    res: dict = {"copy_bandwidth": copy_bandwidth(device) if device != "cpu" else None}
    bench_decode_engine(device, budget, questions, max_new_tokens, question_tokens,
                        bench_steps, eager_before, res, save, overrides)
    bench_ingest_engine(device, budget, ingest_frames, frame_px, res, save, shapes, overrides)
    save(res)
    return res
