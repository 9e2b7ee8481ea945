"""The engine's fast decode path answers like eager (skipped without CUDA; run on the device).

Token for token, streamed piece for piece and with the same evidence stamps, over several
questions whose answers run through compactions (a small decode slack).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.eval.bench.engine import _policy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

QUESTIONS = ("What colour was the last frame?", "Which marker came first?",
             "Describe the scene.")


def _frame(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[..., i % 3] = (40 + 20 * i) % 256
    img[8:24, 8 + i:24 + i] = 255
    return img


def _run(session: StreamingSession, frames: int, max_new: int) -> list:
    """Frames, then each question after a few more frames: (text, pieces, stamps) each."""
    out = []
    session.adapter.describer.reset()        # sessions of one adapter share its describer
    for i in range(frames):
        session.ingest_frame(_frame(i), 10.0 + i, "front")
    for j, q in enumerate(QUESTIONS):
        for i in range(3):
            session.ingest_frame(_frame(frames + 3 * j + i), 100.0 + 3 * j + i, "front")
        pieces: list = []
        before = session.cache.layers[0].compactions
        ans = session.ask(q, max_new_tokens=max_new, on_token=pieces.append)
        out.append((ans.text, pieces, ans.evidence_stamps, ans.timings["new_tokens"],
                    session.cache.layers[0].compactions - before))
    return out


def _same_memory(a: StreamingSession, b: StreamingSession) -> None:
    da, db = a.status().memory, b.status().memory
    for key in ("tokens_per_layer", "tokens_seen", "evicted_tokens", "compactions",
                "next_position", "sources"):
        assert getattr(da, key) == getattr(db, key), key


@pytest.mark.parametrize("name", ["inf_mllm", "h2o", "streaming_llm"])
def test_gpu_tiny_engine_graph_decode_equals_plain_eager(name):
    """tiny-test in float32: the graph path (fused, owned step, graphs) vs the plain model."""
    from ros2_infmllm.models.tiny import load_tiny
    ref = StreamingSession(load_tiny("cuda", torch.float32), _policy(name, 96),
                           decode_slack=8, decode="eager")
    fast = StreamingSession(load_tiny("cuda", torch.float32), _policy(name, 96),
                            decode_slack=8, decode="graph")
    assert fast.decoder.path == "graph" and fast.decoder.warmup_s > 0
    assert ref.decoder.path == "eager"
    got, want = _run(fast, 12, 40), _run(ref, 12, 40)
    for g, w in zip(got, want):
        assert g == w
    assert all(n == 40 and c >= 4 for *_, n, c in got), got      # compactions while decoding
    stats = fast.decoder.describe()
    assert stats["replays"] >= 3 * 30 and stats["disabled"] is None, stats
    _same_memory(fast, ref)


def test_gpu_7b_shape_engine_graph_decode_equals_owned_eager():
    """Llama-2-7B shape, random float32 weights (bf16 rounding flips the near-tied argmax of
    random weights): graph replays vs the same owned step run eagerly."""
    from ros2_infmllm.eval.bench.common import llama_model
    from ros2_infmllm.memory import use_scoring_attention
    from ros2_infmllm.models.base import ModelAdapter
    from ros2_infmllm.models.tiny import byte_tokenizer
    model = llama_model("7b", "cuda", torch.float32)
    use_scoring_attention(model)
    adapter = ModelAdapter(model, byte_tokenizer(), "llama-7b (random)")
    adapter.eos_token_ids = set()
    fast = StreamingSession(adapter, _policy("inf_mllm", 256), decode_slack=16, decode="graph")
    ref = StreamingSession(adapter, _policy("inf_mllm", 256), decode_slack=16, decode="eager")
    assert model.owned_decode_steps > 0           # the warm-up ran the owned step
    got, want = _run(fast, 10, 40), _run(ref, 10, 40)
    for g, w in zip(got, want):
        assert g == w
    assert all(c >= 2 for *_, c in got), got
    assert fast.decoder.describe()["replays"] >= 3 * 30
    _same_memory(fast, ref)
