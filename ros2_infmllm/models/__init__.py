"""Model adapters (one file per family), the registry of models, the frame describer."""

from .base import Chunk, ModelAdapter, ModelError
from .registry import load_adapter

__all__ = ["Chunk", "ModelAdapter", "ModelError", "load_adapter"]
