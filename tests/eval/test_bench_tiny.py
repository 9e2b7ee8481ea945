"""Smoke tests of the benchmarks on tiny random-weight models (CPU, seconds; no timing asserts)."""
from __future__ import annotations

import json

import pytest

from ros2_infmllm.eval.bench import main


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


def test_bench_rejects_unknown_policy(capsys):
    with pytest.raises(SystemExit):
        main(["decode", "--smoke", "--policies", "nope"])
    assert "unknown policies" in capsys.readouterr().err


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
