"""BoundedLayer (memory/layer.py) holds no reference to its cache, and the scoring hand-off
is explicit: the keys a layer returns name it only while it asks its attention for scores."""

import torch
from memory_tiny_models import VOCAB, forward, tiny_model

from ros2_infmllm.memory import BoundedCache, make_policy, scoring, use_scoring_attention


def _cache(model):
    return BoundedCache(make_policy("inf_mllm", budget=32, n_sink=2, n_recent=8, window=4,
                                    kernel=3), model.config, max_chunk=24, decode_slack=4)


def test_layer_keeps_no_reference_to_its_cache():
    model = use_scoring_attention(tiny_model("llama"))
    cache = _cache(model)
    forward(model, torch.randint(0, VOCAB, (1, 40)), cache)
    for layer in cache.layers:
        assert not any(isinstance(v, BoundedCache) for v in vars(layer).values())
        assert layer.evidence is cache.evidence


def test_update_names_the_layer_on_its_keys_only_when_it_asks_for_scores():
    model = tiny_model("llama")
    cache = _cache(model)
    kv = torch.zeros((1, 2, 20, 16))
    keys, _ = cache.update(kv, kv, 0)             # 20 <= 32: no scores wanted
    layer = cache.layers[0]
    assert layer.score_request is None and not hasattr(keys, scoring.LAYER_ATTR)
    assert not scoring.give_scores(layer, torch.zeros((1, 4, 20, 16)), keys, None, None)
    keys, _ = cache.update(kv, kv, 0)             # 40 > 32: pending, wants its window
    assert layer.score_request == scoring.ScoreRequest(4)
    assert getattr(keys, scoring.LAYER_ATTR) is layer
    query = torch.randn((1, 4, 20, 16))
    assert scoring.give_scores(layer, query, keys, None, None)
    assert layer.score_request is None and layer.scored_len == 40
    assert not scoring.give_scores(layer, query, keys, None, None)   # served once
