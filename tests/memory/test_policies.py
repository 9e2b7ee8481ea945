"""Policies on hand-built score patterns, and parameter validation (no model needed).

The score-only patterns build inf_mllm with ``novelty=0`` (novelty needs value vectors;
its own tests below give them)."""

import pytest
import torch

from ros2_infmllm.memory import POLICIES, make_policy
from ros2_infmllm.memory.policies import SelectionInput
from ros2_infmllm.memory.selection import age_decay, local_sum, novelty, top_k_per_head

T = 400      # cached tokens in every pattern
H = 2        # KV heads


def _inp(scores=None, length=T, heads=H):
    age = torch.arange(length - 1, -1, -1).expand(heads, length).contiguous()
    return SelectionInput(scores=scores, age=age, length=length)


def _base_scores():
    torch.manual_seed(0)
    return torch.rand(H, T) * 1e-3


def _kept(policy, inp):
    idx = policy.select(inp)
    assert idx.shape == (inp.age.shape[0], policy.budget)          # equal counts per head
    for row in idx:
        assert torch.all(row[1:] > row[:-1])                          # ascending, unique
    return [set(row.tolist()) for row in idx]


def test_window_keeps_last_budget():
    kept = _kept(make_policy("window", budget=64), _inp())
    assert all(k == set(range(T - 64, T)) for k in kept)


def test_streaming_llm_keeps_sinks_and_recent():
    kept = _kept(make_policy("streaming_llm", budget=64, n_sink=4), _inp())
    assert all(k == set(range(4)) | set(range(T - 60, T)) for k in kept)


def test_inf_mllm_keeps_sinks_recent_and_planted_cluster_per_head():
    scores = _base_scores()
    scores[0, 100:110] = 0.5          # head 0 attends to a cluster at 100..109
    scores[1, 200:210] = 0.5          # head 1 to another one
    pol = make_policy("inf_mllm", novelty=0.0,
                      budget=48, n_sink=4, n_recent=32, window=8, kernel=3,
                      bias=0.0, selection="per_head")
    kept = _kept(pol, _inp(scores))
    forced = set(range(4)) | set(range(T - 32, T))
    assert forced <= kept[0] and forced <= kept[1]
    assert set(range(100, 110)) <= kept[0] and not (set(range(200, 210)) & kept[0])
    assert set(range(200, 210)) <= kept[1] and not (set(range(100, 110)) & kept[1])


def test_inf_mllm_shared_selection_keeps_one_token_set_with_equal_votes():
    """Shared: every row keeps the same tokens; a head with huge scores gets one vote."""
    rows = 6
    scores = torch.rand(rows, T) * 1e-3
    scores[0, 100:110] = 50.0         # one loud head
    scores[1:, 200:210] = 0.05        # five quiet heads agree on another cluster
    scores[1:, 300:304] = 0.04
    pol = make_policy("inf_mllm", novelty=0.0,
                      budget=56, n_sink=4, n_recent=32, window=8, kernel=1,
                      bias=0.0, selection="shared")
    kept = _kept(pol, _inp(scores, heads=rows))          # 20 free slots
    assert all(k == kept[0] for k in kept)
    forced = set(range(4)) | set(range(T - 32, T))
    assert forced <= kept[0]
    assert set(range(200, 210)) | set(range(300, 304)) <= kept[0]   # the majority first
    assert len(set(range(100, 110)) & kept[0]) == 6      # the loud head only gets the rest
    per_head = _kept(make_policy("inf_mllm", novelty=0.0,
                                 budget=56, n_sink=4, n_recent=32, window=8,
                                 kernel=1, bias=0.0, selection="per_head"),
                     _inp(scores, heads=rows))
    assert per_head[0] != per_head[1]


