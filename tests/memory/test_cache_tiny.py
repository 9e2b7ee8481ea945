"""BoundedCache on tiny random-weight models: equality with DynamicCache, bounded memory,
re-positioned keys, evidence and metadata."""

import pytest
import torch
from memory_tiny_models import ROTATION, VOCAB, forward, tiny_config, tiny_model
from transformers import DynamicCache, GPT2Config

from ros2_infmllm.memory import BoundedCache, make_policy, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg

FAMILIES = ["llama", "qwen2", "gpt_neox", "qwen2_vl"]
POLICY_PARAMS = {
    "full": {},
    "window": dict(budget=512),
    "streaming_llm": dict(budget=512, n_sink=4),
    "h2o": dict(budget=512, n_recent=32),
    "snapkv": dict(budget=512, window=8, kernel=5, n_recent=8),
    "inf_mllm": dict(budget=512, n_sink=4, n_recent=32, window=8, kernel=5, bias=1.0),
}


def _ids(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (1, n), generator=g)


@pytest.fixture(scope="module")
def models():
    out = {}
    for fam in FAMILIES:
        out[fam] = use_scoring_attention(tiny_model(fam))
    return out


def _chunked(model, cache, ids, sizes):
    logits, s = [], 0
    for q in sizes:
        logits.append(forward(model, ids[:, s:s + q], cache).logits)
        s += q
    assert s == ids.shape[1]
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_budget_above_length_matches_dynamic_cache_chunked(models, family):
    model = models[family]
    ids = _ids(150)
    ref = forward(model, ids, DynamicCache(config=model.config)).logits
    cache = BoundedCache(make_policy("inf_mllm", **POLICY_PARAMS["inf_mllm"]), model.config,
                         max_chunk=64, rotation=ROTATION[family])
    got = _chunked(model, cache, ids, [40, 1, 64, 1, 1, 43])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    assert cache.get_seq_length() == 150 and cache.next_position() == 150


@pytest.mark.parametrize("policy", sorted(POLICY_PARAMS))
def test_tiny_llama_every_policy_matches_dynamic_cache_under_budget(models, policy):
    model = models["llama"]
    ids = _ids(120, seed=2)
    ref = forward(model, ids, DynamicCache(config=model.config)).logits
    cache = BoundedCache(make_policy(policy, **POLICY_PARAMS[policy]), model.config, max_chunk=32)
    got = _chunked(model, cache, ids, [30, 30, 1, 29, 30])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_generate_matches_dynamic_cache(models, family):
    model = models[family]
    ids = _ids(40, seed=3)
    kw = cache_kwarg(model)
    gen = dict(max_new_tokens=12, do_sample=False, output_logits=True,
               return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad():
        ref = model.generate(ids, **{kw: DynamicCache(config=model.config)}, **gen)
        cache = BoundedCache(make_policy("inf_mllm", **POLICY_PARAMS["inf_mllm"]),
                             model.config, max_chunk=64, rotation=ROTATION[family])
        got = model.generate(ids, **{kw: cache}, **gen)
        assert torch.equal(got.sequences, ref.sequences)
        for a, b in zip(got.logits, ref.logits):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
        # continue a stream: prefill a prefix chunk-wise, then generate() from the cache
        ref_c, cache = DynamicCache(config=model.config), BoundedCache(
            make_policy("inf_mllm", **POLICY_PARAMS["inf_mllm"]), model.config, max_chunk=64,
            rotation=ROTATION[family])
        forward(model, ids[:, :25], ref_c)
        _chunked(model, cache, ids[:, :25], [10, 15])
        ref = model.generate(ids, **{kw: ref_c}, **gen)
        got = model.generate(ids, **{kw: cache}, **gen)
    assert torch.equal(got.sequences, ref.sequences)
    for a, b in zip(got.logits, ref.logits):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


BOUNDED = ["window", "streaming_llm", "h2o", "snapkv", "inf_mllm"]


@pytest.mark.parametrize("policy", BOUNDED)
def test_tiny_20k_streamed_tokens_stay_at_budget_without_allocation(models, policy):
    model = models["llama"]
    budget, chunk = 256, 100
    params = dict(POLICY_PARAMS[policy], budget=budget)
    cache = BoundedCache(make_policy(policy, **params), model.config, max_chunk=chunk)
    g = torch.Generator().manual_seed(4)
    ptrs = nbytes = None
    for step in range(200):                           # 20,000 tokens
        forward(model, torch.randint(0, VOCAB, (1, chunk), generator=g), cache)
        lengths = [layer.get_seq_length() for layer in cache.layers]
        if (step + 1) * chunk > budget:
            assert lengths == [budget] * len(cache.layers)
            if ptrs is None:                           # first compaction pending here
                cache.compact()
                ptrs = [(la.key_buf.data_ptr(), la.value_buf.data_ptr(), la.meta.data_ptr())
                        for la in cache.layers]
                nbytes = cache.nbytes()
    assert [(la.key_buf.data_ptr(), la.value_buf.data_ptr(), la.meta.data_ptr())
            for la in cache.layers] == ptrs
    assert cache.nbytes() == nbytes
    info = cache.describe()
    assert info["reallocations"] == 0 and info["tokens_seen"] == 20000
    assert info["tokens_per_layer"] == [budget] * len(cache.layers)
    if make_policy(policy, **params).repositions:
        assert cache.next_position() == budget        # positions never leave [0, budget)
    else:
        assert cache.next_position() == 20000         # snapkv: positions keep growing


def test_tiny_decode_steps_compact_in_batches_within_slack(models):
    model = models["llama"]
    cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=4,
                                     kernel=3), model.config, max_chunk=32, decode_slack=8)
    forward(model, _ids(60), cache)
    seen = []
    for t in range(100):
        forward(model, torch.tensor([[t % VOCAB]]), cache)
        seen.append(cache.layers[0].length)
    assert max(seen) <= 64 + 8 and min(seen[10:]) >= 64
    assert cache.describe()["reallocations"] == 0


