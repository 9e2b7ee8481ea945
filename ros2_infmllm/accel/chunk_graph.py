"""Piecewise CUDA graphs of the owned chunk forward: frames and questions without launch cost.

Why: a 64-token question on a 7B model is about 12 ms of GPU work, but the owned chunk
forward (``llama_decode.decode_step``) launches some 40 kernels a layer from Python, so
the time to first token was the host's (issue 20: 33-48 ms against a 25 ms target), and
a Qwen2-VL frame's language tower was host-bound the same way. A whole chunk cannot be
one graph: the cache's update, the scores a policy asks for and the attention depend on
how many tokens the memory holds, which changes from chunk to chunk. Everything between
two attentions does not: it is row-wise over the chunk's tokens.

So a chunk runs as ``L + 1`` captured pieces around ``L`` eager attentions. Piece ``i``
finishes layer ``i - 1`` (o_proj, residual, norm, MLP) and starts layer ``i`` (residual,
norm, q/k/v, RoPE); the last piece ends with the closing norm. Between two pieces the
eager :func:`~.llama_decode.attend` runs the cache's own ``update`` (host bookkeeping,
pending compaction), the window scores and SDPA, exactly as the eager chunk forward
does. Pieces read and write fixed buffers of one padded row count; a chunk of ``t``
tokens takes the smallest size ``>= t``: its rows are copied in, the pad rows are
zeroed, and attention, cache and logits see the first ``t`` rows only (the pieces are
row-wise, so pad rows never reach real ones). A size's graphs are captured once, at the
session's warm-up (never in the middle of a question), and shared by every session of
the model.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .cuda_graph import no_collection
from .llama_decode import attend, finish_layer, final_norm, start_layer, text_config, \
    text_tower

#: padded row counts: questions and text frames (tens of tokens), a Qwen2-VL frame
#: (~220 tokens at 392 px), the fed-back closing turn (a few)
DEFAULT_SIZES = (8, 16, 32, 48, 64, 96, 128, 160, 192, 224, 256)
_MASKS_KEPT = 256          # causal masks kept by (rows, keys) before the store is cleared


@dataclass
class _Rows:
    """The fixed buffers of one padded row count ``size``."""

    size: int
    x: torch.Tensor       # [1, size, H]: the residual stream (embeddings in)
    cos: torch.Tensor     # [1, size, D]
    sin: torch.Tensor
    q: torch.Tensor       # [1, Hq, size, D]
    k: torch.Tensor       # [1, Hkv, size, D]
    v: torch.Tensor
    o: torch.Tensor       # [1, size, Hq * D]: attention output, before o_proj
    h: torch.Tensor       # [1, size, H]: after the closing norm

    @classmethod
    def empty(cls, size: int, model: nn.Module, dtype: torch.dtype, device: torch.device
              ) -> "_Rows":
        """Zeroed buffers of ``size`` rows for ``model``'s text tower."""
        attn = text_tower(model).layers[0].self_attn
        dim = attn.head_dim
        n_q, n_kv = attn.q_proj.out_features // dim, attn.k_proj.out_features // dim
        hidden = text_config(model).hidden_size

        def z(*shape):
            return torch.zeros(shape, dtype=dtype, device=device)
        return cls(size, z(1, size, hidden), z(1, size, dim), z(1, size, dim),
                   z(1, n_q, size, dim), z(1, n_kv, size, dim), z(1, n_kv, size, dim),
                   z(1, size, n_q * dim), z(1, size, hidden))


