"""What a session is built from: the policy knobs, SessionConfig and build_session. No ROS.

Field names of :class:`SessionConfig` are the node's parameter names; the policy knobs come
from the policy dataclasses of ``memory/policies/`` (one field per knob, declared once).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..accel.fast_decode import DECODE_MODES
from ..memory import POLICIES, Knob, knobs, make_policy, policy_knobs
from ..models.base import ModelAdapter
from ..perception.composer import DEFAULT_PARTS, PARTS
from .session import StreamingSession

#: policy a session (and the node) uses unless told otherwise
DEFAULT_POLICY = "inf_mllm"
#: every memory-policy knob (name -> memory.policies.spec.Knob), from the policy dataclasses:
#: each is a SessionConfig field and a node parameter ``memory.<name>``, default from
#: DEFAULT_POLICY
POLICY_KNOBS: dict[str, Knob] = policy_knobs(DEFAULT_POLICY)
#: names of the perception parts (``perception.parts``), and the default choice: all
PERCEPTION_PARTS = tuple(PARTS)
#: SessionConfig fields that are memory-policy parameters (passed to the policies that have them)
POLICY_KEYS = tuple(POLICY_KNOBS)


def _with_policy_knobs(cls: type) -> type:
    """Add one field per policy knob to ``cls`` (after ``policy``), before @dataclass runs."""
    notes = dict(cls.__annotations__)
    at = list(notes).index("policy") + 1
    names = list(notes)[:at] + list(POLICY_KNOBS) + list(notes)[at:]
    for spec in POLICY_KNOBS.values():
        notes[spec.name] = spec.type.__name__
        setattr(cls, spec.name, spec.default)
    cls.__annotations__ = {k: notes[k] for k in names}
    return cls


@dataclass
@_with_policy_knobs
class SessionConfig:
    """What a session is built from; field names are the node's parameter names.

    Besides the fields below, every memory-policy knob is a field (``budget``, ``n_sink``,
    ``n_recent``, ``window``, ``kernel``, ``bias``, ``reposition``, ``carry``, ``novelty``,
    ``selection`` ...: :data:`POLICY_KNOBS`, declared once in the policy dataclasses of
    ``memory/policies/``, default from :data:`DEFAULT_POLICY`); only those the chosen
    policy has are passed to it.

    Parameters
    ----------
    model : str
        ``default`` | ``tiny-test`` | local directory | Hugging Face id in the local cache.
    device : str
        auto | cpu | cuda | cuda:N.
    dtype : str
        auto | float32 | float16 | bfloat16.
    policy : str
        Memory policy (``memory.policy``): inf_mllm, full, window, streaming_llm, h2o, snapkv.
    image_max_side : int
        Frames are downscaled so their longer side is at most this (pixels).
    max_chunk : int
        Largest chunk without cache reallocation (tokens).
    evidence_k : int
        Evidence stamps per answer (at most).
    multi_round : bool
        Questions and answers enter the stream (True) or leave no trace (False).
    memory_log : bool
        Show each question the log of what the frames still in memory show over time
        (engine/timeline.py: spells with times, counts, what is in view now); the log
        itself never enters the stream.
    decode : str
        One-token decode path: ``auto`` (owned step + CUDA graphs where the model and
        device allow, else eager with the reason logged), ``eager``, or ``graph`` (an
        error where unavailable, e.g. without CUDA).
    perception_parts : tuple of str
        The frame describer's parts (``perception.parts``; text models only), in the
        order their words come in a frame line: :data:`PERCEPTION_PARTS` names them.
    """

    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    policy: str = DEFAULT_POLICY
    image_max_side: int = 384
    max_chunk: int = 512
    evidence_k: int = 3
    multi_round: bool = True
    memory_log: bool = True
    decode: str = "auto"
    perception_parts: tuple[str, ...] = DEFAULT_PARTS


def policy_params(config: SessionConfig) -> dict[str, Any]:
    """Return the knobs of ``config`` that its policy has (ints given for floats as floats)."""
    return {k: spec.coerce(getattr(config, k))
            for k, spec in knobs(POLICIES[config.policy]).items()}


_ADAPTERS: dict[tuple[str, str, str, int], ModelAdapter] = {}
_ADAPTERS_LOCK = threading.Lock()


def _positive_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_parts(names: Any) -> None:
    """Raise ValueError unless ``names`` are known perception parts, each once."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"perception parts must be a list of names, got {names!r}")
    unknown = [n for n in names if n not in PERCEPTION_PARTS]
    if unknown:
        raise ValueError(f"unknown perception parts {unknown}; known: "
                         f"{', '.join(sorted(PERCEPTION_PARTS))}")
    if len(set(names)) != len(names):
        raise ValueError(f"a perception part is listed twice: {list(names)}")


def use_parts(adapter: ModelAdapter, parts: tuple[str, ...]) -> None:
    """Give a text model's adapter a describer of ``parts`` unless it has one already.

    Sessions of one model share its adapter and so its describer: a new session with other
    parts replaces the describer (its models load once per process, see perception/).
    """
    describer = getattr(adapter, "describer", None)
    if describer is not None and tuple(p.name for p in describer.parts) != parts:
        from ..models.frame_describer import FrameDescriber
        adapter.describer = FrameDescriber(parts)


def build_session(config: SessionConfig) -> StreamingSession:
    """Validate ``config``, load (or reuse) the adapter and return a new session.

    Raises ValueError with a reason for bad values; the models layer's ModelError (a
    RuntimeError) when the model cannot be found or loaded. Adapters are cached per
    (model, device, dtype, image_max_side), so sessions of one model share its weights.
    """
    if not isinstance(config, SessionConfig):
        raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
    if config.policy not in POLICIES:
        raise ValueError(f"unknown policy {config.policy!r}; valid: "
                         f"{', '.join(sorted(POLICIES))}")
    _positive_int("image_max_side", config.image_max_side, 16)
    _positive_int("max_chunk", config.max_chunk, 1)
    _positive_int("evidence_k", config.evidence_k, 0)
    if config.decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got "
                         f"{config.decode!r}")
    if config.decode == "graph":
        from ..models.base import resolve_device
        if not resolve_device(config.device).startswith("cuda"):
            raise ValueError(f"decode 'graph' needs a CUDA device, but device "
                             f"{config.device!r} resolves to the CPU here (use decode 'auto' "
                             f"or 'eager')")
    check_parts(config.perception_parts)
    policy = make_policy(config.policy, **policy_params(config))   # validates with reasons
    key = (config.model, config.device, str(config.dtype), config.image_max_side)
    with _ADAPTERS_LOCK:
        adapter = _ADAPTERS.get(key)
        if adapter is None:
            from ..models.registry import load_adapter
            adapter = load_adapter(config.model, device=config.device, dtype=config.dtype,
                                   image_max_side=config.image_max_side)
            _ADAPTERS[key] = adapter
        use_parts(adapter, tuple(config.perception_parts))
    return StreamingSession(adapter, policy, max_chunk=config.max_chunk,
                            evidence_k=config.evidence_k, multi_round=config.multi_round,
                            decode=config.decode, memory_log=config.memory_log)
