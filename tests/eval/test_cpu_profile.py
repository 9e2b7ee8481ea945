"""The CPU ingest profile's op groups and breakdown (plain torch ops, no model)."""

import torch

from ros2_infmllm.eval.bench.cpu_profile import OTHER, group_of, markdown, profile_ingest_frames


def test_ops_fall_into_the_group_of_their_purpose():
    assert group_of("aten::addmm") == group_of("aten::mm") == "linear layers (mm, addmm)"
    assert group_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention (SDPA)"
    assert group_of("aten::bmm") == group_of("aten::_softmax") == "window scores (bmm, softmax)"
    assert group_of("aten::cos") == "re-rotation trig (sin, cos)"
    assert group_of("aten::gather") == group_of("aten::index_select") \
        == "gather / index / cat (compaction, cache)"
    assert group_of("aten::_to_copy") == group_of("aten::copy_") == "copies and casts"
    assert group_of("aten::rsqrt") == group_of("aten::topology_like") == OTHER


def test_profile_puts_a_matmul_heavy_step_mostly_in_linear_layers():
    w = torch.randn(512, 512)

    def step(i: int) -> None:
        x = torch.randn(64, 512)
        for _ in range(20):
            x = torch.nn.functional.linear(x, w).tanh()

    prof = profile_ingest_frames(step, 0, 3)
    ms = prof["ms_per_frame"]
    assert prof["frames"] == 3 and prof["wall_ms_per_frame"] > 0
    assert max(ms, key=ms.get) == "linear layers (mm, addmm)"
    assert abs(sum(prof["share"].values()) - 1.0) < 0.05
    assert "| linear layers (mm, addmm) |" in markdown(prof, "t")