def test_tiny_reposition_gives_keys_equal_to_fresh_prefill_at_new_positions(models):
    """Layer-0 keys depend only on token and position: after compaction each kept key must
    equal the key of the same token prefilled at its new position."""
    for family in ("llama", "gpt_neox"):
        model = models[family]
        ids = _ids(300, seed=5)
        cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16,
                                         window=8, kernel=3), model.config, max_chunk=100)
        for s in range(0, 300, 100):
            forward(model, ids[:, s:s + 100], cache)
        cache.compact()
        layer = cache.layers[0]
        layer.flush()
        assert layer.length == 64
        for h in range(layer.n_heads):
            kept = layer.arrival[h, :64]
            assert torch.equal(layer.pos[0, h, :64], torch.arange(64))
            fresh = DynamicCache(config=model.config)
            forward(model, ids[:, kept], fresh)
            torch.testing.assert_close(layer.keys[0, h], fresh.layers[0].keys[0, h],
                                       atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(layer.values[0, h], fresh.layers[0].values[0, h])


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_tiny_window_scores_equal_eager_attention(family):
    model = tiny_model(family, seed=6)
    ids = _ids(90, seed=7)
    window, prefix = 8, 60
    model.set_attn_implementation("eager")
    ref_cache = DynamicCache(config=model.config)
    forward(model, ids[:, :prefix], ref_cache)
    out = forward(model, ids[:, prefix:], ref_cache, output_attentions=True)
    use_scoring_attention(model)
    cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16,
                                     window=window, kernel=3, carry=0.0), model.config,
                         max_chunk=32, rotation=ROTATION[family])    # carry 0: own scores
    forward(model, ids[:, :prefix], cache)
    got = forward(model, ids[:, prefix:], cache)
    torch.testing.assert_close(got.logits, out.logits, atol=2e-5, rtol=1e-4)
    text = model.config.get_text_config()
    groups = text.num_attention_heads // text.num_key_value_heads
    for layer, attn in zip(cache.layers, out.attentions):
        assert layer.pending and layer.scored_len == 90
        expect = attn[0, :, -window:].sum(dim=1)                          # [H_q, T]
        expect = expect.reshape(text.num_key_value_heads, groups, -1).mean(dim=1)
        torch.testing.assert_close(layer.scores[:, :90], expect, atol=1e-5, rtol=1e-4)


