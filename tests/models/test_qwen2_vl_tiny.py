"""Tiny random Qwen2-VL checkpoints saved to disk and driven through the adapter.

Each checkpoint is a Qwen2VLForConditionalGeneration built from a small config (random
weights) plus an offline byte tokenizer carrying the Qwen vision markers, saved with
``save_pretrained`` so ``load_adapter(path)`` runs the real offline loading path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.memory import BoundedCache, make_policy
from ros2_infmllm.memory.rope import Rotation
from ros2_infmllm.models.base import Chunk, ModelError
from ros2_infmllm.models.qwen2_vl import (CLIP_MEAN, CLIP_STD, IMAGE_PAD, VISION_END,
                                          VISION_START, Qwen2VLAdapter, VisionPreprocess,
                                          frame_positions)
from ros2_infmllm.models.registry import load_adapter
from ros2_infmllm.models.tiny import byte_tokenizer

SIDE = 112              # image_max_side of the tests: 8x8 patches, 4x4 = 16 image tokens
PREPROCESSOR = {"image_processor_type": "Qwen2VLImageProcessor", "do_resize": True,
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
                "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280, "patch_size": 14,
                "temporal_patch_size": 2, "merge_size": 2}


def _save_checkpoint(path, layers: int, kv_heads: int, seed: int = 0):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    tok = byte_tokenizer([VISION_START, VISION_END, IMAGE_PAD, "<|video_pad|>"])
    ids = {t: tok.convert_tokens_to_ids(t)
           for t in (VISION_START, VISION_END, IMAGE_PAD, "<|video_pad|>")}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=kv_heads,
                max_position_embeddings=4096, eos_token_id=258, bos_token_id=256,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 3, 3]})
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision,
                        image_token_id=ids[IMAGE_PAD], video_token_id=ids["<|video_pad|>"],
                        vision_start_token_id=ids[VISION_START],
                        vision_end_token_id=ids[VISION_END], eos_token_id=258,
                        bos_token_id=256, pad_token_id=260, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """2 layers, 2 KV heads."""
    return _save_checkpoint(tmp_path_factory.mktemp("tiny_qwen2_vl"), layers=2, kv_heads=2)


@pytest.fixture(scope="module")
def single_layer_checkpoint(tmp_path_factory):
    """1 layer, 1 KV head: the cached keys/values of kept tokens depend only on their own
    embedding and position, and every head keeps the same tokens, so a fresh forward of
    only the kept tokens is the exact reference after a compaction."""
    return _save_checkpoint(tmp_path_factory.mktemp("tiny_qwen2_vl_1l"), layers=1, kv_heads=1,
                            seed=1)


def _frame(i: int, h: int = 90, w: int = 120) -> np.ndarray:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[10:40, (7 * i) % (w - 30):(7 * i) % (w - 30) + 30, i % 3] = 240
    return img


def _stream(adapter: Qwen2VLAdapter, cache: BoundedCache, chunks: list[Chunk]) -> torch.Tensor:
    logits = None
    for sid, chunk in enumerate(chunks):
        cache.begin_source(sid, stamp=float(sid), kind=chunk.kind)
        logits = adapter.forward(chunk, cache)
    return logits


def _question(adapter: Qwen2VLAdapter, text: str) -> Chunk:
    q, prefix = adapter.text_chunk(text, "user"), adapter.answer_prefix()
    return Chunk(torch.cat([q.input_ids, prefix.input_ids], dim=1), "user")


# ---- (1) load from disk through the registry ------------------------------------------------
def test_tiny_qwen2_vl_loads_through_registry(checkpoint):
    ad = load_adapter(str(checkpoint), device="cpu", dtype="float32", image_max_side=SIDE)
    assert isinstance(ad, Qwen2VLAdapter) and ad.family == "qwen2_vl"
    assert ad.rotation is Rotation.MROPE            # what the engine gives the bounded cache
    assert ad.model.config._attn_implementation == "infmllm_sdpa"
    d = ad.describe()
    assert d["parameters"] > 0 and d["image_tokens_per_frame"] == 16 and d["frame_side_px"] == SIDE
    assert ad.image_token_id == ad.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    assert 258 in ad.eos_token_ids                     # <|im_end|> closes an answer
    chunk = ad.frame_chunk(_frame(0), 12.5, "front")
    tag = "[cam front 00:00:12.5]"
    n_tag = len(ad.tokenizer(tag, add_special_tokens=False)["input_ids"])
    ids = chunk.input_ids[0].tolist()
    assert chunk.text == tag and chunk.n_tokens == n_tag + 2 + 16 == ad.frame_tokens(tag)
    assert ids[n_tag] == ad.vision_start_id and ids[-1] == ad.vision_end_id
    assert ids[n_tag + 1:-1] == [ad.image_token_id] * 16
    assert chunk.extra["pixel_values"].shape == (64, 3 * 2 * 14 * 14)
    assert chunk.extra["image_grid_thw"].tolist() == [[1, 8, 8]]
    # a camera name cannot smuggle a vision marker into the stream
    sneaky = ad.frame_chunk(_frame(0), 1.0, VISION_END)
    assert sneaky.input_ids[0].tolist().count(ad.vision_end_id) == 1


def test_tiny_qwen2_vl_frame_positions_layout():
    pos = frame_positions(3, (2, 3))
    assert pos.tolist() == [[0, 1, 2, 3, 3, 3, 3, 3, 3, 6],
                            [0, 1, 2, 3, 3, 3, 4, 4, 4, 6],
                            [0, 1, 2, 3, 4, 5, 3, 4, 5, 6]]


# ---- (2) bounded streaming through the engine -------------------------------------------------
def test_tiny_qwen2_vl_stream_stays_bounded_and_answers(checkpoint):
    ad = load_adapter(str(checkpoint), device="cpu", dtype="float32", image_max_side=SIDE)
    budget = 160
    s = StreamingSession(ad, make_policy("inf_mllm", budget=budget, n_sink=4, n_recent=48,
                                         window=8, kernel=3), max_chunk=256, evidence_k=2)
    stamps, sizes = [], [(90, 120), (240, 320), (50, 50), (300, 100)]
    for i in range(12):
        h, w = sizes[i % len(sizes)]
        r = s.ingest_frame(_frame(i, h, w), 100.0 + i, "front")
        stamps.append(100.0 + i)
        assert r.tokens == ad.frame_tokens("[cam front 00:01:40.0]")    # same cost any size
        assert r.cache_tokens <= budget
        s.cache.compact()
        layer = s.cache.layers[0]
        layer.flush()
        assert layer.length <= budget
        top = int(layer.pos[:, :, :layer.length].max()) + 1
        assert top == s.cache.next_position()
        assert top <= budget + r.tokens            # re-positioned, not the stream position
    streamed = s.cache.layers[0].arrived
    assert streamed > 3 * budget
    ans = s.ask("What colour is the box?", max_new_tokens=4)
    assert isinstance(ans.text, str) and ans.timings["new_tokens"] <= 4
    assert 1 <= len(ans.evidence_stamps) <= 2
    assert set(ans.evidence_stamps) <= set(stamps)
    d = s.status()
    assert d.cache_tokens <= budget and d.frames_ingested == 12
    live = {m.stamp for m in d.memory.sources.values()
            if m.kind == "frame" and m.tokens_in_memory > 0}
    assert set(ans.evidence_stamps) <= live


# ---- (3) budget >= all tokens: equal to the plain transformers forward -------------------------
def test_tiny_qwen2_vl_stream_matches_plain_forward(checkpoint):
    from transformers import Qwen2VLForConditionalGeneration
    ad = load_adapter(str(checkpoint), device="cpu", dtype="float32", image_max_side=SIDE)
    chunks = [ad.text_chunk("watch", "system"), ad.frame_chunk(_frame(1), 1.0, "a"),
              ad.frame_chunk(_frame(2, 200, 150), 2.0, "b"), _question(ad, "what now?")]
    cache = BoundedCache(make_policy("inf_mllm", budget=512, n_sink=4, n_recent=64, window=8),
                         ad.model.config, max_chunk=256, rotation=ad.rotation)
    got = _stream(ad, cache, chunks)
    ids = torch.cat([c.input_ids for c in chunks], dim=1)
    frames = [c for c in chunks if c.kind == "frame"]
    pix = torch.cat([c.extra["pixel_values"] for c in frames])
    grid = torch.cat([c.extra["image_grid_thw"] for c in frames])
    ref = Qwen2VLForConditionalGeneration.from_pretrained(str(checkpoint),
                                                          local_files_only=True).eval()
    mm = (ids == ad.image_token_id).int()
    want_pos, _ = ref.model.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=grid)
    layer = cache.layers[0]
    layer.flush()
    n = ids.shape[1]
    assert layer.length == n
    for h in range(layer.n_heads):                 # the adapter assigned the model's positions
        assert torch.equal(layer.pos[:, h, :n], want_pos[:, 0])
    assert cache.next_position() == int(want_pos.max()) + 1
    with torch.no_grad():
        want = ref(input_ids=ids, position_ids=want_pos, pixel_values=pix,
                   image_grid_thw=grid).logits[0, -1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ---- (4) after a compaction: next forward == fresh forward of the kept tokens ----------------
def test_tiny_qwen2_vl_compaction_equals_fresh_forward_of_kept_tokens(single_layer_checkpoint):
    ad = load_adapter(str(single_layer_checkpoint), device="cpu", dtype="float32",
                      image_max_side=SIDE)
    captured: list[torch.Tensor] = []

    def grab(_module, _args, kwargs):
        captured.append(kwargs["inputs_embeds"].detach().clone())

    lm = ad.model.model.language_model
    hook = lm.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        budget = 72
        cache = BoundedCache(make_policy("inf_mllm", budget=budget, n_sink=4, n_recent=16,
                                         window=8, kernel=3), ad.model.config,
                             max_chunk=256, rotation=ad.rotation)
        chunks = [ad.text_chunk("go", "system")] + \
            [ad.frame_chunk(_frame(i), float(i), "c") for i in range(4)]
        _stream(ad, cache, chunks)
        cache.compact()
        layer = cache.layers[0]
        layer.flush()
        assert layer.length == budget and layer.evicted > 0
        kept = layer.arrival[0, :budget]
        kept_pos = layer.pos[:, 0, :budget]
        assert int(kept_pos.max()) < budget + 40 < int(kept.max())    # re-positioned
        top = int(kept_pos.max()) + 1
        assert cache.next_position() == top
        q = _question(ad, "which frame?")
        cache.begin_source(99, kind="question")
        got = ad.forward(q, cache)
    finally:
        hook.remove()
    stream_embeds = torch.cat(captured[:-1], dim=1)[0]          # every streamed token
    q_embeds = captured[-1][0]
    embeds = torch.cat([stream_embeds[kept], q_embeds]).unsqueeze(0)
    q_pos = torch.arange(top, top + q.n_tokens).expand(3, -1)
    pos = torch.cat([kept_pos, q_pos], dim=1).unsqueeze(1)
    ad.model.config._attn_implementation = "sdpa"        # plain attention for the reference
    try:
        with torch.no_grad():
            hidden = lm(inputs_embeds=embeds, position_ids=pos, use_cache=False)
            want = ad.model.lm_head(hidden.last_hidden_state[0, -1])
    finally:
        ad.model.config._attn_implementation = "infmllm_sdpa"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ---- (5) missing files ------------------------------------------------------------------------
def test_tiny_qwen2_vl_missing_files_name_the_path(tmp_path, checkpoint):
    with pytest.raises(ModelError, match="no_such_qwen"):
        load_adapter(str(tmp_path / "no_such_qwen"), device="cpu")
    bare = tmp_path / "config_only_qwen"
    bare.mkdir()
    (bare / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(ModelError, match=r"config_only_qwen.*weights.*tokenizer"):
        load_adapter(str(bare), device="cpu")


# ---- (6) preprocessing == transformers' Qwen2-VL image processor ------------------------------
def test_tiny_qwen2_vl_preprocessing_matches_transformers_processor():
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import \
            Qwen2VLImageProcessorPil as Processor
    except ImportError:
        from transformers import Qwen2VLImageProcessor as Processor
    params = {k: v for k, v in PREPROCESSOR.items() if k != "image_processor_type"}
    proc = Processor(**params)                            # built from a dict: no network
    pre = VisionPreprocess(image_mean=tuple(PREPROCESSOR["image_mean"]),
                           image_std=tuple(PREPROCESSOR["image_std"]))
    rng = np.random.default_rng(5)
    for h, w in [(112, 112), (56, 168), (84, 140)]:     # sides already multiples of 28
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = proc(images=img, return_tensors="np")
        got, thw = pre.patchify(img)
        assert [list(thw)] == want["image_grid_thw"].tolist()
        np.testing.assert_allclose(got.numpy(), want["pixel_values"], atol=1e-5, rtol=0)
    # any frame size is resized to the one square side of image_max_side
    got, thw = pre.pixel_values(rng.integers(0, 256, (37, 301, 3), dtype=np.uint8),
                                pre.frame_side(130))
    assert thw == (1, 8, 8) and got.shape == (64, pre.patch_dim)
    assert pre.frame_side(384) == 364 and pre.frame_side(20) == 56
    with pytest.raises(ValueError, match="divisible by 28"):
        pre.patchify(np.zeros((30, 56, 3), dtype=np.uint8))
