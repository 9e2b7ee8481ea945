"""Re-rotation exactness: a key moved from p to p' equals the key computed at p'.

Each case uses the model family's own rotary embedding module and apply function, so the
reference is what the model itself caches at p'."""

import pytest
import torch
from memory_tiny_models import tiny_config
from transformers.models.gpt_neox import modeling_gpt_neox as neox
from transformers.models.gptj import modeling_gptj as gptj
from transformers.models.llama import modeling_llama as llama
from transformers.models.qwen2_vl import modeling_qwen2_vl as qwen2_vl

from ros2_infmllm.memory import BoundedCache, RopeSpec, make_policy
from ros2_infmllm.memory.rope import Rotation, repack_positions

N = 64      # keys per head
H = 2

LLAMA_ROPES = {
    "default": {},
    "linear": dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}),
    "dynamic": dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}),
    "llama3": dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 512}),
}


def _positions(seed):
    g = torch.Generator().manual_seed(seed)
    old = torch.randint(0, 4000, (H, N), generator=g)
    new = torch.randint(0, 600, (H, N), generator=g)
    return old, new


def _embed(rotary, apply, keys, pos):
    """Rotate ``keys`` [H, N, D] to positions ``pos`` [R, H, N] with the model's own code."""
    out = []
    for h in range(keys.shape[0]):
        p = pos[:, h].unsqueeze(1) if pos.shape[0] > 1 else pos[0, h].unsqueeze(0)
        cos, sin = rotary(keys, p)
        k = keys[h].unsqueeze(0).unsqueeze(0)                  # [1, 1, N, D]
        out.append(apply(k, k, cos, sin)[1][0, 0])
    return torch.stack(out)


def _check(cfg, rotary, apply, delta_rows=1, seed=0, atol=2e-4,
           rotation=Rotation.ROTATE_HALF):
    spec = RopeSpec.from_config(cfg, rotation)
    g = torch.Generator().manual_seed(seed + 100)
    keys = torch.randn(H, N, spec.head_dim, generator=g)
    old, new = _positions(seed)
    old = torch.stack([old + 7 * r for r in range(delta_rows)])     # rows differ for M-RoPE
    new = torch.stack([new + 3 * r for r in range(delta_rows)])
    at_old = _embed(rotary, apply, keys, old)
    at_new = _embed(rotary, apply, keys, new)
    moved = at_old.clone()
    spec.rotate_(moved, new - old)
    assert (moved - at_old).abs().max() > 0.1                 # it really moved
    torch.testing.assert_close(moved, at_new, atol=atol, rtol=0)
    return spec


@pytest.mark.parametrize("kind", sorted(LLAMA_ROPES))
def test_llama_rope_variants_rerotate_exactly(kind):
    cfg = tiny_config("llama", **LLAMA_ROPES[kind])
    spec = _check(cfg, llama.LlamaRotaryEmbedding(cfg), llama.apply_rotary_pos_emb)
    assert spec.rope_type == kind and spec.rotary_dim == spec.head_dim == 16


def test_partial_rotary_gpt_neox_rerotates_only_rotary_dims():
    cfg = tiny_config("gpt_neox")
    spec = _check(cfg, neox.GPTNeoXRotaryEmbedding(cfg), neox.apply_rotary_pos_emb)
    assert spec.rotary_dim == 4 and spec.head_dim == 16
    keys = torch.randn(H, N, 16)
    moved = keys.clone()
    spec.rotate_(moved, torch.full((1, H, N), 123))
    assert torch.equal(moved[..., 4:], keys[..., 4:])


def test_mrope_qwen2_vl_rerotates_each_section_by_its_row():
    cfg = tiny_config("qwen2_vl").get_text_config()
    rotary = qwen2_vl.Qwen2VLRotaryEmbedding(cfg)
    spec = _check(cfg, rotary, qwen2_vl.apply_rotary_pos_emb, delta_rows=3,
                  rotation=Rotation.MROPE)
    assert spec.rows == 3 and spec.mrope_section == (2, 3, 3)


class _GPTJRotary:
    """GPT-J's own sin/cos table, called like the other families' rotary modules."""

    def __init__(self, dim):
        self.table = gptj.create_sinusoidal_positions(4096, dim)

    def __call__(self, _keys, pos):
        sin, cos = torch.split(self.table[pos], self.table.shape[-1] // 2, dim=-1)
        return cos, sin


def _gptj_apply(_q, k, cos, sin):
    """GPT-J's apply on [1, 1, N, D] keys (its layout is [b, n, heads, d])."""
    out = gptj.apply_rotary_pos_emb(k.transpose(1, 2), sin, cos).transpose(1, 2)
    return out, out


def test_interleaved_pairs_rerotate_exactly_as_gptj():
    """Pairs (2i, 2i+1): a llama-shaped config (theta 1e4) turned as GPT-J turns its keys."""
    cfg = tiny_config("llama")
    spec = _check(cfg, _GPTJRotary(16), _gptj_apply, rotation=Rotation.INTERLEAVED)
    assert spec.rows == 1 and spec.rotary_dim == 16
    half = RopeSpec.from_config(cfg)
    keys = torch.randn(H, N, 16)
    a, b = keys.clone(), keys.clone()
    spec.rotate_(a, torch.full((1, H, N), 9))
    half.rotate_(b, torch.full((1, H, N), 9))
    assert (a - b).abs().max() > 0.1          # the kinds really differ


def test_mrope_config_with_another_rotation_is_refused():
    cfg = tiny_config("qwen2_vl").get_text_config()
    for rotation in (Rotation.ROTATE_HALF, Rotation.INTERLEAVED):
        with pytest.raises(ValueError, match=r"mrope_section \[2, 3, 3\].*rotation=Rotation"):
            RopeSpec.from_config(cfg, rotation)
    with pytest.raises(ValueError, match="mrope_section"):
        BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16),
                     tiny_config("qwen2_vl"))


