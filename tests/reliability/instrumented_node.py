"""Run the real node with the real session wrapped for fault injection and timing records.

Usage (test side only, never part of the product)::

    python tests/reliability/instrumented_node.py [--control DIR] [--record FILE.jsonl] \
        --ros-args -p model:=tiny-test ...

The node is ros2_infmllm.ros.node.main() unchanged (driven to active over DDS by the launch
runner's LifecycleDriver from a thread, unless --no-autostart), except that InfMllmNode gets a
session_factory that builds the real session (engine.build_session) and wraps it:

* faults: a test creates an empty file ``<stage>.<kind>.<anything>`` in DIR, stage in
  {ingest, generate}, kind in {error, oom, cuda_oom, cpu_oom}. The next session call of that
  stage consumes (deletes) the file and arms the model: the next forward of the real model
  inside that call first allocates and touches a 128 MiB tensor (a step's tensors), then
  raises (RuntimeError, torch.OutOfMemoryError, RuntimeError("CUDA out of memory"),
  RuntimeError("DefaultCPUAllocator: not enough memory")). So the exception really comes
  from inside the model call, the way an allocator failure would.
* slow load: ``--load-gate FILE`` holds the session build (inside on_configure) until
  FILE exists, so a test can call services while the model is still loading.
* callbacks: with --record, each camera callback's run time and its delay after the
  frame's stamp go to FILE.callbacks.jsonl (the node's _on_frame, timed from outside).
* records: one JSON line per ingest_frame/ask call (wall time, duration, ok, error) and,
  every 10th call, the session's cache length and the process RSS.
* stacks: SIGUSR1 prints every thread's Python stack to the log (faulthandler), so a test
  that finds the node alive but silent can say where it waits.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

STAGES = ("ingest", "generate")
KINDS = ("error", "oom", "cuda_oom", "cpu_oom")


def _make_exception(kind: str, stage: str) -> BaseException:
    import torch

    if kind == "oom":
        return torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 20.00 GiB (injected during {stage})")
    if kind == "cuda_oom":
        return RuntimeError(
            f"CUDA out of memory. Tried to allocate 20.00 GiB (injected during {stage})")
    if kind == "cpu_oom":
        return RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate "
                            f"21474836480 bytes (injected during {stage})")
    return RuntimeError(f"injected model fault during {stage}")


def _rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cache_tokens(session: Any) -> int:
    """Cache length of a session: its status' ``cache_tokens``."""
    return int(session.status().cache_tokens)


class InstrumentedSession:
    """Delegates to the real StreamingSession; injects armed faults and records timings."""

    def __init__(self, session: Any, control: Optional[Path], record: Optional[Path]) -> None:
        """Wrap `session`; hook its model's forward once."""
        self._session = session
        self._control = control
        self._record = open(record, "a", buffering=1) if record else None
        self._lock = threading.Lock()
        self._armed: Optional[tuple] = None
        self._calls = 0
        model = getattr(getattr(session, "adapter", None), "model", None)
        self._model_hooked = model is not None
        if model is not None:
            real_forward = model.forward

            def forward(*args: Any, **kwargs: Any) -> Any:
                armed, self._armed = self._armed, None
                if armed is not None:
                    self._fail(*armed)
                return real_forward(*args, **kwargs)

            model.forward = forward

    def __getattr__(self, name: str) -> Any:
        """Everything not instrumented goes to the real session."""
        return getattr(self._session, name)

    def _fail(self, stage: str, kind: str) -> None:
        import torch

        step_tensors = torch.ones(32 * 1024 * 1024)  # 128 MiB touched, like a real step
        step_tensors.add_(1.0)
        raise _make_exception(kind, stage)

    def _arm(self, stage: str) -> None:
        self._armed = None
        if self._control is None:
            return
        try:
            names = sorted(os.listdir(self._control))
        except OSError:
            return
        for name in names:
            parts = name.split(".")
            if len(parts) >= 2 and parts[0] == stage and parts[1] in KINDS:
                try:
                    os.remove(self._control / name)
                except OSError:
                    continue
                if self._model_hooked:
                    self._armed = (stage, parts[1])
                else:  # no model object to hook: fail at the session boundary instead
                    self._fail(stage, parts[1])
                return

    def _log(self, op: str, t0: float, ok: bool, error: str = "") -> None:
        if self._record is None:
            return
        self._calls += 1
        row = {"t": time.time(), "op": op, "dt": time.perf_counter() - t0, "ok": ok}
        if error:
            row["error"] = error[:200]
        if self._calls % 10 == 0:
            row["rss"] = _rss()
            try:
                row["cache_tokens"] = cache_tokens(self._session)
            except Exception as exc:  # describe must never break the run
                row["describe_error"] = repr(exc)[:200]
        self._record.write(json.dumps(row) + "\n")

    def ingest_frame(self, *args: Any, **kwargs: Any) -> Any:
        """Real ingest, with an armed ingest fault raised inside the model."""
        with self._lock:
            self._arm("ingest")
            t0 = time.perf_counter()
            try:
                out = self._session.ingest_frame(*args, **kwargs)
            except BaseException as exc:
                self._armed = None
                self._log("ingest", t0, False, repr(exc))
                raise
            self._log("ingest", t0, True)
            return out

    def ask(self, *args: Any, **kwargs: Any) -> Any:
        """Real ask, with an armed generation fault raised inside the model."""
        with self._lock:
            self._arm("generate")
            t0 = time.perf_counter()
            try:
                out = self._session.ask(*args, **kwargs)
            except BaseException as exc:
                self._armed = None
                self._log("ask", t0, False, repr(exc))
                raise
            self._log("ask", t0, True)
            return out