def test_select_min_recent_forces_the_newest_unscored_tokens():
    scores = _base_scores()
    scores[:, 10:20] = 1.0
    pol = make_policy("inf_mllm", novelty=0.0, budget=48, n_sink=4, n_recent=8, kernel=1, bias=0.0)
    for selection in ("per_head", "shared"):
        pol.selection = selection
        kept = [set(r.tolist()) for r in pol.select(_inp(scores), 30)]
        assert all(set(range(T - 30, T)) <= k and set(range(4)) <= k for k in kept)
        capped = pol.select(_inp(scores), 1000)          # at most budget - n_sink of them
        assert all(set(r.tolist()) == set(range(4)) | set(range(T - 44, T)) for r in capped)


def test_inf_mllm_pooling_prefers_cluster_over_lone_spike():
    scores = torch.zeros(1, T)
    scores[0, 50] = 1.0                # lone spike
    scores[0, 150:155] = 0.4           # cluster: lower peak, larger local sum
    common = dict(budget=3 + 1 + 1, n_sink=1, n_recent=1, window=4, bias=0.0)
    kept = _kept(make_policy("inf_mllm", novelty=0.0,
                             kernel=5, **common), _inp(scores, heads=1))[0]
    assert {151, 152, 153} <= kept and 50 not in kept
    kept = _kept(make_policy("inf_mllm", novelty=0.0,
                             kernel=1, **common), _inp(scores, heads=1))[0]
    assert 50 in kept


def test_inf_mllm_bias_moves_selection_toward_newer_tokens():
    scores = torch.zeros(1, T)
    scores[0, 40:45] = 0.30            # older cluster, slightly stronger
    scores[0, 300:305] = 0.25          # newer cluster
    common = dict(budget=5 + 2 + 2, n_sink=2, n_recent=2, window=4, kernel=1)
    old = _kept(make_policy("inf_mllm", novelty=0.0, bias=0.0, **common), _inp(scores, heads=1))[0]
    new = _kept(make_policy("inf_mllm", novelty=0.0, bias=2.0, **common), _inp(scores, heads=1))[0]
    assert set(range(40, 45)) <= old and not (set(range(300, 305)) & old)
    assert set(range(300, 305)) <= new and not (set(range(40, 45)) & new)


def test_snapkv_keeps_pooled_cluster_and_observation_window_without_sinks():
    scores = _base_scores()
    scores[:, 120:126] = 0.5
    pol = make_policy("snapkv", budget=40, window=16, kernel=3, n_recent=16)
    kept = _kept(pol, _inp(scores))
    for k in kept:
        assert set(range(120, 126)) <= k and set(range(T - 16, T)) <= k
        assert 0 not in k
    assert not pol.repositions


def test_h2o_keeps_heavy_hitters_and_recent():
    acc = _base_scores()
    acc[0, [7, 90, 333]] = 5.0
    acc[1, [12, 13]] = 5.0
    pol = make_policy("h2o", budget=24, n_recent=16)
    kept = _kept(pol, _inp(acc))
    assert {7, 90, 333} <= kept[0] and {12, 13} <= kept[1]
    assert all(set(range(T - 16, T)) <= k for k in kept)


def test_full_policy_never_compacts():
    pol = make_policy("full")
    assert pol.capacity is None and not pol.compacts


def test_top_k_keeps_everything_when_budget_exceeds_length():
    idx = top_k_per_head(torch.rand(2, 10), 16)
    assert idx.tolist() == [list(range(10))] * 2


def test_local_sum_and_age_decay_values():
    s = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]])
    assert local_sum(s, 3).tolist() == [[1.0, 3.0, 6.0, 5.0, 3.0]]
    age = torch.tensor([[4, 3, 2, 1, 0]])
    out = age_decay(torch.ones(1, 5), age, bias=1.0, scale=4)
    assert torch.allclose(out, torch.exp(-age / 4.0))