def test_mrope_rotation_without_mrope_section_is_refused():
    with pytest.raises(ValueError, match="M-RoPE but the config has no"):
        RopeSpec.from_config(tiny_config("llama"), Rotation.MROPE)
    with pytest.raises(ValueError, match="M-RoPE but the config has no"):
        BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16),
                     tiny_config("llama"), rotation=Rotation.MROPE)


def test_the_cache_rotates_by_the_kind_it_is_given():
    cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16),
                         tiny_config("qwen2_vl"), rotation=Rotation.MROPE)
    assert cache.rope.rotation is Rotation.MROPE and cache.pos_rows == 3
    with pytest.raises(TypeError, match="Rotation"):
        RopeSpec.from_config(tiny_config("llama"), "rotate_half")


@pytest.mark.parametrize("model_type,rows", [("llama", 1), ("qwen2_vl", 3)])
def test_cpu_rotation_in_row_blocks_equals_one_block(monkeypatch, model_type, rows):
    """The CPU path rotates a few rows at a time (bounded temporaries); same keys as one go."""
    from ros2_infmllm.memory import rope

    cfg = tiny_config(model_type)
    spec = RopeSpec.from_config(cfg.get_text_config() if rows > 1 else cfg,
                                Rotation.MROPE if rows > 1 else Rotation.ROTATE_HALF)
    g = torch.Generator().manual_seed(5)
    keys = torch.randn(7, N, spec.head_dim, generator=g)
    delta = torch.randint(-500, 500, (rows, 7, N), generator=g)
    whole = keys.clone()
    spec.rotate_(whole, delta)
    monkeypatch.setattr(rope, "CPU_BLOCK_ANGLES", 2 * N * spec.rotary_dim // 2)  # 2 rows
    blocked = keys.clone()
    spec.rotate_(blocked, delta)
    assert (whole - keys).abs().max() > 0.1
    torch.testing.assert_close(blocked, whole, atol=0, rtol=0)


def test_dynamic_rope_budget_past_original_context_is_refused():
    cfg = tiny_config("llama", **LLAMA_ROPES["dynamic"])
    with pytest.raises(ValueError, match="dynamic RoPE"):
        BoundedCache(make_policy("inf_mllm", budget=4000, n_sink=4, n_recent=64), cfg,
                     max_chunk=512)
    BoundedCache(make_policy("inf_mllm", budget=1024, n_sink=4, n_recent=64), cfg)


def test_interleaved_mrope_is_refused_with_reason():
    cfg = tiny_config("qwen2_vl").get_text_config()
    cfg.rope_parameters = dict(cfg.rope_parameters, mrope_interleaved=True)
    with pytest.raises(ValueError, match="interleaved"):
        RopeSpec.from_config(cfg, Rotation.MROPE)


def test_repack_positions_1d_is_contiguous():
    pos = torch.tensor([[[0, 5, 9, 40, 41]]])
    out = repack_positions(pos, torch.ones(1, 5, dtype=torch.bool))
    assert out.tolist() == [[[0, 1, 2, 3, 4]]]


def test_repack_positions_mrope_keeps_image_layout_and_packs_text():
    # one head: text run (positions 0..3, kept 0, 2, 3), an image run whose (t, h, w) grid
    # starts at 10 (kept cells (10,10,11), (10,11,10), (10,11,12)), then text at 20, 21.
    t = [0, 2, 3, 10, 10, 10, 20, 21]
    hh = [0, 2, 3, 10, 11, 11, 20, 21]
    w = [0, 2, 3, 11, 10, 12, 20, 21]
    pos = torch.tensor([t, hh, w]).unsqueeze(1)
    src = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2]])
    start = torch.ones_like(src, dtype=torch.bool)
    start[:, 1:] = src[:, 1:] != src[:, :-1]
    out = repack_positions(pos, start)[:, 0].tolist()
    # text run -> 0, 1, 2; image run shifted by 3 - 10 on all rows (span 3: 3..5);
    # text run after it -> 6, 7
    assert out == [[0, 1, 2, 3, 3, 3, 6, 7], [0, 1, 2, 3, 4, 4, 6, 7],
                   [0, 1, 2, 4, 3, 5, 6, 7]]
