"""Inductor-compiled decode pieces (accel/compiled_decode.py) == eager (tiny, CPU)."""
from __future__ import annotations

import copy

import pytest
import torch

from ros2_infmllm.accel.compiled_decode import FAILED, compile_decode
from ros2_infmllm.accel.fused_linear import fuse_projections
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention


@pytest.mark.parametrize("family,fused", [("llama", True), ("qwen2", False)])
def test_tiny_compiled_decode_equals_eager_through_compactions(family, fused):
    """Inductor-compiled one-token norms / MLP / rotary embedding (CPU): the same logits as
    the eager model over prefill chunks (not compiled) and decode steps (compiled) through
    compactions; one graph per function for all layers, no graph break."""
    import sys
    from pathlib import Path

    from torch._dynamo.utils import counters
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
    from memory_tiny_models import forward, tiny_model
    ref_model = use_scoring_attention(tiny_model(family, seed=11))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    if fused:
        fuse_projections(model)
    layers = model.config.num_hidden_layers
    assert compile_decode(model) == {"norms": 2 * layers + 1, "mlps": layers, "rotary": 1}
    assert compile_decode(model) == {"norms": 0, "mlps": 0, "rotary": 0}     # idempotent
    twin = copy.deepcopy(model)
    assert twin.model.norm.forward.__self__ is twin.model.norm         # rebound to the copy
    with pytest.raises(ValueError, match="CUDA graphs of its own"):
        compile_decode(model, mode="reduce-overhead")
    counters.clear()
    caches = [BoundedCache(build_policy(name, 48), m.config, max_chunk=32, decode_slack=4)
              for name in ("inf_mllm", "h2o") for m in (ref_model, model)]
    g = torch.Generator().manual_seed(3)
    for step in range(16):
        ids = torch.randint(0, 100, (1, 30 if step < 3 else 1), generator=g)
        for ref_cache, cache in (caches[:2], caches[2:]):
            ref = forward(ref_model, ids, ref_cache).logits
            got = forward(model, ids, cache).logits
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    assert all(c.describe()["compactions"] > 2 for c in caches)
    assert counters["stats"]["unique_graphs"] <= 3            # norm, MLP, rotary: once each
    assert not counters["graph_break"] and not FAILED
