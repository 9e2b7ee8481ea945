"""Frame ingest on a VLM shape (vision encoder + LLM, random weights) and the CPU product path."""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ros2_infmllm.eval.bench.common import (VL_TOKENS, peak_mem, percentile, reset_peak, sync,
                                            timed)
from ros2_infmllm.eval.common import build_policy, session_config_for
from ros2_infmllm.memory import BoundedCache, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg
from ros2_infmllm.models.qwen2_vl import Qwen2VLAdapter


class FrameMaker:
    """Builds one frame chunk for Qwen2-VL: tag text, <vision_start>, image tokens, <vision_end>.

    Pixels are random (the encoder's cost does not depend on them); the M-RoPE positions
    are built as Qwen2-VL builds them for one image (t fixed, h/w the merged grid).
    """

    def __init__(self, model, device: str, grid: int = 28, text_tokens: int = 8, seed: int = 3):
        """``grid`` patches per side (28 -> a 392 px frame -> 196 LLM tokens)."""
        vis = model.config.vision_config
        self.device = device
        self.grid = grid
        self.merge = vis.spatial_merge_size
        self.llm_side = grid // self.merge
        self.n_image = self.llm_side ** 2
        self.text_tokens = text_tokens
        self.patch_dim = vis.in_channels * vis.temporal_patch_size * vis.patch_size ** 2
        self.dtype = next(model.parameters()).dtype
        self.gen = torch.Generator().manual_seed(seed)
        self.kw = cache_kwarg(model)
        self.model = model

    @property
    def tokens(self) -> int:
        """LLM tokens per frame chunk."""
        return self.text_tokens + 2 + self.n_image

    def inputs(self, start: int) -> dict:
        """Model inputs for a frame whose first token sits at position ``start``."""
        t = self.text_tokens
        ids = torch.randint(100, 150000, (t,), generator=self.gen).tolist()
        ids += [VL_TOKENS["vision_start_token_id"]] + [VL_TOKENS["image_token_id"]] * \
            self.n_image + [VL_TOKENS["vision_end_token_id"]]
        rows = [[start + i for i in range(t + 1)] for _ in range(3)]
        g = start + t + 1
        for r in range(self.llm_side):
            for c in range(self.llm_side):
                rows[0].append(g)
                rows[1].append(g + r)
                rows[2].append(g + c)
        end = g + self.llm_side
        for row in rows:
            row.append(end)
        pos = torch.tensor(rows, device=self.device).unsqueeze(1)         # [3, 1, q]
        pix = torch.randn((self.grid * self.grid, self.patch_dim), generator=self.gen)
        return {"input_ids": torch.tensor([ids], device=self.device), "position_ids": pos,
                "pixel_values": pix.to(self.device, self.dtype),
                "image_grid_thw": torch.tensor([[1, self.grid, self.grid]],
                                               device=self.device)}

    def ingest(self, cache) -> dict:
        """Prefill one frame chunk and compact now; (positions, forward, compaction) seconds."""
        t0 = time.perf_counter()
        start = cache.next_position()
        inp = self.inputs(start)
        cache.set_next_positions(inp["position_ids"])
        sync(self.device)
        t1 = time.perf_counter()
        with torch.no_grad():
            self.model(**inp, use_cache=True, **{self.kw: cache})
        sync(self.device)
        t2 = time.perf_counter()
        cache.compact()
        sync(self.device)
        t3 = time.perf_counter()
        return {"prep_s": t1 - t0, "forward_s": t2 - t1, "compact_s": t3 - t2,
                "total_s": t3 - t0}


def _stats(values: list) -> dict:
    ms = [1e3 * v for v in values]
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "max_ms": max(ms) if ms else None, "n": len(ms)}


