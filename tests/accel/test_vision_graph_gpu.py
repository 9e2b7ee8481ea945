"""Qwen2-VL frames through the graph-captured tower equal the model's own (needs CUDA).

The captured pass against the tower's forward at the tiny and the Qwen2-VL-2B shape, and
whole sessions (frames over the budget, questions, evidence) with and without it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_infmllm.accel.vision_graph import VisionGraph, vision_tower
from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.eval.bench.common import vl_model
from ros2_infmllm.eval.bench.engine import _policy
from ros2_infmllm.models.qwen2_vl import Qwen2VLAdapter
from ros2_infmllm.models.tiny import byte_tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _adapter(shape: str, dtype: torch.dtype, side: int) -> Qwen2VLAdapter:
    return Qwen2VLAdapter(vl_model(shape, "cuda", dtype), byte_tokenizer(),
                          f"qwen2-vl {shape} (random)", image_max_side=side)


def _frame(i: int, side: int = 60) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape,dtype,side,tol", [
    ("tiny", torch.float32, 84, 1e-4), ("2b", torch.bfloat16, 392, 3e-2)])
def test_gpu_vision_graph_equals_the_towers_forward(shape, dtype, side, tol):
    """Replays of the captured tower = the class's forward, frame after frame."""
    ad = _adapter(shape, dtype, side)
    tower = vision_tower(ad)
    graph = VisionGraph(tower, ad.frame_grid, ad.preprocess.patch_dim)
    for i in range(3):
        pix, thw = ad.preprocess.pixel_values(_frame(i, side), ad.frame_side, "cuda")
        pix = pix.to(dtype)
        with torch.no_grad():
            ref = tower(pix, grid_thw=torch.tensor([thw], device="cuda")).pooler_output
        got = graph(pix)
        scale = ref.float().abs().mean().item()
        err = (got.float() - ref.float()).abs().mean().item()
        assert err <= tol * scale, (i, err, scale)
    assert graph.replays == 3
    with pytest.raises(ValueError, match="captured frame shape"):
        graph(pix[:-4])


def test_gpu_tiny_vl_session_frames_through_the_graph_equal_eager():
    """Same memory, answers, streamed pieces and evidence with the whole graph path (captured
    tower, M-RoPE frames through the chunk graphs, decode replayed) as with the plain model."""
    runs = []
    for mode in ("eager", "auto"):
        ad = _adapter("tiny", torch.float32, 56)
        ad.eos_token_ids = set()
        s = StreamingSession(ad, _policy("inf_mllm", 96), decode=mode)
        d = s.decoder.describe()
        fast = mode == "auto"
        assert (d["vision"], d["path"], d["chunks"]) == (("graph",) * 3 if fast else
                                                         ("eager",) * 3), d
        out = []
        for j in range(3):
            for i in range(4):
                s.ingest_frame(_frame(4 * j + i), 10.0 + 4 * j + i, "front")
            pieces: list = []
            ans = s.ask(f"what was in frame {j}?", max_new_tokens=12, on_token=pieces.append)
            out.append((ans.text, pieces, ans.evidence_stamps))
        mem = s.status().memory
        replays = getattr(ad.image_encoder, "replays", 0)
        fast_stats = s.decoder.describe()
        runs.append((out, mem.tokens_per_layer, mem.compactions, mem.sources, replays))
    (ref, *mem_ref, r0), (fast, *mem_fast, r1) = runs
    assert r0 == 0 and r1 == 12
    assert fast_stats["replays"] > 0 and fast_stats["chunk_runs"] >= 12, fast_stats
    assert mem_ref == mem_fast and mem_ref[1] > 0
    assert fast == ref