@pytest.mark.parametrize("name,params,match", [
    ("inf_mllm", dict(budget=10, n_sink=4, n_recent=8), "budget"),
    ("inf_mllm", dict(window=0), "window"),
    ("inf_mllm", dict(kernel=4), "kernel must be odd"),
    ("inf_mllm", dict(bias=-1.0), "bias"),
    ("inf_mllm", dict(bias=float("nan")), "bias"),
    ("inf_mllm", dict(selection="random"), "selection"),
    ("inf_mllm", dict(carry=1.0), "carry"),
    ("inf_mllm", dict(novelty=-0.5), "novelty"),
    ("inf_mllm", dict(novelty=float("inf")), "novelty"),
    ("streaming_llm", dict(budget=0), "budget"),
    ("h2o", dict(n_recent=-2), "n_recent"),
    ("snapkv", dict(kernel=0), "kernel"),
    ("window", dict(budget=3, n_sink=1), "no parameter"),
    ("nope", {}, "unknown policy"),
])
def test_bad_parameters_raise_value_error(name, params, match):
    with pytest.raises(ValueError, match=match):
        make_policy(name, **params)


@pytest.mark.parametrize("params", [dict(budget=12.5), dict(budget=True), dict(reposition=1),
                                    dict(bias="1")])
def test_bad_parameter_types_raise_type_error(params):
    with pytest.raises(TypeError):
        make_policy("inf_mllm", **params)


def test_registry_lists_every_policy():
    assert set(POLICIES) == {"full", "window", "streaming_llm", "h2o", "snapkv", "inf_mllm"}


def _novelty_reference(values, n_sink, n_recent):
    """Straightforward per-head, per-token loop of the novelty definition."""
    heads, length, _ = values.shape
    out = torch.ones(heads, length)
    for h in range(heads):
        v = values[h] - values[h].mean(dim=0)
        v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        for t in range(n_sink, length - n_recent):
            best = max(float(v[t] @ v[r]) for r in range(length - n_recent, length))
            out[h, t] = min(1.0, max(0.0, 1.0 - best))
    return out


def test_novelty_matches_its_definition_in_any_block_size():
    torch.manual_seed(1)
    values = torch.randn(5, 40, 8)
    values[2, 10] = values[2, 37]              # an old copy of a recent token: novelty 0
    want = _novelty_reference(values, 3, 6)
    for block in (1, 100, 1 << 22):           # one head per block .. all heads at once
        got = novelty(values, 3, 6, block_elements=block)
        assert torch.allclose(got, want, atol=1e-5)
    assert float(want[2, 10]) == pytest.approx(0.0, abs=1e-5)
    assert torch.all(want[:, :3] == 1) and torch.all(want[:, -6:] == 1)   # forced tokens
    assert torch.all(novelty(values, 3, 0) == 1)                        # nothing to compare


def test_inf_mllm_novelty_gives_an_old_copy_slot_to_unique_content():
    """Two equally attended old clusters: one repeats what the recent window holds."""
    torch.manual_seed(2)
    length, recent = 120, 16
    values = torch.randn(1, length, 16)
    values[0, 20:25] = values[0, length - 10:length - 5]          # copy of recent content
    scores = torch.full((1, length), 1e-3)
    scores[0, 20:25] = 0.30                                       # the copy: a bit more attended
    scores[0, 60:65] = 0.25                                       # unique content
    age = torch.arange(length - 1, -1, -1).unsqueeze(0)
    inp = SelectionInput(scores=scores, age=age, length=length, values=values)
    common = dict(budget=2 + recent + 5, n_sink=2, n_recent=recent, kernel=1, bias=0.0)
    plain = _kept(make_policy("inf_mllm", novelty=0.0, **common), inp)[0]
    novel = _kept(make_policy("inf_mllm", novelty=2.0, **common), inp)[0]
    assert set(range(20, 25)) <= plain and not (set(range(60, 65)) & plain)
    assert set(range(60, 65)) <= novel and not (set(range(20, 25)) & novel)
    pol = make_policy("inf_mllm", novelty=2.0, **common)
    assert pol.needs_values and not make_policy("inf_mllm", novelty=0.0).needs_values
    with pytest.raises(ValueError, match="values"):
        pol.select(SelectionInput(scores=scores, age=age, length=length))