def test_tiny_policy_needing_scores_without_scoring_attention_raises():
    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    cache = BoundedCache(make_policy("full"), model.config)
    cache.request_scores()
    forward(model, _ids(5), cache)
    with pytest.raises(RuntimeError, match="use_scoring_attention"):
        cache.source_attention()
    cache = BoundedCache(make_policy("inf_mllm", budget=32, n_sink=2, n_recent=8, window=4,
                                     kernel=3), model.config, max_chunk=64)
    forward(model, _ids(50), cache)
    with pytest.raises(RuntimeError, match="use_scoring_attention"):
        forward(model, _ids(5), cache)
    # decode steps do not hide an unscored chunk: the step that reaches the slack asks for
    # scores of its query (none come), so the compaction after it still fails
    for policy in ("inf_mllm", "h2o"):
        cache = BoundedCache(make_policy(policy, budget=32, n_sink=2, n_recent=8),
                             model.config, max_chunk=64, decode_slack=4)
        forward(model, _ids(30), cache)
        for _ in range(6):                          # 31 .. 36 = budget + slack: pending
            forward(model, _ids(1), cache)
        assert cache.layers[0].pending
        with pytest.raises(RuntimeError, match="use_scoring_attention"):
            forward(model, _ids(1), cache)


def test_tiny_sources_evidence_describe_and_reset(models):
    model = models["llama"]
    cache = BoundedCache(make_policy("inf_mllm", budget=96, n_sink=4, n_recent=32, window=8,
                                     kernel=3, carry=0.0, selection="per_head"),
                         model.config, max_chunk=64)
    for frame in range(5):
        cache.begin_source(frame, stamp=10.0 + frame, kind="frame")
        forward(model, _ids(40, seed=frame), cache)
    cache.begin_source("q", stamp=99.0, kind="question")
    cache.reset_attention_tally()
    cache.request_scores()
    forward(model, _ids(6, seed=9), cache)
    att = cache.source_attention()
    assert set(att) <= {0, 1, 2, 3, 4, "q"} and sum(att.values()) > 0
    assert "q" in att
    mem = cache.sources_in_memory()
    n_heads = cache.layers[0].n_heads
    assert sum(mem.values()) == 96 * n_heads * len(cache.layers)
    assert 0 in mem and "q" in mem and mem["q"] == 6 * n_heads * len(cache.layers)
    info = cache.describe()
    assert info["policy"] == "inf_mllm" and info["budget"] == 96
    assert info["sources"]["3"]["stamp"] == 13.0 and info["sources"]["q"]["kind"] == "question"
    assert info["evicted_tokens"] == (206 - 96) * len(cache.layers)
    # the request is one-shot: the next forward is not tallied again
    before = cache.source_attention()
    forward(model, _ids(1, seed=10), cache)
    assert cache.source_attention() == before
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.sources_in_memory() == {}
    assert cache.source_attention() == {}
    ref = forward(model, _ids(20), DynamicCache(config=model.config)).logits
    torch.testing.assert_close(forward(model, _ids(20), cache).logits, ref, atol=2e-5,
                               rtol=1e-4)


def test_model_without_rope_raises_unless_policy_keeps_positions():
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)
    with pytest.raises(ValueError, match="no rotary position embedding"):
        BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16), cfg)
    BoundedCache(make_policy("snapkv", budget=64), cfg)
    BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, reposition=False),
                 cfg)


@pytest.mark.parametrize("kwargs,exc", [(dict(max_chunk=0), ValueError),
                                        (dict(decode_slack=0), ValueError),
                                        (dict(max_chunk=2.5), ValueError)])
def test_cache_parameter_validation(kwargs, exc):
    with pytest.raises(exc):
        BoundedCache(make_policy("window", budget=8), tiny_config("llama"), **kwargs)
    with pytest.raises(TypeError, match="Policy"):
        BoundedCache("inf_mllm", tiny_config("llama"))


