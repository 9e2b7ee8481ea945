"""Snapshots of a BoundedCache: the kept tokens and every piece of state they depend on.

Why: a restart of the perception stack must not lose the memory an hour of stream built.
A snapshot holds, per layer, the kept keys (after RoPE, at their current positions),
values, packed metadata (positions, arrival, source) and the policy's running scores,
plus the layer counters, the source bookkeeping and the evidence tally. Restored into a
cache of the same policy, budget and shapes, the next forward sees exactly what it would
have seen without the restart.

The file is a safetensors file whose metadata holds one JSON header (format, version,
the caller's identity, the cache state and a SHA-256 over the rest of the header and the
tensor bytes). It is written atomically: a temporary file (mode 0600) in the same folder,
fsync, rename, fsync of the folder, so a crash leaves the old snapshot or the new one,
never half of one; it never replaces a file that is not a snapshot. Reading refuses, with
:class:`SnapshotError`, another identity, a truncated or corrupted file, an unknown
version and a state out of range (:mod:`.snapshot_check`), before anything of it is used.
No ROS and no model family here: the identity is the caller's dict.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .cache import BoundedCache
from .snapshot_check import InvalidState, check_cache_state

FORMAT = "ros2_infmllm.memory-snapshot"
#: 2: the checksum covers the header (version 1 files are refused as another version)
VERSION = 2
#: the first bytes a snapshot's safetensors header holds (how a file is recognised)
MAGIC = b'{"__metadata__":{"header":"{\\"format\\": \\"' + FORMAT.encode()
#: a header larger than this is not ours (ours are a few hundred kB at most)
MAX_HEADER = 64 << 20
_LAYER_COUNTERS = ("arrived", "evicted", "compactions", "scored_len", "unscored",
                   "scored_arrival")


class SnapshotError(ValueError):
    """A snapshot that cannot be used.

    ``kind`` is mismatch, truncated, corrupt, version, invalid (a field out of range) or
    foreign (the path holds a file that is not a snapshot, which is never overwritten).
    """

    def __init__(self, kind: str, message: str):
        """Keep the failure class for counting; the message says what is wrong."""
        super().__init__(message)
        self.kind = kind


def _digest(tensors: dict[str, torch.Tensor], header: dict[str, Any] | None = None) -> str:
    """SHA-256 over the header (but its digest) and the tensors' names, dtypes, shapes, bytes.

    The header is hashed as canonical JSON (sorted keys) of its JSON form, so what is read
    back hashes as what was written.
    """
    h = hashlib.sha256()
    if header is not None:
        rest = {k: v for k, v in header.items() if k != "digest"}
        h.update(json.dumps(json.loads(json.dumps(rest, default=str)), sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _copy(t: torch.Tensor) -> torch.Tensor:
    """Return a contiguous CPU copy that shares no memory with ``t``.

    Why: ``.cpu()`` of a CPU tensor, and ``.contiguous()`` of a contiguous slice, return
    the live buffer itself; the checksum and the file are written after the model lock is
    released, while the worker goes on changing it.
    """
    return t.detach().to("cpu", copy=True).contiguous()


def cache_state(cache: BoundedCache) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (CPU copies) and JSON state of ``cache`` after its pending compactions.

    Source ids must be JSON values (the engine uses ints). The evidence tally is saved as
    folded so far; per-slot decode attention not yet folded is not (every question starts
    a new tally, and the engine reads it at the end of each answer).
    """
    cache.compact()
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    for i, layer in enumerate(cache.layers):
        if not layer.is_initialized:
            layers.append(None)
            continue
        layer.flush()
        n = layer.length
        tensors[f"k.{i}"] = _copy(layer.key_buf[0, :, :n])
        tensors[f"v.{i}"] = _copy(layer.value_buf[0, :, :n])
        tensors[f"meta.{i}"] = _copy(layer.meta[..., :n])
        tensors[f"scores.{i}"] = _copy(layer.scores[:, :n])
        state = {k: int(getattr(layer, k)) for k in _LAYER_COUNTERS}
        state.update(length=n, next_pos=int(layer.next_pos), dtype=str(layer.dtype),
                     heads=layer.n_heads, k_dim=layer.k_dim, v_dim=layer.v_dim)
        layers.append(state)
    sources, tally = cache.source_state()
    if tally is not None:
        tensors["tally"] = _copy(tally)
    state = {
        "policy": cache.policy.name, "params": cache.policy.params(),
        "budget": cache.policy.capacity, "pos_rows": cache.pos_rows,
        "n_layers": len(cache.layers), "layers": layers, **sources,
    }
    return tensors, state


