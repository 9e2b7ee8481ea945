"""Tiny random-weight models built from configs, shared by the memory tests."""

from __future__ import annotations

import torch
from transformers import (GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration)

from ros2_infmllm.memory.rope import Rotation
from ros2_infmllm.models.base import cache_kwarg

VOCAB = 128
#: each family's RoPE kind by model_type, as its adapter in models/ declares it
ROTATION = {"llama": Rotation.ROTATE_HALF, "qwen2": Rotation.ROTATE_HALF,
            "gpt_neox": Rotation.ROTATE_HALF, "qwen2_vl": Rotation.MROPE}
_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=4096)


def tiny_config(family: str, **rope):
    """Config of a 2-layer, 64-wide model of ``family`` (GQA 4:2 where the family has it)."""
    if family == "llama":
        return LlamaConfig(num_key_value_heads=2, **_COMMON, **rope)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **_COMMON, **rope)
    if family == "gpt_neox":
        return GPTNeoXConfig(rotary_pct=0.25, **_COMMON)
    if family == "qwen2_vl":
        text = dict(_COMMON, vocab_size=VOCAB + 8, num_key_value_heads=2, bos_token_id=None,
                    eos_token_id=None,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "mrope_section": [2, 3, 3]})
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=VOCAB + 1,
                             video_token_id=VOCAB + 2, vision_start_token_id=VOCAB + 3,
                             bos_token_id=None, eos_token_id=None, pad_token_id=None)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0, **rope) -> torch.nn.Module:
    """Build a random-weight tiny model in eval mode (float32, CPU)."""
    torch.manual_seed(seed)
    cfg = tiny_config(family, **rope)
    cls = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "gpt_neox": GPTNeoXForCausalLM,
           "qwen2_vl": Qwen2VLForConditionalGeneration}[family]
    return cls(cfg).eval()


def forward(model, ids: torch.Tensor, cache, **kwargs):
    """``model(ids, <cache kwarg>=cache)`` for every supported transformers version."""
    with torch.no_grad():
        return model(input_ids=ids, use_cache=True, **{cache_kwarg(model): cache}, **kwargs)


def assert_same_memory(a, b, tol: float = 1e-5) -> None:
    """Assert two bounded caches hold the same memory.

    Counters and metadata exactly; keys, values and policy scores within ``tol``.
    """
    for la, lb in zip(a.layers, b.layers):
        assert (la.length, la.arrived, la.scored_len, la.unscored, la.pending) == \
            (lb.length, lb.arrived, lb.scored_len, lb.unscored, lb.pending)
        la.flush()
        lb.flush()
        assert torch.equal(la.meta[..., :la.length], lb.meta[..., :lb.length])
        torch.testing.assert_close(la.keys, lb.keys, rtol=tol, atol=tol)
        torch.testing.assert_close(la.values, lb.values, rtol=tol, atol=tol)
        torch.testing.assert_close(la.scores[:, :la.length], lb.scores[:, :lb.length],
                                   rtol=tol, atol=tol)