class ChunkGraphs:
    """The owned chunk forward of one model in captured pieces, per padded row count.

    Parameters
    ----------
    model : nn.Module
        A model with the owned decode step installed (``llama_decode``), fused or not.
    sizes : tuple of int
        Padded row counts to prepare; a longer chunk runs the eager chunk forward.
    capture : bool or None
        Capture CUDA graphs (None: when the model is on CUDA). Without, the pieces run
        eagerly on the same buffers (what the CPU tests check the padding with).
    """

    def __init__(self, model: nn.Module, sizes: tuple = DEFAULT_SIZES,
                 capture: Optional[bool] = None):
        """Allocate each size's buffers and capture its pieces (after one warm-up run)."""
        if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 2
                            for n in sizes):
            raise ValueError(f"sizes must be ints >= 2, got {sizes!r}")
        tower = text_tower(model)
        weight = tower.embed_tokens.weight
        self.device = weight.device
        self.capture = self.device.type == "cuda" if capture is None else bool(capture)
        if self.capture and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA model, got device {self.device}")
        # the tower's modules the pieces use, not the model (which holds these graphs)
        self.layers = list(tower.layers[:text_config(model).num_hidden_layers])
        self.norm = tower.norm
        self.sizes = tuple(sorted(set(sizes)))
        self.rows = {n: _Rows.empty(n, model, weight.dtype, self.device) for n in self.sizes}
        self.graphs: dict[int, list] = {}
        self.masks: dict = {}
        self.runs = 0
        self.padded_rows = 0
        self.capture_s = 0.0
        if self.capture:
            t0 = time.perf_counter()
            self._pool = None
            self._stream = torch.cuda.Stream(self.device)
            with torch.no_grad():
                for n in self.sizes:
                    self._capture(self.rows[n])
            torch.cuda.synchronize(self.device)
            self.capture_s = time.perf_counter() - t0

    def size_for(self, t: int) -> Optional[int]:
        """Return the smallest prepared row count that holds ``t`` rows, or None."""
        return next((n for n in self.sizes if n >= t), None)

    def _piece(self, rows: _Rows, i: int) -> None:
        """Finish layer ``i - 1`` and start layer ``i`` (or close) on ``rows``' buffers."""
        x, d = rows.x, None
        if i > 0:
            x, d = finish_layer(self.layers[i - 1], x, rows.o, None, F.linear)
        if i == len(self.layers):
            rows.h.copy_(final_norm(self.norm, x, d, None, rows.size))
            return
        x, q, k, v = start_layer(self.layers[i], x, d, rows.cos, rows.sin, None, F.linear)
        if x is not rows.x:
            rows.x.copy_(x)
        rows.q.copy_(q)
        rows.k.copy_(k)
        rows.v.copy_(v)

    def _capture(self, rows: _Rows) -> None:
        """Capture the ``L + 1`` pieces of ``rows.size`` rows into the shared pool."""
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):      # warm-up: libraries pick their kernels
            for i in range(len(self.layers) + 1):
                self._piece(rows, i)
        current.wait_stream(self._stream)
        graphs = []
        for i in range(len(self.layers) + 1):
            graph = torch.cuda.CUDAGraph()
            with no_collection(), torch.cuda.graph(graph, pool=self._pool,
                                                   stream=self._stream):
                self._piece(rows, i)
            if self._pool is None:
                self._pool = graph.pool()
            graphs.append(graph)
        self.graphs[rows.size] = graphs

    def _run_piece(self, rows: _Rows, i: int) -> None:
        graphs = self.graphs.get(rows.size)
        if graphs is not None:
            graphs[i].replay()
        else:
            self._piece(rows, i)

    def run(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Any,
            scores_here: bool, want_logits: bool) -> Optional[torch.Tensor]:
        """Run a ``[1, t, H]`` chunk ``x`` at RoPE tables ``cos`` / ``sin`` against ``cache``.

        Returns the closing norm's output ``[1, t, H]`` (a view of a buffer the next chunk
        overwrites), or None when no logits are wanted (the last piece is then skipped).
        """
        t = x.shape[1]
        rows = self.rows[self.size_for(t)]
        rows.x[:, :t].copy_(x)
        if t < rows.size:
            rows.x[:, t:].zero_()
        rows.cos[:, :t].copy_(cos)
        rows.sin[:, :t].copy_(sin)
        q, k, v = rows.q[:, :, :t], rows.k[:, :, :t], rows.v[:, :, :t]
        if len(self.masks) > _MASKS_KEPT:
            self.masks.clear()
        for i, layer in enumerate(self.layers):
            self._run_piece(rows, i)
            rows.o[:, :t].copy_(attend(cache, layer.self_attn, q, k, v, scores_here,
                                       self.masks))
        self.runs += 1
        self.padded_rows += rows.size - t
        if not want_logits:
            return None
        self._run_piece(rows, len(self.layers))
        return rows.h[:, :t]

    def stats(self) -> dict:
        """Return the sizes, graphs captured, chunks run, pad rows computed, capture seconds."""
        return {"chunk_sizes": list(self.sizes),
                "chunk_graphs": sum(len(g) for g in self.graphs.values()),
                "chunk_runs": self.runs, "chunk_padded_rows": self.padded_rows,
                "chunk_capture_s": round(self.capture_s, 3)}


def install_chunk_graphs(model: nn.Module, sizes: tuple = DEFAULT_SIZES,
                         capture: Optional[bool] = None) -> Optional[ChunkGraphs]:
    """Give ``model`` (with the owned forward and chunks on) its chunk graphs, once.

    Later calls return the graphs already there; the owned forward uses them for every
    chunk that fits a size. A capture that fails (a CUDA error, no memory left) leaves the
    model's chunks on the eager owned forward for good and returns None;
    :func:`chunk_graphs_failure` says why.
    """
    graphs = model.__dict__.get("_chunk_graphs")
    if graphs is not None or "_chunk_graphs_failed" in model.__dict__:
        return graphs
    if "_owned_decode_mode" not in model.__dict__ or not model.__dict__["_owned_chunks"]:
        raise ValueError("install the owned decode step with chunks=True first")
    try:
        graphs = ChunkGraphs(model, sizes, capture)
    except RuntimeError as exc:
        model.__dict__["_chunk_graphs_failed"] = f"{type(exc).__name__}: {exc}"[:300]
        return None
    model.__dict__["_chunk_graphs"] = graphs
    return graphs


def chunk_graphs(model: nn.Module) -> Optional[ChunkGraphs]:
    """Return the chunk graphs installed on ``model``, or None."""
    return model.__dict__.get("_chunk_graphs")


def chunk_graphs_failure(model: nn.Module) -> Optional[str]:
    """Why capturing ``model``'s chunk graphs failed (its chunks then run eagerly), or None."""
    return model.__dict__.get("_chunk_graphs_failed")


@contextlib.contextmanager
def chunk_graphs_off(model: nn.Module, off: bool = True) -> Iterator[None]:
    """Run ``model``'s chunks through the eager owned forward meanwhile (when ``off``).

    For side-by-side measurements in one run (``bench engine``): the graphs stay captured.
    """
    graphs = model.__dict__.pop("_chunk_graphs", None) if off else None
    try:
        yield
    finally:
        if graphs is not None:
            model.__dict__["_chunk_graphs"] = graphs
