"""The engine: a streaming session over a bounded KV cache, its config and its runner. No ROS.

``config`` builds sessions (:class:`SessionConfig`, :func:`build_session`, the policy
knobs); ``session`` is the Inf-MLLM loop (:class:`StreamingSession`); ``generation`` the
greedy decode of an answer; ``evidence`` which frames an answer rests on; ``status`` the
typed snapshots (:class:`SessionStatus`, :class:`RunnerStatus` ...); ``runner`` the question
queue, worker thread and frame pacing that the ROS node wraps (:class:`Runner`); ``heap``
and ``memory_view`` serve the node process and the eval tools. The memory layer's policy
names are re-exported because the node may reach memory through the engine only.
"""

from ..accel.fast_decode import DECODE_MODES
from ..memory import POLICIES, Knob, knobs, make_policy
from .config import (DEFAULT_PARTS, DEFAULT_POLICY, PERCEPTION_PARTS, POLICY_KEYS,
                     POLICY_KNOBS, SessionConfig, build_session, check_parts, policy_params)
from .session import Answer, EngineError, FrameResult, StreamingSession

__all__ = ["DECODE_MODES", "POLICIES", "Knob", "knobs", "make_policy", "DEFAULT_POLICY",
           "POLICY_KEYS", "POLICY_KNOBS", "DEFAULT_PARTS", "PERCEPTION_PARTS", "check_parts",
           "SessionConfig", "build_session", "policy_params",
           "Answer", "EngineError", "FrameResult", "StreamingSession"]
