"""Smoke tests of the benchmarks on tiny random-weight models (CPU, seconds; no timing asserts)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from ros2_infmllm.eval.bench import main
from ros2_infmllm.eval.bench.common import llama_model
from ros2_infmllm.eval.bench.runs import prefill_to
from ros2_infmllm.eval.common import build_policy
from ros2_infmllm.memory import BoundedCache, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg
from ros2_infmllm.models.compiled_decode import FAILED, compile_decode
from ros2_infmllm.models.cuda_graph import advance_layer, compact_if_all_pending, graph_signature
from ros2_infmllm.models.fused_linear import FusedPart, fuse_projections


def _load(tmp_path, what):
    return json.loads((tmp_path / f"bench_{what}.json").read_text())


def test_bench_memory_smoke_tiny_bounded_policies_stay_flat(tmp_path):
    assert main(["bench-memory", "--smoke", "--out-dir", str(tmp_path),
                 "--policies", "full,streaming_llm,inf_mllm,h2o"]) == 0
    data = _load(tmp_path, "memory")
    pol = data["policies"]
    for name in ("streaming_llm", "inf_mllm", "h2o"):
        assert pol[name]["kv_ratio_last_first"] <= 1.01, name
        assert pol[name]["decode"]["tokens_per_s"] > 0
    assert pol["full"]["kv_ratio_last_first"] > 2.0          # grows with the stream
    assert data["ratios"]["decode_inf_mllm_over_h2o"] > 0
    assert (tmp_path / "bench_memory.md").read_text().count("| inf_mllm |") >= 2
    assert (tmp_path / "bench_memory.png").stat().st_size > 1000


def test_bench_decode_smoke_tiny_rows_per_policy(tmp_path):
    assert main(["decode", "--smoke", "--out-dir", str(tmp_path),
                 "--policies", "window,inf_mllm,full"]) == 0
    rows = _load(tmp_path, "decode")["rows"]
    assert [r["policy"] for r in rows] == ["window", "inf_mllm", "full"]
    for r in rows:
        assert r["context"] == 64 and r["eager"]["tokens_per_s"] > 0
        assert r["kv_bytes_read_per_token"] > 0
        assert "graph" not in r                                # CPU: no CUDA graphs


def test_bench_ingest_smoke_tiny_vlm_frames_stay_bounded(tmp_path):
    assert main(["ingest", "--smoke", "--out-dir", str(tmp_path), "--no-profile"]) == 0
    data = _load(tmp_path, "ingest")
    inf = data["policies"]["inf_mllm"]
    assert len(inf["series"]) == 12
    assert inf["memory"][-1]["kv_bytes"] == inf["memory"][1]["kv_bytes"]
    stamps = [s[0] for s in inf["series"]]
    assert stamps == sorted(stamps) and stamps[-1] > 3000         # spans the hour
    assert inf["compact"]["n"] > 0 and data["policies"]["full"]["compact"]["n"] == 0


def test_bench_decode_smoke_fused_rows_and_profile(tmp_path):
    assert main(["decode", "--smoke", "--out-dir", str(tmp_path), "--policies", "inf_mllm",
                 "--fused-policies", "inf_mllm", "--profile"]) == 0
    data = _load(tmp_path, "decode")
    assert [r["policy"] for r in data["rows"]] == ["inf_mllm", "inf_mllm+fused"]
    assert data["fused_groups"] == 2 * 2                    # 2 layers x (qkv, gate-up)
    assert data["weight_bytes_read"] < data["weight_bytes"]   # no embedding table
    assert all("profile" in r for r in data["rows"])
    assert (tmp_path / "bench_decode_profile.txt").read_text().count("==") >= 2


def test_bench_decode_smoke_compiled_rows(tmp_path):
    assert main(["decode", "--smoke", "--out-dir", str(tmp_path), "--policies", "",
                 "--fused-policies", "inf_mllm", "--compile-policies", "inf_mllm,h2o@1"]) == 0
    data = _load(tmp_path, "decode")
    assert [r["policy"] for r in data["rows"]] == [
        "inf_mllm+fused", "inf_mllm+fused+compiled", "h2o@1+fused+compiled"]
    c = data["compile"]
    assert c["modules"] == {"norms": 5, "mlps": 2, "rotary": 1} and c["graph_breaks"] == 0
    assert c["failed"] == []
    assert max(c["logits_max_abs_diff"]) < 1e-4 and all(c["same_argmax"])
    assert "compile (mode default" in (tmp_path / "bench_decode.md").read_text()


def test_bench_decode_smoke_owned_rows(tmp_path):
    assert main(["decode", "--smoke", "--out-dir", str(tmp_path), "--policies", "",
                 "--fused-policies", "inf_mllm", "--compile-policies", "inf_mllm",
                 "--own-policies", "inf_mllm,h2o@1"]) == 0
    data = _load(tmp_path, "decode")
    assert [r["policy"] for r in data["rows"]] == [
        "inf_mllm+fused", "inf_mllm+fused+compiled", "inf_mllm+fused+owned",
        "h2o@1+fused+owned"]
    c = data["owned"]
    assert c["installed"] and c["graph_breaks"] == 0 and c["failed"] == []
    assert max(c["logits_max_abs_diff"]) < 1e-4 and all(c["same_argmax"])
    assert "owned (mode default" in (tmp_path / "bench_decode.md").read_text()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiny_fused_projections_leave_logits_unchanged(family):
    """q/k/v and gate/up fused into one weight each: same logits (prefill chunks, decode
    steps, compactions) on a bounded cache, no extra parameters, every part served once."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
    from memory_tiny_models import forward, tiny_model
    ref_model = use_scoring_attention(tiny_model(family, seed=11))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    n_params = sum(p.numel() for p in model.parameters())
    assert fuse_projections(model) == 2 * model.config.num_hidden_layers
    assert fuse_projections(model) == 0                      # idempotent
    assert sum(p.numel() for p in model.parameters()) == n_params
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.k_proj, FusedPart)
    torch.testing.assert_close(attn.k_proj.weight, ref_model.model.layers[0].self_attn
                               .k_proj.weight, rtol=0, atol=0)
    calls = []
    real = torch.nn.functional.linear
    try:
        torch.nn.functional.linear = lambda *a, **k: calls.append(1) or real(*a, **k)
        caches = [BoundedCache(build_policy("inf_mllm", 48), m.config, max_chunk=32,
                               decode_slack=4) for m in (ref_model, model)]
        g = torch.Generator().manual_seed(3)
        for step in range(14):
            ids = torch.randint(0, 100, (1, 30 if step < 3 else 1), generator=g)
            calls.clear()
            ref = forward(ref_model, ids, caches[0]).logits
            n_ref = len(calls)
            calls.clear()
            got = forward(model, ids, caches[1]).logits
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
            # per layer 7 projections -> 4 (qkv, o, gate-up, down); lm_head unchanged
            assert n_ref - len(calls) == 3 * model.config.num_hidden_layers
    finally:
        torch.nn.functional.linear = real
    assert caches[0].describe()["compactions"] == caches[1].describe()["compactions"] > 0
    mlp = model.model.layers[0].mlp
    x = torch.randn(1, 3, model.config.hidden_size)
    ref_mlp = ref_model.model.layers[0].mlp
    torch.testing.assert_close(mlp.up_proj(x), ref_mlp.up_proj(x))   # out of order: own slice
    torch.testing.assert_close(mlp.gate_proj(x), ref_mlp.gate_proj(x))