def _frame_positions(start):
    """M-RoPE rows of a 40-token frame chunk: 5 text, a 5x5 image grid, 10 text."""
    t, h, w = list(range(start, start + 5)), list(range(start, start + 5)), \
        list(range(start, start + 5))
    g = start + 5
    for r in range(5):
        for c in range(5):
            t.append(g)
            h.append(g + r)
            w.append(g + c)
    after = g + 5
    for i in range(10):
        t.append(after + i)
        h.append(after + i)
        w.append(after + i)
    return torch.tensor([t, h, w]).unsqueeze(1), after + 10        # [3, 1, 40], next start


def test_tiny_qwen2_vl_mrope_compaction_keys_equal_fresh_prefill_at_packed_positions(models):
    model = models["qwen2_vl"]
    cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=8,
                                     kernel=3), model.config, max_chunk=40,
                         rotation=ROTATION["qwen2_vl"])
    ids = _ids(200, seed=11)
    for frame in range(5):
        start = cache.next_position()
        pos, _ = _frame_positions(start)
        cache.begin_source(frame, stamp=float(frame), kind="frame")
        cache.set_next_positions(pos)
        forward(model, ids[:, 40 * frame:40 * frame + 40], cache, position_ids=pos)
    cache.compact()
    layer = cache.layers[0]
    layer.flush()
    assert layer.length == 64
    top = int(layer.pos[:, :, :64].max()) + 1
    assert cache.next_position() == top and top <= 64 + 40
    for h in range(layer.n_heads):
        kept = layer.arrival[h, :64]
        fresh = DynamicCache(config=model.config)
        forward(model, ids[:, kept], fresh, position_ids=layer.pos[:, h, :64].unsqueeze(1))
        torch.testing.assert_close(layer.keys[0, h], fresh.layers[0].keys[0, h],
                                   atol=1e-4, rtol=1e-4)


def test_tiny_scoring_runs_only_before_compaction_except_h2o(models, monkeypatch):
    from ros2_infmllm.memory import scoring
    calls = []
    real = scoring.window_scores

    def spy(query, key, n_queries, *args):
        calls.append((query.shape[2], key.shape[2], n_queries))
        return real(query, key, n_queries, *args)

    monkeypatch.setattr(scoring, "window_scores", spy)
    model = models["llama"]
    n_layers = model.config.num_hidden_layers
    cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=4,
                                     kernel=3, carry=0.0), model.config, max_chunk=40,
                         decode_slack=4)             # carry > 0 scores every chunk (own test)
    forward(model, _ids(40), cache)                 # under budget: no scoring
    forward(model, _ids(1), cache)                  # decode under budget: none
    assert calls == []
    forward(model, _ids(40), cache)                 # 81 > 64: scored (window 4)
    assert calls == [(40, 81, 4)] * n_layers
    calls.clear()
    for _ in range(3):                              # decode within slack: none
        forward(model, _ids(1), cache)
    assert calls == []
    forward(model, _ids(1), cache)                  # slack reached: pending, not scored
    assert all(layer.pending and layer.unscored == 4 for layer in cache.layers)
    forward(model, _ids(1), cache)                  # compacts on the 81-token chunk's scores
    assert calls == []
    assert cache.layers[0].length == 65 and cache.describe()["compactions"] == 2 * n_layers
    # no scored chunk covers the older tokens (60 tokens prefilled under budget): the step
    # that leaves the layers pending scores its one query, as before
    cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=4,
                                     kernel=3, carry=0.0), model.config, max_chunk=64,
                         decode_slack=4)
    forward(model, _ids(60), cache)
    for _ in range(7):
        forward(model, _ids(1), cache)
    assert calls == []
    forward(model, _ids(1), cache)                  # 68 = budget + slack: scored
    assert calls == [(1, 68, 4)] * n_layers
    calls.clear()
    cache = BoundedCache(make_policy("h2o", budget=64, n_recent=16), model.config, max_chunk=40)
    forward(model, _ids(10), cache)
    forward(model, _ids(1), cache)
    assert calls == [(10, 10, None)] * n_layers + [(1, 11, None)] * n_layers


