"""Shared loader for text-only causal LMs in a local transformers checkpoint directory.

Llama, Qwen2 and GPT-NeoX checkpoints differ only in weights and tokenizer: the base
:class:`ModelAdapter` (ChatML turns, frame describer lines) fits them all, so each family
module is a thin call to :func:`load_text_lm`. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import ModelAdapter, ModelError, offline


def load_text_lm(path: Path | str, device: str, dtype: torch.dtype, image_max_side: int = 384,
                 family: str = "llama") -> ModelAdapter:
    """Load model + tokenizer from ``path`` offline and wrap them in a :class:`ModelAdapter`.

    Raises :class:`ModelError` naming ``path`` when the checkpoint cannot be read.
    """
    offline()
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ModelError(f"model directory {p} has no config.json: put a {family} "
                         f"transformers checkpoint there (config.json, weights, tokenizer)")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True,
                                            trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True,
                                                     trust_remote_code=False, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the {family} checkpoint in {p}: "
                         f"{type(exc).__name__}: {exc}") from exc
    model = model.to(device).eval()
    adapter = ModelAdapter(model, tok, f"{family} ({p.name})", image_max_side=image_max_side)
    adapter.family = family
    return adapter
