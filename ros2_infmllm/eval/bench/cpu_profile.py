"""Where a CPU frame ingest goes: torch.profiler op time grouped by what the op is for.

``bench cpu --profile-frames N`` profiles N steady-state frames of the session that
``bench cpu`` drives (the node's path: ``StreamingSession.ingest_frame``) and writes the
breakdown beside the JSON. Groups are by op name, so they hold whatever calls them:
linear layers are the model's projections, attention is transformers' SDPA, the score
softmax and its batched products are the retrieval window's scores, sin/cos/gather/index
ops are mostly the compaction (re-rotation of kept keys, gathering the kept tokens). The
rest of the wall time, outside any op, is Python (transformers, the cache, the describer).
"""
from __future__ import annotations

import time
from typing import Callable

#: group -> op-name prefixes (``aten::`` dropped); the first match wins
GROUPS = (
    ("linear layers (mm, addmm)", ("mm", "addmm", "linear", "matmul")),
    ("attention (SDPA)", ("_scaled_dot_product", "scaled_dot_product")),
    ("window scores (bmm, softmax)", ("bmm", "_softmax", "softmax", "masked_fill")),
    ("re-rotation trig (sin, cos)", ("sin", "cos")),
    ("gather / index / cat (compaction, cache)", ("gather", "index", "cat", "scatter",
                                                  "take_along_dim", "topk", "sort")),
    ("copies and casts", ("copy_", "_to_copy", "to", "clone", "contiguous")),
)
OTHER = "other ops (elementwise, norms, reductions)"


def group_of(op: str) -> str:
    """Return the group of an op name such as ``aten::addmm``."""
    name = op.split("::", 1)[-1]
    for group, prefixes in GROUPS:
        if any(name == p or name.startswith(p + "_") or name == "_" + p for p in prefixes):
            return group
    return OTHER


def profile_ingest_frames(ingest: Callable[[int], object], start: int, frames: int) -> dict:
    """Profile ``ingest(i)`` for ``frames`` frames from ``start``; ms per frame per group.

    Self CPU time of every op is summed per group (an op's time counted once, not also in
    its callers); ``python and framework`` is the wall time no op accounts for.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()           # inside: the profiler's own start-up not counted
        for i in range(start, start + frames):
            ingest(i)
        wall_ms = 1e3 * (time.perf_counter() - t0) / frames
    per_group: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        group = group_of(event.key)
        per_group[group] = per_group.get(group, 0.0) + event.self_cpu_time_total / 1e3
    rows = {g: ms / frames for g, ms in sorted(per_group.items(), key=lambda x: -x[1])}
    rows["python and framework (no op)"] = max(0.0, wall_ms - sum(rows.values()))
    return {"frames": frames, "wall_ms_per_frame": wall_ms,
            "ms_per_frame": rows,
            "share": {g: ms / wall_ms for g, ms in rows.items()} if wall_ms else {}}


def markdown(profile: dict, title: str) -> str:
    """Render the breakdown as a table (ms per frame and share of the wall time)."""
    lines = [f"### {title}", "",
             f"{profile['frames']} frames profiled, {profile['wall_ms_per_frame']:.0f} ms a "
             "frame under the profiler", "", "| group | ms per frame | share |", "|---|---|---|"]
    for group, ms in profile["ms_per_frame"].items():
        lines.append(f"| {group} | {ms:.1f} | {100 * profile['share'].get(group, 0):.0f} % |")
    return "\n".join(lines) + "\n"
