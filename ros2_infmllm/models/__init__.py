"""Model adapters (one file per family), the registry, the frame describer, the default."""

from .base import Chunk, ModelAdapter, ModelError
from .registry import load_adapter

__all__ = ["Chunk", "ModelAdapter", "ModelError", "load_adapter"]
