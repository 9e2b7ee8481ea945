"""The one compaction (memory/compaction.py): over a stack of layers it gives what it gives
each layer alone, and prefill, decode, the graph runner's pre-step compaction and the
per-layer reference path all run it."""

import pytest
import torch
from memory_tiny_models import VOCAB, forward, tiny_model
from transformers import LlamaConfig

from ros2_infmllm.accel.cuda_graph import compact_if_all_pending
from ros2_infmllm.memory import BoundedCache, compaction, make_policy, use_scoring_attention
from ros2_infmllm.memory.rope import RopeSpec
from ros2_infmllm.memory.storage import Buffers

ROWS, HEADS, CAP, DIM = 1, 2, 24, 8


def _filled(n_layers, n, seed):
    """Buffers of ``n_layers`` layers holding ``n`` tokens of random keys, values, scores."""
    g = torch.Generator().manual_seed(seed)
    buf = Buffers.zeros(n_layers, HEADS, CAP, DIM, DIM, ROWS, torch.float32,
                        torch.device("cpu"))
    buf.keys[:, :, :n] = torch.randn((n_layers, HEADS, n, DIM), generator=g)
    buf.values[:, :, :n] = torch.randn((n_layers, HEADS, n, DIM), generator=g)
    buf.scores[:, :, :n] = torch.rand((n_layers, HEADS, n), generator=g)
    ramp = torch.arange(n)
    buf.meta[:, :ROWS, :, :n] = ramp
    buf.meta[:, ROWS, :, :n] = ramp
    return buf


@pytest.mark.parametrize("name,params", [
    ("h2o", dict(budget=10, n_recent=3)),
    ("streaming_llm", dict(budget=10, n_sink=2)),
    ("inf_mllm", dict(budget=10, n_sink=2, n_recent=3, window=2, kernel=3,
                      selection="per_head")),
])
def test_compacting_a_stack_equals_compacting_each_layer_alone(name, params):
    policy = make_policy(name, **params)
    rope = RopeSpec.from_config(LlamaConfig(hidden_size=2 * DIM, num_attention_heads=2))
    n = 20
    stack, scratch = _filled(3, n, seed=5), compaction.Scratch()
    alone = [stack.layer(i) for i in range(3)]
    alone = [Buffers(*(t.clone() for t in b.tensors())) for b in alone]
    got = compaction.compact(stack, policy, rope, ROWS, n, n, n, scratch)
    assert got.kept == 10 and got.evicted == 10 and got.next_position == 10
    for i, one in enumerate(alone):
        ref = compaction.compact(one, policy, rope, ROWS, n, n, n, scratch)
        assert (ref.kept, ref.next_position, ref.scored_len, ref.unscored) == \
            (got.kept, got.next_position, got.scored_len, got.unscored)
        mine = stack.layer(i)
        assert torch.equal(mine.meta[..., :10], one.meta[..., :10])
        assert torch.equal(mine.keys[:, :, :10], one.keys[:, :, :10])
        assert torch.equal(mine.values[:, :, :10], one.values[:, :, :10])
        assert torch.equal(mine.scores[..., :10], one.scores[..., :10])
    assert stack.meta[:, :ROWS, :, :10].eq(torch.arange(10)).all()   # re-packed positions


def test_device_ints_read_every_entry_once():
    values = compaction.DeviceInts(torch.tensor([3, 7]))
    assert values.get(1) == 7 and values.host == [3, 7] and values.get(0) == 3


@pytest.fixture(scope="module")
def llama():
    return use_scoring_attention(tiny_model("llama"))


def _ids(n, seed):
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batched", [True, False])
def test_prefill_decode_and_graph_step_all_run_the_one_compaction(llama, monkeypatch, batched):
    runs = []
    real = compaction.compact

    def spy(buffers, *args):
        runs.append(buffers.keys.shape[0])          # layers compacted in this run
        return real(buffers, *args)

    monkeypatch.setattr(compaction, "compact", spy)
    n_layers = llama.config.num_hidden_layers
    cache = BoundedCache(make_policy("inf_mllm", budget=32, n_sink=2, n_recent=8, window=4,
                                     kernel=3), llama.config, max_chunk=24, decode_slack=4)
    cache.batched = batched
    per_run = [n_layers] if batched else [1] * n_layers
    forward(llama, _ids(24, 1), cache)
    forward(llama, _ids(24, 2), cache)              # 48 > 32: pending
    assert runs == []
    forward(llama, _ids(4, 3), cache)               # prefill: compacts before appending
    assert runs == per_run
    forward(llama, torch.full((1, 1), 0), cache)    # decode: the chunk's pending one
    assert runs == 2 * per_run and cache.layers[0].length == 33
    for t in range(3):                              # 36 = budget + slack: pending
        forward(llama, torch.full((1, 1), t), cache)
    assert runs == 2 * per_run and all(layer.pending for layer in cache.layers)
    assert compact_if_all_pending(cache)            # the graph runner's pre-step compaction
    assert runs == 3 * per_run


@pytest.mark.parametrize("name,params,kept", [
    ("inf_mllm", dict(budget=10, n_sink=2, n_recent=3, window=2, kernel=1, bias=0.0,
                      novelty=0.0, landmarks=0.2), True),
    ("inf_mllm", dict(budget=10, n_sink=2, n_recent=3, window=2, kernel=1, bias=0.0,
                      novelty=0.0, landmarks=0.0), False),
    ("streaming_llm", dict(budget=10, n_sink=2), False),     # no landmarks parameter
])
def test_landmark_tokens_survive_compaction_where_the_policy_takes_them(name, params, kept):
    """Tokens 4-5 score lowest of all; as landmarks an inf_mllm with a share keeps them."""
    policy = make_policy(name, **params)
    n = 20
    buf = _filled(1, n, seed=3)
    buf.scores[:, :, 4:6] = 0.0
    bounds = torch.tensor([4, 6])
    rope = RopeSpec.from_config(LlamaConfig(hidden_size=2 * DIM, num_attention_heads=2))
    compaction.compact(buf, policy, rope, ROWS, n, n, n, compaction.Scratch(), bounds)
    arrivals = set(buf.meta[0, ROWS, 0, :10].tolist())
    assert ({4, 5} <= arrivals) == kept
