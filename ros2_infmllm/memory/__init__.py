"""Bounded KV memory: the Inf-MLLM cache, its scoring, re-positioning and every baseline."""

from .cache import BoundedCache
from .layer import BoundedLayer
from .policies import POLICIES, Knob, Policy, knobs, make_policy, policy_knobs
from .rope import RopeSpec
from .scoring import use_scoring_attention

__all__ = ["BoundedCache", "BoundedLayer", "POLICIES", "Knob", "Policy", "RopeSpec", "knobs",
           "make_policy", "policy_knobs", "use_scoring_attention"]
