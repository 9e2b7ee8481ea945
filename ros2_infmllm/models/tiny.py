"""``tiny-test``: a 2-layer Llama with seeded random weights and an offline byte tokenizer.

For tests and for wiring the node without real weights: it answers nonsense, fast, and
uses exactly the code path of the real text models (frame describer, bounded cache,
scoring attention). Nothing is read from disk or the hub. Its answers never end on an
end-of-text token (random weights would emit one at an arbitrary step): they run to
``max_new_tokens``, so tests that need a long answer (queue, cancel) get one.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import ModelAdapter
from .loading import Checkpoint
from .spec import ModelSpec

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<pad>"]


def byte_tokenizer(extra_special: list[str] | None = None) -> Any:
    """Build a byte-level BPE tokenizer (256 byte tokens, no merges) built in code.

    Ids 0..255 are the bytes; the special tokens follow (``<|endoftext|>`` = 256,
    ``<|im_start|>`` = 257, ``<|im_end|>`` = 258, ``<image>`` = 259, ``<pad>`` = 260,
    then ``extra_special``). Wrapped in ``PreTrainedTokenizerFast`` so processors accept it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # order the 256 byte symbols by the byte they stand for (GPT-2 byte-to-unicode map)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_to_char = {b: chr(c) for b, c in zip(bs, cs)}
    vocab = {byte_to_char[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    specials = SPECIAL_TOKENS + list(extra_special or [])
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token=None)
    # no word cache: with use_regex=False a whole frame line is one "word", unique by its
    # timestamp, and BPE would cache ~3 KB for each of its first 10,000 lines (the wrapper
    # rebuilds the model, so this is set after wrapping)
    fast.backend_tokenizer.model = models.BPE(vocab=vocab, merges=[], cache_capacity=0)
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


def tiny_llama(vocab_size: int, seed: int = 0, layers: int = 2) -> Any:
    """Build a tiny LlamaForCausalLM from a config with seeded random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, eos_token_id=258, bos_token_id=256,
                      pad_token_id=260, tie_word_embeddings=False)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model


def load_tiny(device: str, dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Load the ``tiny-test`` adapter: tiny random Llama + byte tokenizer + frame describer."""
    tok = byte_tokenizer()
    model = tiny_llama(len(tok)).to(device=device, dtype=dtype)
    adapter = ModelAdapter(model, tok, "tiny-test", image_max_side=image_max_side)
    adapter.eos_token_ids = set()
    return adapter


def adapter(weights: Checkpoint | None, name: str, spec: ModelSpec, device: str,
            dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Registry entry point of ``tiny-test``: no weights to read, the model is built here."""
    return load_tiny(device, dtype, image_max_side)
