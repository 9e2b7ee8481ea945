"""Probe of the memory's persistence (issue 36): prints the figures its bars ask for.

    python scripts/persistence_probe.py                      # every part (~15 min, 2 cores)
    python scripts/persistence_probe.py --parts saves,latency --saves 60

Parts, each against the real node (tiny-test model) started by the launch runner over DDS,
except ``fuzz`` (in process):

- ``saves``: frames published at 10 Hz and questions asked back to back while snapshots
  are taken by every trigger: ``~/save_memory`` (the service thread), deactivate (then
  activate again) and the periodic save (0.3 s). Each file is copied right after its save
  and restored afterwards into a fresh session: the figure is corrupt files / saves.
- ``restarts``: SIGINT to the launcher (the exit save), start again, compare the frames in
  memory before and after: the figure is frames lost over N graceful restarts.
- ``fuzz``: snapshot headers (re-signed, so the range checks see them) and journals
  mutated at random: crashes (an exception other than the refusal), refusals with a reason,
  and those applied within limits.
- ``latency``: while a 512-token answer is decoded, the reply time of ``~/reset``,
  lifecycle ``get_state``, deactivate, and the exit after SIGINT.

Prints one JSON object (also written with --out).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "reliability"))

import harness  # noqa: E402

TOPIC = "/probe/image_raw"
PARAMS: Dict[str, Any] = {
    "model": "tiny-test", "device": "cpu", "image_topics": [TOPIC], "frame_rate": 10.0,
    "max_new_tokens": 512, "query_queue_size": 8, "image_max_side": 64,
    "memory.budget": 192, "memory.n_recent": 48,
}


def _session():
    from ros2_infmllm.engine import SessionConfig, build_session
    return build_session(SessionConfig(model="tiny-test", device="cpu", policy="inf_mllm",
                                       budget=192, n_recent=48))


class Node:
    """The launch runner with the node under it, and a DDS client."""

    def __init__(self, domain: int, tmp: Path, snap: str, period: float,
                 model: str = "tiny-test") -> None:
        """Start the launcher (snapshots at ``snap`` every ``period`` s) and wait for active."""
        params = dict(PARAMS, **{"memory.snapshot_path": snap, "model": model,
                                 "memory.snapshot_period": period})
        self.proc = harness.NodeProcess(domain, params, log=tmp / f"launch-{time.time()}.log",
                                        command=[sys.executable, "-m",
                                                 "ros2_infmllm.ros.launch"])
        self.client = harness.Client(domain, f"probe_{os.getpid()}_{int(time.time())}")
        self.client.wait_ready(timeout=180, proc=self.proc)
        self.pub = self.client.image_publisher(TOPIC, reliable=True)
        self.stop_load = threading.Event()
        self.threads: List[threading.Thread] = []

    def frames(self) -> list:
        """Return the stamps of the frames the node's memory holds."""
        return [(s["sec"], s["nanosec"]) for s in self.client.describe()["frame_stamps"]]

    def _publish(self) -> None:
        i = 0
        while not self.stop_load.is_set():
            self.pub.publish(harness.image_msg(harness.scene(i, 64, 48),
                                               self.client.now_msg()))
            i += 1
            time.sleep(0.1)

    def _ask(self) -> None:
        while not self.stop_load.is_set():
            try:
                self.client.query("What changed?", max_new_tokens=16, timeout=60)
            except Exception:  # noqa: BLE001 - a reply lost in a transition: ask again
                time.sleep(0.2)

    def load(self, questions: bool = True) -> None:
        """Publish frames at 10 Hz (and ask questions back to back) until :meth:`unload`."""
        self.stop_load.clear()
        targets = [self._publish] + ([self._ask] if questions else [])
        self.threads = [threading.Thread(target=t, daemon=True) for t in targets]
        for t in self.threads:
            t.start()

    def unload(self) -> None:
        """Stop the frames and questions of :meth:`load`."""
        self.stop_load.set()
        for t in self.threads:
            t.join(70)

    def sigint(self) -> float:
        """SIGINT the launcher (as Ctrl-C does); return seconds until it exited."""
        t0 = time.monotonic()
        os.kill(self.proc.proc.pid, signal.SIGINT)
        self.proc.proc.wait(120)
        return time.monotonic() - t0

    def close(self) -> None:
        """Stop the load, the client and the processes."""
        self.unload()
        self.client.close()
        self.proc.stop()


