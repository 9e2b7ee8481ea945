"""Policy knobs: each policy dataclass field says its type, default, range and meaning.

Why: a knob used to be written in about seven places (the node's declaration and casts,
the engine's key list, hand-written checks in base.py, three eval builders). A field
declared with :func:`knob` (or one of the shared knobs below) is now the one source:
:meth:`Knob.check` validates it, and the node parameters, ``SessionConfig`` fields and the
eval ``--param`` overrides are derived from :func:`knobs` of the registered policies.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

#: annotation (a string under ``from __future__ import annotations``) -> Python type
TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Knob:
    """One policy parameter: what it means and which values it takes.

    Parameters
    ----------
    doc : str
        One line: the node parameter's description and the ``--param`` help.
    lo, hi : int or float, optional
        Inclusive range of a number (the node's integer / floating-point range).
    choices : tuple of str
        Allowed values of a string knob.
    odd : str
        Non-empty: the value must be odd, for this reason (said in the error).
    hi_why : str
        Why the upper bound is there (said in the error), e.g. carry's "1 would never forget".
    name, type, default
        Filled in by :func:`knobs` from the dataclass field.
    """

    doc: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: tuple = ()
    odd: str = ""
    hi_why: str = ""
    name: str = ""
    type: type = object
    default: Any = None

    def __call__(self, default: Any) -> Any:
        """Return a dataclass field with ``default`` that carries this knob."""
        return dataclasses.field(default=default, metadata={"knob": self})

    def check(self, value: Any) -> None:
        """Raise TypeError (wrong type) or ValueError (out of range) naming the knob."""
        name = self.name
        if self.type is bool:
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
            return
        if self.type is str:
            if self.choices and value not in self.choices:
                raise ValueError(f"{name} must be one of {', '.join(self.choices)}, got "
                                 f"{value!r}")
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {value!r}")
            return
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if self.lo is not None and value < self.lo:
                raise ValueError(f"{name} must be >= {self.lo}, got {value}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} "
                                f"{value!r}")
            if not math.isfinite(value) or (self.lo is not None and value < self.lo):
                raise ValueError(f"{name} must be finite and >= {self.lo}, got {value}")
        if self.hi is not None and value > self.hi:
            why = f" ({self.hi_why})" if self.hi_why else ""
            raise ValueError(f"{name} must be <= {self.hi}{why}, got {value}")
        if self.odd and value % 2 == 0:
            raise ValueError(f"{name} must be odd ({self.odd}), got {value}")

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this knob's type where that loses nothing (an int for a float)."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def same_parameter(self, other: "Knob") -> bool:
        """Whether two policies' knobs of one name can be one node parameter (all but default)."""
        return dataclasses.replace(self, default=None) == dataclasses.replace(other,
                                                                              default=None)


def knob(default: Any, doc: str, **limits: Any) -> Any:
    """Declare a policy field with its default, description and limits.

    Example: ``novelty: float = knob(2.0, "exponent of ...", lo=0.0, hi=16.0)``.
    """
    return Knob(doc, **limits)(default)


def knobs(policy: type) -> dict[str, Knob]:
    """Return the knobs of a policy class, in field order, with name, type and default.

    Every field must be declared with :func:`knob` (a TypeError says which is not): that is
    what keeps the node, the engine and the eval from needing their own copy.
    """
    out = {}
    for f in dataclasses.fields(policy):
        meta = f.metadata.get("knob")
        if meta is None:
            raise TypeError(f"{policy.__name__}.{f.name} is not declared with knob(): a "
                            "policy field needs a type, range and description")
        kind = TYPES.get(f.type, f.type) if isinstance(f.type, str) else f.type
        if kind not in TYPES.values():
            raise TypeError(f"{policy.__name__}.{f.name}: knob type {f.type!r} is not one of "
                            f"{', '.join(TYPES)}")
        out[f.name] = dataclasses.replace(meta, name=f.name, type=kind, default=f.default)
    return out


# ---- knobs that several policies share (one meaning, one range: one node parameter) -------
BUDGET = Knob("tokens kept per layer", lo=1, hi=1 << 20)
N_SINK = Knob("first tokens always kept", lo=0, hi=1 << 20)
#: ``n_recent`` that asks for the policy's own share of the budget (``Policy.recent``)
AUTO_RECENT = -1
N_RECENT = Knob("newest tokens always kept; -1: the policy's own, min(its default, budget // 4)",
                lo=AUTO_RECENT, hi=1 << 20)
WINDOW = Knob("queries scoring the cache per chunk", lo=1, hi=4096)
KERNEL = Knob("odd width of the local-sum pooling", lo=1, hi=255, odd="centred pooling")
REPOSITION = Knob("give kept tokens contiguous positions (exact RoPE re-rotation)")
