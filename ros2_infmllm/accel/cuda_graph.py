"""CUDA-graph decode runner for the bounded cache (optional fast path on cuda).

Why: at batch 1 a 7B decode step is ~300 small kernels; launched from Python the GPU idles
between them (RECIPES.md: eager transformers reaches 0.06 of the HBM roofline). The bounded
cache keeps fixed, preallocated buffers, so a decode step at kept length ``L`` always
writes slot ``L`` and attends over ``L + 1`` keys of the same buffers: one CUDA graph per
length ``L`` is valid for every later step at that length. Between two compactions the
length cycles through ``budget .. budget + decode_slack``, so after one cycle every
ordinary step is a graph replay.

What the replay cannot do is the cache's host-side bookkeeping (its Python integers and
metadata segments). ``BoundedCache.book_replayed_step`` repeats exactly what
``BoundedCache.update`` does on the host for a one-token step with implicit positions,
including leaving the
layers pending when the step reaches ``budget + decode_slack`` (a one-token step needs
no new window scores while the scores of the last scored chunk cover the older tokens;
H2O's every-step scores are computed inside the graph). When every layer is pending,
:meth:`GraphDecodeRunner.step` first runs the cache's batched compaction eagerly (a few
kernels over all layers, no host synchronisation) and then replays the graph of the
compacted length, so in steady state no step runs a whole eager forward. Steps that ask
for new scores (evidence, or a pending step whose older tokens were never scored) run
eagerly (``cache.mark()`` state is kept as ``update`` keeps it). The ``full`` policy
grows and reallocates, so it never repeats a length and always runs eagerly. A graph
capture error switches every runner of the process to eager for good
(``runner.disabled`` says why).
"""
from __future__ import annotations

import contextlib
import gc
from typing import Any, Iterator, Optional

import torch

from ..models.base import cache_kwarg

_BROKEN: list[str] = []          # a capture failed in this process: later runners stay eager


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off while a CUDA graph is captured.

    A collection inside a capture may free an unreachable object that owns another CUDA
    graph; destroying a graph is not permitted while a stream captures, and invalidates
    the capture (seen on the H100: "operation not permitted when stream is capturing").
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def capture_failure() -> Optional[str]:
    """Why a graph capture failed earlier in this process (later runners stay eager), or None."""
    return _BROKEN[0] if _BROKEN else None


def graph_signature(cache: Any) -> Optional[tuple]:
    """Key of ``cache``'s state if a graph may serve its next decode step, else None.

    None when the step must run eagerly: no budget, evidence scores or explicit
    positions asked for, layers pending or out of step, the buffers would
    grow, or the step leaves a window-mode policy pending without scores that cover
    its older tokens (``update`` then scores the step's query).
    """
    policy = cache.policy
    if policy.capacity is None:
        return None
    if cache.scores_requested or cache.positions_given:
        return None
    layers = cache.layers
    first = layers[0]
    if first.key_buf is None:
        return None
    n = first.length
    for layer in layers:
        if layer.pending or layer.length != n or layer.tally_now:
            return None
    end = n + 1
    if end > first.capacity:
        return None
    if policy.score_mode == "window" and end >= policy.capacity + cache.decode_slack \
            and not cache.holding:
        if not all(layer.scores_carried() for layer in layers):
            return None
    return (n, first.key_buf.data_ptr(), bool(cache.decode_tally))


def compact_if_all_pending(cache: Any) -> bool:
    """Run the compaction a step would start with, now, if every layer is pending.

    The batched compaction is a few kernels over all layers with no host
    synchronisation; the step can then replay the graph of the compacted length. The
    result is what the step's first ``update`` would do.
    """
    if cache.policy.capacity is None or cache.pos_rows != 1 or cache.scores_requested:
        return False
    layers = cache.layers
    if not layers or not all(layer.pending for layer in layers):
        return False
    cache.compact()
    return True