def _check(state: dict[str, Any], cache: BoundedCache) -> None:
    """Refuse a state the cache cannot take (other policy, budget or layer count)."""
    mine = {"policy": cache.policy.name, "params": cache.policy.params(),
            "budget": cache.policy.capacity, "pos_rows": cache.pos_rows,
            "n_layers": len(cache.layers)}
    theirs = {k: state.get(k) for k in mine}
    if json.loads(json.dumps(mine, default=str)) != json.loads(json.dumps(theirs, default=str)):
        diff = [f"{k}: snapshot {theirs[k]!r}, this memory {mine[k]!r}" for k in mine
                if json.dumps(mine[k], default=str) != json.dumps(theirs[k], default=str)]
        raise SnapshotError("mismatch", "snapshot is of another memory (" + "; ".join(diff)
                            + ")")


def restore_cache(cache: BoundedCache, tensors: dict[str, torch.Tensor],
                  state: dict[str, Any], device: torch.device | str) -> None:
    """Put a :func:`cache_state` result back into ``cache`` (emptied first).

    Layers allocate their buffers on ``device`` (the model's) if they have none yet; the
    existing buffers are written in place, so anything holding views of them stays valid.
    """
    _check(state, cache)
    bounded = cache.policy.capacity is not None
    most = cache.policy.capacity + cache.slack if bounded else None
    try:
        check_cache_state(state, tensors, len(cache.layers), cache.pos_rows,
                          (most, most if cache.policy.repositions else None))
    except InvalidState as exc:
        raise SnapshotError("invalid", f"snapshot state out of range: {exc}") from exc
    cache.reset()
    for i, (layer, ls) in enumerate(zip(cache.layers, state["layers"])):
        if ls is None:
            continue
        dtype = getattr(torch, ls["dtype"].split(".")[-1])
        k, v = tensors[f"k.{i}"], tensors[f"v.{i}"]
        if k.dtype != dtype or tuple(k.shape) != (ls["heads"], ls["length"], ls["k_dim"]):
            raise SnapshotError("corrupt", f"layer {i}: keys {tuple(k.shape)} {k.dtype} do not "
                                f"match the header")
        if not layer.is_initialized:
            cache.initialize_layer(
                i, torch.empty((1, ls["heads"], 0, ls["k_dim"]), dtype=dtype, device=device),
                torch.empty((1, ls["heads"], 0, ls["v_dim"]), dtype=dtype, device=device))
        if (layer.n_heads, layer.k_dim, layer.v_dim, layer.dtype) != \
                (ls["heads"], ls["k_dim"], ls["v_dim"], dtype):
            raise SnapshotError("mismatch", f"layer {i}: snapshot has {ls['heads']} heads of "
                                f"{ls['k_dim']}/{ls['v_dim']} {dtype}, this model "
                                f"{layer.n_heads} of {layer.k_dim}/{layer.v_dim} {layer.dtype}")
        n = ls["length"]
        if n > layer.capacity:
            layer.allocate(n + cache.slack)
        dev = layer.key_buf.device
        layer.key_buf[0, :, :n] = k.to(dev)
        layer.value_buf[0, :, :n] = v.to(dev)
        layer.meta[..., :n] = tensors[f"meta.{i}"].to(dev)
        layer.scores[:, :n] = tensors[f"scores.{i}"].to(dev)
        for name in _LAYER_COUNTERS:
            setattr(layer, name, ls[name])
        layer.set_length(n)
        layer.next_pos = ls["next_pos"]
    cache.restore_sources(state, tensors.get("tally"), device)


