"""Smoke tests of the benchmarks on tiny random-weight models (CPU, seconds; no timing asserts)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from ros2_infmllm.eval.bench import main
from ros2_infmllm.eval.bench.common import llama_model
from ros2_infmllm.eval.bench.runs import policy_for, prefill_to
from ros2_infmllm.memory import BoundedCache, use_scoring_attention
from ros2_infmllm.models.cuda_graph import advance_layer, compact_if_all_pending, graph_signature


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
    cache = BoundedCache(policy_for(name.replace("_carry", ""), 64, **over), model.config,
                         max_chunk=32, decode_slack=8)
    prefill_to(model, cache, 100, 32, "cpu")
    cache.begin_source(5, stamp=1.0, kind="answer")
    cache.mark()
    twin = copy.deepcopy(cache)
    window = cache.policy.score_mode == "window"
    compactions = 0
    for step in range(20):                          # two slack cycles: compacts at 9 and 17
        pos = cache.next_position()
        with torch.no_grad():
            model(input_ids=torch.tensor([[7]]), position_ids=torch.tensor([[pos]]),
                  use_cache=True, past_key_values=cache)
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
    assert compactions == 2
    assert sum(layer.pending for layer in cache.layers) == 0
