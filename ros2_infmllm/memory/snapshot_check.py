"""Range checks of a snapshot's cache state, all done before any of it is used.

Why: a snapshot is a file anyone with write access to its folder can edit. The checksum
says the file is the one written; these checks say its content is one this cache could
have held: counts consistent with the tensors, positions within what the policy allows,
finite stamps and scores, source indices that exist. A state that fails is refused with
:class:`~.snapshot.SnapshotError` of kind ``invalid`` naming the field, so a crafted or
damaged file never reaches the model, the services or the diagnostics.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: no stream reaches this many tokens or sources; larger numbers are crafted
MAX_COUNT = 2 ** 40
_LAYER_INTS = ("arrived", "evicted", "compactions", "scored_len", "unscored",
               "scored_arrival", "length", "next_pos", "heads", "k_dim", "v_dim")


class InvalidState(ValueError):
    """One field out of range; the message names it (wrapped into a SnapshotError)."""


def _int(value: Any, name: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    """``value`` as an int in ``lo..hi`` (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidState(f"{name} must be an integer, got {value!r:.80}")
    if not lo <= value <= hi:
        raise InvalidState(f"{name} = {value} is outside {lo}..{hi}")
    return value


def stamp(value: Any, name: str) -> float:
    """``value`` as a finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value < 1e12:
        raise InvalidState(f"{name} must be a finite stamp in seconds, got {value!r:.80}")
    return float(value)


def _list(value: Any, name: str, max_len: int = MAX_COUNT) -> list:
    if not isinstance(value, list) or len(value) > max_len:
        raise InvalidState(f"{name} must be a list of at most {max_len} items")
    return value


def _tensor(tensors: dict[str, torch.Tensor], name: str, shape: tuple,
            dtype: torch.dtype) -> torch.Tensor:
    t = tensors.get(name)
    if t is None:
        raise InvalidState(f"tensor {name} is missing")
    if tuple(t.shape) != shape or t.dtype != dtype:
        raise InvalidState(f"tensor {name} is {tuple(t.shape)} {t.dtype}, the header says "
                           f"{shape} {dtype}")
    return t


def check_layer(i: int, ls: Any, tensors: dict[str, torch.Tensor], limits: tuple,
                pos_rows: int, n_sources: int) -> None:
    """Check layer ``i``'s header entry ``ls`` against its tensors.

    ``limits`` is ``(most tokens kept, highest position)`` (None: no bound but
    :data:`MAX_COUNT`); ``n_sources`` is the number of dense source indices.
    """
    length_limit, pos_limit = (MAX_COUNT if x is None else x for x in limits)
    if not isinstance(ls, dict):
        raise InvalidState(f"layer {i} must be an object")
    for key in _LAYER_INTS:
        _int(ls.get(key), f"layer {i} {key}")
    if ls["heads"] < 1 or ls["k_dim"] < 1 or ls["v_dim"] < 1:
        raise InvalidState(f"layer {i}: heads and dims must be >= 1")
    n = ls["length"]
    if n > length_limit:
        raise InvalidState(f"layer {i}: length {n} beyond the {length_limit} tokens this "
                           "memory ever keeps")
    if ls["next_pos"] > pos_limit:
        raise InvalidState(f"layer {i}: next_pos {ls['next_pos']} beyond position "
                           f"{pos_limit}, the highest this memory ever uses")
    if n > ls["arrived"] or ls["scored_len"] > n or ls["unscored"] > n:
        raise InvalidState(f"layer {i}: counters inconsistent (length {n}, arrived "
                           f"{ls['arrived']}, scored_len {ls['scored_len']}, unscored "
                           f"{ls['unscored']})")
    dtype_name = str(ls.get("dtype", "")).split(".")[-1]
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidState(f"layer {i}: dtype {ls.get('dtype')!r:.40} is not a float type")
    h = ls["heads"]
    keys = _tensor(tensors, f"k.{i}", (h, n, ls["k_dim"]), dtype)
    values = _tensor(tensors, f"v.{i}", (h, n, ls["v_dim"]), dtype)
    meta = _tensor(tensors, f"meta.{i}", (pos_rows + 2, h, n), torch.int64)
    scores = _tensor(tensors, f"scores.{i}", (h, n), torch.float32)
    for name, t in ((f"k.{i}", keys), (f"v.{i}", values), (f"scores.{i}", scores)):
        if n and not bool(torch.isfinite(t.float()).all()):
            raise InvalidState(f"tensor {name} holds a value that is not finite")
    if not n:
        return
    pos, arrival, source = meta[:pos_rows], meta[pos_rows], meta[pos_rows + 1]
    if int(pos.min()) < 0 or int(pos.max()) > pos_limit:
        raise InvalidState(f"layer {i}: positions {int(pos.min())}..{int(pos.max())} "
                           f"outside 0..{pos_limit}")
    if int(arrival.min()) < 0 or int(arrival.max()) >= ls["arrived"]:
        raise InvalidState(f"layer {i}: arrival indices outside 0..{ls['arrived'] - 1}")
    if int(source.min()) < 0 or int(source.max()) >= n_sources:
        raise InvalidState(f"layer {i}: source indices outside 0..{n_sources - 1}")


def check_sources(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> int:
    """Check the source bookkeeping; return the number of dense source indices."""
    ids = _list(state.get("source_ids"), "source_ids", 1 << 20)
    if not ids or ids[0] is not None:
        raise InvalidState("source_ids must start with the untagged entry (null)")
    live = [sid for sid in ids if sid is not None]
    for sid in live:
        _int(sid, "a source id")
    if len(set(live)) != len(live):
        raise InvalidState("source_ids lists a source twice")
    for entry in _list(state.get("source_meta"), "source_meta", 1 << 20):
        if not isinstance(entry, list) or len(entry) != 3:
            raise InvalidState("source_meta entries must be [id, stamp, kind]")
        sid, when, kind = entry
        _int(sid, "a source_meta id")
        stamp(when, f"source {sid} stamp")
        if not isinstance(kind, str) or len(kind) > 64:
            raise InvalidState(f"source {sid} kind must be a short string")
    for idx in _list(state.get("free_sources"), "free_sources", len(ids)):
        if _int(idx, "a free source index", 1, len(ids) - 1) and ids[idx] is not None:
            raise InvalidState(f"free source index {idx} still names source {ids[idx]}")
    _int(state.get("prune_at"), "prune_at", 1)
    _int(state.get("current_source"), "current_source", 0, len(ids))
    tally = tensors.get("tally")
    if tally is not None:
        if tally.dtype != torch.float32 or tuple(tally.shape) != (len(ids),):
            raise InvalidState(f"tally is {tuple(tally.shape)} {tally.dtype}, expected "
                               f"({len(ids)},) float32")
        if not bool(torch.isfinite(tally).all()):
            raise InvalidState("tally holds a value that is not finite")
    return len(ids)


def check_cache_state(state: dict[str, Any], tensors: dict[str, torch.Tensor],
                      n_layers: int, pos_rows: int, limits: tuple) -> None:
    """Check every field a cache restore reads (raises :class:`InvalidState`).

    ``limits``: ``(most tokens kept, highest position)``, None where unbounded.
    """
    layers = _list(state.get("layers"), "layers", n_layers)
    if len(layers) != n_layers:
        raise InvalidState(f"layers lists {len(layers)} layers, the model has {n_layers}")
    n_sources = check_sources(state, tensors)
    for i, ls in enumerate(layers):
        if ls is not None:
            check_layer(i, ls, tensors, limits, pos_rows, n_sources)
