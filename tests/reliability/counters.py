"""Read frame counters out of a DescribeMemory response turned into a dict (harness.to_dict)."""

from __future__ import annotations

from typing import Dict


def drop_count(describe: dict, reason: str) -> int:
    """Frames dropped for `reason`, summed over cameras (reason keys match by substring)."""
    total = 0
    for cam in describe.get("cameras", []):
        for name, count in zip(cam.get("drop_reasons", []), cam.get("drop_counts", [])):
            if reason in name:
                total += int(count)
    return total


def drops_by_reason(describe: dict) -> Dict[str, int]:
    """Every drop reason with its count, summed over cameras."""
    out: Dict[str, int] = {}
    for cam in describe.get("cameras", []):
        for name, count in zip(cam.get("drop_reasons", []), cam.get("drop_counts", [])):
            out[name] = out.get(name, 0) + int(count)
    return out


def frames_ingested(describe: dict) -> int:
    """Frames fed into the model, all cameras."""
    return int(describe.get("frames_ingested", 0))


def cache_tokens(describe: dict) -> int:
    """Largest per-layer cache length."""
    return max(describe.get("cache_tokens_per_layer") or [0])
