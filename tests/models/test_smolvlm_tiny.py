"""Tiny random Idefics3 / SmolVLM checkpoints saved to disk and loaded as vision adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.memory import make_policy
from ros2_infmllm.models.base import Chunk, ModelError
from ros2_infmllm.models.registry import load_adapter
from ros2_infmllm.models.tiny import byte_tokenizer

EXTRA = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + \
    [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
IMAGE_TOKEN = 259       # "<image>" in the byte tokenizer
TILE = 64               # vision tile side: (64 / 8)**2 / 2**2 = 16 tokens per tile


def _config(model_type: str, vocab: int):
    from transformers import LlamaConfig
    text = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=4096, eos_token_id=263, bos_token_id=257,
                       pad_token_id=260, tie_word_embeddings=False)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=TILE, patch_size=8)
    if model_type == "idefics3":
        from transformers import Idefics3Config
        return Idefics3Config(text_config=text, vision_config=vision, scale_factor=2,
                              image_token_id=IMAGE_TOKEN, tie_word_embeddings=False)
    from transformers import SmolVLMConfig
    return SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=2,
                         image_token_id=IMAGE_TOKEN, tie_word_embeddings=False)


@pytest.fixture(scope="module", params=("idefics3", "smolvlm"))
def checkpoint(request, tmp_path_factory):
    """Save a seeded tiny Idefics3/SmolVLM + an offline byte tokenizer to a directory."""
    import transformers
    model_type = request.param
    tok = byte_tokenizer(EXTRA)
    tok.bos_token = "<|im_start|>"
    cls = {"idefics3": transformers.Idefics3ForConditionalGeneration,
           "smolvlm": transformers.SmolVLMForConditionalGeneration}[model_type]
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


def test_tiny_smolvlm_bounded_stream_answers(checkpoint):
    """Registry load from disk; 8 frames through a budget smaller than the stream; an answer."""
    model_type, _, path = checkpoint
    ad = load_adapter(str(path), device="cpu", dtype="float32", image_max_side=64)
    assert ad.family == "smolvlm"
    assert ad.frame_vision_tokens == 16 + 3           # one global tile + 3 marker tokens
    budget = 160
    s = StreamingSession(ad, make_policy("inf_mllm", budget=budget, n_sink=4, n_recent=48,
                                         window=8), max_chunk=256, evidence_k=3)
    stamps = [100.0 + 0.5 * i for i in range(8)]
    total = 0
    costs = set()
    for i, st in enumerate(stamps):
        r = s.ingest_frame(_frame(i, 40 + 7 * i, 56), st, "front")
        assert r.text.startswith("[cam front 00:01:")
        costs.add(r.tokens)
        total += r.tokens
        s.cache.compact()
        assert s.status().cache_tokens <= budget
    assert len(costs) == 1, "every frame must cost the same tokens whatever its size"
    assert total > budget
    ans = s.ask("What is in front?", max_new_tokens=5)
    assert ans.timings["new_tokens"] >= 1 and ans.text
    assert ans.evidence_stamps and set(ans.evidence_stamps) <= set(stamps)
    s.cache.compact()
    assert s.status().cache_tokens <= budget


@pytest.mark.parametrize("image_max_side", (64, 128))
def test_tiny_smolvlm_forward_matches_plain_transformers(checkpoint, image_max_side):
    """Budget >= tokens: chunked ingest through the bounded cache == one plain forward."""
    _, cls, path = checkpoint
    ad = load_adapter(str(path), device="cpu", dtype="float32", image_max_side=image_max_side)
    ref = cls.from_pretrained(str(path), local_files_only=True).eval()
    s = StreamingSession(ad, make_policy("inf_mllm", budget=1024, n_sink=4, n_recent=64,
                                         window=8), max_chunk=512)
    chunks = [ad.text_chunk("watch", "system"), ad.frame_chunk(_frame(1), 1.0, "a"),
              ad.frame_chunk(_frame(2, 64, 30), 2.0, "b"), ad.text_chunk("what?", "user")]
    if image_max_side == 128:                      # 2 x 2 tiles + global tile
        assert int((chunks[1].input_ids == IMAGE_TOKEN).sum()) == 5 * 16
    for i, c in enumerate(chunks):
        s.cache.begin_source(i, kind=c.kind)
        got = ad.forward(c, s.cache)
    assert s.cache.get_seq_length() == sum(c.n_tokens for c in chunks)
    frames = chunks[1:3]
    with torch.no_grad():
        want = ref(input_ids=torch.cat([c.input_ids for c in chunks], dim=1),
                   pixel_values=torch.cat([c.extra["pixel_values"] for c in frames], dim=1),
                   pixel_attention_mask=torch.cat([c.extra["pixel_attention_mask"]
                                                   for c in frames], dim=1),
                   use_cache=False).logits[0, -1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the image really reaches the model: other pixels change the logits
    other = Chunk(chunks[1].input_ids, "frame",
                  extra=dict(chunks[1].extra, pixel_values=-chunks[1].extra["pixel_values"]))
    s.cache.reset()
    a = ad.forward(chunks[1], s.cache)
    s.cache.reset()
    b = ad.forward(other, s.cache)
    assert not torch.allclose(a, b, atol=1e-4)


def test_tiny_smolvlm_missing_files_name_the_path(tmp_path, checkpoint):
    """Missing directory, or a config without weights: ModelError naming the path."""
    with pytest.raises(ModelError, match="no_such_vlm"):
        load_adapter(str(tmp_path / "no_such_vlm"), device="cpu")
    _, _, path = checkpoint
    bare = tmp_path / "weights_missing"
    bare.mkdir()
    (bare / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ModelError, match="weights_missing.*no weights"):
        load_adapter(str(bare), device="cpu")
