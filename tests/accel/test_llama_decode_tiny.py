"""Owned one-token decode step (accel/llama_decode.py) == transformers' forward (tiny, CPU)."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg
from ros2_infmllm.accel.compiled_decode import FAILED
from ros2_infmllm.accel.fused_linear import fuse_projections
from ros2_infmllm.accel.llama_decode import install_owned_decode, unsupported

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
from memory_tiny_models import (ROTATION, assert_same_memory, forward,  # noqa: E402
                                tiny_model)


@pytest.mark.parametrize("family,fused", [("llama", True), ("llama", False), ("qwen2", True)])
def test_owned_decode_equals_transformers_forward_through_compactions_tiny(family, fused):
    """Prefill chunks (class forward) then one-token steps (owned step, compiled by inductor
    on this CPU): the same logits and the same kept memory as the plain model, for
    inf_mllm (carried window scores), h2o (scores every step, handed over by the owned
    step) and streaming_llm, through several compactions; positions implicit and
    explicit (as the graph runner passes them)."""
    from torch._dynamo.utils import counters
    ref_model = use_scoring_attention(tiny_model(family, seed=13))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    if fused:
        fuse_projections(model)
    cls_forward = type(model).forward
    assert unsupported(model) is None
    assert install_owned_decode(model) and install_owned_decode(model)     # idempotent
    assert type(model).forward is cls_forward                 # the class is not patched
    assert "forward" not in ref_model.__dict__                # other instances untouched
    assert cache_kwarg(model) == cache_kwarg(ref_model)       # signature kept
    counters.clear()
    names = ("inf_mllm", "h2o", "streaming_llm")
    caches = {n: [BoundedCache(build_policy(n, 48), m.config, max_chunk=32, decode_slack=4)
                  for m in (ref_model, model)] for n in names}
    kw = cache_kwarg(model)
    g = torch.Generator().manual_seed(3)
    decode_steps = 0
    for step in range(20):
        ids = torch.randint(0, 100, (1, 30 if step < 3 else 1), generator=g)
        for ref_cache, cache in caches.values():
            if step % 2:
                ref = forward(ref_model, ids, ref_cache).logits
                got = forward(model, ids, cache).logits
            else:
                pos = torch.tensor([[ref_cache.next_position()]])
                with torch.no_grad():
                    ref = ref_model(input_ids=ids, position_ids=pos, use_cache=True,
                                    **{kw: ref_cache}).logits
                    got = model(input_ids=ids, position_ids=pos.clone(), use_cache=True,
                                **{kw: cache}).logits
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"step {step}")
            decode_steps += ids.shape[1] == 1
        for ref_cache, cache in caches.values():
            assert_same_memory(ref_cache, cache)
    assert model.owned_decode_steps == decode_steps == 17 * len(names)   # chunks: class fwd
    assert all(c.describe()["compactions"] > 2 for pair in caches.values() for c in pair)
    assert not counters["graph_break"] and not FAILED
    # cos/sin, add + norm (x2: the first layer has no add), RoPE, add + norm, silu x up
    assert counters["stats"]["unique_graphs"] <= 6
    twin = copy.deepcopy(model)
    assert twin.forward.__self__ is twin                     # rebound to the copy


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_owned_chunks_equal_transformers_forward_through_compactions_tiny(family):
    """With ``chunks=True`` frames and questions of varying lengths take the owned forward:
    the same logits (all rows, the last row, none) and the same kept memory as the plain
    model through compactions; the compiled graphs stay those of the one-token step (a
    chunk's strided last row once recompiled the closing norm per chunk length)."""
    from torch._dynamo.utils import counters
    ref_model = use_scoring_attention(tiny_model(family, seed=17))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    fuse_projections(model)
    assert install_owned_decode(model) and install_owned_decode(model, chunks=True)
    counters.clear()
    names = ("inf_mllm", "h2o", "streaming_llm")
    caches = {n: [BoundedCache(build_policy(n, 48), m.config, max_chunk=32, decode_slack=4)
                  for m in (ref_model, model)] for n in names}
    g = torch.Generator().manual_seed(5)
    keeps = (0, 1, torch.arange(0), 1, 0, 1)
    lengths = (30, 17, 9, 1, 23, 1, 5, 1, 12, 1, 1, 7)
    for step, t in enumerate(lengths):
        ids = torch.randint(0, 100, (1, t), generator=g)
        keep = keeps[step % len(keeps)] if t > 1 else 1
        for ref_cache, cache in caches.values():
            ref = forward(ref_model, ids, ref_cache, logits_to_keep=keep).logits
            got = forward(model, ids, cache, logits_to_keep=keep).logits
            assert got.shape == ref.shape, f"step {step}"
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"step {step}")
        for ref_cache, cache in caches.values():
            assert_same_memory(ref_cache, cache)
    n_chunks = sum(t > 1 for t in lengths)
    assert model.owned_chunks == n_chunks * len(names)
    assert model.owned_decode_steps == (len(lengths) - n_chunks) * len(names)
    assert all(c.describe()["compactions"] > 2 for pair in caches.values() for c in pair)
    assert not counters["graph_break"] and not FAILED
    assert counters["stats"]["unique_graphs"] <= 6