def restore_all(files: List[Path]) -> List[str]:
    """Restore every file into a fresh session; return the refusals."""
    from ros2_infmllm.memory import snapshot
    session, bad = _session(), []
    for f in files:
        try:
            session.restore_memory(str(f))
        except snapshot.SnapshotError as exc:
            bad.append(f"{f.name}: {exc}")
    return bad


def part_saves(domain: int, tmp: Path, n: int) -> dict:
    """Take ``n`` snapshots by every trigger under load; count those that do not restore."""
    snap = str(tmp / "saves" / "memory.safetensors")
    Path(snap).parent.mkdir()
    copies = tmp / "save_copies"
    copies.mkdir()
    node = Node(domain, tmp, snap, period=0.3)
    from std_srvs.srv import Trigger
    counts = {"service": 0, "deactivate": 0, "periodic": 0}
    files: List[Path] = []
    try:
        node.load()
        time.sleep(3)
        i = 0
        while len(files) < n:
            i += 1
            kind = "deactivate" if i % 10 == 0 else "periodic" if i % 3 == 0 else "service"
            if kind == "service":
                r = node.client.call(Trigger, "/infmllm/save_memory", Trigger.Request(), 60)
                if not r.success:
                    continue
            elif kind == "deactivate":
                assert node.client.lifecycle("deactivate"), "deactivate failed"
                time.sleep(0.3)
            else:
                time.sleep(0.35)           # the periodic save's file, as found on disk
            if not os.path.exists(snap):
                raise RuntimeError(f"no snapshot after a {kind} save: see the launch log")
            target = copies / f"{len(files):04d}-{kind}.safetensors"
            shutil.copyfile(snap, target)
            files.append(target)
            counts[kind] += 1
            if kind == "deactivate":
                assert node.client.lifecycle("activate"), "activate failed"
    finally:
        node.close()
    bad = restore_all(files)
    return {"saves": len(files), "by_trigger": counts, "corrupt": len(bad), "refused": bad[:5]}


def part_restarts(domain: int, tmp: Path, n: int) -> dict:
    """Start ``n`` times, SIGINT in between; count the frames the next start lost."""
    snap = str(tmp / "restarts" / "memory.safetensors")
    Path(snap).parent.mkdir()
    lost, exits, files, held = [], [], [], []
    before: list = []
    for k in range(n):
        node = Node(domain, tmp, snap, period=0.0)
        try:
            after = node.frames()
            if k:
                lost.append(len(set(before) - set(after)))
            node.load(questions=k % 2 == 0)
            time.sleep(2.5)
            node.unload()
            time.sleep(1.0)
            before = node.frames()
            held.append(len(before))
            exits.append(node.sigint())
        finally:
            node.close()
        files.append(tmp / "restarts" / f"exit-{k}.safetensors")
        shutil.copyfile(snap, files[-1])
    bad = restore_all(files)
    return {"restarts": n - 1, "frames_lost": sum(lost), "lost_per_restart": lost,
            "frames_held_at_exit": held,
            "exit_saves": len(files), "exit_saves_corrupt": len(bad),
            "exit_s_max": round(max(exits), 2)}


