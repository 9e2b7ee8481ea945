"""Eviction policies, one dataclass per file, and the name registry."""

from __future__ import annotations

from typing import Any

from .base import Policy, SelectionInput
from .full import FullPolicy
from .h2o import H2OPolicy
from .inf_mllm import InfMLLMPolicy
from .snapkv import SnapKVPolicy
from .streaming_llm import StreamingLLMPolicy
from .window import WindowPolicy

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (FullPolicy, WindowPolicy, StreamingLLMPolicy, H2OPolicy, SnapKVPolicy,
                InfMLLMPolicy)
}


def make_policy(name: str, **params: Any) -> Policy:
    """Build a policy by registry name; unknown names or parameters raise with the valid ones."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid: {', '.join(sorted(POLICIES))}")
    cls = POLICIES[name]
    valid = set(cls.__dataclass_fields__)
    unknown = set(params) - valid
    if unknown:
        raise ValueError(f"policy {name!r} has no parameter(s) {sorted(unknown)}; "
                         f"valid: {sorted(valid) or 'none'}")
    return cls(**params)


__all__ = ["POLICIES", "Policy", "SelectionInput", "make_policy", "FullPolicy", "WindowPolicy",
           "StreamingLLMPolicy", "H2OPolicy", "SnapKVPolicy", "InfMLLMPolicy"]
