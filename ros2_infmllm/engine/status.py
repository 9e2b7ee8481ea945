"""Typed snapshots of what a session and its runner hold, for services, diagnostics and eval.

The session builds a :class:`SessionStatus` (with the memory's :class:`MemoryStatus` and
the decode path's :class:`DecodeStatus`); the runner adds its queue and per-camera counts
(:class:`RunnerStatus`, :class:`CameraStats`). The ROS side turns them into messages
(``ros/status_msgs.py``), eval reads them by attribute. No ROS here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class FrameInMemory(NamedTuple):
    """A frame whose tokens the cache still keeps."""

    stamp: float
    camera: str
    tokens: int


@dataclass(frozen=True)
class SourceInMemory:
    """One source of cached tokens (system turn, frame, question, answer)."""

    stamp: float
    kind: str
    tokens_in_memory: int


@dataclass(frozen=True)
class MemoryStatus:
    """The bounded cache: policy, tokens kept per layer, evictions, bytes, sources."""

    policy: str
    params: dict[str, Any]
    budget: int | None
    max_chunk: int
    decode_slack: int
    tokens_per_layer: list[int]
    tokens_seen: int
    evicted_tokens: int
    compactions: int
    reallocations: int
    bytes_allocated: int
    kv_bytes_allocated: int
    next_position: int
    sources: dict[str, SourceInMemory]

    @classmethod
    def from_cache(cls, described: dict[str, Any]) -> MemoryStatus:
        """Read ``BoundedCache.describe()`` (the memory layer's dict) into the typed status."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "sources"]
        sources = {sid: SourceInMemory(s["stamp"], s["kind"], s["tokens_in_memory"])
                   for sid, s in described["sources"].items()}
        return cls(sources=sources, **{name: described[name] for name in names})


@dataclass(frozen=True)
class DecodeStatus:
    """The one-token decode path: chosen mode and path, why not the graph, warm-up time."""

    mode: str
    path: str
    reason: str | None
    warmup_s: float
    counts: dict[str, Any] = field(default_factory=dict)   # the graph runner's counters

    @classmethod
    def from_decoder(cls, described: dict[str, Any]) -> DecodeStatus:
        """Read ``Decoder.describe()`` (accel's dict) into the typed status."""
        rest = {k: v for k, v in described.items()
                if k not in ("mode", "path", "reason", "warmup_s")}
        return cls(described["mode"], described["path"], described["reason"],
                   described["warmup_s"], rest)


@dataclass(frozen=True)
class SessionStatus:
    """A streaming session: model, policy, counters, frames in memory, cache and decode.

    ``model`` is the adapter's own description (name, family, dtype, device, parameters and
    what a family adds); ``cache_tokens`` is the longest layer's kept tokens.
    """

    model: dict[str, Any]
    policy: str
    budget: int | None
    multi_round: bool
    frames_ingested: int
    questions_answered: int
    errors: int
    frames: list[FrameInMemory]
    cache_tokens: int
    memory: MemoryStatus
    decode: DecodeStatus

    @property
    def frames_in_memory(self) -> int:
        """Frames whose tokens the cache still keeps."""
        return len(self.frames)

    @property
    def device(self) -> str:
        """Device of the model's weights (``cpu``, ``cuda:0`` ...)."""
        return str(self.model.get("device", "cpu"))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready) of this status, e.g. for an eval result file."""
        return {**dataclasses.asdict(self), "frames_in_memory": self.frames_in_memory}


@dataclass(frozen=True)
class CameraStats:
    """What the runner did with one camera's frames: fed to the model, dropped per reason."""

    camera: str
    ingested: int
    drops: dict[str, int]

    @property
    def dropped(self) -> int:
        """All drops of this camera."""
        return sum(self.drops.values())

    @property
    def dropped_bad(self) -> int:
        """Drops for a bad frame or a failure, i.e. all but ``superseded``."""
        return sum(n for reason, n in self.drops.items() if reason != "superseded")


@dataclass(frozen=True)
class RunnerStatus:
    """The runner: its session's status (None without a session), queue and counters.

    ``session_error`` says why the session could not describe itself (empty when it could);
    ``model_error`` is the last model failure, cleared by the next success;
    ``questions_without_frames`` counts questions refused because memory held no frame.
    """

    session: SessionStatus | None
    session_error: str
    cameras: dict[str, CameraStats]
    queue_depth: int
    questions_answered: int
    questions_failed: int
    last_latency_s: float
    model_error: str
    questions_without_frames: int = 0

    @property
    def frames_ingested(self) -> int:
        """Frames fed to the model, all cameras."""
        return sum(c.ingested for c in self.cameras.values())

    @property
    def frames_dropped(self) -> int:
        """Frames dropped, all cameras and reasons."""
        return sum(c.dropped for c in self.cameras.values())

    @property
    def frames_dropped_bad(self) -> int:
        """Frames dropped for a bad frame or a failure (not ``superseded``), all cameras."""
        return sum(c.dropped_bad for c in self.cameras.values())
