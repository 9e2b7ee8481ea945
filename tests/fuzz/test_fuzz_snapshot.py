"""Generated snapshot headers (tiny model): each is refused with a reason or applied within limits.

The checksum catches any edit of a file; these cases go past it: the state of a real
snapshot is changed (a field set to NaN, a huge or negative number, another type, a stamp
moved, an entry dropped) and written again by the snapshot writer, so it carries a valid
checksum. A restore must then raise SnapshotError with a kind and a message, or succeed
into a session whose status and answers stay within limits (finite stamps, positions
within the budget). Nothing else may escape. scripts/persistence_probe.py runs more.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from fuzzing import count, examples
from hypothesis import given
from hypothesis import strategies as st

from ros2_infmllm.engine import SessionConfig, build_session
from ros2_infmllm.memory import snapshot

BUDGET = 96
VALUES = st.sampled_from([
    math.nan, math.inf, -math.inf, -1, 0, 1, 2 ** 62, -(2 ** 62), 1e300, 0.5, True, False,
    None, "x", "", [], {}, [None], [[0, 0.0, "frame"]], [1, 2, 3], "torch.int64", 2 ** 31,
    BUDGET + 1, 10 ** 6])


def _frame(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[..., i % 3] = (40 + 30 * i) % 256
    img[8:24, 4 * i:4 * i + 16] = 255
    return img


def _session():
    return build_session(SessionConfig(model="tiny-test", device="cpu", policy="inf_mllm",
                                       budget=BUDGET, n_recent=32, window=8))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real snapshot (8 frames, one question) as (tensors, state), and a session to restore."""
    path = str(tmp_path_factory.mktemp("fuzzsnap") / "m.safetensors")
    s = _session()
    for i in range(8):
        s.ingest_frame(_frame(i), 100.0 + i, "front" if i % 2 else "rear")
    s.ask("What changed?", max_new_tokens=3)
    s.save_memory(path)
    tensors, state = snapshot.read_snapshot(path, s.identity())
    return tensors, state, s.identity(), s, path


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON state."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    if value is _DROP:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_DROP = object()


def mutate(state: dict, tensors: dict, draw) -> tuple:
    """Apply 1-3 edits to a copy of ``state`` (and maybe a tensor); return both copies."""
    state, tensors = copy.deepcopy(state), dict(tensors)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(state) if p]
        path = draw(st.sampled_from(paths))
        old = dict(_paths(state))[path]
        how = draw(st.sampled_from(["value", "value", "shift", "drop", "tensor"]))
        if how == "shift" and isinstance(old, (int, float)) and not isinstance(old, bool):
            _set(state, path, old + draw(st.sampled_from([1000, -1000, 1, -1, 2 ** 40])))
        elif how == "drop":
            _set(state, path, _DROP)
        elif how == "tensor":
            name = draw(st.sampled_from(sorted(tensors)))
            t = tensors[name].clone()
            kind = draw(st.sampled_from(["nan", "big", "cut", "dtype"]))
            if kind == "nan" and t.is_floating_point() and t.numel():
                t.view(-1)[0] = math.nan
            elif kind == "big" and t.numel():
                t.view(-1)[-1] = 1e30 if t.is_floating_point() else torch.iinfo(t.dtype).max
            elif kind == "cut" and t.dim():
                t = t[..., : max(0, t.shape[-1] - 1)].contiguous()
            else:
                t = t.double() if t.is_floating_point() else t.to(torch.int32)
            tensors[name] = t
        else:
            _set(state, path, draw(VALUES))
    return state, tensors


def check_applied(s) -> None:
    """A restored session stays within limits: finite stamps, positions in budget, answers."""
    status = s.status()
    assert all(math.isfinite(f.stamp) and f.stamp >= 0 for f in status.frames)
    assert status.cache_tokens <= BUDGET + s.cache.slack
    assert 0 <= status.memory.next_position <= BUDGET + s.cache.slack
    ans = s.ask("Still there?", max_new_tokens=2)
    assert all(math.isfinite(x) for x in ans.evidence_stamps)


@examples(150)
@given(data=st.data())
def test_crafted_header_refused_or_within_limits(saved, tmp_path_factory, data):
    count("snapshot_header")
    tensors, state, identity, s, _ = saved
    bad_state, bad_tensors = mutate(state, tensors, data.draw)
    path = str(tmp_path_factory.mktemp("case") / "m.safetensors")
    try:
        snapshot.write_snapshot(path, bad_tensors, identity, bad_state)
    except (TypeError, ValueError) as exc:      # not even writable (e.g. a dict key)
        assert str(exc)
        return
    try:
        s.restore_memory(path)
    except snapshot.SnapshotError as exc:
        assert exc.kind in ("mismatch", "corrupt", "invalid", "truncated") and str(exc)
        assert s.status().cache_tokens == 0          # refused: the memory is empty
        return
    check_applied(s)


def test_nan_stamp_and_far_position_refused(saved, tmp_path):
    """The issue's cases: NaN frame stamps, next_pos 2^62, each refused as invalid."""
    tensors, state, identity, s, _ = saved
    for path_, value in ((("session", "frames", 0, 1), math.nan),
                         (("layers", 0, "next_pos"), 2 ** 62),
                         (("source_meta", 1, 1), math.inf)):
        bad = copy.deepcopy(state)
        _set(bad, path_, value)
        target = str(tmp_path / "m.safetensors")
        snapshot.write_snapshot(target, tensors, identity, bad)
        with pytest.raises(snapshot.SnapshotError) as err:
            s.restore_memory(target)
        assert err.value.kind == "invalid", str(err.value)


def test_header_edit_fails_the_checksum(saved, tmp_path):
    """A counter edited in the file's header (not re-signed) is refused as corrupt."""
    *_, s, path = saved
    data = open(path, "rb").read()
    old = b'frames_ingested\\": 8'
    assert old in data
    edited = data.replace(old, b'frames_ingested\\": 9')
    target = tmp_path / "m.safetensors"
    target.write_bytes(edited)
    with pytest.raises(snapshot.SnapshotError) as err:
        s.restore_memory(str(target))
    assert err.value.kind == "corrupt" and "checksum" in str(err.value)