@pytest.mark.parametrize("policy,first", [("inf_mllm", 50), ("inf_mllm", 90), ("full", 50)])
def test_tiny_rollback_after_failed_forward_restores_consistent_memory(models, policy, first):
    model = models["llama"]
    params = dict(POLICY_PARAMS[policy])
    if policy != "full":
        params.update(budget=64, n_recent=16)

    def make():
        return BoundedCache(make_policy(policy, **params), model.config, max_chunk=40)

    good, failed = make(), make()
    for cache in (good, failed):
        forward(model, _ids(first, seed=20), cache)
    failed.mark()

    def boom(module, args, kwargs, output):
        raise RuntimeError("injected failure in layer 1")

    hook = model.model.layers[1].self_attn.register_forward_hook(boom, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            forward(model, _ids(30, seed=21), failed)
    finally:
        hook.remove()
    failed.rollback()
    assert len({layer.length for layer in failed.layers}) == 1
    assert failed.get_seq_length() == good.get_seq_length()
    failed.mark()
    got = forward(model, _ids(30, seed=22), failed).logits
    ref = forward(model, _ids(30, seed=22), good).logits
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    assert failed.describe()["tokens_per_layer"] == good.describe()["tokens_per_layer"]


def test_tiny_source_bookkeeping_stays_bounded_on_endless_stream(models):
    model = models["llama"]
    cache = BoundedCache(make_policy("streaming_llm", budget=64, n_sink=4), model.config,
                         max_chunk=16)
    for frame in range(700):
        cache.begin_source(("cam", frame), stamp=float(frame), kind="frame")
        forward(model, _ids(8, seed=frame), cache)
    assert len(cache.source_ids) <= 300 and len(cache.source_meta) <= 300
    mem = cache.sources_in_memory()
    heads_layers = cache.layers[0].n_heads * len(cache.layers)
    # streaming_llm keeps the 4 sinks of frame 0 and the newest 60 tokens (frames 692..699)
    expect = {("cam", 0): 4 * heads_layers, ("cam", 692): 4 * heads_layers}
    expect.update({("cam", f): 8 * heads_layers for f in range(693, 700)})
    assert mem == expect
    assert set(cache.describe()["sources"]) == {str(k) for k in expect}
    assert cache.describe()["sources"][str(("cam", 699))]["stamp"] == 699.0


SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


@pytest.mark.parametrize("policy", BOUNDED)
def test_tiny_streaming_and_decode_never_read_tensor_values_on_host(models, policy,
                                                                    monkeypatch):
    """No host synchronisation from memory/ code while prefilling chunks and decoding
    (compactions included): nothing reads a tensor value back to Python."""
    import traceback
    model = models["llama"]
    params = dict(POLICY_PARAMS[policy], budget=64)
    if "n_recent" in params:
        params["n_recent"] = 16
    cache = BoundedCache(make_policy(policy, **params), model.config, max_chunk=32,
                         decode_slack=4)
    forward(model, _ids(50), cache)
    hits = []

    def spy(name, real):
        def wrapper(self, *args, **kwargs):
            stack = traceback.extract_stack()
            if any("ros2_infmllm" in f.filename and "memory" in f.filename for f in stack):
                hits.append((name, stack[-2].filename, stack[-2].lineno))
            return real(self, *args, **kwargs)
        return wrapper

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    for step in range(3):
        forward(model, _ids(32, seed=step), cache)             # chunk + compaction
    for t in range(20):
        forward(model, torch.full((1, 1), t), cache)           # decode, compacts every 4
    monkeypatch.undo()
    assert cache.describe()["compactions"] >= 6 * len(cache.layers)
    assert hits == []


def test_tiny_deepcopy_probes_memory_without_touching_the_original(models):
    """The eval probes a copy of the memory (copy.deepcopy) with a question."""
    import copy
    model = models["llama"]
    cache = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=8,
                                     kernel=3), model.config, max_chunk=40)
    twin = BoundedCache(make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=8,
                                    kernel=3), model.config, max_chunk=40)
    for c in (cache, twin):
        c.begin_source("a", 1.0, "frame")
        forward(model, _ids(40, seed=30), c)
        forward(model, _ids(40, seed=31), c)          # pending compaction
    probe = copy.deepcopy(cache)
    assert probe.layers[0].evidence is probe.evidence
    assert probe.layers[0].keys.data_ptr() == probe.layers[0].key_buf.data_ptr()
    probe.begin_source("q", 2.0, "question")
    for t in range(8):
        forward(model, _ids(5 if t == 0 else 1, seed=40 + t), probe)
    got = forward(model, _ids(7, seed=50), cache).logits
    ref = forward(model, _ids(7, seed=50), twin).logits
    torch.testing.assert_close(got, ref)
    assert "q" not in cache.sources_in_memory() and "q" in probe.sources_in_memory()


