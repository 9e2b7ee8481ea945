"""torch.compile (inductor) of the pure-tensor parts of a one-token decode step.

Why: at batch 1 a 7B decode step replayed from a CUDA graph is ~1300 kernels, ~1075 of them
small elementwise kernels (RMSNorm alone is ~7 launches: cast, pow, mean, add, rsqrt, mul,
cast, mul) that each cost ~1.6 us plus a gap, against ~3.8 ms of weight reads (see
docs/performance.md). :func:`compile_decode` hands the parts of a step that are pure
tensor functions to inductor, which fuses each into one or two kernels:

- every RMSNorm module (its class's own ``forward`` is compiled, so the formula is the
  model's own),
- every SiLU-gated MLP (``down(silu(gate(x)) * up(x))``, gate and up fused into one GEMV
  by ``fused_linear.fuse_projections`` or not; the GEMVs stay cuBLAS calls, silu x up is
  one kernel),
- the rotary-embedding module (cos / sin of the step's position; 1-D ``default`` RoPE).

Only one-token calls (one row of hidden states: a decode step) take the compiled code;
prefill chunks run the original ``forward``. So each compiled function sees one static
shape (``dynamic=False``, ``fullgraph=True``: no graph breaks, no recompiles per chunk
length) and is compiled once for all layers (the weights are inputs of the compiled graph,
not constants). Attention, the RoPE application inside attention, the cache update and the
bounded cache's host bookkeeping are not touched and stay eager Python, so the CUDA-graph
runner (``cuda_graph.py``) captures the compiled kernels like any other and repeats the
bookkeeping itself. Compilation happens at the first one-token call, which must not be
inside a graph capture (the runner's first visit of a length runs eagerly); a function
whose compilation fails stays eager (``FAILED`` says why). Modules are
changed in place by an instance ``forward`` (state-dict keys, parameters and
``copy.deepcopy`` stay as they were); for inference (no gradients).
"""
from __future__ import annotations

import math
import types
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ros2_infmllm.accel.fused_linear import FusedPart

_SILU = ("SiLU", "SiLUActivation")
_COMPILED: dict = {}       # (function, mode) -> compiled function whose first call worked
FAILED: dict = {}          # (function, mode) -> why its compilation failed (stays eager)


def call_compiled(fn: Callable, mode: Optional[str], *args):
    """Return ``fn(*args)`` computed by its compiled version.

    A first call that fails to compile leaves ``fn`` eager for the rest of the process
    and says why in ``FAILED``.
    """
    key = (fn, mode)
    compiled = _COMPILED.get(key)
    if compiled is not None:
        return compiled(*args)
    if key in FAILED:
        return fn(*args)
    compiled = torch.compile(fn, dynamic=False, fullgraph=True, mode=mode)
    try:
        out = compiled(*args)
    except Exception as exc:                       # noqa: BLE001 - fall back, say why
        FAILED[key] = f"{fn.__qualname__}: {type(exc).__name__}: {exc}"[:400]
        return fn(*args)
    _COMPILED[key] = compiled
    return out


def _one_token(x: torch.Tensor) -> bool:
    return x.dim() >= 2 and math.prod(x.shape[:-1]) == 1


def _gated_mlp(x, w_in, b_in, w_up, b_up, w_down, b_down):
    """``down(silu(gate(x)) * up(x))``; ``w_up`` None: ``w_in`` holds gate then up rows."""
    h = F.linear(x, w_in, b_in)
    if w_up is None:
        gate, up = h.chunk(2, dim=-1)
    else:
        gate, up = h, F.linear(x, w_up, b_up)
    return F.linear(F.silu(gate) * up, w_down, b_down)


def gated_mlp_weights(mlp: nn.Module) -> Optional[tuple]:
    """Tensors of ``_gated_mlp`` for ``mlp`` (plain or fused gate/up), None if neither."""
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    if type(down) is not nn.Linear:
        return None
    if type(gate) is nn.Linear and type(up) is nn.Linear:
        return gate.weight, gate.bias, up.weight, up.bias, down.weight, down.bias
    if isinstance(gate, FusedPart) and isinstance(up, FusedPart) and gate.group is up.group \
            and (gate.index, up.index) == (0, 1) and len(gate.group.sizes) == 2 \
            and gate.group.sizes[0] == gate.group.sizes[1]:
        return gate.group.weight, gate.group.bias, None, None, down.weight, down.bias
    return None


def _norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    fwd = type(self).forward
    if _one_token(x):
        return call_compiled(fwd, self._decode_compile_mode, self, x)
    return fwd(self, x)


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    weights = gated_mlp_weights(self) if _one_token(x) else None
    if weights is None:
        return type(self).forward(self, x)
    return call_compiled(_gated_mlp, self._decode_compile_mode, x, *weights)


def _rotary_forward(self, x: torch.Tensor, position_ids: torch.Tensor):
    fwd = type(self).forward
    if position_ids.dim() == 2 and position_ids.numel() == 1:
        return call_compiled(fwd, self._decode_compile_mode, self, x, position_ids)
    return fwd(self, x, position_ids)


def _kind(module: nn.Module) -> Optional[str]:
    name = type(module).__name__
    if name.endswith("RMSNorm") and isinstance(getattr(module, "weight", None), nn.Parameter) \
            and hasattr(module, "variance_epsilon"):
        return "norms"
    if name.endswith("MLP") and type(getattr(module, "act_fn", None)).__name__ in _SILU \
            and all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj")) \
            and gated_mlp_weights(module) is not None:
        return "mlps"
    if name.endswith("RotaryEmbedding") and getattr(module, "rope_type", None) == "default" \
            and hasattr(module, "inv_freq"):
        return "rotary"
    return None


_FORWARDS = {"norms": _norm_forward, "mlps": _mlp_forward, "rotary": _rotary_forward}


def compile_decode(model: nn.Module, mode: Optional[str] = None) -> dict:
    """Route the one-token calls of ``model``'s norms, MLPs and rotary embedding to inductor.

    ``mode``: ``torch.compile`` mode (None = default, or ``"max-autotune-no-cudagraphs"``;
    modes that make their own CUDA graphs would conflict with the graph runner). Returns
    the number of modules changed by kind (``norms``, ``mlps``, ``rotary``); idempotent
    (modules already changed are not counted again). Nothing is compiled until the first
    one-token forward.
    """
    if mode is not None and "cudagraphs" not in mode and mode != "default":
        raise ValueError(f"mode {mode!r} would capture CUDA graphs of its own; use the "
                         "default or a '-no-cudagraphs' mode")
    mode = None if mode == "default" else mode
    counts = {"norms": 0, "mlps": 0, "rotary": 0}
    for module in model.modules():
        kind = _kind(module)
        if kind is None or "_decode_compile_mode" in module.__dict__:
            continue
        module._decode_compile_mode = mode
        module.forward = types.MethodType(_FORWARDS[kind], module)
        counts[kind] += 1
    return counts
