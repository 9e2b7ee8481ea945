"""Captured chunk graphs (accel/chunk_graph.py) answer like the class forward (needs CUDA).

The CPU file checks the pieces and the padding uncaptured; here they are replayed from
CUDA graphs: tiny models in float32 against the class forward, and the 7B shape in
bfloat16 against the same owned chunk forward run eagerly.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from ros2_infmllm.accel.chunk_graph import install_chunk_graphs
from ros2_infmllm.accel.fused_linear import fuse_projections
from ros2_infmllm.accel.llama_decode import install_owned_decode
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
from memory_tiny_models import (ROTATION, assert_same_memory, forward,  # noqa: E402
                                tiny_model)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SIZES = (8, 16, 32)


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_gpu_captured_chunks_equal_class_forward_tiny(family):
    """Chunks of 2..40 tokens replayed from the captured pieces (or eager past 32 rows):
    the class forward's logits and kept memory through compactions, float32."""
    ref_model = use_scoring_attention(tiny_model(family, seed=31)).cuda()
    model = use_scoring_attention(copy.deepcopy(ref_model))
    fuse_projections(model)
    assert install_owned_decode(model, chunks=True)
    graphs = install_chunk_graphs(model, SIZES)
    n_layers = model.config.get_text_config().num_hidden_layers
    assert graphs.stats()["chunk_graphs"] == len(SIZES) * (n_layers + 1)
    caches = {n: [BoundedCache(build_policy(n, 48), m.config, max_chunk=40, decode_slack=4,
                               rotation=ROTATION[family]) for m in (ref_model, model)]
              for n in ("inf_mllm", "h2o", "streaming_llm")}
    g = torch.Generator().manual_seed(9)
    lengths = (30, 9, 1, 16, 2, 1, 40, 23, 1, 8, 5, 1, 32, 17)
    keeps = (1, 0, torch.arange(0))
    for step, t in enumerate(lengths):
        ids = torch.randint(0, 100, (1, t), generator=g).cuda()
        keep = keeps[step % len(keeps)] if t > 1 else 1
        if isinstance(keep, torch.Tensor):
            keep = keep.cuda()
        for ref_cache, cache in caches.values():
            ref = forward(ref_model, ids, ref_cache, logits_to_keep=keep).logits
            got = forward(model, ids, cache, logits_to_keep=keep).logits
            assert got.shape == ref.shape, f"step {step}"
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=f"step {step}")
        for ref_cache, cache in caches.values():
            assert_same_memory(ref_cache, cache, tol=1e-4)
    assert graphs.runs == 3 * sum(1 < t <= SIZES[-1] for t in lengths)


def test_gpu_7b_shape_captured_question_equals_eager_chunk():
    """Llama-2-7B shape, bfloat16: a 57-token question on a full 1024-token memory, replayed
    from the 64-row pieces, gives the eager owned chunk forward's logits and keys (within
    bfloat16 rounding) and the same window scores' choice of kept tokens."""
    from ros2_infmllm.eval.bench.common import llama_model
    from ros2_infmllm.eval.bench.runs import prefill_to
    model = use_scoring_attention(llama_model("7b", "cuda", torch.bfloat16))
    fuse_projections(model)
    assert install_owned_decode(model, chunks=True)
    out = []
    for captured in (False, True):
        if captured:
            graphs = install_chunk_graphs(model, (64,))
        cache = BoundedCache(build_policy("inf_mllm", 1024), model.config, max_chunk=512)
        prefill_to(model, cache, 1024 + 512, 512, "cuda")
        cache.compact()
        ids = torch.randint(3, 32000, (1, 57), generator=torch.Generator().manual_seed(1))
        logits = forward(model, ids.cuda(), cache, logits_to_keep=1).logits.float()
        cache.compact()
        layer = cache.layers[-1]
        layer.flush()
        out.append((logits, layer.keys.float().clone(), layer.arrival[:, :layer.length].clone()))
    (ref, ref_keys, ref_kept), (got, keys, kept) = out
    assert graphs.runs == 1 and graphs.padded_rows == 7
    scale = ref.abs().mean().item()
    assert (got - ref).abs().mean().item() <= 2e-2 * scale
    assert (keys - ref_keys).abs().mean().item() <= 2e-2 * ref_keys.abs().mean().item()
    assert (kept == ref_kept).float().mean().item() >= 0.98