def _stream_with(model, policy, batched, frames=False):
    """Stream chunks + decode steps through a cache; return logits, kept metadata, stats.

    Per-head selection: shared selection spans every layer only when they compact together.
    """
    params = dict(POLICY_PARAMS[policy], budget=64)
    if "n_recent" in params:
        params["n_recent"] = 16
    if policy == "inf_mllm":
        params["selection"] = "per_head"
    cache = BoundedCache(make_policy(policy, **params), model.config, max_chunk=40,
                         decode_slack=4, rotation=ROTATION[model.config.model_type])
    cache.batched = batched
    stacked = []
    real = cache._compact_stack
    cache._compact_stack = lambda: stacked.append(real()) or stacked[-1]
    out = []
    ids = _ids(400, seed=21)
    for c in range(6):
        cache.begin_source(c, stamp=float(c), kind="frame")
        kw = {}
        if frames:
            pos, _ = _frame_positions(cache.next_position())
            cache.set_next_positions(pos)
            kw = dict(position_ids=pos)
        out.append(forward(model, ids[:, 40 * c:40 * c + 40], cache, **kw).logits)
        if not frames:
            for t in range(6):
                out.append(forward(model, torch.full((1, 1), t + c), cache).logits)
    cache.compact()
    metas = []
    for layer in cache.layers:
        layer.flush()
        metas.append((layer.length, layer.meta[..., :layer.length].clone(),
                      layer.keys.clone(), layer.values.clone()))
    return torch.cat(out, dim=1), metas, cache.next_position(), stacked


@pytest.mark.parametrize("family,frames", [("llama", False), ("qwen2_vl", True)])
@pytest.mark.parametrize("policy", ["inf_mllm", "h2o", "snapkv", "streaming_llm"])
def test_tiny_batched_compaction_equals_per_layer_compaction(models, family, frames, policy):
    """All layers compacted in one batched step give the same memory as layer by layer."""
    model = models[family]
    got, got_meta, got_next, stacked = _stream_with(model, policy, True, frames)
    ref, ref_meta, ref_next, ref_stacked = _stream_with(model, policy, False, frames)
    assert any(stacked), "the batched path never ran"
    assert not any(ref_stacked)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert got_next == ref_next
    for (n, meta, k, v), (rn, rmeta, rk, rv) in zip(got_meta, ref_meta):
        assert n == rn
        assert torch.equal(meta, rmeta)
        torch.testing.assert_close(k, rk, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, rv)


def test_tiny_carry_adds_each_chunk_score_to_decayed_relevance(models, monkeypatch):
    """inf_mllm with carry scores every chunk and keeps carry**(tokens/budget) of the past;
    while the cache holds fewer than ``budget`` tokens a chunk's scores count t/budget."""
    from ros2_infmllm.memory import scoring
    got = []
    real = scoring.window_scores

    def spy(*args):
        out = real(*args)
        got.append(out.clone())
        return out

    monkeypatch.setattr(scoring, "window_scores", spy)
    model = models["llama"]
    n_layers = model.config.num_hidden_layers
    pol = make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=4, kernel=3,
                      carry=0.5)
    cache = BoundedCache(pol, model.config, max_chunk=40, decode_slack=4)
    forward(model, _ids(20), cache)                 # under budget, but scored (carry)
    forward(model, _ids(30, seed=5), cache)         # under budget, scored
    assert len(got) == 2 * n_layers
    first, second = got[0], got[n_layers]
    want = first * (20 / 64) * 0.5 ** (30 / 64)
    want = torch.cat([want, torch.zeros(first.shape[0], 30)], dim=1) + second * (50 / 64)
    torch.testing.assert_close(cache.layers[0].scores[:, :50], want)
    forward(model, _ids(30, seed=6), cache)         # 80 > 64: compaction keeps the scores
    cache.compact()
    layer = cache.layers[0]
    assert layer.length == 64 and layer.scored_len == 64
    assert torch.all(layer.scores[:, :64] >= 0)


