"""Bounded KV memory: the Inf-MLLM cache, its scoring, re-positioning and every baseline."""

from .cache import BoundedCache, BoundedLayer
from .policies import POLICIES, Policy, make_policy
from .rope import RopeSpec
from .scoring import use_scoring_attention

__all__ = ["BoundedCache", "BoundedLayer", "POLICIES", "Policy", "RopeSpec", "make_policy",
           "use_scoring_attention"]