class GraphDecodeRunner:
    """Decode one token at a time on a ``BoundedCache``, replaying CUDA graphs when valid.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM on a CUDA device whose attention goes through the cache.
    cache : BoundedCache
        The bounded cache (batch 1, 1-D RoPE positions).
    max_graphs : int
        Most graphs kept (one per kept length); lengths beyond run eagerly.

    ``capture`` (attribute, default True): set it False after a warm-up so that a length
    with no graph yet runs eagerly instead of being captured in the middle of an answer.
    """

    def __init__(self, model: torch.nn.Module, cache: Any, max_graphs: int = 256):
        """Prepare static input buffers; graphs are captured lazily."""
        self.model = model
        self.cache = cache
        self.max_graphs = max_graphs
        self.kw = cache_kwarg(model)
        dev = next(model.parameters()).device
        if dev.type != "cuda":
            raise ValueError(f"GraphDecodeRunner needs a CUDA model, got device {dev}")
        self.device = dev
        self.ids = torch.zeros((1, 1), dtype=torch.long, device=dev)
        self.pos = torch.zeros((1, 1), dtype=torch.long, device=dev)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.seen: set[tuple] = set()
        self.pool = None
        self.stream = torch.cuda.Stream(device=dev)    # warm-up and capture stream
        self.disabled: Optional[str] = _BROKEN[0] if _BROKEN else None
        self.replays = 0
        self.eager_steps = 0
        self.captures = 0
        self.compactions = 0
        self.capture = True

    def _signature(self) -> Optional[tuple]:
        """Key of the current cache state if a graph may serve the next step, else None."""
        return graph_signature(self.cache)

    def _forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.ids, position_ids=self.pos, use_cache=True,
                         **{self.kw: self.cache})
        return out.logits

    def step(self, token: torch.Tensor, position: int) -> torch.Tensor:
        """Feed ``token`` ([1, 1] long, on the device) at ``position``; return [1, 1, V] logits."""
        self.ids.copy_(token.view(1, 1))
        self.pos.fill_(position)
        if not self.disabled and compact_if_all_pending(self.cache):
            self.compactions += 1
        cache = self.cache
        if cache.decode_tally and cache.layers[0].q_count >= cache.ring:
            cache.fold_tally()                     # the stored queries' ring is full
        sig = None if self.disabled else self._signature()
        if sig is not None and sig in self.graphs:
            graph, logits = self.graphs[sig]
            graph.replay()
            self.cache.book_replayed_step()
            self.replays += 1
            return logits
        if sig is not None and sig in self.seen and self.capture \
                and len(self.graphs) < self.max_graphs:
            try:
                graph = torch.cuda.CUDAGraph()
                with no_collection(), torch.cuda.graph(graph, pool=self.pool,
                                                       stream=self.stream):
                    logits = self._forward()       # host bookkeeping runs once, here
                if self.pool is None:
                    self.pool = graph.pool()
                graph.replay()                     # the captured work runs now
                self.graphs[sig] = (graph, logits)
                self.captures += 1
                return logits
            except Exception as exc:               # noqa: BLE001 - fall back, say why
                self.disabled = f"{type(exc).__name__}: {exc}"[:300]
                _BROKEN.append(self.disabled)
                self.graphs.clear()
                raise RuntimeError(f"CUDA graph capture failed: {self.disabled}") from exc
        self.eager_steps += 1
        if sig is None or not self.capture:
            return self._forward()
        self.seen.add(sig)
        # first visit of this length: run it on the capture stream (the warm-up that
        # graph capture wants: cuBLAS workspaces and allocator blocks of that stream)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            logits = self._forward()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return logits

    def stats(self) -> dict:
        """Return the counts of replays, captures and eager steps."""
        return {"replays": self.replays, "captures": self.captures,
                "eager_steps": self.eager_steps, "compactions": self.compactions,
                "graphs": len(self.graphs), "disabled": self.disabled}
