"""Memory snapshots (memory/snapshot.py + StreamingSession.save/restore_memory), tiny model.

A restored session must answer exactly as the session it was saved from, and every kind
of bad file (other setup, truncated, corrupted, other version) must be refused with a
reason and leave an empty memory.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from ros2_infmllm.engine import SessionConfig, build_session
from ros2_infmllm.memory import snapshot


def _frame(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[..., i % 3] = (40 + 20 * i) % 256
    img[8:24, 8 + i:24 + i] = 255
    return img


def _session(budget: int = 160, policy: str = "inf_mllm", **kw):
    return build_session(SessionConfig(model="tiny-test", device="cpu", policy=policy,
                                       budget=budget, n_recent=64, window=8, **kw))


def _stream(s, start: int, count: int) -> None:
    for i in range(start, start + count):
        s.ingest_frame(_frame(i), 100.0 + i, "front" if i % 2 else "rear")


def _answers(s) -> list:
    out = []
    for q in ("What did the front camera see?", "Which frame was brightest?"):
        a = s.ask(q, max_new_tokens=6)
        out.append((a.text, a.evidence_stamps))
    _stream(s, 50, 3)
    a = s.ask("And now?", max_new_tokens=6)
    out.append((a.text, a.evidence_stamps))
    return out


@pytest.mark.parametrize("policy", ["inf_mllm", "h2o", "full"])
def test_restore_answers_identically(tmp_path, policy):
    """Save mid-stream, restore into a fresh session: answers, evidence and describe agree."""
    path = str(tmp_path / "memory.safetensors")
    a = _session(policy=policy)
    _stream(a, 0, 14)
    a.ask("What happened first?", max_new_tokens=3)
    _stream(a, 14, 4)
    info = a.save_memory(path)
    assert info["bytes"] == os.path.getsize(path) > 0
    before = a.status()
    expected = _answers(a)      # first: sessions of one model share its frame describer
    b = _session(policy=policy)
    _stream(b, 30, 2)                       # restore replaces whatever b held
    b.restore_memory(path)
    after = b.status()
    for key in ("frames", "frames_in_memory", "cache_tokens", "frames_ingested",
                "questions_answered"):
        assert getattr(after, key) == getattr(before, key), key
    assert after.memory.tokens_per_layer == before.memory.tokens_per_layer
    assert after.memory.next_position == before.memory.next_position
    assert _answers(b) == expected


def test_restore_of_empty_session_and_session_without_frames(tmp_path):
    """A snapshot of a session that saw nothing restores to one that answers the same."""
    path = str(tmp_path / "m.safetensors")
    a = _session()
    a.save_memory(path)
    expected = _answers(a)
    b = _session()
    _stream(b, 0, 3)
    b.restore_memory(path)
    assert b.status().frames_ingested == 0
    assert _answers(b) == expected


def _saved(tmp_path) -> str:
    path = str(tmp_path / "m.safetensors")
    s = _session()
    _stream(s, 0, 8)
    s.save_memory(path)
    return path


def _refused(path: str, kind: str, session=None) -> str:
    s = session or _session()
    _stream(s, 0, 2)
    with pytest.raises(snapshot.SnapshotError) as err:
        s.restore_memory(path)
    assert err.value.kind == kind, str(err.value)
    d = s.status()
    assert d.frames_ingested == 0 and d.cache_tokens == 0     # empty memory
    s.ask("still usable?", max_new_tokens=2)
    return str(err.value)


def test_other_budget_policy_or_params_refused(tmp_path):
    """Another budget, policy or policy parameter: mismatch naming what differs."""
    path = _saved(tmp_path)
    assert "budget" in _refused(path, "mismatch", _session(budget=192))
    assert "policy" in _refused(path, "mismatch", _session(policy="h2o"))
    assert "bias" in _refused(path, "mismatch", _session(bias=0.5))


def test_truncated_file_refused(tmp_path):
    """Any cut of the file (header size, header, tensor data) is refused as truncated."""
    path = _saved(tmp_path)
    data = open(path, "rb").read()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        with open(path, "wb") as f:
            f.write(data[:cut])
        _refused(path, "truncated")


def test_corrupted_bytes_refused(tmp_path):
    """A flipped byte in the tensor data fails the checksum; garbage header is corrupt."""
    path = _saved(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert "checksum" in _refused(path, "corrupt")
    open(path, "wb").write(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"{not json" + b" " * 7)
    _refused(path, "corrupt")


def test_other_version_refused(tmp_path):
    """A header with another format version is refused by version, not misread."""
    path = _saved(tmp_path)
    data = open(path, "rb").read()
    size = int.from_bytes(data[:8], "little")
    table = json.loads(data[8:8 + size])
    header = json.loads(table["__metadata__"]["header"])
    header["version"] = snapshot.VERSION + 1
    table["__metadata__"]["header"] = json.dumps(header)
    raw = json.dumps(table).encode()
    raw += b" " * (-len(raw) % 8)
    open(path, "wb").write(len(raw).to_bytes(8, "little") + raw + data[8 + size:])
    _refused(path, "version")


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous snapshot untouched and no temp file."""
    path = _saved(tmp_path)
    old = open(path, "rb").read()

    def broken_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    s = _session()
    _stream(s, 0, 3)
    with pytest.raises(OSError):
        s.save_memory(path)
    assert open(path, "rb").read() == old
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_digest_covers_dtype_and_shape():
    """Same bytes under another dtype or shape give another checksum."""
    t = torch.arange(8, dtype=torch.int32)
    assert snapshot._digest({"a": t}) != snapshot._digest({"a": t.view(torch.float32)})
    assert snapshot._digest({"a": t}) != snapshot._digest({"a": t.view(2, 4)})
