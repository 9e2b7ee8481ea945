"""Reading checkpoints offline: the one path by which every loader gets a model and tokenizer.

:func:`load_checkpoint` forces the hub offline, checks the folder (config.json, weights,
tokenizer) or the GGUF file, reads the tokenizer and the model in ``dtype`` without remote
code, puts the model on ``device`` in eval mode and turns every read failure into a
:class:`~ros2_infmllm.models.base.ModelError` naming the path. :func:`load_text_lm` wraps
the result for text-only families whose chat turns are ChatML, :func:`text_adapter` the
weights of a named text model (models/registry.py). Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

from .base import ModelAdapter, ModelError, chat_markers
from .spec import ModelSpec

#: files that hold a checkpoint's weights / its tokenizer (one of each must exist)
WEIGHT_GLOBS = ("*.safetensors", "*.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


class Checkpoint(NamedTuple):
    """A loaded checkpoint: model (on its device, eval mode), tokenizer, config.json."""

    model: Any
    tokenizer: Any
    config: dict[str, Any]


def offline() -> None:
    """Force the Hugging Face hub offline for this process (never a download)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def local_model_dir(model: str) -> Path:
    """Return a local directory for ``model`` (a path, or an id in the local HF cache).

    Raises :class:`ModelError` naming where it looked and how to provide the weights.
    """
    offline()
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"model directory {p} has no config.json: put a transformers "
                             f"checkpoint there (config.json, weights, tokenizer/processor)")
        return p
    if model.startswith(("/", ".", "~")) or os.sep in model and model.count("/") != 1:
        raise ModelError(f"model path {p} does not exist: put a transformers checkpoint "
                         f"there, or pass a Hugging Face id already in the local cache")
    try:
        from huggingface_hub import snapshot_download
        path = snapshot_download(model, local_files_only=True)
    except Exception as exc:     # noqa: BLE001 - any failure means: not in the local cache
        from huggingface_hub.constants import HF_HUB_CACHE
        raise ModelError(
            f"model {model!r} is not in the local Hugging Face cache ({HF_HUB_CACHE}) and is "
            f"not a directory; nothing is downloaded at run time. Provide it on a machine "
            f"with network: `huggingface-cli download {model}` (then copy the cache dir), or "
            f"pass a local directory holding the checkpoint ({type(exc).__name__})") from exc
    return Path(path)


def read_json(path: Path) -> dict[str, Any]:
    """Return the JSON object in ``path``, or ``{}`` when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _missing_files(p: Path) -> list[str]:
    """List what a checkpoint directory lacks of config.json, weights and tokenizer."""
    missing = []
    if not (p / "config.json").is_file():
        missing.append("config.json")
    if not any(any(p.glob(g)) for g in WEIGHT_GLOBS):
        missing.append("weights (*.safetensors or *.bin)")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model)")
    return missing


def _model_class(config: dict[str, Any], classes: Mapping[str, str] | None, p: Path,
                 family: str) -> Any:
    """Return the transformers class of ``config``'s model_type (causal LM if unmapped)."""
    import transformers
    if classes is None:
        return transformers.AutoModelForCausalLM
    model_type = str(config.get("model_type", ""))
    if model_type not in classes:
        raise ModelError(f"{p}: model_type {model_type!r} is not a {family} model "
                         f"(expected one of {', '.join(sorted(classes))})")
    cls = getattr(transformers, classes[model_type], None)
    if cls is None:
        raise ModelError(f"this transformers ({transformers.__version__}) has no "
                         f"{classes[model_type]} for {p}")
    return cls


def load_checkpoint(path: Path | str, device: str, dtype: torch.dtype, family: str,
                    classes: Mapping[str, str] | None = None,
                    gguf_file: str | None = None) -> Checkpoint:
    """Load a checkpoint folder (or ``gguf_file`` inside it) offline.

    ``classes`` maps the model_types the family accepts to transformers class names (None:
    any causal LM); ``family`` names the checkpoint in messages. Raises
    :class:`ModelError` naming ``path`` for missing files or a failed read.
    """
    offline()
    p = Path(path)
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    config: dict[str, Any] = {}
    if gguf_file is not None:
        try:
            import gguf  # noqa: F401 - transformers needs it to read the file
        except ImportError as exc:
            raise ModelError(f"reading {gguf_file} needs the gguf package: "
                             f"`pip install gguf`") from exc
        kwargs["gguf_file"] = gguf_file
        cls = _model_class(config, None, p, family)
    else:
        missing = _missing_files(p)
        if missing:
            raise ModelError(f"{family} checkpoint directory {p} has no "
                             f"{', no '.join(missing)}: put a complete transformers "
                             f"checkpoint there; nothing is downloaded")
        config = read_json(p / "config.json")
        cls = _model_class(config, classes, p, family)
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(p), **kwargs)
        model = cls.from_pretrained(str(p), dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot load the {family} checkpoint in {p}: "
                         f"{type(exc).__name__}: {exc}") from exc
    return Checkpoint(model.to(device).eval(), tok, config)


def load_text_lm(path: Path | str, device: str, dtype: torch.dtype, image_max_side: int = 384,
                 family: str = "llama") -> ModelAdapter:
    """Load a text-only causal LM folder as a :class:`ModelAdapter` (ChatML turns).

    Llama, Qwen2 and GPT-NeoX checkpoints differ only in weights and tokenizer, so each
    family module is a thin call to this.
    """
    p = Path(path)
    model, tok, _ = load_checkpoint(p, device, dtype, family)
    return ModelAdapter(model, tok, f"{family} ({p.name})", image_max_side=image_max_side,
                        family=family)


def text_adapter(weights: Checkpoint, name: str, spec: ModelSpec, device: str,
                 dtype: torch.dtype, image_max_side: int = 384) -> ModelAdapter:
    """Wrap a named text LM's weights (the registry's default adapter).

    Frames reach it as describer lines; its turns are the tokenizer's own template's where
    the spec says so. ``device`` and ``dtype`` are already the weights'.
    """
    markers = chat_markers(weights.tokenizer) if spec.template_turns else None
    return ModelAdapter(weights.model, weights.tokenizer,
                        f"{name} ({spec.summary} + OpenCV describer)",
                        image_max_side=image_max_side, markers=markers, family=spec.family)
