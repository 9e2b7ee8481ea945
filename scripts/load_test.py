"""Load test: N cameras at R Hz for T seconds plus Q questions from C concurrent clients.

    python scripts/load_test.py             # 4 x 30 Hz, 600 s, 100 questions, 10 clients
    python scripts/load_test.py --short     # CI size: 2 x 10 Hz, 20 s, 12 questions, 4 clients

The node (real, with the session wrapped only to record timings) runs in a child process
on a random ROS_DOMAIN_ID; cameras and clients run here. Reports accepted / refused (with
each reason) / lost questions, frames published / ingested / dropped per reason, node RSS
and device-memory growth after warm-up, the node-reported camera-callback latency when
/diagnostics carries it, the camera callback's run time and delay after the frame stamp
(timed around the node's callback by the instrumented launcher), and the describe_memory
round trip under load (p50/p95).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "reliability"))

import counters  # noqa: E402
import harness  # noqa: E402


def _device_bytes(describe: Dict[str, Any]) -> Optional[int]:
    v = describe.get("device_memory_bytes")
    return int(v) if v is not None else None


def _diag_values(arrays: List[Any], word: str) -> List[float]:
    """Numbers from /diagnostics key-values whose key contains `word`."""
    out = []
    for arr in arrays:
        for status in arr.status:
            for kv in status.values:
                if word in kv.key.lower():
                    try:
                        out.append(float(kv.value))
                    except ValueError:
                        pass
    return out


def _growth(samples: List[tuple], warm_frac: float) -> Optional[Dict[str, float]]:
    """Growth of a (t, value) series: median of the last 10% vs median just after warm-up."""
    if len(samples) < 4:
        return None
    t0, t1 = samples[0][0], samples[-1][0]
    span = max(t1 - t0, 1e-9)
    base = [v for t, v in samples if t0 + warm_frac * span <= t <= t0 + (warm_frac + 0.1) * span]
    end = [v for t, v in samples if t >= t1 - 0.1 * span]
    if not base or not end or statistics.median(base) <= 0:
        return None
    b, e = statistics.median(base), statistics.median(end)
    return {"after_warmup": b, "end": e, "growth_pct": 100.0 * (e - b) / b,
            "max": max(v for _, v in samples)}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the load and return the report dict."""
    from tqdm import tqdm

    domain = harness.random_domain_id()
    tmp = Path(tempfile.mkdtemp(prefix="load_"))
    topics = [f"/load/cam{i}/image_raw" for i in range(args.cameras)]
    params = {"model": args.model, "device": args.device, "image_topics": topics,
              "frame_rate": args.frame_rate, "max_new_tokens": args.max_new_tokens,
              "query_queue_size": args.queue_size}
    snapshot = tmp / "memory.safetensors"
    if args.snapshot_period > 0:
        params.update({"memory.snapshot_path": str(snapshot),
                       "memory.snapshot_period": args.snapshot_period})
    node = harness.NodeProcess(domain, params, record=tmp / "record.jsonl", log=tmp / "node.log")
    client = harness.Client(domain, "load_client")
    report: Dict[str, Any] = {
        "command": "python scripts/load_test.py " + " ".join(args.argv),
        "cameras": args.cameras, "rate_hz": args.rate, "duration_s": args.duration,
        "questions": args.questions, "clients": args.clients, "model": args.model,
        "device": args.device, "node_frame_rate": args.frame_rate,
        "query_queue_size": args.queue_size, "ros_domain_id": domain,
    }
    stop = threading.Event()
    published = collections.Counter()
    results: List[Dict[str, Any]] = []
    res_lock = threading.Lock()
    rss: List[tuple] = []
    dev: List[tuple] = []
    rtt: List[float] = []
    try:
        client.wait_ready(timeout=300, proc=node)
        client.subscribe_diagnostics()
        pubs = [client.image_publisher(t) for t in topics]
        for p in pubs:
            harness.wait_until(lambda p=p: p.get_subscription_count() > 0, 30)
        frames = [[harness.scene(i, args.width, args.height, c) for i in range(30)]
                  for c in range(args.cameras)]
        start = time.monotonic()
        wall_start = time.time()

        def camera(c: int) -> None:
            period = 1.0 / args.rate
            nxt = time.monotonic()
            i = 0
            while not stop.is_set():
                pubs[c].publish(harness.image_msg(frames[c][i % 30], client.now_msg(),
                                                  f"cam{c}"))
                published[c] += 1
                i += 1
                nxt += period
                delay = nxt - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                else:
                    nxt = time.monotonic()  # behind: do not burst

        def asker(k: int, n: int) -> None:
            rng = random.Random(k)
            times = sorted(rng.uniform(0.05, 0.9) * args.duration for _ in range(n))
            for j, at in enumerate(times):
                delay = start + at - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    pass
                t0 = time.monotonic()
                cam = "" if j % 3 else topics[j % len(topics)]
                row: Dict[str, Any] = {"client": k, "camera": cam}
                try:
                    r = client.query(f"Client {k} question {j}: what is in view?", camera=cam,
                                     max_new_tokens=args.max_new_tokens,
                                     timeout=args.answer_timeout)
                    row.update(ok=bool(r.success), message=r.message, latency=r.latency_s)
                except TimeoutError as exc:
                    row.update(ok=None, message=f"lost: {exc}")
                row["rtt"] = time.monotonic() - t0
                with res_lock:
                    results.append(row)

        threads = [threading.Thread(target=camera, args=(c,), daemon=True)
                   for c in range(args.cameras)]
        share = [args.questions // args.clients + (1 if k < args.questions % args.clients else 0)
                 for k in range(args.clients)]
        askers = [threading.Thread(target=asker, args=(k, share[k]), daemon=True)
                  for k in range(args.clients)]
        for t in threads + askers:
            t.start()
        with tqdm(total=int(args.duration), unit="s", desc="load") as bar:
            while time.monotonic() - start < args.duration:
                if not node.alive():
                    raise RuntimeError(f"node died under load:\n{node.log_text()}")
                t0 = time.monotonic()
                try:
                    d = client.describe(timeout=30)
                    rtt.append(time.monotonic() - t0)
                    dv = _device_bytes(d)
                    if dv is not None:
                        dev.append((time.monotonic() - start, dv))
                except TimeoutError:
                    rtt.append(float("inf"))
                rss.append((time.monotonic() - start, node.rss_bytes()))
                bar.n = min(int(args.duration), int(time.monotonic() - start))
                bar.refresh()
                stop.wait(args.sample_every)
        stop.set()
        for t in askers:
            t.join(args.answer_timeout + 30)
        final = client.describe(timeout=60)
        report["node_alive_at_end"] = node.alive()
        if args.snapshot_period > 0 and snapshot.exists():
            from ros2_infmllm.memory.snapshot import read_header
            session = read_header(str(snapshot))["state"]["session"]
            report["snapshot"] = {"period_s": args.snapshot_period,
                                  "bytes": snapshot.stat().st_size,
                                  "frames_ingested_in_last": session["frames_ingested"]}
        report["frames_published"] = sum(published.values())
        report["frames_ingested"] = counters.frames_ingested(final)
        report["frames_dropped_by_reason"] = counters.drops_by_reason(final)
        report["describe_at_end"] = {k: v for k, v in final.items()
                                     if not isinstance(v, list) or len(v) <= 64}
        report["questions_accepted"] = sum(1 for r in results if r["ok"] is True)
        refused = [r for r in results if r["ok"] is False]
        report["questions_refused"] = len(refused)
        report["refused_by_reason"] = dict(collections.Counter(
            r["message"].split(":")[0][:80] or "(no reason)" for r in refused))
        report["refused_without_reason"] = sum(1 for r in refused if not r["message"].strip())
        report["questions_lost"] = sum(1 for r in results if r["ok"] is None)
        report["questions_never_returned"] = args.questions - len(results)
        lat = [r["rtt"] for r in results if r["ok"] is True]
        report["answer_rtt_s"] = {"p50": harness.percentile(lat, 50),
                                  "p95": harness.percentile(lat, 95)}
        finite = [x for x in rtt if x != float("inf")]
        report["describe_rtt_under_load_ms"] = {
            "p50": 1000 * harness.percentile(finite, 50),
            "p95": 1000 * harness.percentile(finite, 95), "timeouts": len(rtt) - len(finite)}
        cb = _diag_values(client.diagnostics, "callback")
        report["callback_latency_from_diagnostics"] = (
            {"p50": harness.percentile(cb, 50), "p95": harness.percentile(cb, 95),
             "samples": len(cb)} if cb else "not published by the node")
        report["rss"] = _growth(rss, args.warmup_frac)
        step = max(1, len(rss) // 60)
        report["rss_series_mb"] = [[round(t, 1), round(v / 2**20, 1)] for t, v in rss[::step]]
        report["device_memory"] = _growth(dev, args.warmup_frac) if dev else "not reported"
        cbs = [r for r in _read(tmp / "record.callbacks.jsonl") if r["t"] >= wall_start]
        report["camera_callback_ms"] = {
            "run_p50": 1000 * harness.percentile([r["dt"] for r in cbs], 50),
            "run_p95": 1000 * harness.percentile([r["dt"] for r in cbs], 95),
            "delay_after_stamp_p50": 1000 * harness.percentile([r["delay"] for r in cbs], 50),
            "delay_after_stamp_p95": 1000 * harness.percentile([r["delay"] for r in cbs], 95),
            "callbacks": len(cbs)}
        rows = _read(tmp / "record.jsonl")
        ing = [r["dt"] for r in rows if r.get("op") == "ingest" and r.get("ok")]
        report["ingest_s"] = {"p50": harness.percentile(ing, 50),
                              "p95": harness.percentile(ing, 95), "n": len(ing)}
    finally:
        stop.set()
        client.close()
        report["node_exit_code"] = node.stop()
    return report


def _read(path: Path) -> List[Dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """Parse options, run, print and write the JSON report; exit 1 if a question was lost."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="CI size (overrides the sizes below)")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--rate", type=float, default=30.0, help="camera Hz")
    p.add_argument("--duration", type=float, default=600.0, help="seconds")
    p.add_argument("--questions", type=int, default=100)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--model", default="tiny-test")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frame-rate", type=float, default=2.0, help="node frames fed per camera/s")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--answer-timeout", type=float, default=300.0)
    p.add_argument("--sample-every", type=float, default=2.0)
    p.add_argument("--warmup-frac", type=float, default=0.2)
    p.add_argument("--out", type=Path, default=None, help="JSON report path")
    p.add_argument("--snapshot-period", type=float, default=0.0,
                   help="memory snapshots every this many seconds (0 = off)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.short:
        args.cameras, args.rate, args.duration = 2, 10.0, 20.0
        args.questions, args.clients, args.width, args.height = 12, 4, 96, 72
        args.sample_every, args.answer_timeout = 1.0, 120.0
    report = run(args)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    ok = (report.get("questions_lost") == 0 and report.get("questions_never_returned") == 0
          and report.get("refused_without_reason") == 0 and report.get("node_alive_at_end"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
