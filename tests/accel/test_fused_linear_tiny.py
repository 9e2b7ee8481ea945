"""Fused q/k/v and gate/up projections (accel/fused_linear.py): logits unchanged (tiny, CPU)."""
from __future__ import annotations

import copy

import pytest
import torch

from ros2_infmllm.accel.fused_linear import FusedPart, fuse_projections
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiny_fused_projections_leave_logits_unchanged(family):
    """q/k/v and gate/up fused into one weight each: same logits (prefill chunks, decode
    steps, compactions) on a bounded cache, no extra parameters, every part served once."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
    from memory_tiny_models import forward, tiny_model
    ref_model = use_scoring_attention(tiny_model(family, seed=11))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    n_params = sum(p.numel() for p in model.parameters())
    assert fuse_projections(model) == 2 * model.config.num_hidden_layers
    assert fuse_projections(model) == 0                      # idempotent
    assert sum(p.numel() for p in model.parameters()) == n_params
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.k_proj, FusedPart)
    torch.testing.assert_close(attn.k_proj.weight, ref_model.model.layers[0].self_attn
                               .k_proj.weight, rtol=0, atol=0)
    calls = []
    real = torch.nn.functional.linear
    try:
        torch.nn.functional.linear = lambda *a, **k: calls.append(1) or real(*a, **k)
        caches = [BoundedCache(build_policy("inf_mllm", 48), m.config, max_chunk=32,
                               decode_slack=4) for m in (ref_model, model)]
        g = torch.Generator().manual_seed(3)
        for step in range(14):
            ids = torch.randint(0, 100, (1, 30 if step < 3 else 1), generator=g)
            calls.clear()
            ref = forward(ref_model, ids, caches[0]).logits
            n_ref = len(calls)
            calls.clear()
            got = forward(model, ids, caches[1]).logits
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
            # per layer 7 projections -> 4 (qkv, o, gate-up, down); lm_head unchanged
            assert n_ref - len(calls) == 3 * model.config.num_hidden_layers
    finally:
        torch.nn.functional.linear = real
    assert caches[0].describe()["compactions"] == caches[1].describe()["compactions"] > 0
    mlp = model.model.layers[0].mlp
    x = torch.randn(1, 3, model.config.hidden_size)
    ref_mlp = ref_model.model.layers[0].mlp
    torch.testing.assert_close(mlp.up_proj(x), ref_mlp.up_proj(x))   # out of order: own slice
    torch.testing.assert_close(mlp.gate_proj(x), ref_mlp.gate_proj(x))
