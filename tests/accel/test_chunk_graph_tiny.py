"""Chunk graphs (accel/chunk_graph.py): the pieces and their padding, on tiny models (CPU).

The capture needs CUDA (``test_chunk_graph_gpu.py``); what it captures is the pieces run
on the fixed, padded buffers, which run here uncaptured (``capture=False``) and must give
the class forward's logits and memory.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from ros2_infmllm.accel.chunk_graph import (ChunkGraphs, chunk_graphs, chunk_graphs_failure,
                                            install_chunk_graphs)
from ros2_infmllm.accel.fused_linear import fuse_projections
from ros2_infmllm.accel.llama_decode import install_owned_decode
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
from memory_tiny_models import (ROTATION, assert_same_memory, forward,  # noqa: E402
                                tiny_model)

SIZES = (8, 16, 32)


def _pair(family: str, seed: int):
    ref = use_scoring_attention(tiny_model(family, seed=seed))
    model = use_scoring_attention(copy.deepcopy(ref))
    fuse_projections(model)
    assert install_owned_decode(model, chunks=True)
    return ref, model


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen2_vl"])
def test_chunk_pieces_on_padded_buffers_equal_class_forward_tiny(family):
    """Chunks of 2..40 tokens (exactly a size, between sizes, past the largest: eager)
    with all / last / no logits, and one-token steps between them: the class forward's
    logits and kept memory for inf_mllm, h2o and streaming_llm through compactions. The
    pad rows are zeroed and never reach the cache (a chunk of 9 tokens in the 16-row
    buffers appends 9)."""
    ref_model, model = _pair(family, seed=31)
    graphs = install_chunk_graphs(model, SIZES, capture=False)
    assert install_chunk_graphs(model) is graphs                 # once per model
    rotation = ROTATION[family]
    caches = {n: [BoundedCache(build_policy(n, 48), m.config, max_chunk=40, decode_slack=4,
                               rotation=rotation) for m in (ref_model, model)]
              for n in ("inf_mllm", "h2o", "streaming_llm")}
    g = torch.Generator().manual_seed(9)
    lengths = (30, 9, 1, 16, 2, 1, 1, 40, 23, 1, 8, 5, 1, 1, 32, 17)
    keeps = (1, 0, torch.arange(0))
    for step, t in enumerate(lengths):
        ids = torch.randint(0, 100, (1, t), generator=g)
        keep = keeps[step % len(keeps)] if t > 1 else 1
        for ref_cache, cache in caches.values():
            before = cache.layers[0].arrived
            ref = forward(ref_model, ids, ref_cache, logits_to_keep=keep).logits
            got = forward(model, ids, cache, logits_to_keep=keep).logits
            assert got.shape == ref.shape, f"step {step}"
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"step {step}")
            assert cache.layers[0].arrived - before == t
        for ref_cache, cache in caches.values():
            assert_same_memory(ref_cache, cache)
    in_sizes = [t for t in lengths if 1 < t <= SIZES[-1]]
    assert graphs.runs == 3 * len(in_sizes)
    assert graphs.padded_rows == 3 * sum(graphs.size_for(t) - t for t in in_sizes) > 0
    assert graphs.graphs == {}                                  # nothing captured on a CPU
    assert all(c.describe()["compactions"] > 2 for pair in caches.values() for c in pair)


def test_chunk_graphs_refuse_bad_setups_tiny():
    """Sizes are validated; graphs need the owned forward with chunks, and CUDA to capture."""
    model = use_scoring_attention(tiny_model("llama", seed=1))
    with pytest.raises(ValueError, match="chunks=True"):
        install_chunk_graphs(model, SIZES, capture=False)
    install_owned_decode(model, chunks=True)
    with pytest.raises(ValueError, match="CUDA"):
        ChunkGraphs(model, SIZES, capture=True)
    for bad in ((), (1, 8), (8, True), (8.0,)):
        with pytest.raises(ValueError, match="sizes"):
            ChunkGraphs(model, bad, capture=False)
    graphs = ChunkGraphs(model, (32, 8, 16, 8), capture=False)
    assert graphs.sizes == (8, 16, 32)
    assert (graphs.size_for(2), graphs.size_for(8), graphs.size_for(9),
            graphs.size_for(33)) == (8, 8, 16, None)
    assert graphs.stats()["chunk_graphs"] == 0


def test_failed_capture_leaves_chunks_eager_and_says_why_tiny(monkeypatch):
    """A capture that raises (a CUDA error, memory) is not fatal: install returns None once
    and for good, the reason is kept, and chunks still take the eager owned forward."""
    ref_model, model = _pair("llama", seed=3)
    calls = []

    def broken(self, *args, **kwargs):
        calls.append(1)
        raise RuntimeError("CUDA error: out of memory (simulated)")
    monkeypatch.setattr(ChunkGraphs, "__init__", broken)
    assert install_chunk_graphs(model, SIZES, capture=False) is None
    assert install_chunk_graphs(model, SIZES, capture=False) is None and len(calls) == 1
    assert "out of memory" in chunk_graphs_failure(model) and chunk_graphs(model) is None
    caches = [BoundedCache(build_policy("inf_mllm", 48), m.config, max_chunk=32)
              for m in (ref_model, model)]
    ids = torch.randint(0, 100, (1, 20))
    torch.testing.assert_close(forward(model, ids, caches[1]).logits,
                               forward(ref_model, ids, caches[0]).logits, rtol=1e-5, atol=1e-5)
    assert model.owned_chunks == 1