def test_carry_factor_and_validation():
    """carry 0 replaces scores (the paper's rule); carry c keeps c per budget tokens; c < 1."""
    pol0 = make_policy("inf_mllm", budget=8, n_sink=1, n_recent=2, window=4, kernel=1, bias=0.0,
                       carry=0.0)
    pol1 = make_policy("inf_mllm", budget=8, n_sink=1, n_recent=2, window=4, kernel=1, bias=0.0,
                       carry=0.9)
    assert pol0.carry_factor(100) == 1.0 and not pol0.keeps_scores
    assert pol1.keeps_scores and pol1.carry_factor(8) == pytest.approx(0.9)
    assert pol1.score_weight(2) == pytest.approx(0.25) and pol1.score_weight(12) == 1.0
    assert pol0.score_weight(2) == 1.0                        # replaced, not accumulated
    assert make_policy("h2o", budget=8, n_sink=1, n_recent=2).score_weight(2) == 1.0
    with pytest.raises(ValueError, match="carry"):
        make_policy("inf_mllm", budget=8, n_sink=1, n_recent=2, carry=1.0)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("policy,carry", [("inf_mllm", 0.0), ("inf_mllm", 0.5), ("snapkv", None)])
def test_tiny_decode_compaction_keeps_unscored_newest_and_uses_carried_scores(
        models, monkeypatch, policy, carry, batched):
    """Decode compactions score nothing new: they rank the older tokens by the last scored
    chunk's scores (gathered through every compaction) and keep every token the unscored
    one-token steps appended (here 8 > n_recent = 4, so plain recency would not keep them)."""
    from ros2_infmllm.memory import scoring
    calls = []
    real = scoring.window_scores

    def spy(query, key, *args):
        calls.append((query.shape[2], key.shape[2]))
        return real(query, key, *args)

    monkeypatch.setattr(scoring, "window_scores", spy)
    model = models["llama"]
    params = dict(budget=64, n_sink=4, n_recent=4, window=4, kernel=1)
    if policy == "inf_mllm":
        params.update(bias=0.0, carry=carry, novelty=0.0,   # priority = the scores
                      selection="per_head")
    cache = BoundedCache(make_policy(policy, **params), model.config, max_chunk=40,
                         decode_slack=8)
    cache.batched = batched
    forward(model, _ids(40, seed=2), cache)
    forward(model, _ids(40, seed=3), cache)         # 80 > 64: scored, pending
    scores0 = [layer.scores[:, :80].clone() for layer in cache.layers]
    calls.clear()

    def kept(layer, n):
        layer.flush()
        return layer.arrival[:, :n].clone()

    forward(model, _ids(1, seed=4), cache)          # compacts on the chunk's scores
    first = []
    for layer, s0 in zip(cache.layers, scores0):
        arr = kept(layer, 64)
        assert layer.length == 65 and (layer.scored_len, layer.unscored) == (64, 1)
        # the kept tokens' scores were gathered with them (arrival = index in the stream)
        torch.testing.assert_close(layer.scores[:, :64], s0.gather(1, arr))
        first.append((arr, layer.scores[:, :64].clone()))
    for t in range(7):                              # 66 .. 72 = budget + slack
        forward(model, _ids(1, seed=5 + t), cache)
    assert all(layer.pending and layer.unscored == 8 for layer in cache.layers)
    forward(model, _ids(1, seed=20), cache)         # second compaction: carried scores
    assert calls == [], "a decode step asked for new scores"
    for layer, (arr, sc) in zip(cache.layers, first):
        pri = sc[:, 4:].clone()                      # scored, not sinks: best 52 of 60 win
        best = torch.topk(pri, 64 - 4 - 8, dim=-1).indices + 4
        want = torch.cat([arr[:, :4], arr.gather(1, best).sort(dim=-1).values,
                          torch.arange(80, 88).expand(arr.shape[0], -1)], dim=1)
        assert torch.equal(kept(layer, 64), want)
        assert layer.arrival[0, 64] == 88
        assert (layer.scored_len, layer.unscored) == (56, 9)
        carried = torch.cat([sc[:, :4], sc.gather(1, best.sort(dim=-1).values)], dim=1)
        torch.testing.assert_close(layer.scores[:, :56], carried)


