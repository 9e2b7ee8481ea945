"""The owned Qwen2-VL tower pass and the adapter's image-encoder seam (tiny configs, CPU).

The graph capture itself needs CUDA (``test_vision_graph_gpu.py``); what it captures is
:func:`tower_forward`, checked here against the tower's own forward, and the seam that
feeds its features into the language model is checked to change nothing.
"""
from __future__ import annotations

import numpy as np
import torch

from ros2_infmllm.accel.fast_decode import Decoder
from ros2_infmllm.accel.vision_graph import (rotary_tables, tower_forward,
                                             vision_graph_unavailable, vision_tower)
from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.eval.bench.common import vl_model
from ros2_infmllm.eval.bench.engine import _policy
from ros2_infmllm.models.qwen2_vl import Qwen2VLAdapter
from ros2_infmllm.models.tiny import byte_tokenizer


def _adapter(side: int = 56) -> Qwen2VLAdapter:
    model = vl_model("tiny", "cpu", torch.float32)
    return Qwen2VLAdapter(model, byte_tokenizer(), "qwen2-vl tiny (random)",
                          image_max_side=side)


def _frame(i: int, side: int = 60) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_owned_tower_pass_equals_transformers_tower_tiny():
    """tower_forward gives the tower's own merged features for one frame's patches."""
    ad = _adapter(side=84)
    tower = vision_tower(ad)
    pix, thw = ad.preprocess.pixel_values(_frame(0), ad.frame_side)
    assert thw == ad.frame_grid
    with torch.no_grad():
        ref = tower(pix, grid_thw=torch.tensor([thw])).pooler_output
        cos, sin = rotary_tables(tower, thw, pix.device)
        got = tower_forward(tower, pix, cos, sin)
    assert got.shape == ref.shape == (ad.image_tokens, ad.model.config.text_config.hidden_size)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_image_encoder_seam_keeps_memory_and_answer_logits_tiny():
    """Frames through an image encoder (the owned pass) = frames through the model's tower.

    Eight frames over a 96-token budget (compactions), then a question: the same kept
    memory and the same question logits.
    """
    runs = []
    for seam in (False, True):
        ad = _adapter()
        if seam:
            tower = vision_tower(ad)
            cos, sin = rotary_tables(tower, ad.frame_grid, torch.device("cpu"))
            ad.image_encoder = lambda pix: tower_forward(tower, pix, cos, sin)
        s = StreamingSession(ad, _policy("inf_mllm", 96), decode="eager")
        for i in range(8):
            s.ingest_frame(_frame(i), 10.0 + i, "front")
        chunk = ad.text_chunk("what changed?", "user")
        s.cache.hold()
        logits = s._run(chunk)
        s.cache.rewind()
        mem = s.status().memory
        runs.append((logits, mem.tokens_per_layer, mem.compactions, mem.sources))
    (la, *ma), (lb, *mb) = runs
    assert ma[1] == mb[1] and ma[1] > 0
    assert ma == mb
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)


def test_vision_graph_unavailable_on_cpu_and_for_eager_tiny():
    """On the CPU the reason names CUDA; the decoder reports the tower path and why."""
    ad = _adapter()
    assert "CUDA" in vision_graph_unavailable(ad)
    s = StreamingSession(ad, _policy("inf_mllm", 96))
    d = Decoder(ad, s.cache, "auto").describe()
    assert d["vision"] == "eager" and "CUDA" in d["vision_reason"]
    d = Decoder(ad, s.cache, "eager").describe()
    assert d["vision"] == "eager" and d["vision_reason"] == "decode: eager asked for"
    assert ad.image_encoder is None
