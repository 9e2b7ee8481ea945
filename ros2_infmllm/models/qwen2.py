"""Qwen2 text LMs from a local directory; frames arrive as describer lines."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import ModelAdapter
from .loading import load_text_lm


def load(path: Path, device: str, dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Load a qwen2 checkpoint directory as a text adapter (registry entry point)."""
    return load_text_lm(path, device, dtype, image_max_side, family="qwen2")