@pytest.mark.parametrize("batched", [True, False])
def test_tiny_shared_selection_keeps_the_same_tokens_in_every_layer_and_head(models, batched):
    """selection="shared": one token set everywhere (per layer when layers compact alone)."""
    model = models["llama"]
    pol = make_policy("inf_mllm", budget=64, n_sink=4, n_recent=16, window=8, kernel=3,
                      carry=0.5, selection="shared")
    cache = BoundedCache(pol, model.config, max_chunk=40, decode_slack=4)
    cache.batched = batched
    for c in range(5):
        cache.begin_source(c, float(c), "frame")
        forward(model, _ids(40, seed=60 + c), cache)
        for t in range(5):
            forward(model, torch.full((1, 1), t), cache)
    cache.compact()
    kept = []
    for layer in cache.layers:
        layer.flush()
        arrival = layer.arrival[:, :layer.length]
        assert torch.equal(arrival, arrival[:1].expand_as(arrival))     # same in every head
        kept.append(arrival[0])
    if batched:
        assert all(torch.equal(k, kept[0]) for k in kept)                # and every layer


@pytest.mark.parametrize("policy", ["inf_mllm", "h2o"])
def test_tiny_decode_tally_equals_scoring_every_step(models, policy):
    """decode_tally (queries stored, scored in one batch at the fold; H2O: summed per slot)
    gives the per-source tally of request_scores() before every step: inf_mllm through
    forced folds of a full query ring (no compaction: a scored step would also change its
    policy scores), H2O (every step scored anyway) also through compactions."""
    model = models["llama"]
    params = dict(budget=64 if policy == "h2o" else 128, n_sink=2, n_recent=16)
    if policy == "inf_mllm":
        params.update(window=8, kernel=3)
    caches = [BoundedCache(make_policy(policy, **params), model.config, max_chunk=64,
                           decode_slack=6) for _ in range(2)]
    tallies = []
    for mode, cache in zip(("batched", "per_step"), caches):
        for frame in range(3):
            cache.begin_source(frame, stamp=float(frame), kind="frame")
            forward(model, _ids(30, seed=frame), cache)
        cache.begin_source("answer")
        cache.reset_attention_tally()
        cache.decode_tally = mode == "batched"
        for step in range(20):
            if mode == "per_step":
                cache.request_scores()
            forward(model, _ids(1, seed=100 + step), cache)
        tallies.append(cache.source_attention())
    assert caches[0].layers[0].compactions >= (2 if policy == "h2o" else 0)
    assert tallies[0].keys() == tallies[1].keys()
    for sid in tallies[1]:
        assert tallies[0][sid] == pytest.approx(tallies[1][sid], rel=1e-4, abs=1e-5)


def test_landmarks_are_taken_by_rank_then_newest_within_the_policy_share():
    """budget 40, share 0.25: 10 landmark tokens; rank 0 first, newest first in a rank."""
    policy = make_policy("inf_mllm", budget=40, n_sink=2, n_recent=8, landmarks=0.25)
    cache = BoundedCache(policy, tiny_config("llama"))
    cache.set_landmarks([(0, 4, 1), (10, 14, 0), (20, 24, 1), (30, 33, 2), (40, 42, 0)])
    assert policy.landmark_tokens == 10
    # rank 0: 40-42 (newest) then 10-14; rank 1: 20-24 fits; 0-4 and 30-33 do not
    assert cache.landmark_ranges() == [(10, 14), (20, 24), (40, 42)]
    assert cache.describe()["landmarks"] == {"given": 5, "kept_tokens": 10}
    with pytest.raises(ValueError, match="lo < hi"):
        cache.set_landmarks([(5, 5, 0)])
    cache.reset()
    assert cache.landmark_ranges() == []
    # the share is what the sinks and the recent tokens leave at most
    assert make_policy("inf_mllm", budget=40, n_sink=2, n_recent=30,
                       landmarks=0.5).landmark_tokens == 8
