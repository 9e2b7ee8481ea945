"""The engine's one-token decode path: owned step + CUDA graphs where possible, else eager.

Why: the plain transformers forward, launched from Python once per token, keeps a GPU idle
most of the time (issue 20: ``StreamingSession.ask`` decoded at 0.05 of the HBM roofline
while the bench's fused + owned step + CUDA graphs reached 0.77 on the same H200). A
:class:`Decoder` gives one session's cache the bench's fast path:

- ``graph``: q/k/v and gate/up fused (``fused_linear``), the owned one-token step
  (``llama_decode``: Llama / Qwen2 layouts and the language towers of LLaVA, SmolVLM and
  Qwen2-VL, M-RoPE included), the CUDA-graph runner (``cuda_graph``) and the chunk
  graphs (``chunk_graph``: frames and questions as captured pieces around eager
  attention); :meth:`Decoder.warm_up` compiles and captures every length a full memory
  decodes at (``budget .. budget + decode_slack``) and every chunk size before the first
  question, then the runner stops capturing, so a length without a graph runs eagerly
  instead of stalling an answer. A vision adapter whose tower ``vision_graph`` takes
  (Qwen2-VL) also gets its tower captured for the fixed frame shape, whatever the
  decode path.
- ``eager``: the adapter's own forward, one token at a time, and the model's own tower.
- ``auto``: ``graph`` when :func:`graph_unavailable` finds nothing against it, else
  ``eager`` with that reason (:attr:`Decoder.reason`).

Both paths take the token as a device tensor and return device logits, so the caller
decides when to read a token on the host.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import torch

from ..models.base import Chunk

DECODE_MODES = ("auto", "eager", "graph")


def graph_unavailable(model: Any, cache: Any) -> Optional[str]:
    """Why the graph path cannot serve ``model`` on ``cache``, or None when it can."""
    from .llama_decode import position_rows, unsupported
    dev = next(model.parameters()).device
    if dev.type != "cuda":
        return f"the model is on {dev}: CUDA graphs need a CUDA device"
    if cache.policy.capacity is None:
        return f"policy {cache.policy.name!r} grows its cache (no fixed shapes to capture)"
    why = unsupported(model)
    if why is not None:
        return f"owned decode step: {why}"
    if cache.pos_rows != position_rows(model):
        return f"{cache.model_type} cache has {cache.pos_rows} position rows, the model's " \
               f"rotary embedding another count"
    return None


class Decoder:
    """One-token decode steps for one session's cache (see the module docstring).

    Parameters
    ----------
    adapter : ModelAdapter
        The session's adapter (its model is changed in place on the graph path: fused
        projections and the owned step, shared by every session of that model).
    cache : BoundedCache
        The session's cache.
    mode : str
        ``auto`` | ``eager`` | ``graph``; ``graph`` raises ValueError when unavailable.
    """

    def __init__(self, adapter: Any, cache: Any, mode: str = "auto"):
        """Pick the path; nothing is compiled or captured before :meth:`warm_up`."""
        if mode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {mode!r}")
        self.adapter = adapter
        self.mode = mode
        self.runner = None
        self.warmup_s = 0.0
        self.reason = "decode: eager asked for" if mode == "eager" else \
            graph_unavailable(adapter.model, cache)
        if mode == "graph" and self.reason is not None:
            raise ValueError(f"decode 'graph' is not available: {self.reason} "
                             f"(use decode 'auto' or 'eager')")
        self.path = "eager" if self.reason is not None else "graph"
        from .vision_graph import vision_graph_unavailable
        self.vision_reason = "decode: eager asked for" if mode == "eager" else \
            vision_graph_unavailable(adapter)
        if self.path == "graph":
            from .cuda_graph import GraphDecodeRunner
            from .fused_linear import fuse_projections
            from .llama_decode import install_owned_decode
            fuse_projections(adapter.model)
            if not install_owned_decode(adapter.model, chunks=True):   # unsupported() said yes
                raise RuntimeError("internal: owned decode step refused a supported model")
            self.runner = GraphDecodeRunner(adapter.model, cache)

    def step(self, token: torch.Tensor, cache: Any) -> torch.Tensor:
        """Append ``token`` (``[1, 1]`` long, on the model's device); next logits ``[V]``."""
        if self.runner is None:
            return self.adapter.forward(Chunk(token, "assistant"), cache)
        if self.runner.cache is not cache:          # the session swapped its cache
            from .cuda_graph import GraphDecodeRunner
            self.runner = GraphDecodeRunner(self.adapter.model, cache)
        with torch.no_grad():
            return self.runner.step(token, cache.next_position())[0, -1]

    def warm_up(self, cache: Any, tally: bool) -> float:
        """Compile and capture before the first question; return the seconds it took.

        Captures the frame shape's vision tower (``vision_graph``) where it applies.
        Then, on the graph path, captures the model's chunk graphs (once per model:
        ``chunk_graph``) and fills ``cache`` with random tokens past the budget
        (chunks of ``max_chunk``, as frames arrive), decodes two compaction cycles with
        the evidence tally ``tally`` as answers run it (so each length ``budget ..
        budget + decode_slack`` is visited twice: once eagerly, then captured), then
        resets ``cache`` (its buffers, which the graphs use, stay) and stops further
        captures.
        """
        t0 = time.perf_counter()
        if self.vision_reason is None:
            from .vision_graph import install_vision_graph
            install_vision_graph(self.adapter)
        if self.runner is not None:
            from .chunk_graph import install_chunk_graphs
            install_chunk_graphs(self.adapter.model)
            self._warm_decode(cache, tally)
        self.warmup_s = time.perf_counter() - t0
        return self.warmup_s

    def _warm_decode(self, cache: Any, tally: bool) -> None:
        """Visit every decode length twice (eagerly, then captured); reset ``cache``."""
        budget, slack = cache.policy.capacity, cache.decode_slack
        vocab = self.adapter.model.config.get_text_config().vocab_size
        gen = torch.Generator().manual_seed(0)
        dev = self.adapter.device
        left = budget + cache.max_chunk
        cache.begin_source("warm-up")
        while left > 0:
            n = min(cache.max_chunk, left)
            ids = torch.randint(3, vocab, (1, n), generator=gen).to(dev)
            self.adapter.forward(Chunk(ids, "user"), cache, logits=False)
            left -= n
        cache.decode_tally = tally
        tok = torch.ones((1, 1), dtype=torch.long, device=dev)
        for _ in range(2 * (slack + 2) + 4):
            tok = self.step(tok, cache).argmax().view(1, 1)
        torch.cuda.synchronize(dev)
        cache.decode_tally = False
        cache.reset()
        self.runner.capture = False

    def describe(self) -> dict[str, Any]:
        """Path, why not the graph path, warm-up seconds and the runner's counts."""
        # what the adapter (shared by the model's sessions) does, not what this one asked
        captured = getattr(self.adapter, "image_encoder", None) is not None
        out: dict[str, Any] = {"mode": self.mode, "path": self.path, "reason": self.reason,
                               "vision": "graph" if captured else "eager",
                               "vision_reason": None if captured else
                               self.vision_reason or "not captured yet (before warm_up)",
                               "warmup_s": round(self.warmup_s, 3)}
        from .chunk_graph import chunk_graphs, chunk_graphs_failure
        model = self.adapter.model
        graphs = chunk_graphs(model)
        out["chunks"] = "graph" if graphs is not None and graphs.graphs else "eager"
        out["chunks_reason"] = None if out["chunks"] == "graph" else \
            chunk_graphs_failure(model) or self.reason or "not captured yet (before warm_up)"
        if self.runner is not None:
            out.update(self.runner.stats())
        if graphs is not None:
            out.update(graphs.stats())
        return out
