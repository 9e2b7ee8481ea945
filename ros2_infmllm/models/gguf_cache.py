"""Dequantised copies of GGUF weights, written once at set-up so that a load takes seconds.

Why: transformers reads a GGUF by dequantising every tensor and rebuilding the tokenizer
from the file's vocabulary, every time (about 45 s for the 0.5B model and 15 s for the
135M model on two CPU cores, most of a node's configure). ``python -m ros2_infmllm.models
convert smollm2-135m qwen2.5-0.5b`` (run by ``setup.sh``) does that once and saves the
result as an ordinary transformers checkpoint (float32 safetensors, the tokenizer with its
chat template) in ``$ROS2_INFMLLM_CACHE/models/converted/``, after checking that the saved
copy reloads to the same tensors and token ids. :func:`load_gguf` then reads that folder
when it was made from a GGUF of the same name and size (its sha256 is recorded beside it
too), and the GGUF itself otherwise, so a missing or stale copy only costs time. The
tensors are the GGUF loader's own float32 values, so a model loaded either way is the same
to the bit, in any dtype.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .base import ModelError
from .loading import load_checkpoint
from .packaged import cache_dir, sha256_of

#: written beside the checkpoint; bump when the folder's layout changes
FORMAT = 1
SOURCE_FILE = "gguf_source.json"
PROBE_TEXT = "[cam front 12:03:04.5] red box on the left, ArUco marker 17; dim light."


def converted_dir(gguf: Path) -> Path:
    """Folder of ``gguf``'s dequantised copy (it may not exist)."""
    return cache_dir() / "converted" / Path(gguf).stem


def _source_record(gguf: Path, sha256: str) -> dict:
    return {"format": FORMAT, "gguf": gguf.name, "size": gguf.stat().st_size,
            "sha256": sha256}


def usable_copy(gguf: Path) -> Path | None:
    """Return the converted folder of ``gguf`` if it was made from a file of this name/size."""
    folder = converted_dir(gguf)
    try:
        rec = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if (rec.get("format") != FORMAT or rec.get("gguf") != gguf.name
            or rec.get("size") != gguf.stat().st_size):
        return None
    return folder


def _read_gguf(gguf: Path, dtype: torch.dtype):
    return load_checkpoint(gguf.parent, "cpu", dtype, gguf.name, gguf_file=gguf.name)[:2]


def _read_folder(folder: Path, dtype: torch.dtype):
    return load_checkpoint(folder, "cpu", dtype, f"converted GGUF {folder.name}")[:2]


def load_gguf(gguf: Path, device: str, dtype: torch.dtype):
    """Load a GGUF causal LM and its tokenizer offline: from its converted copy if usable."""
    folder = usable_copy(gguf)
    model, tok = _read_folder(folder, dtype) if folder else _read_gguf(gguf, dtype)
    return model.to(device), tok


def _same(model_a, tok_a, model_b, tok_b) -> str:
    """Empty when both loads hold the same tensors and tokenise alike, else what differs."""
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if sa.keys() != sb.keys():
        return f"tensor names differ: {sorted(set(sa) ^ set(sb))[:4]}"
    for k in sa:
        if not torch.equal(sa[k], sb[k]):
            return f"tensor {k} differs"
    if tok_a(PROBE_TEXT)["input_ids"] != tok_b(PROBE_TEXT)["input_ids"]:
        return "the tokenizers split the probe text differently"
    if getattr(tok_a, "chat_template", None) != getattr(tok_b, "chat_template", None):
        return "the chat templates differ"
    return ""


def convert(gguf: Path) -> Path:
    """Write ``gguf``'s dequantised copy (once) and return its folder.

    The copy is written to a temporary folder, reloaded and compared with the GGUF load
    (every tensor bit for bit, the probe text's token ids, the chat template), then
    renamed into place; a copy that differs raises ModelError and is not kept.
    """
    gguf = Path(gguf)
    folder = converted_dir(gguf)
    if usable_copy(gguf):
        return folder
    sha = sha256_of(gguf)
    model, tok = _read_gguf(gguf, torch.float32)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # the GGUF loader leaves its quantizer attached, though every tensor is already a
        # dequantised float: detach it so that the copy is a plain checkpoint
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        copy, copy_tok = _read_folder(tmp, torch.float32)
        diff = _same(model, tok, copy, copy_tok)
        if diff:
            raise ModelError(f"the converted copy of {gguf.name} does not match the GGUF "
                             f"load ({diff}); loads keep reading the GGUF")
        (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(gguf, sha), indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