def _mutate(rng: random.Random, state: dict, tensors: dict) -> tuple:
    import torch
    state, tensors = copy.deepcopy(state), dict(tensors)
    values = [math.nan, math.inf, -1, 0, 2 ** 62, 1e300, True, None, "x", [], {}, [None],
              193, 10 ** 6, -(2 ** 40)]
    for _ in range(rng.randint(1, 3)):
        paths = []

        def walk(obj, prefix):
            if prefix:
                paths.append(prefix)
            items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
                if isinstance(obj, list) else []
            for k, v in items:
                walk(v, prefix + (k,))
        walk(state, ())
        path = rng.choice(paths)
        parent = state
        for key in path[:-1]:
            parent = parent[key]
        how = rng.choice(["value", "value", "shift", "drop", "tensor"])
        old = parent[path[-1]]
        if how == "shift" and isinstance(old, (int, float)) and not isinstance(old, bool):
            parent[path[-1]] = old + rng.choice([1000, -1000, 1, -1, 2 ** 40])
        elif how == "drop":
            del parent[path[-1]]
        elif how == "tensor":
            name = rng.choice(sorted(tensors))
            t = tensors[name].clone()
            if t.numel() and t.is_floating_point():
                t.view(-1)[rng.randrange(t.numel())] = rng.choice([math.nan, 1e30])
            elif t.numel():
                t.view(-1)[rng.randrange(t.numel())] = torch.iinfo(t.dtype).max
            tensors[name] = t
        else:
            parent[path[-1]] = rng.choice(values)
    return state, tensors


def part_fuzz(tmp: Path, n: int, seed: int) -> dict:
    """Restore ``n`` mutated (re-signed) snapshots and read ``n`` mutated journals."""
    import numpy as np

    from ros2_infmllm.memory import snapshot
    rng = random.Random(seed)
    s = _session()
    for i in range(8):
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., i % 3] = 30 * i
        s.ingest_frame(img, 100.0 + i, "front" if i % 2 else "rear")
    s.ask("What changed?", max_new_tokens=3)
    good = str(tmp / "fuzz_good.safetensors")
    s.save_memory(good)
    tensors, state = snapshot.read_snapshot(good, s.identity())
    out = {"headers": 0, "header_refused": 0, "header_applied": 0, "header_crashes": 0,
           "refusal_kinds": {}, "journals": 0, "journal_rows_replayed": 0,
           "journal_rows_refused": 0, "journal_crashes": 0, "crash_examples": []}
    path = str(tmp / "fuzz.safetensors")
    for _ in range(n):
        out["headers"] += 1
        bad_state, bad_tensors = _mutate(rng, state, tensors)
        try:
            snapshot.write_snapshot(path, bad_tensors, s.identity(), bad_state)
        except (TypeError, ValueError):
            out["header_refused"] += 1
            continue
        try:
            s.restore_memory(path)
            st = s.status()
            ok = all(math.isfinite(f.stamp) for f in st.frames) and \
                st.memory.next_position <= 192 + s.cache.slack
            ans = s.ask("Still there?", max_new_tokens=2)
            ok = ok and all(math.isfinite(x) for x in ans.evidence_stamps)
            out["header_applied" if ok else "header_crashes"] += 1
        except snapshot.SnapshotError as exc:
            out["header_refused"] += 1
            out["refusal_kinds"][exc.kind] = out["refusal_kinds"].get(exc.kind, 0) + 1
        except Exception as exc:  # noqa: BLE001 - counted: the bar is zero
            out["header_crashes"] += 1
            out["crash_examples"].append(f"{type(exc).__name__}: {exc}"[:200])
    try:
        from ros2_infmllm.engine.persistence import Persistence, journal_path
        from ros2_infmllm.engine.questions import QuestionLimits
    except ImportError:           # a tree from before engine/persistence.py: headers only
        return out
    limits = QuestionLimits(1000, 64, 8)
    junk = [None, True, 5, -3, 10 ** 9, 1e308, "", " ", "x" * 200_000, [], {}, "q?"]
    for _ in range(n):
        out["journals"] += 1
        rows = []
        for _ in range(rng.randint(0, 80)):
            row = {"question": rng.choice(junk + ["what now?"] * 4),
                   "max_new_tokens": rng.choice(junk + [4, 0, 100_000]),
                   "camera": rng.choice(junk + ["", "cam"])}
            if rng.random() < 0.2:
                del row[rng.choice(list(row))]
            rows.append(row if rng.random() > 0.1 else rng.choice(junk))
        data = json.dumps(rows).encode() if rng.random() > 0.1 else \
            bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        with open(journal_path(path), "wb") as f:
            f.write(data)
        store = Persistence(path)
        try:
            taken = store.read_journal(limits)
            if not all(1 <= q.max_new_tokens <= 64 and 0 < len(q.question) <= 1000
                       for q in taken) or len(taken) > 8:
                raise AssertionError("a replayed question beyond the limits")
            out["journal_rows_replayed"] += len(taken)
            out["journal_rows_refused"] += store.status().journal_refused
        except Exception as exc:  # noqa: BLE001 - counted: the bar is zero
            out["journal_crashes"] += 1
            out["crash_examples"].append(f"journal {type(exc).__name__}: {exc}"[:200])
    return out


