"""Read frame counters out of a DescribeMemory response turned into a dict."""

from __future__ import annotations

from typing import Any, Iterator, Tuple


def _walk(obj: Any) -> Iterator[Tuple[str, Any]]:
    """Yield (key, value) for every dict entry, depth first."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _dicts(obj: Any) -> Iterator[dict]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _dicts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _dicts(v)


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def drop_count(describe: dict, reason: str) -> int:
    """Frames dropped for `reason`, summed over cameras."""
    total = 0
    for d in _dicts(describe):
        if "key" in d and "value" in d and reason in str(d["key"]) and "drop" in str(
                d["key"]).lower() + reason:
            total += _int(d["value"])
        lists = {k: v for k, v in d.items() if isinstance(v, list)}
        for kn, names in lists.items():
            if not names or not all(isinstance(x, str) for x in names):
                continue
            if "reason" not in kn and "drop" not in kn:
                continue
            for kc, counts in lists.items():
                if kc != kn and len(counts) == len(names) and all(
                        isinstance(x, int) for x in counts) and (
                        "drop" in kc or "count" in kc):
                    total += sum(c for n, c in zip(names, counts) if n.endswith(reason))
    return total


def frames_ingested(describe: dict) -> int:
    """Frames fed into the model, summed over cameras."""
    for k, v in _walk(describe):
        if isinstance(v, int) and k in ("frames_ingested", "frames_fed", "ingested"):
            return v
    for d in _dicts(describe):
        for k, v in d.items():
            if ("ingested" in k or "fed" in k) and isinstance(v, list) and v and all(
                    isinstance(x, int) for x in v):
                return sum(v)
    return 0


def cache_tokens(describe: dict) -> int:
    """Largest per-layer cache length."""
    for k, v in _walk(describe):
        if "tokens" in k and isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            return max(v)
    for k, v in _walk(describe):
        if k in ("cache_tokens", "tokens") and isinstance(v, int):
            return v
    return 0
