"""The node's parameters: declared types, ranges and descriptions, and their validation.

ROS only: every parameter of the node ``infmllm`` with its default and descriptor
(config/params.yaml documents the same set), the whole-set check a parameter update must
pass, and the mapping of the values onto the engine's :class:`SessionConfig` and the
cameras' QoS. The memory.<knob> parameters come from the policies' own specs.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Optional

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from .. import engine
from ..engine.persistence import check_path
from ..engine.runner import MAX_QUEUE

MAX_TOPICS = 16
_DEVICE_RE = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')
_TOPIC_RE = re.compile(r'^~?/?[A-Za-z][A-Za-z0-9_/]*$')
DTYPES = ('auto', 'float32', 'float16', 'bfloat16')
# parameters that shape the session; a change while configured rebuilds the memory
MEMORY_PARAMS = (('memory.policy',) + tuple(f'memory.{k}' for k in engine.POLICY_KNOBS)
                 + ('image_max_side', 'perception.parts'))
MODEL_PARAMS = ('model', 'device', 'dtype', 'decode')
CAMERA_QOS_PARAMS = ('camera_qos.reliability', 'camera_qos.depth')
RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
               'reliable': ReliabilityPolicy.RELIABLE}


def _descriptor(kind: int, text: str, lo: Optional[float] = None,
                hi: Optional[float] = None) -> ParameterDescriptor:
    desc = ParameterDescriptor(type=kind, description=text)
    if kind == ParameterType.PARAMETER_INTEGER and lo is not None:
        desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    if kind == ParameterType.PARAMETER_DOUBLE and lo is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                        to_value=float(hi), step=0.0)]
    return desc


_S, _I, _D = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER,
              ParameterType.PARAMETER_DOUBLE)
_KINDS = {str: _S, int: _I, float: _D, bool: ParameterType.PARAMETER_BOOL}


def knob_descriptor(spec: 'engine.Knob') -> ParameterDescriptor:
    """Descriptor of the parameter ``memory.<knob>``: the spec's type, doc and range.

    Integer and floating-point ranges are the spec's ``lo``..``hi``; what a range cannot say
    (odd values, the choices, which policies use the knob) goes into additional_constraints.
    """
    desc = _descriptor(_KINDS[spec.type], spec.doc, spec.lo, spec.hi)
    users = [n for n, cls in engine.POLICIES.items() if spec.name in engine.knobs(cls)]
    notes = ([f'odd ({spec.odd})'] if spec.odd else []) + (
        [f"one of {', '.join(spec.choices)}"] if spec.choices else []) + [
        f"used by {', '.join(users)}"]
    desc.additional_constraints = '; '.join(notes)
    return desc


# name -> (default, descriptor); config/params.yaml documents the same set
PARAMETERS: Dict[str, tuple] = {
    'image_topics': (['/camera/image_raw'], _descriptor(
        ParameterType.PARAMETER_STRING_ARRAY,
        'camera topics; names ending in /compressed are sensor_msgs/CompressedImage')),
    'frame_rate': (1.0, _descriptor(_D, 'frames per second fed into the model, per camera',
                                    0.001, 1000.0)),
    'camera_qos.reliability': ('best_effort', _descriptor(
        _S, 'best_effort (matches every publisher; sensor-data QoS) | reliable (matches '
            'reliable publishers only, every frame retransmitted)')),
    'camera_qos.depth': (5, _descriptor(_I, 'camera subscription history depth (keep last)',
                                        1, 100)),
    'camera_stall_s': (3.0, _descriptor(
        _D, 'a matched camera publisher silent this long is reported (log, diagnostics)',
        0.5, 3600.0)),
    'model': ('default', _descriptor(_S, 'default (qwen2.5-0.5b) | smollm2-135m | qwen2.5-1.5b '
                                         '| tiny-test | local path | cached model id')),
    'device': ('auto', _descriptor(_S, 'auto | cpu | cuda | cuda:N')),
    'dtype': ('auto', _descriptor(_S, 'auto | float32 | float16 | bfloat16')),
    'decode': ('auto', _descriptor(
        _S, 'one-token decode path: auto (owned step + CUDA graphs where possible) | eager | '
        'graph (CUDA only)')),
    'memory.policy': (engine.DEFAULT_POLICY, _descriptor(
        _S, 'KV memory policy: inf_mllm, full, window, streaming_llm, h2o, snapkv')),
    # memory.<knob> for every policy knob (engine.POLICY_KNOBS, from memory/policies/)
    **{f'memory.{k}': (spec.default, knob_descriptor(spec))
       for k, spec in engine.POLICY_KNOBS.items()},
    'max_new_tokens': (64, _descriptor(_I, 'upper bound on generated tokens per answer', 1,
                                       4096)),
    'max_question_chars': (1000, _descriptor(_I, 'longest accepted question (characters)', 1,
                                             100000)),
    'query_queue_size': (8, _descriptor(_I, 'questions waiting at most', 1, MAX_QUEUE)),
    'limits.caller_rate': (10.0, _descriptor(
        _D, 'questions per second one caller (request field caller) may ask on average',
        0.001, 1000.0)),
    'limits.caller_burst': (64, _descriptor(
        _I, 'questions one caller may ask at once before limits.caller_rate applies', 1,
        10000)),
    'memory_view_rate': (0.0, _descriptor(
        _D, 'Hz of the ~/memory_view image (only while someone subscribes; 0 = off)', 0.0,
        10.0)),
    'image_max_side': (384, _descriptor(_I, 'frames downscaled to this longer side (px)', 16,
                                        4096)),
    'perception.parts': (list(engine.DEFAULT_PARTS), _descriptor(
        ParameterType.PARAMETER_STRING_ARRAY,
        'what text models see of a frame, in line order: ' + ', '.join(engine.PERCEPTION_PARTS)
        + ' (a part whose model is not installed is off and says so in /diagnostics)')),
    'memory.snapshot_path': ('', _descriptor(
        _S, 'file of the memory snapshot (restored on configure, written on ~/save_memory, '
            'deactivate, shutdown and every snapshot_period s); empty = no snapshots')),
    'memory.snapshot_period': (60.0, _descriptor(
        _D, 'seconds between periodic snapshots while the memory changes (0 = only on '
            '~/save_memory, deactivate and shutdown)', 0.0, 86400.0)),
}
# parameters declared as doubles: an int given for one is taken as a float, and it must be finite
FLOAT_PARAMS = tuple(k for k, (_, desc) in PARAMETERS.items() if desc.type == _D)


def validate_parameters(values: Dict[str, Any]) -> Optional[str]:
    """Return why this complete parameter set is invalid, or None when it is valid."""
    topics = values['image_topics']
    if not topics or len(topics) > MAX_TOPICS:
        return f'image_topics: give 1..{MAX_TOPICS} topics, got {len(topics)}'
    for topic in topics:
        if not _TOPIC_RE.match(topic) or '//' in topic or topic.endswith('/'):
            return f'image_topics: {topic!r} is not a valid topic name'
    if len(set(topics)) != len(topics):
        return 'image_topics: a topic is listed twice'
    rate = values['frame_rate']
    if not math.isfinite(rate) or rate <= 0:
        return f'frame_rate must be > 0 Hz, got {rate}'
    if values['camera_qos.reliability'] not in RELIABILITY:
        return ("camera_qos.reliability must be best_effort or reliable, got "
                f"{values['camera_qos.reliability']!r}")
    if not 1 <= values['camera_qos.depth'] <= 100:
        return f"camera_qos.depth must be 1..100, got {values['camera_qos.depth']}"
    if not values['camera_stall_s'] > 0:
        return f"camera_stall_s must be > 0 s, got {values['camera_stall_s']}"
    if not str(values['model']).strip():
        return 'model must name "default", "tiny-test", a local path or a cached model id'
    if not _DEVICE_RE.match(values['device']):
        return f"device must be auto, cpu, cuda or cuda:N, got {values['device']!r}"
    if values['dtype'] not in DTYPES:
        return f"dtype must be one of {', '.join(DTYPES)}, got {values['dtype']!r}"
    if values['decode'] not in engine.DECODE_MODES:
        return (f"decode must be one of {', '.join(engine.DECODE_MODES)}, got "
                f"{values['decode']!r}")
    for name in ('max_new_tokens', 'max_question_chars', 'query_queue_size', 'image_max_side'):
        if values[name] < 1:
            return f'{name} must be >= 1, got {values[name]}'
    if values['memory_view_rate'] < 0:
        return f"memory_view_rate must be >= 0 Hz, got {values['memory_view_rate']}"
    if not values['limits.caller_rate'] > 0 or values['limits.caller_burst'] < 1:
        return ('limits.caller_rate must be > 0 and limits.caller_burst >= 1, got '
                f"{values['limits.caller_rate']} and {values['limits.caller_burst']}")
    if values['query_queue_size'] > MAX_QUEUE:
        return f'query_queue_size must be <= {MAX_QUEUE}, got {values["query_queue_size"]}'
    if values['image_max_side'] < 16:
        return f'image_max_side must be >= 16 px, got {values["image_max_side"]}'
    for name in FLOAT_PARAMS:
        if not math.isfinite(values[name]):
            return f"{name} must be finite, got {values[name]}"
    try:
        engine.check_parts(list(values['perception.parts']))
    except ValueError as exc:
        return f'perception.parts: {exc}'
    snap_problem = check_path(values['memory.snapshot_path'])
    if snap_problem:
        return snap_problem
    if values['memory.snapshot_period'] < 0:
        return f"memory.snapshot_period must be >= 0 s, got {values['memory.snapshot_period']}"
    policy = values['memory.policy']
    if policy not in engine.POLICIES:
        return (f'memory.policy {policy!r} is unknown; valid: '
                f"{', '.join(sorted(engine.POLICIES))}")
    for name, spec in engine.POLICY_KNOBS.items():    # every knob, used now or after a switch
        try:
            spec.check(spec.coerce(values[f'memory.{name}']))
        except (TypeError, ValueError) as exc:
            return f'memory.{exc}'
    try:        # the chosen policy's own validation (e.g. n_sink + n_recent <= budget)
        engine.make_policy(policy, **engine.policy_params(session_config(values)))
    except (TypeError, ValueError) as exc:
        return f'memory.*: {exc}'
    return None


def session_config(values: Dict[str, Any]) -> 'engine.SessionConfig':
    """Map node parameters onto the engine's SessionConfig."""
    knobs = {k: spec.coerce(values[f'memory.{k}']) for k, spec in engine.POLICY_KNOBS.items()}
    return engine.SessionConfig(
        model=values['model'], device=values['device'], dtype=values['dtype'],
        decode=values['decode'], policy=values['memory.policy'],
        image_max_side=values['image_max_side'],
        perception_parts=tuple(values['perception.parts']), **knobs)


def camera_qos(values: Dict[str, Any]) -> QoSProfile:
    """Subscription QoS of the cameras: sensor-data QoS with the camera_qos.* choices."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=values['camera_qos.depth'],
                      reliability=RELIABILITY[values['camera_qos.reliability']],
                      durability=DurabilityPolicy.VOLATILE)
