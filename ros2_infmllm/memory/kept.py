"""What a BoundedCache keeps, token by token: the data behind the memory view.

Why a function here: the arrival index and source of each kept token live in the cache's
packed metadata; readers (the engine's memory map, tools) get them through this one call
instead of reaching into the layer's rows.
"""

from __future__ import annotations

from typing import Any

from .cache import BoundedCache


def kept_tokens(cache: BoundedCache, layer: int = 0, head: int = 0) -> dict[str, Any]:
    """Arrival index and source id of every token ``layer``/``head`` keeps, in cache order.

    Runs pending compactions first (what the next chunk would run). Also returns
    ``tokens_seen`` (the stream length so far) and each source's ``(stamp, kind)``.
    """
    cache.sources_in_memory()            # compacts pending layers, writes metadata
    la = cache.layers[layer]
    if not la.is_initialized or la.length == 0:
        return {"arrival": [], "source": [], "tokens_seen": int(la.arrived),
                "sources": {}}
    la.flush()
    n = la.length
    arrival = la.arrival[head, :n].tolist()
    dense = la.source[head, :n].tolist()
    ids = [cache.source_ids[i] for i in dense]
    return {"arrival": arrival, "source": ids, "tokens_seen": int(la.arrived),
            "sources": {sid: cache.source_meta.get(sid, (0.0, "")) for sid in set(ids)
                        if sid is not None}}
