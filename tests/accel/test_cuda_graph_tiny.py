"""The CUDA-graph runner's host bookkeeping (accel/cuda_graph.py) == the cache's update (CPU)."""
from __future__ import annotations

import copy

import pytest
import torch

from ros2_infmllm.accel.cuda_graph import compact_if_all_pending, graph_signature
from ros2_infmllm.eval.bench.common import llama_model
from ros2_infmllm.eval.bench.runs import prefill_to
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg


@pytest.mark.parametrize("name", ["inf_mllm", "h2o", "snapkv", "inf_mllm_carry"])
def test_tiny_graph_runner_bookkeeping_equals_cache_update(name):
    """book_replayed_step (used after a graph replay) must leave the host state update() leaves,
    through the step that leaves the layers pending and the compaction the runner runs
    before the next replay: in steady state every step is graph-eligible."""
    model = llama_model("tiny", "cpu", torch.float32)
    use_scoring_attention(model)
    over = {"carry": 0.5} if name.endswith("_carry") else {}
    cache = BoundedCache(build_policy(name.replace("_carry", ""), 64, over), model.config,
                         max_chunk=32, decode_slack=8)
    prefill_to(model, cache, 100, 32, "cpu")
    cache.begin_source(5, stamp=1.0, kind="answer")
    cache.mark()
    twin = copy.deepcopy(cache)
    window = cache.policy.score_mode == "window"
    kw = cache_kwarg(model)
    compactions = 0
    for step in range(20):                          # two slack cycles: compacts at 9 and 17
        pos = cache.next_position()
        with torch.no_grad():
            model(input_ids=torch.tensor([[7]]), position_ids=torch.tensor([[pos]]),
                  use_cache=True, **{kw: cache})
        compactions += compact_if_all_pending(twin)
        assert graph_signature(twin) is not None, step
        twin.book_replayed_step()
        for a, b in zip(cache.layers, twin.layers):
            assert (a.length, a.next_pos, a.arrived, a.pending, a.scored_len, a.unscored) == \
                (b.length, b.next_pos, b.arrived, b.pending, b.scored_len, b.unscored), step
            assert a.segments == b.segments and a.undo_state == b.undo_state
            if window:                              # no decode scores: the same selection
                a.flush()
                b.flush()
                assert torch.equal(a.meta[..., :a.length], b.meta[..., :b.length])
            # the graph replay writes the step's keys and values; the twin ran no model, so
            # it gets them here (inf_mllm's novelty reads the values at the next compaction)
            b.key_buf.copy_(a.key_buf)
            b.value_buf.copy_(a.value_buf)
    assert compactions == 2
    assert sum(layer.pending for layer in cache.layers) == 0


def test_no_collection_keeps_the_collector_off_and_restores_it():
    """Captures run with the cyclic collector off (a collection inside a capture that frees
    another CUDA graph invalidates the capture, seen on the H100); it comes back after,
    also when the capture raises, and stays off if it was off."""
    import gc
    from ros2_infmllm.accel.cuda_graph import no_collection
    assert gc.isenabled()
    with no_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with no_collection():
            raise RuntimeError("capture failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with no_collection():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
