"""Tiny random LLaVA / LLaVA-OneVision / LLaVA-NeXT-Video checkpoints loaded as adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.memory import make_policy
from ros2_infmllm.models.base import Chunk, ModelError
from ros2_infmllm.models.registry import load_adapter
from ros2_infmllm.models.tiny import byte_tokenizer

IMAGE_TOKEN, VIDEO_TOKEN = 259, 261     # "<image>" and the extra "<video>" of the tokenizer
VICUNA = ("{% for m in messages %}{% if m['role'] != 'system' %}{{ m['role'].upper() + ': ' }}"
          "{% endif %}{{ m['content'] + ' ' }}{% endfor %}"
          "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
#: model_type -> (frame input key, placeholder id, tokens per frame, chat format)
EXPECT = {"llava": ("pixel_values", IMAGE_TOKEN, 16, "vicuna"),
          "llava_onevision": ("pixel_values_videos", VIDEO_TOKEN, 2 * 2 + 1, "chatml"),
          "llava_next_video": ("pixel_values_videos", VIDEO_TOKEN, 2 * 2, "vicuna")}


def _config(model_type: str, vocab: int):
    import transformers as tf
    vis = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=2, image_size=32, patch_size=8)
    text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                eos_token_id=256, bos_token_id=257, pad_token_id=260,
                tie_word_embeddings=False)
    if model_type == "llava":
        return tf.LlavaConfig(vision_config=tf.CLIPVisionConfig(projection_dim=32, **vis),
                              text_config=tf.LlamaConfig(**text), image_token_index=IMAGE_TOKEN,
                              image_seq_length=16)
    if model_type == "llava_onevision":
        return tf.LlavaOnevisionConfig(vision_config=tf.SiglipVisionConfig(**vis),
                                       text_config=tf.Qwen2Config(**text),
                                       image_token_index=IMAGE_TOKEN,
                                       video_token_index=VIDEO_TOKEN,
                                       image_grid_pinpoints=[[32, 32]])
    return tf.LlavaNextVideoConfig(vision_config=tf.CLIPVisionConfig(projection_dim=32, **vis),
                                   text_config=tf.LlamaConfig(**text),
                                   image_token_index=IMAGE_TOKEN, video_token_index=VIDEO_TOKEN,
                                   image_grid_pinpoints=[[32, 32]])


@pytest.fixture(scope="module", params=tuple(EXPECT))
def checkpoint(request, tmp_path_factory):
    """Save a seeded tiny model of one LLaVA variant + an offline byte tokenizer."""
    import transformers as tf
    model_type = request.param
    tok = byte_tokenizer(["<video>"])
    tok.bos_token = "<|im_start|>"
    if EXPECT[model_type][3] == "vicuna":
        tok.chat_template = VICUNA
    cls = {"llava": tf.LlavaForConditionalGeneration,
           "llava_onevision": tf.LlavaOnevisionForConditionalGeneration,
           "llava_next_video": tf.LlavaNextVideoForConditionalGeneration}[model_type]
    torch.manual_seed(0)
    model = cls(_config(model_type, len(tok)))
    path = tmp_path_factory.mktemp(f"tiny_{model_type}")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model_type, cls, path


def _frame(i: int, h: int = 40, w: int = 56) -> np.ndarray:
    img = np.full((h, w, 3), 30 * i % 256, dtype=np.uint8)
    img[5:20, 5 + 3 * i:20 + 3 * i, i % 3] = 250
    return img


def test_tiny_llava_bounded_stream_answers(checkpoint):
    """Registry load from disk; 8 frames through a budget smaller than the stream; an answer."""
    model_type, _, path = checkpoint
    key, placeholder, n, chat = EXPECT[model_type]
    ad = load_adapter(str(path), device="cpu", dtype="float32")
    assert ad.family == "llava" and ad.chat == chat
    assert ad.describe()["frame_vision_tokens"] == n + 1
    budget = 120
    s = StreamingSession(ad, make_policy("inf_mllm", budget=budget, n_sink=4, n_recent=40,
                                         window=8), max_chunk=256, evidence_k=3)
    stamps = [200.0 + 0.5 * i for i in range(8)]
    total = 0
    for i, st in enumerate(stamps):
        chunk = ad.frame_chunk(_frame(i, 30 + 9 * i, 56), st, "left")
        assert int((chunk.input_ids == placeholder).sum()) == n and key in chunk.extra
        r = s.ingest_frame(_frame(i, 30 + 9 * i, 56), st, "left")
        assert r.text.startswith("[cam left 00:03:") and r.tokens == chunk.n_tokens
        total += r.tokens
        s.cache.compact()
        assert s.status().cache_tokens <= budget
    assert total > budget
    ans = s.ask("What is on the left?", max_new_tokens=5)
    assert ans.timings["new_tokens"] >= 1 and ans.text
    assert ans.evidence_stamps and set(ans.evidence_stamps) <= set(stamps)
    s.cache.compact()
    assert s.status().cache_tokens <= budget


def test_tiny_llava_forward_matches_plain_transformers(checkpoint):
    """Budget >= tokens: chunked ingest through the bounded cache == one plain forward."""
    model_type, cls, path = checkpoint
    key = EXPECT[model_type][0]
    ad = load_adapter(str(path), device="cpu", dtype="float32")
    ref = cls.from_pretrained(str(path), local_files_only=True).eval()
    s = StreamingSession(ad, make_policy("inf_mllm", budget=1024, n_sink=4, n_recent=64,
                                         window=8), max_chunk=512)
    chunks = [ad.text_chunk("watch", "system"), ad.frame_chunk(_frame(1), 1.0, "a"),
              ad.frame_chunk(_frame(2, 64, 30), 2.0, "b"), ad.text_chunk("what?", "user"),
              ad.answer_prefix()]
    for i, c in enumerate(chunks):
        s.cache.begin_source(i, kind=c.kind)
        got = ad.forward(c, s.cache)
    assert s.cache.get_seq_length() == sum(c.n_tokens for c in chunks)
    pixels = torch.cat([c.extra[key] for c in chunks[1:3]], dim=0)
    with torch.no_grad():
        want = ref(input_ids=torch.cat([c.input_ids for c in chunks], dim=1),
                   use_cache=False, **{key: pixels}).logits[0, -1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the frame really reaches the model: other pixels change the logits
    other = Chunk(chunks[1].input_ids, "frame", extra={key: -chunks[1].extra[key]})
    s.cache.reset()
    a = ad.forward(chunks[1], s.cache)
    s.cache.reset()
    b = ad.forward(other, s.cache)
    assert not torch.allclose(a, b, atol=1e-4)


def test_tiny_llava_missing_files_name_the_path(tmp_path, checkpoint):
    """Missing directory, a config without weights, or an unsupported tower: ModelError."""
    with pytest.raises(ModelError, match="no_such_llava"):
        load_adapter(str(tmp_path / "no_such_llava"), device="cpu")
    _, _, path = checkpoint
    bare = tmp_path / "weights_missing"
    bare.mkdir()
    (bare / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ModelError, match="weights_missing.*no weights"):
        load_adapter(str(bare), device="cpu")
    odd = tmp_path / "odd_tower"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "llava", "vision_config": '
                                     '{"model_type": "pixtral"}}')
    with pytest.raises(ModelError, match="odd_tower.*pixtral"):
        load_adapter(str(odd), device="cpu")
