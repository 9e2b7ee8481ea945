"""Eviction policies, one dataclass per file, and the name registry."""

from __future__ import annotations

from typing import Any

from .base import Policy, SelectionInput
from .spec import Knob, knob, knobs
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


def policy_knobs(default_policy: str | None = None) -> dict[str, Knob]:
    """Return every knob of the registered policies, once per name (``default_policy``'s first).

    One name is one parameter wherever it appears (the node declares ``memory.<name>``
    once for all policies), so policies that share a name must agree on its type, range
    and description (ValueError otherwise). The default is ``default_policy``'s where it
    has the knob, else that of the first registered policy that has it.
    """
    if default_policy is None:
        default_policy = next(iter(POLICIES))
    if default_policy not in POLICIES:
        raise ValueError(f"unknown policy {default_policy!r}; valid: "
                         f"{', '.join(sorted(POLICIES))}")
    out: dict[str, Knob] = {}
    for name in [default_policy] + [n for n in POLICIES if n != default_policy]:
        for key, spec in knobs(POLICIES[name]).items():
            seen = out.setdefault(key, spec)
            if not seen.same_parameter(spec):
                raise ValueError(f"knob {key!r} of policy {name!r} differs from another "
                                 f"policy's ({spec} vs {seen}): one name, one meaning")
    return out


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
           "StreamingLLMPolicy", "H2OPolicy", "SnapKVPolicy", "InfMLLMPolicy", "Knob", "knob",
           "knobs", "policy_knobs"]