def main(argv: Optional[list] = None) -> Any:
    """Parse our options, then run ros2_infmllm.ros.node.main with the wrapped session."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", type=Path)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--no-autostart", dest="autostart", action="store_false",
                        help="leave the lifecycle node unconfigured")
    parser.add_argument("--load-gate", type=Path,
                        help="hold the model load until this file exists (at most 300 s)")
    opts = parser.parse_args(argv[:split])
    if opts.control is not None:
        opts.control.mkdir(parents=True, exist_ok=True)

    from ros2_infmllm import engine
    from ros2_infmllm.ros import node as node_mod

    def factory(config: Any) -> InstrumentedSession:
        deadline = time.monotonic() + 300
        while opts.load_gate is not None and not opts.load_gate.exists() \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        return InstrumentedSession(engine.build_session(config), opts.control, opts.record)

    base = node_mod.InfMllmNode
    recorder = open(opts.record.with_suffix(".callbacks.jsonl"), "a", buffering=1) \
        if opts.record else None

    class Node(base):  # type: ignore[misc, valid-type]
        """InfMllmNode whose default session factory is the instrumented one."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("session_factory", factory)
            super().__init__(*args, **kwargs)

        def _on_frame(self, cam: Any, msg: Any, compressed: bool) -> None:
            """Time the camera callback: its run time and its delay after the frame stamp."""
            if recorder is None:
                return super()._on_frame(cam, msg, compressed)
            start = time.time()
            t0 = time.perf_counter()
            try:
                return super()._on_frame(cam, msg, compressed)
            finally:
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                recorder.write(json.dumps({"t": start, "op": "callback",
                                           "dt": time.perf_counter() - t0,
                                           "delay": start - stamp}) + "\n")

    node_mod.InfMllmNode = Node
    if opts.autostart:
        threading.Thread(target=_drive_to_active, args=(argv[split:],), daemon=True).start()
    return node_mod.main([sys.argv[0]] + argv[split:])


class _ThisProcess:
    """Stands in for the subprocess handle LifecycleDriver watches: the node is in here."""

    returncode = None

    def poll(self) -> None:
        """Report "running": the node lives in this very process."""
        return None


def _drive_to_active(ros_args: list) -> None:
    """Configure + activate the lifecycle node from a DDS client, as the launch runner does."""
    from ros2_infmllm.ros.launch import LifecycleDriver, NodeSpec

    name = "infmllm"
    for i, arg in enumerate(ros_args[:-1]):
        if arg == "-r" and ros_args[i + 1].startswith("__node:="):
            name = ros_args[i + 1].split(":=", 1)[1]
    driver = LifecycleDriver(NodeSpec(name=name))
    try:
        ok = driver.drive_to_active(_ThisProcess(), {"stop": False}, 600.0)
        print(f"[instrumented_node] drive to active: {'ok' if ok else 'FAILED'}", flush=True)
    finally:
        driver.close()


if __name__ == "__main__":
    sys.exit(main())