def bench_ingest(model, device: str, budget: int, fps: float, seconds: float, frames: int,
                 compare: list, compare_frames: int, grid: int, profile_path: Optional[str],
                 save: Callable[[dict], None], overrides: Optional[dict] = None) -> dict:
    """Time-compressed stream: ``frames`` sampled evenly from ``fps * seconds`` frames.

    The product policy (inf_mllm) runs the whole sampled hour; ``compare`` policies run
    ``compare_frames`` frames each for side-by-side ingest cost, the scoring fraction
    (forward with scoring vs the ``window`` policy's forward at the same kept length) and
    peak memory. Frames are processed back to back (no sleeping): latency is what one
    frame costs, whatever its stamp. Policies are ``eval.common.build_policy(name, budget,
    overrides)``.
    """
    use_scoring_attention(model)
    maker = FrameMaker(model, device, grid=grid)
    total_frames = int(fps * seconds)
    stride = max(1, total_frames // frames)
    res: dict = {"budget": budget, "fps": fps, "stream_seconds": seconds,
                 "stream_frames": total_frames, "sampled_frames": frames, "stride": stride,
                 "tokens_per_frame": maker.tokens, "grid_patches": grid, "policies": {}}
    for i in range(3):                              # warm-up (kernels, allocator)
        c = BoundedCache(build_policy("inf_mllm", budget, overrides), model.config,
                         max_chunk=512, rotation=Qwen2VLAdapter.rotation)
        maker.ingest(c)
    del c
    runs = [("inf_mllm", frames)] + [(p, compare_frames) for p in compare if p != "inf_mllm"]
    for name, n in runs:
        cache = BoundedCache(build_policy(name, budget, overrides), model.config,
                             max_chunk=512, rotation=Qwen2VLAdapter.rotation)
        reset_peak(device)
        per: list = []
        mem: list = []
        for i in tqdm(range(n), desc=f"ingest {name}", unit="frame", mininterval=5):
            r = maker.ingest(cache)
            r["stamp"] = i * stride / fps
            r["kept"] = cache.layers[0].length
            per.append(r)
            if i % 25 == 0 or i == n - 1:
                mem.append({"frame": i, "stamp": r["stamp"], "tokens": (i + 1) * maker.tokens,
                            "peak_device_bytes": peak_mem(device),
                            "kv_bytes": cache.kv_nbytes()})
            if i % 100 == 99:          # partial results survive a time limit
                res["partial"] = {"policy": name, "frames": i + 1,
                                  "series_ms": [round(1e3 * x["total_s"], 3) for x in per]}
                save(res)
        steady = per[min(len(per) - 1, 2 * budget // maker.tokens + 1):]
        rec = {"frames": n, "total": _stats([r["total_s"] for r in per]),
               "steady_total": _stats([r["total_s"] for r in steady]),
               "forward": _stats([r["forward_s"] for r in steady]),
               "compact": _stats([r["compact_s"] for r in steady
                                  if r["kept"] <= budget and name != "full"]),
               "prep": _stats([r["prep_s"] for r in steady]),
               "memory": mem,
               "series": [[round(r["stamp"], 2), round(1e3 * r["total_s"], 3),
                           round(1e3 * r["forward_s"], 3), round(1e3 * r["compact_s"], 3)]
                          for r in per]}
        res["policies"][name] = rec
        res.pop("partial", None)
        tqdm.write(f"ingest {name}: p50 {rec['steady_total']['p50_ms']:.1f} ms, "
                   f"p95 {rec['steady_total']['p95_ms']:.1f} ms")
        del cache
        if str(device).startswith("cuda"):
            torch.cuda.empty_cache()
        save(res)
    pol = res["policies"]
    inf, win = pol.get("inf_mllm"), pol.get("window")
    if inf and win:
        f_inf, f_win = inf["forward"]["p50_ms"], win["forward"]["p50_ms"]
        res["scoring_fraction_of_prefill"] = (f_inf - f_win) / f_win
        res["compaction_fraction_of_prefill"] = inf["compact"]["p50_ms"] / f_inf \
            if inf["compact"]["p50_ms"] else None
    if profile_path:
        res["profile"] = profile_ingest(model, maker, budget, device, profile_path,
                                        overrides)
    save(res)
    return res


def profile_ingest(model, maker: FrameMaker, budget: int, device: str, out_path: str,
                   overrides: Optional[dict] = None) -> dict:
    """torch.profiler over a few steady-state frames: device time of scoring and compaction.

    Compaction is timed in both its paths (the batched one over all layers and the
    per-layer one) at the cache's two public entry points, ``BoundedCache.compact`` and
    ``BoundedCache.compact_pending``; ``compaction_host_us`` is their host time.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    from ros2_infmllm.memory import scoring as scoring_mod
    real_scores = scoring_mod.window_scores
    real_compact, real_pending = BoundedCache.compact, BoundedCache.compact_pending

    def scores(*a, **k):
        with record_function("infmllm_scoring"):
            return real_scores(*a, **k)

    def compact(self):
        with record_function("infmllm_compaction"):
            return real_compact(self)

    def pending(self, layer):
        with record_function("infmllm_compaction"):
            return real_pending(self, layer)

    cache = BoundedCache(build_policy("inf_mllm", budget, overrides), model.config,
                         max_chunk=512, rotation=Qwen2VLAdapter.rotation)
    for _ in range(2 * budget // maker.tokens + 2):
        maker.ingest(cache)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                     if str(device).startswith("cuda") else [])
    scoring_mod.window_scores = scores
    BoundedCache.compact, BoundedCache.compact_pending = compact, pending
    try:
        with profile(activities=acts) as prof:
            for _ in range(4):
                with record_function("infmllm_frame"):
                    maker.ingest(cache)
    finally:
        scoring_mod.window_scores = real_scores
        BoundedCache.compact, BoundedCache.compact_pending = real_compact, real_pending
    key = "device_time_total" if str(device).startswith("cuda") else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    from pathlib import Path
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(table)
    from torch.autograd import DeviceType

    # the host-side ranges: their device time is that of the kernels launched inside
    # them (the GPU-side copies of the ranges span idle gaps too, so they are not used)
    avg = {e.key: e for e in prof.key_averages() if e.device_type == DeviceType.CPU}
    tot = {k: getattr(e, key, 0) for k, e in avg.items()}
    frame = tot.get("infmllm_frame", 0) or 0
    out = {"frames": 4, "time_key": key,
           "frame_us": frame, "scoring_us": tot.get("infmllm_scoring", 0),
           "compaction_us": tot.get("infmllm_compaction", 0)}
    for k in ("infmllm_frame", "infmllm_scoring", "infmllm_compaction"):
        if k in avg:
            out[k.replace("infmllm_", "") + "_host_us"] = avg[k].cpu_time_total
    if frame:
        out["scoring_fraction"] = out["scoring_us"] / frame
        out["compaction_fraction"] = out["compaction_us"] / frame
    return out


def _scene(i: int, h: int = 240, w: int = 320) -> np.ndarray:
    """Draw a synthetic camera frame: moving coloured boxes on a gradient (deterministic)."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 2] = (i * 7) % 255
    x = (i * 13) % (w - 60)
    y = (i * 5) % (h - 60)
    img[y:y + 60, x:x + 60] = ((i * 40) % 255, 200, 50)
    return img


QUESTIONS = ["What colour is the box?", "What did the camera see most recently?",
             "Is anything moving?", "Describe the scene.", "How many objects are there?",
             "What happened at the start?", "Where is the box now?", "Summarise what you saw."]


def bench_cpu(frames: int, questions: int, max_new_tokens: int, budget: int,
              save: Callable[[dict], None], compare: Sequence[str] = (),
              overrides: Optional[dict] = None, dtype: str = "auto",
              profile_frames: int = 0) -> dict:
    """Time the bundled default model through the engine, as the node runs it, on this CPU.

    ``compare``: policy specs (``inf_mllm:novelty=0``), each optionally ``@dtype``
    (``inf_mllm@float32``), whose sessions then ingest the same frames side by side, one
    frame each in turn (so drift in the machine's speed hits all alike): per-frame ingest
    time per spec, and its ratio to the first spec's. Policies are
    ``eval.common.build_policy(spec, budget, overrides)``. ``profile_frames``: after the
    timed frames, that many more are profiled (:mod:`.cpu_profile`: ms per frame by op
    group).
    """
    res: dict = {"frames": frames, "questions": questions, "max_new_tokens": max_new_tokens,
                 "budget": budget, "threads": torch.get_num_threads(), "dtype": dtype}
    try:
        from ros2_infmllm.engine import DEFAULT_POLICY, build_session
    except ImportError as exc:
        res["error"] = f"engine not available in this checkout: {exc}"
        save(res)
        return res
    t0 = time.perf_counter()
    session = build_session(session_config_for(build_policy(DEFAULT_POLICY, budget, overrides),
                                               model="default", device="cpu", dtype=dtype))
    res["load_s"] = time.perf_counter() - t0
    res["model_dtype"] = str(next(session.adapter.model.parameters()).dtype).split(".")[-1]
    ingest, answers, first = [], [], []
    n_tokens = []
    for i in tqdm(range(frames), desc="cpu ingest", unit="frame"):
        frame = _scene(i)
        _, dt = timed(lambda: session.ingest_frame(frame, stamp=float(i), camera="cam"), "cpu")
        ingest.append(dt)
        if (i + 1) % max(1, frames // questions) == 0 and len(answers) < questions:
            q = QUESTIONS[len(answers) % len(QUESTIONS)]
            stamps: list = []
            t_ask = time.perf_counter()

            def on_token(*_a, **_k):
                stamps.append(time.perf_counter())
            ans = session.ask(q, max_new_tokens=max_new_tokens, on_token=on_token)
            answers.append(time.perf_counter() - t_ask)
            if stamps:
                first.append(stamps[0] - t_ask)
            n_tokens.append(len(stamps))
            save(dict(res, last_answer=getattr(ans, "text", str(ans))[:200]))
    res.update({"ingest": _stats(ingest), "answer": _stats(answers),
                "first_token": _stats(first), "answer_tokens": n_tokens,
                "describe": _safe_describe(session)})
    save(res)
    if profile_frames:
        from ros2_infmllm.eval.bench.cpu_profile import profile_ingest_frames
        res["profile"] = profile_ingest_frames(
            lambda i: session.ingest_frame(_scene(i), stamp=float(i), camera="cam"),
            frames, profile_frames)
        save(res)
    if compare:
        res["compare"] = compare_ingest(compare, frames, budget, overrides=overrides)
        save(res)
    return res


def compare_ingest(specs: Sequence[str], frames: int, budget: int,
                   model: str = "default", overrides: Optional[dict] = None) -> list:
    """Ingest the same frames into one session per ``policy spec[@dtype]``, in turn."""
    from ros2_infmllm.engine import build_session
    sessions = []
    for entry in specs:
        spec, _, dtype = entry.partition("@")
        sessions.append(build_session(session_config_for(
            build_policy(spec, budget, overrides), model=model, device="cpu",
            dtype=dtype or "auto")))
    times: list = [[] for _ in specs]
    for i in tqdm(range(frames), desc="cpu ingest, side by side", unit="frame"):
        frame = _scene(i)
        for session, out in zip(sessions, times):
            _, dt = timed(lambda: session.ingest_frame(frame, stamp=float(i), camera="cam"),
                          "cpu")
            out.append(dt)
    rows = []
    for spec, session, out in zip(specs, sessions, times):
        d = _safe_describe(session)
        rows.append({"policy": spec, "ingest": _stats(out),
                     "mean_ms": 1e3 * float(np.mean(out)),
                     "ratio_to_first": float(np.mean(out) / np.mean(times[0])),
                     "cache_tokens": d.get("cache_tokens")})
    return rows


def _safe_describe(session) -> dict:
    try:
        d = session.status().to_dict()
        return {k: v for k, v in d.items() if isinstance(v, (int, float, str))}
    except Exception as exc:  # noqa: BLE001 - informational only
        return {"error": str(exc)[:200]}
