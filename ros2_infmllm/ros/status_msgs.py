"""The engine's typed status (engine/status.py) as ROS messages: describe_memory, answers.

The node adds what only it knows (parameters, state, DDS arrival counts); the numbers
about the memory, the frames and the queue come from :class:`RunnerStatus` here.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Optional

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ros2_infmllm_msgs.msg import Answer as AnswerMsg
from ros2_infmllm_msgs.msg import CameraStats as CameraStatsMsg

from ..engine.runner import Question
from ..engine.status import CameraStats, RunnerStatus
from .arrival import ArrivalMonitor, Problem


#: builtin_interfaces/Time holds int32 seconds
MAX_SEC = 2 ** 31 - 1


def to_time(stamp: float) -> Time:
    """Seconds (float) -> builtin_interfaces/Time; a stamp it cannot hold becomes 0.

    Why: a message field that raises kills the service thread's reply; the engine keeps
    stamps finite, this is the last guard.
    """
    if not math.isfinite(stamp) or not 0 <= stamp <= MAX_SEC:
        return Time(sec=0, nanosec=0)
    sec = math.floor(stamp)
    return Time(sec=int(sec), nanosec=min(int(round((stamp - sec) * 1e9)), 999_999_999))


def answer_msg(question: Question, cache_tokens: int) -> AnswerMsg:
    """Build the ``~/answers`` message of an answered question (header left to the caller)."""
    return AnswerMsg(question=question.question, answer=question.answer,
                     evidence_stamps=[to_time(s) for s in question.evidence],
                     latency_s=float(question.latency_s), cache_tokens=cache_tokens)


def camera_msg(stats: CameraStats, received: int, monitor: ArrivalMonitor,
               problem: Optional[Problem]) -> CameraStatsMsg:
    """One camera of describe_memory: the runner's counts beside the DDS arrival ones."""
    msg = CameraStatsMsg(camera=stats.camera, frames_received=received,
                         frames_ingested=stats.ingested, frames_dropped=stats.dropped,
                         publishers=monitor.publishers,
                         matched_publishers=monitor.matched_publishers(),
                         frames_lost=monitor.lost, qos_incompatible=monitor.incompatible,
                         arrival_rate_hz=monitor.arrival_rate(time.monotonic()),
                         arrival_problem=problem.code if problem else '',
                         arrival_message=problem.text if problem else '')
    msg.drop_reasons = list(stats.drops)
    msg.drop_counts = [int(v) for v in stats.drops.values()]
    return msg


def fill_describe(response: Any, status: RunnerStatus, not_loaded: str, policy: str,
                  device: str) -> Any:
    """Fill a DescribeMemory response's memory, frame and queue fields from ``status``.

    ``not_loaded`` is the message without a session; ``policy`` and ``device`` are the
    parameters' values, reported while no session says otherwise.
    """
    session = status.session
    response.success = session is not None
    response.message = '' if session is not None else status.session_error or not_loaded
    response.queue_depth = status.queue_depth
    response.frames_ingested = status.frames_ingested
    response.frames_dropped = status.frames_dropped
    response.policy = policy if session is None else session.policy
    response.device = device if session is None else session.device
    if session is None:
        response.policy_params_json = '{}'
        return response
    mem = session.memory
    response.cache_tokens_per_layer = [int(t) for t in mem.tokens_per_layer]
    response.budget = int(session.budget or 0)
    response.policy_params_json = json.dumps(mem.params, sort_keys=True, default=str)
    response.evicted_tokens = int(mem.evicted_tokens)
    response.compactions = int(mem.compactions)
    frames = [f for f in session.frames if f.tokens > 0]
    response.frame_stamps = [to_time(f.stamp) for f in frames]
    response.frame_cameras = [f.camera for f in frames]
    response.frame_tokens = [f.tokens for f in frames]
    response.cache_bytes = int(mem.bytes_allocated)
    return response


def diagnostic_status(level: bytes, name: str, message: str, hardware_id: str,
                      values: dict[str, Any]) -> DiagnosticStatus:
    """One DiagnosticStatus, every value as a string."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return status
