"""Tiny random Llama / Qwen2 / GPT-NeoX checkpoints saved to disk and loaded as adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.memory import make_policy
from ros2_infmllm.memory.rope import Rotation
from ros2_infmllm.models.base import ModelError
from ros2_infmllm.models.registry import load_adapter
from ros2_infmllm.models.tiny import byte_tokenizer

from plain_reference import bounded_and_plain_logits

FAMILIES = ("llama", "qwen2", "gpt_neox")


def _config(family: str, vocab: int):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=2048,
                  eos_token_id=258, bos_token_id=256, tie_word_embeddings=False)
    if family == "llama":
        from transformers import LlamaConfig
        return LlamaConfig(num_key_value_heads=2, pad_token_id=260, **common)
    if family == "qwen2":
        from transformers import Qwen2Config
        return Qwen2Config(num_key_value_heads=2, pad_token_id=260, **common)
    from transformers import GPTNeoXConfig
    return GPTNeoXConfig(rotary_pct=0.25, **common)


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    """Save a seeded tiny model of one family + the offline byte tokenizer to a directory."""
    from transformers import AutoModelForCausalLM
    family = request.param
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(family, len(tok)))
    path = tmp_path_factory.mktemp(f"tiny_{family}")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return family, path


def _frame(i: int) -> np.ndarray:
    img = np.full((40, 56, 3), 30 * i % 256, dtype=np.uint8)
    img[5:20, 5 + 3 * i:20 + 3 * i, i % 3] = 250
    return img


def test_tiny_family_loads_ingests_and_answers(checkpoint):
    """The registry dispatches on model_type; a bounded session ingests 3 frames, answers."""
    family, path = checkpoint
    ad = load_adapter(str(path), device="cpu")
    assert ad.family == family and ad.rotation is Rotation.ROTATE_HALF
    assert ad.describe()["parameters"] > 0
    s = StreamingSession(ad, make_policy("inf_mllm", budget=96, n_sink=4, n_recent=32,
                                         window=8), evidence_k=2)
    for i in range(3):
        r = s.ingest_frame(_frame(i), 10.0 + i, "cam")
        assert r.tokens > 0 and r.text.startswith("[cam")
    ans = s.ask("What changed?", max_new_tokens=4)
    assert isinstance(ans.text, str) and ans.timings["new_tokens"] <= 4
    assert set(ans.evidence_stamps) <= {10.0, 11.0, 12.0}
    assert s.status().cache_tokens <= 96 + 64


def test_tiny_family_forward_matches_plain_transformers(checkpoint):
    """With budget >= tokens, two chunks through the bounded cache equal one plain forward."""
    _family, path = checkpoint
    got, want = bounded_and_plain_logits(path)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_tiny_missing_path_names_it(tmp_path):
    """A directory that does not exist raises ModelError naming the path."""
    missing = tmp_path / "no_such_model"
    with pytest.raises(ModelError, match="no_such_model"):
        load_adapter(str(missing), device="cpu")