def part_latency(domain: int, tmp: Path, tokens: int, model: str) -> dict:
    """Time the replies of reset, get_state, deactivate and the exit during a long answer.

    ``during`` says, per call, whether the answer was still being decoded when the reply
    came (a small random model may end an answer early; then the figure says nothing).
    """
    snap = str(tmp / "latency" / "memory.safetensors")
    Path(snap).parent.mkdir()
    node = Node(domain, tmp, snap, period=0.0, model=model)
    from lifecycle_msgs.srv import GetState
    from std_srvs.srv import Trigger
    times: Dict[str, float] = {}
    during: Dict[str, bool] = {}
    answer_s: List[float] = []
    try:
        node.load(questions=False)
        time.sleep(3)
        node.unload()

        def long_answer() -> threading.Thread:
            node.load(questions=False)      # frames again: a long answer evicts them all
            time.sleep(1.5)
            node.unload()

            def run() -> None:
                t0 = time.monotonic()
                node.client.query("Describe everything in great detail.",
                                  max_new_tokens=tokens, timeout=300)
                answer_s.append(time.monotonic() - t0)
            th = threading.Thread(target=run, daemon=True)
            th.start()
            time.sleep(1.5)                 # the answer is being decoded
            return th

        for name, call in (
                ("get_state", lambda: node.client.call(GetState, "/infmllm/get_state",
                                                       GetState.Request(), 60)),
                ("deactivate", lambda: node.client.lifecycle("deactivate")),
                ("activate", lambda: node.client.lifecycle("activate")),
                ("reset", lambda: node.client.call(Trigger, "/infmllm/reset",
                                                   Trigger.Request(), 60))):
            th = long_answer()
            t0 = time.monotonic()
            call()
            times[name] = round(time.monotonic() - t0, 3)
            during[name] = th.is_alive()
            th.join(300)
        th = long_answer()
        times["sigint_exit"] = round(node.sigint(), 3)
        during["sigint_exit"] = True
    finally:
        node.close()
    return {"model": model, "reply_s": times, "during_answer": during,
            "max_reply_s": max(times.values()),
            "long_answer_s": [round(x, 1) for x in answer_s]}


def main() -> int:
    """Run the chosen parts and print their figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="fuzz,saves,restarts,latency")
    ap.add_argument("--saves", type=int, default=200)
    ap.add_argument("--restarts", type=int, default=21, help="starts (restarts = this - 1)")
    ap.add_argument("--fuzz", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--model", default="smollm2-135m",
                    help="model of the latency part (a real one: its answers run long)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="persistence_probe_"))
    domain = harness.random_domain_id()
    result: Dict[str, Any] = {}
    parts = args.parts.split(",")
    t0 = time.monotonic()
    if "fuzz" in parts:
        result["fuzz"] = part_fuzz(tmp, args.fuzz, args.seed)
        print(json.dumps({"fuzz": result["fuzz"]}), flush=True)
    if "saves" in parts:
        result["saves"] = part_saves(domain, tmp, args.saves)
        print(json.dumps({"saves": result["saves"]}), flush=True)
    if "restarts" in parts:
        result["restarts"] = part_restarts(domain, tmp, args.restarts)
        print(json.dumps({"restarts": result["restarts"]}), flush=True)
    if "latency" in parts:
        result["latency"] = part_latency(domain, tmp, args.tokens, args.model)
        print(json.dumps({"latency": result["latency"]}), flush=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