@pytest.mark.parametrize("family,fused", [("llama", True), ("qwen2", False)])
def test_tiny_compiled_decode_equals_eager_through_compactions(family, fused):
    """Inductor-compiled one-token norms / MLP / rotary embedding (CPU): the same logits as
    the eager model over prefill chunks (not compiled) and decode steps (compiled) through
    compactions; one graph per function for all layers, no graph break."""
    import sys
    from pathlib import Path

    from torch._dynamo.utils import counters
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
    from memory_tiny_models import forward, tiny_model
    ref_model = use_scoring_attention(tiny_model(family, seed=11))
    model = use_scoring_attention(copy.deepcopy(ref_model))
    if fused:
        fuse_projections(model)
    layers = model.config.num_hidden_layers
    assert compile_decode(model) == {"norms": 2 * layers + 1, "mlps": layers, "rotary": 1}
    assert compile_decode(model) == {"norms": 0, "mlps": 0, "rotary": 0}     # idempotent
    twin = copy.deepcopy(model)
    assert twin.model.norm.forward.__self__ is twin.model.norm         # rebound to the copy
    with pytest.raises(ValueError, match="CUDA graphs of its own"):
        compile_decode(model, mode="reduce-overhead")
    counters.clear()
    caches = [BoundedCache(build_policy(name, 48), m.config, max_chunk=32, decode_slack=4)
              for name in ("inf_mllm", "h2o") for m in (ref_model, model)]
    g = torch.Generator().manual_seed(3)
    for step in range(16):
        ids = torch.randint(0, 100, (1, 30 if step < 3 else 1), generator=g)
        for ref_cache, cache in (caches[:2], caches[2:]):
            ref = forward(ref_model, ids, ref_cache).logits
            got = forward(model, ids, cache).logits
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    assert all(c.describe()["compactions"] > 2 for c in caches)
    assert counters["stats"]["unique_graphs"] <= 3            # norm, MLP, rotary: once each
    assert not counters["graph_break"] and not FAILED