def write_snapshot(path: str, tensors: dict[str, torch.Tensor], identity: dict[str, Any],
                   state: dict[str, Any]) -> int:
    """Write atomically to ``path`` (temp file, fsync, rename, fsync folder); return bytes.

    Raises SnapshotError (kind ``foreign``) when ``path`` holds a file that is not a
    snapshot: a mistyped path must not destroy someone's file.
    """
    refuse_foreign(path)
    header = {"format": FORMAT, "version": VERSION, "identity": identity, "state": state}
    header["digest"] = _digest(tensors, header)
    data = st_save(tensors, metadata={"header": json.dumps(header, default=str)})
    if not data[8:8 + len(MAGIC)] == MAGIC:
        raise SnapshotError("corrupt", "safetensors did not put the header first")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return len(data)


def is_snapshot(path: str) -> bool:
    """Whether ``path`` starts with a snapshot's magic bytes (False if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8 + len(MAGIC))
    except OSError:
        return False
    return head[8:] == MAGIC


def refuse_foreign(path: str) -> None:
    """Raise SnapshotError (``foreign``) if ``path`` exists and is not a snapshot file."""
    if os.path.lexists(path) and not (os.path.isfile(path) and not os.path.islink(path)
                                      and is_snapshot(path)):
        raise SnapshotError("foreign", f"{path} exists and is not a memory snapshot (no "
                            "snapshot magic bytes, or not a plain file): refusing to "
                            "overwrite it; choose another memory.snapshot_path or remove it")


def _header_of(data: bytes) -> dict[str, Any]:
    """Return the JSON header from a safetensors file's metadata (truncated/corrupt: error)."""
    if len(data) < 8:
        raise SnapshotError("truncated", f"file has {len(data)} bytes, not even a header size")
    size = int.from_bytes(data[:8], "little")
    if size > MAX_HEADER:
        raise SnapshotError("corrupt", f"header of {size} bytes: not a snapshot")
    if 8 + size > len(data):
        raise SnapshotError("truncated", f"header of {size} bytes but the file has "
                            f"{len(data)} bytes")
    try:
        table = json.loads(data[8:8 + size])
        header = json.loads(table.pop("__metadata__")["header"])
        end = max((int(t["data_offsets"][1]) for t in table.values()), default=0)
        if not isinstance(header, dict):
            raise TypeError("the header is not an object")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError) as exc:
        raise SnapshotError("corrupt", f"unreadable header: {exc}") from exc
    if 8 + size + end > len(data):
        raise SnapshotError("truncated", f"file has {len(data)} bytes, its header describes "
                            f"{8 + size + end}")
    return header


def read_snapshot(path: str, identity: dict[str, Any]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check ``path``; return ``(tensors, state)`` for :func:`restore_cache`.

    Raises SnapshotError (kind mismatch / truncated / corrupt / version) with the reason;
    OSError when the file cannot be read.
    """
    with open(path, "rb") as f:
        data = f.read()
    header = _header_of(data)
    if header.get("format") != FORMAT:
        raise SnapshotError("corrupt", f"not a memory snapshot (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise SnapshotError("version", f"snapshot version {header.get('version')!r}; this "
                            f"build reads version {VERSION}")
    mine = json.loads(json.dumps(identity, default=str))
    theirs = header.get("identity")
    if theirs != mine:
        diff = [f"{k}: snapshot {(theirs or {}).get(k)!r}, now {mine.get(k)!r}"
                for k in sorted(set(mine) | set(theirs or {}))
                if (theirs or {}).get(k) != mine.get(k)]
        raise SnapshotError("mismatch", "snapshot was taken with another setup ("
                            + "; ".join(diff) + ")")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise SnapshotError("corrupt", f"tensor data unreadable: {exc}") from exc
    if _digest(tensors, header) != header.get("digest"):
        raise SnapshotError("corrupt", "header or tensor bytes do not match the snapshot's "
                            "checksum")
    if not isinstance(header.get("state"), dict):
        raise SnapshotError("invalid", "snapshot has no state object")
    return tensors, header["state"]


def read_header(path: str) -> dict[str, Any]:
    """Return the header of the snapshot at ``path`` without loading or checking tensors.

    For tools and tests that ask what a snapshot holds (frames, counters) cheaply.
    """
    with open(path, "rb") as f:
        return _header_of(f.read())
