"""CUDA-graph decode == eager decode on a GPU (skipped without CUDA; run on the device)."""
from __future__ import annotations

import pytest
import torch

from ros2_infmllm.eval.bench.common import llama_model
from ros2_infmllm.eval.bench.runs import prefill_to
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("name,slack,carry,compiled", [
    ("inf_mllm", 8, 0.0, False), ("inf_mllm", 8, 0.5, False), ("h2o", 8, None, False),
    ("h2o", 1, None, False), ("snapkv", 8, None, False), ("streaming_llm", 8, None, False),
    ("inf_mllm", 8, 0.0, True), ("h2o", 1, None, True), ("inf_mllm", 8, 0.0, "owned"),
    ("h2o", 1, None, "owned"), ("h2o", 8, None, "owned"), ("streaming_llm", 8, None, "owned")])
def test_gpu_graph_decode_equals_eager_through_compactions(name, slack, carry, compiled):
    """Same tokens fed to an eager cache and to the graph runner: same logits at every
    step and the same kept memory, across several compactions (run before each replay).
    ``compiled``: the runner's model has fused projections and inductor-compiled norms /
    MLPs / rotary embedding (``compiled_decode``), captured in the runner's graphs; the
    reference stays the plain eager model. ``"owned"``: fused projections and the owned
    one-token decode step (``llama_decode``) instead, captured the same way."""
    import copy

    from ros2_infmllm.accel.cuda_graph import GraphDecodeRunner
    ref_model = llama_model("tiny", "cuda", torch.float32)
    use_scoring_attention(ref_model)
    model = ref_model
    if compiled:
        from ros2_infmllm.accel.compiled_decode import compile_decode
        from ros2_infmllm.accel.fused_linear import fuse_projections
        model = copy.deepcopy(ref_model)
        fuse_projections(model)
        if compiled == "owned":
            from ros2_infmllm.accel.llama_decode import install_owned_decode
            assert install_owned_decode(model)
        else:
            assert compile_decode(model)["mlps"] == model.config.num_hidden_layers
    kw = cache_kwarg(model)
    over = {} if carry is None else {"carry": carry}
    caches = [BoundedCache(build_policy(name, 64, over), model.config, max_chunk=32,
                           decode_slack=slack) for _ in range(2)]
    for m, c in zip((ref_model, model), caches):
        prefill_to(m, c, 100, 32, "cuda")
    runner = GraphDecodeRunner(model, caches[1])
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(3, 500, (120,), generator=g).cuda()
    pos_buf = torch.zeros((1, 1), dtype=torch.long, device="cuda")
    with torch.no_grad():
        for t in range(120):
            tok = tokens[t].view(1, 1)
            pos_buf.fill_(caches[0].next_position())
            ref = ref_model(input_ids=tok, position_ids=pos_buf, use_cache=True,
                            **{kw: caches[0]}).logits
            got = runner.step(tok, caches[1].next_position())
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4, msg=f"step {t}")
    stats = runner.stats()
    assert stats["disabled"] is None
    if compiled == "owned":
        assert model.owned_decode_steps >= stats["eager_steps"] + stats["captures"] > 0
    assert stats["replays"] >= 120 - 2 * (slack + 2) - 2, stats
    assert stats["compactions"] >= 120 // (slack + 1) - 1, stats
    for a, b in zip(*(c.layers for c in caches)):
        assert (a.length, a.arrived, a.scored_len, a.unscored) == \
            (b.length, b.arrived, b.scored_len, b.unscored)
        a.flush()
        b.flush()
        assert torch.equal(a.meta[..., :a.length], b.meta[..., :b.length])
        torch.testing.assert_close(a.keys, b.keys, atol=1e-4, rtol=1e-4)