def test_bench_rejects_unknown_policy(capsys):
    with pytest.raises(SystemExit):
        main(["decode", "--smoke", "--policies", "nope"])
    assert "unknown policies" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["inf_mllm", "h2o", "snapkv", "inf_mllm_carry"])
def test_tiny_graph_runner_bookkeeping_equals_cache_update(name):
    """advance_layer (used after a graph replay) must leave the host state update() leaves,
    through the step that leaves the layers pending and the compaction the runner runs
    before the next replay: in steady state every step is graph-eligible."""
    model = llama_model("tiny", "cpu", torch.float32)
    use_scoring_attention(model)
    over = {"carry": 0.5} if name.endswith("_carry") else {}
    cache = BoundedCache(build_policy(name.replace("_carry", ""), 64, over), model.config,
                         max_chunk=32, decode_slack=8)
    prefill_to(model, cache, 100, 32, "cpu")
    cache.begin_source(5, stamp=1.0, kind="answer")
    cache.mark()
    twin = copy.deepcopy(cache)
    window = cache.policy.score_mode == "window"
    kw = cache_kwarg(model)
    compactions = 0
    for step in range(20):                          # two slack cycles: compacts at 9 and 17
        pos = cache.next_position()
        with torch.no_grad():
            model(input_ids=torch.tensor([[7]]), position_ids=torch.tensor([[pos]]),
                  use_cache=True, **{kw: cache})
        compactions += compact_if_all_pending(twin)
        assert graph_signature(twin) is not None, step
        for layer in twin.layers:
            advance_layer(layer)
        for a, b in zip(cache.layers, twin.layers):
            assert (a.length, a.next_pos, a.arrived, a.pending, a.scored_len, a.unscored) == \
                (b.length, b.next_pos, b.arrived, b.pending, b.scored_len, b.unscored), step
            assert a.segments == b.segments and a.undo_state == b.undo_state
            if window:                              # no decode scores: the same selection
                a.flush()
                b.flush()
                assert torch.equal(a.meta[..., :a.length], b.meta[..., :b.length])
            # the graph replay writes the step's keys and values; the twin ran no model, so
            # it gets them here (inf_mllm's novelty reads the values at the next compaction)
            b.key_buf.copy_(a.key_buf)
            b.value_buf.copy_(a.value_buf)
    assert compactions == 2
    assert sum(layer.pending for layer in cache.layers) == 0


def test_cpu_compare_ingest_times_each_policy_on_the_same_frames_tiny():
    """bench cpu --compare: one session per spec, every frame into each, stats per spec."""
    from ros2_infmllm.eval.bench.ingest import compare_ingest
    rows = compare_ingest(["inf_mllm", "inf_mllm:novelty=0", "streaming_llm"], frames=8,
                          budget=300, model="tiny-test")
    assert [r["policy"] for r in rows] == ["inf_mllm", "inf_mllm:novelty=0", "streaming_llm"]
    assert all(r["ingest"]["n"] == 8 and r["mean_ms"] > 0 for r in rows)
    assert rows[0]["ratio_to_first"] == 1.0
    assert all(0 < r["cache_tokens"] <= 300 for r in rows)
    assert rows[2]["cache_tokens"] == 300          # the frames overflowed the budget
