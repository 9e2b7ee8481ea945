"""Snapshots taken from another thread while frames and questions flow (tiny model).

Why: ``~/save_memory``, deactivate and SIGINT save from a thread other than the worker's.
A snapshot that aliases the live buffers (``.cpu()`` on the CPU returns the same tensor)
is checksummed and written after the model lock is released, while the worker keeps
changing it: the file then fails its own checksum and the next start refuses it. Every
one of these saves must restore.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from ros2_infmllm.engine import SessionConfig, build_session

SAVES = 50


def _frame(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[..., i % 3] = (40 + 20 * i) % 256
    img[8:24, (3 * i) % 40:(3 * i) % 40 + 16] = 255
    return img


def _session():
    return build_session(SessionConfig(model="tiny-test", device="cpu", policy="inf_mllm",
                                       budget=96, n_recent=32, window=8))


def test_saves_from_another_thread_under_load_all_restore(tmp_path):
    """50 saves while a worker ingests frames and answers; every file restores."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)       # the node's setting: threads interleave finely
    live = _session()
    stop = threading.Event()
    errors: list = []

    def work() -> None:
        i = 0
        try:
            while not stop.is_set():
                live.ingest_frame(_frame(i), 100.0 + i, "front" if i % 2 else "rear")
                live.ask("What changed?", max_new_tokens=12)
                i += 1
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    for i in range(4):
        live.ingest_frame(_frame(i), 50.0 + i, "front")
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    paths = []
    try:
        for n in range(SAVES):
            path = str(tmp_path / f"m{n}.safetensors")
            live.save_memory(path)
            paths.append(path)
    finally:
        stop.set()
        worker.join(60)
        sys.setswitchinterval(switch)
    assert not errors, errors
    fresh = _session()
    refused = []
    for path in paths:
        try:
            fresh.restore_memory(path)
        except Exception as exc:  # noqa: BLE001 - counted and shown
            refused.append(f"{path}: {exc}")
    assert not refused, f"{len(refused)} of {SAVES} snapshots refused: {refused[:3]}"


def test_snapshot_tensors_share_no_memory_with_the_cache():
    """Every tensor of a snapshot is a copy, also of a layer that is exactly full."""
    from ros2_infmllm.memory import snapshot
    s = _session()
    for i in range(12):
        s.ingest_frame(_frame(i), 100.0 + i, "front")
    s.ask("What changed?", max_new_tokens=4)
    cache = s.cache
    tensors, _ = snapshot.cache_state(cache)
    live = [t for layer in cache.layers if layer.is_initialized
            for t in (layer.key_buf, layer.value_buf, layer.meta, layer.scores)]
    live.append(cache.evidence.values)
    spans = [(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in live]
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        assert not any(lo <= ptr < lo + n for lo, n in spans), f"{name} aliases the cache"
