"""Policy knob specs (memory/policies/spec.py): every field declared, checks from the range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from ros2_infmllm.memory import POLICIES, knobs, make_policy, policy_knobs
from ros2_infmllm.memory.policies import Knob, Policy, knob
from ros2_infmllm.memory.policies.inf_mllm import InfMLLMPolicy


def test_every_policy_field_is_a_knob_with_type_default_and_doc():
    for name, cls in POLICIES.items():
        for key, spec in knobs(cls).items():
            assert spec.name == key and spec.doc and spec.type in (int, float, bool, str)
            assert isinstance(spec.default, spec.type), (name, key)
            spec.check(spec.default)                  # defaults are valid


def test_shared_names_agree_and_default_policy_wins():
    merged = policy_knobs("snapkv")
    assert merged["n_sink"].default == 0 and policy_knobs("inf_mllm")["n_sink"].default == 4
    # n_recent defaults to the policy's own share of the budget, -1 in every policy
    assert merged["n_recent"].default == policy_knobs("inf_mllm")["n_recent"].default == -1
    assert make_policy("snapkv").n_recent == 32 and make_policy("inf_mllm").n_recent == 256
    assert make_policy("inf_mllm", budget=512).n_recent == 128
    assert make_policy("inf_mllm", budget=512, n_recent=256).n_recent == 256
    assert list(policy_knobs("inf_mllm"))[:3] == ["budget", "n_sink", "n_recent"]


@pytest.mark.parametrize("value,error,match", [
    (0, ValueError, "kernel must be >= 1, got 0"),
    (4, ValueError, r"kernel must be odd \(centred pooling\)"),
    (257, ValueError, "kernel must be <= 255"),
    (3.0, TypeError, "kernel must be an int"),
    (True, TypeError, "kernel must be an int"),
])
def test_int_knob_checks(value, error, match):
    with pytest.raises(error, match=match):
        knobs(InfMLLMPolicy)["kernel"].check(value)


def test_float_bool_and_choice_knob_checks():
    carry = knobs(InfMLLMPolicy)["carry"]
    with pytest.raises(ValueError, match=r"carry must be <= 0.999 \(1 would never forget\)"):
        carry.check(1.0)
    with pytest.raises(ValueError, match="finite"):
        carry.check(float("nan"))
    assert carry.coerce(0) == 0.0 and isinstance(carry.coerce(0), float)
    with pytest.raises(TypeError, match="reposition must be a bool"):
        knobs(InfMLLMPolicy)["reposition"].check(1)
    with pytest.raises(ValueError, match="selection must be one of per_head, shared"):
        knobs(InfMLLMPolicy)["selection"].check("random")


def test_a_field_without_knob_is_refused():
    @dataclass
    class Plain(Policy):
        budget: int = 8
        name: ClassVar[str] = "plain"

    with pytest.raises(TypeError, match=r"Plain.budget is not declared with knob\(\)"):
        knobs(Plain)


def test_two_policies_disagreeing_on_a_knob_are_refused(monkeypatch):
    @dataclass
    class Other(Policy):
        budget: int = knob(8, "another meaning", lo=1, hi=10)
        name: ClassVar[str] = "other"

    monkeypatch.setitem(POLICIES, "other", Other)
    with pytest.raises(ValueError, match="knob 'budget' of policy 'other' differs"):
        policy_knobs("inf_mllm")
    assert isinstance(knobs(Other)["budget"], Knob)
