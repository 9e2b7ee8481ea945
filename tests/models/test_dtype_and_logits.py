"""The CPU dtype that ``auto`` picks, and frame prefills that skip the LM head (tiny models)."""

import pytest
import torch

from ros2_infmllm.memory import BoundedCache, make_policy
from ros2_infmllm.models.base import Chunk, cpu_has_bf16, resolve_dtype
from ros2_infmllm.models.registry import load_adapter


def test_auto_on_cpu_is_bfloat16_exactly_where_it_is_native():
    want = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert resolve_dtype("auto", "cpu") == want
    gpu_bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    assert resolve_dtype("auto", "cuda") == (torch.bfloat16 if gpu_bf16 else torch.float16)
    assert resolve_dtype("float32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("float8", "cpu")


def test_tiny_test_model_stays_float32_under_auto():
    ad = load_adapter("tiny-test", device="cpu")
    assert next(ad.model.parameters()).dtype == torch.float32
    ad16 = load_adapter("tiny-test", device="cpu", dtype="bfloat16")
    assert next(ad16.model.parameters()).dtype == torch.bfloat16


def test_forward_without_logits_fills_the_cache_the_same_and_returns_none():
    """``logits=False`` only drops the LM head: the cached keys and values are identical."""
    ad = load_adapter("tiny-test", device="cpu")
    ids = ad.encode("[cam front 00:00:01.0] red box on the left, dark.\n")
    caches = []
    for logits in (True, False):
        cache = BoundedCache(make_policy("inf_mllm", budget=256, n_sink=4, n_recent=32,
                                         window=8), ad.model.config)
        cache.begin_source(0, kind="frame")
        out = ad.forward(Chunk(ids, "frame"), cache, logits=logits)
        assert (out is None) == (not logits)
        if logits:
            assert out.shape == (ad.model.config.vocab_size,)
        caches.append(cache)
    for a, b in zip(*(c.layers for c in caches)):
        assert a.kept_length() == b.kept_length() > 0
        torch.testing.assert_close(a.keys, b.keys, atol=0, rtol=0)
        torch.testing.assert_close(a.values, b.values, atol=0, rtol=0)