def test_owned_decode_leaves_other_calls_and_models_alone_tiny():
    """Grad mode, masks, chunks and non-bounded caches go to the class forward; models
    outside the family are refused (install returns False, nothing changed)."""
    from transformers import DynamicCache
    neox = tiny_model("gpt_neox")
    assert unsupported(neox) is not None and install_owned_decode(neox) is False
    assert "forward" not in neox.__dict__
    with pytest.raises(ValueError, match="CUDA graphs of its own"):
        install_owned_decode(tiny_model("llama"), mode="reduce-overhead")
    model = use_scoring_attention(tiny_model("llama", seed=2))
    ref = copy.deepcopy(model)
    install_owned_decode(model)
    kw = cache_kwarg(model)
    ids = torch.randint(0, 100, (1, 1))
    with torch.no_grad():
        a = model(input_ids=ids, use_cache=True, **{kw: DynamicCache(config=model.config)})
        b = ref(input_ids=ids, use_cache=True, **{kw: DynamicCache(config=ref.config)})
    torch.testing.assert_close(a.logits, b.logits)
    cache = BoundedCache(build_policy("streaming_llm", 48), model.config, max_chunk=32)
    model(input_ids=ids, use_cache=True, **{kw: cache})                   # grad enabled
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones(1, 2, dtype=torch.long),
              use_cache=True, **{kw: cache})
    assert model.owned_decode_steps == 0


def _vlm(family: str) -> torch.nn.Module:
    """Tiny random-weight VLMs whose language tower is a Llama / Qwen2 / M-RoPE Qwen2."""
    import transformers as tf
    if family == "qwen2_vl":
        return tiny_model("qwen2_vl", seed=23)
    torch.manual_seed(23)
    text = tf.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=4096, tie_word_embeddings=False)
    vis = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=2, image_size=32, patch_size=8)
    if family == "llava":
        cfg = tf.LlavaConfig(vision_config=tf.CLIPVisionConfig(projection_dim=32, **vis),
                             text_config=text, image_token_index=120, image_seq_length=16)
        return tf.LlavaForConditionalGeneration(cfg).eval()
    cfg = tf.SmolVLMConfig(text_config=text, vision_config=vis, scale_factor=2,
                           image_token_id=120, tie_word_embeddings=False)
    return tf.SmolVLMForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize("family", ["llava", "smolvlm", "qwen2_vl"])
def test_owned_forward_serves_vlm_language_towers_tiny(family):
    """The language tower of LLaVA, SmolVLM and Qwen2-VL takes the owned step and chunks:
    text chunks and one-token steps give the class forward's logits and kept memory
    through compactions (Qwen2-VL text at 1-D positions, its three rows equal)."""
    ref_model = use_scoring_attention(_vlm(family))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    assert unsupported(model) is None
    fuse_projections(model)
    assert install_owned_decode(model, chunks=True)
    rotation = ROTATION.get(family, ROTATION["llama"])
    caches = [BoundedCache(build_policy("inf_mllm", 48), m.config, max_chunk=32,
                           decode_slack=4, rotation=rotation) for m in (ref_model, model)]
    g = torch.Generator().manual_seed(7)
    lengths = (30, 1, 1, 17, 1, 9, 1, 1, 1, 1, 1, 23, 1)
    for step, t in enumerate(lengths):
        ids = torch.randint(0, 100, (1, t), generator=g)
        ref = forward(ref_model, ids, caches[0], logits_to_keep=1).logits
        got = forward(model, ids, caches[1], logits_to_keep=1).logits
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"step {step}")
        assert_same_memory(*caches)
    assert model.owned_chunks == sum(t > 1 for t in lengths)
    assert model.owned_decode_steps == sum(t == 1 for t in lengths)
    assert caches[1].describe()["compactions"] > 2


def test_owned_forward_takes_qwen2_vl_frames_with_mrope_positions_tiny():
    """Qwen2-VL frames (input embeddings with the image features in place, 3-row M-RoPE
    positions given to the cache too) through the owned chunk forward: the class forward's
    logits and kept memory (positions re-packed per row) through compactions. Swapping
    two M-RoPE sections' rows in the owned tables makes this fail."""
    from ros2_infmllm.models.qwen2_vl import frame_positions
    ref_model = use_scoring_attention(tiny_model("qwen2_vl", seed=29))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    fuse_projections(model)
    assert install_owned_decode(model, chunks=True)
    caches = [BoundedCache(build_policy(n, 64), m.config, max_chunk=32, decode_slack=4,
                           rotation=ROTATION["qwen2_vl"])
              for n in ("inf_mllm", "h2o") for m in (ref_model, model)]
    g = torch.Generator().manual_seed(11)
    kw = cache_kwarg(model)
    rel = frame_positions(3, (4, 4))                       # 3 text tokens, a 4 x 4 image, end
    for step in range(9):
        for ref_cache, cache in (caches[:2], caches[2:]):
            if step % 3 == 2:                                # text between frames
                ids = torch.randint(0, 100, (1, 5), generator=g)
                ref = forward(ref_model, ids, ref_cache, logits_to_keep=1).logits
                got = forward(model, ids, cache, logits_to_keep=1).logits
            else:
                embeds = torch.randn((1, rel.shape[1], 64), generator=g)
                outs = []
                for m, c in ((ref_model, ref_cache), (model, cache)):
                    pos = (rel + c.next_position()).unsqueeze(1)
                    c.set_next_positions(pos)
                    with torch.no_grad():
                        outs.append(m(inputs_embeds=embeds.clone(), position_ids=pos,
                                      use_cache=True, logits_to_keep=1, **{kw: c}).logits)
                ref, got = outs
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"step {step}")
            assert_same_memory(ref_cache, cache)
    assert model.owned_chunks == 2 * 9
    assert all(c.describe()["compactions"] > 2 for c in caches)
