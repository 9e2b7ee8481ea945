"""Shared pieces of the benchmarks: model shapes, random-weight models, clocks, bandwidth."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch

# real model shapes (random weights: speed does not depend on weight values)
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 max_position_embeddings=4096, rope_theta=10000.0)
TINY_LLAMA = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192)
QWEN2_VL_2B_TEXT = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                        max_position_embeddings=32768, bos_token_id=None, eos_token_id=None,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                         "mrope_section": [16, 24, 24]})
QWEN2_VL_2B_VISION = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16,
                          mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                          temporal_patch_size=2, in_channels=3)
TINY_VL_TEXT = dict(vocab_size=151936, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=32768, bos_token_id=None, eos_token_id=None,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                     "mrope_section": [2, 3, 3]})
TINY_VL_VISION = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      in_channels=3)
VL_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                 vision_end_token_id=151653)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
POLICY_ORDER = ("full", "window", "streaming_llm", "h2o", "snapkv", "inf_mllm")


def pick_device(device: str) -> str:
    """``auto`` -> cuda when present; validate explicit names."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: device {device!r} asked for but CUDA is not available")
    return device


def llama_model(shape: str, device: str, dtype: torch.dtype, seed: int = 0):
    """Random-weight LlamaForCausalLM of ``shape`` (``7b`` or ``tiny``) on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM
    spec = {"7b": LLAMA2_7B, "tiny": TINY_LLAMA}.get(shape)
    if spec is None:
        raise SystemExit(f"error: unknown model shape {shape!r} (7b | tiny)")
    torch.manual_seed(seed)
    cfg = LlamaConfig(**spec)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval()


def vl_model(shape: str, device: str, dtype: torch.dtype, seed: int = 0):
    """Random-weight Qwen2-VL of ``shape`` (``2b``: Qwen2-VL-2B, or ``tiny``)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    text, vision = {"2b": (QWEN2_VL_2B_TEXT, QWEN2_VL_2B_VISION),
                    "tiny": (TINY_VL_TEXT, TINY_VL_VISION)}.get(shape, (None, None))
    if text is None:
        raise SystemExit(f"error: unknown VLM shape {shape!r} (2b | tiny)")
    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(text_config=dict(text), vision_config=dict(vision), bos_token_id=None,
                        eos_token_id=None, pad_token_id=None, **VL_TOKENS)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(cfg).to(dtype)
    return model.eval()


def n_params(model) -> int:
    """Parameter count."""
    return sum(p.numel() for p in model.parameters())


def weight_bytes(model) -> int:
    """Bytes of every parameter (what one decode step must read at least once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def weight_bytes_read(model) -> int:
    """Weight bytes one decode step reads: every parameter but the input embedding table.

    The embedding lookup reads one row, not the table (unless it is tied to the output
    projection, which reads it all).
    """
    total = weight_bytes(model)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None and (
            out is None or out.weight is not emb.weight):
        total -= emb.weight.numel() * emb.weight.element_size()
    return total


def sync(device: str) -> None:
    """Wait for the device (host clocks then measure finished work)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    """Run ``fn`` and return (result, seconds), synchronising the device around it."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def percentile(values: list, q: float) -> Optional[float]:
    """Return the nearest-rank ``q``-th percentile of ``values`` (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return float(s[k])


def copy_bandwidth(device: str, mib: int = 1024, reps: int = 20) -> dict:
    """Achieved device-to-device copy bandwidth (bytes read + written per second), median."""
    n = mib * 2 ** 20
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for i in range(reps + 3):
        _, dt = timed(lambda: dst.copy_(src), device)
        if i >= 3:
            times.append(dt)
    med = percentile(times, 50)
    return {"bytes_per_copy": 2 * n, "median_s": med, "gb_per_s": 2 * n / med / 1e9}


def device_label(device: str) -> str:
    """Human name of the device."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_mem(device: str) -> Optional[int]:
    """Peak allocated device bytes since the last reset (None on CPU)."""
    if str(device).startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return None


def reset_peak(device: str) -> None:
    """Start a new peak-memory window."""
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def meta(task: str, device: str, argv: list, **extra) -> dict:
    """Run metadata (versions, device, command line)."""
    import os
    import platform
    import sys

    import transformers

    from ros2_infmllm.eval.common import lock_state, package_versions
    info = {"task": task, "device": device_label(device), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "versions": package_versions(), "lock": lock_state(),
            "command": "infmllm-eval bench " + " ".join(argv),
            "argv0": os.path.basename(sys.argv[0]),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    info.update(extra)
    return info
