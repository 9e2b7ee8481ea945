"""The node's /diagnostics: one status for the memory and one per camera.

ROS only: the engine's typed statuses (runner, persistence, admission) and the node's own
state become DiagnosticStatus key/values, with the level a reader should see first
(a model failure, an unloaded model, a duplicate node name, a snapshot problem, bad frames).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node

from ..engine.admission import Admission
from ..engine.persistence import PersistenceStatus
from ..engine.status import RunnerStatus
from .status_msgs import diagnostic_status


def memory_status(name: str, state: str, params: Dict[str, Any], status: RunnerStatus,
                  snap: PersistenceStatus, admission: Admission, problems: Dict[str, str],
                  device_memory: int) -> DiagnosticStatus:
    """Return the memory's status; ``problems`` holds ``load_error`` and ``duplicate_name``."""
    session = status.session
    model_error = problems.get('load_error') or status.model_error
    duplicate = problems.get('duplicate_name', '')
    bad = status.frames_dropped_bad
    values = {
        'state': state, 'model': str(params['model']), 'policy': params['memory.policy'],
        'cache_tokens': session.cache_tokens if session is not None else 0,
        'budget': session.budget if session is not None else params['memory.budget'],
        'evicted_tokens': session.memory.evicted_tokens if session is not None else 0,
        'frames_fed': status.frames_ingested,
        'frames_dropped': status.frames_dropped,
        'frames_dropped_bad': bad,
        'queue_depth': status.queue_depth,
        'questions_answered': status.questions_answered,
        'questions_refused': admission.refused_total,
        **{f'questions_refused_{k}': n for k, n in admission.refused.items()},
        'questions_without_frames': status.questions_without_frames,
        'callers_tracked': admission.callers,
        'questions_failed': status.questions_failed,
        'questions_replayed': snap.journal_replayed,
        'questions_replay_refused': snap.journal_refused,
        'last_latency_s': f'{status.last_latency_s:.3f}',
        'model_error': model_error,
        'decode_path': session.decode.path if session is not None else '',
        'decode_warmup_s': session.decode.warmup_s if session is not None else 0.0,
        'vision_path': session.decode.counts.get('vision', '') if session is not None else '',
        'chunk_path': session.decode.counts.get('chunks', '') if session is not None else '',
        'snapshot_path': params['memory.snapshot_path'],
        'snapshot_saves': snap.saves,
        'snapshot_save_failures': snap.save_failures,
        'snapshot_last_bytes': snap.last_bytes,
        'snapshot_last_save_s': f'{snap.last_save_s:.3f}',
        'snapshot_save_error': snap.save_error,
        'snapshot_restored': snap.restored,
        'snapshot_restore_error': snap.restore_error,
        'journal_error': snap.journal_error,
        'duplicate_name': duplicate,
        'device_memory_bytes': device_memory,
        **perception_values(session),
    }
    level, message = DiagnosticStatus.OK, 'ok'
    if model_error:
        level, message = DiagnosticStatus.ERROR, f'model failed: {model_error}'
    elif duplicate:
        level, message = DiagnosticStatus.ERROR, duplicate
    elif session is None:
        level, message = DiagnosticStatus.WARN, f'model not loaded ({state})'
    elif snap.problem:
        level, message = DiagnosticStatus.WARN, snap.problem
    elif bad:
        level, message = DiagnosticStatus.WARN, f'{bad} bad frames dropped'
    elif values['perception_missing']:
        level, message = (DiagnosticStatus.WARN, 'perception parts off (model not installed): '
                          + values['perception_missing'])
    return diagnostic_status(level, f'{name}: memory', message, str(params['model']), values)


def perception_values(session: Any) -> Dict[str, str]:
    """Return the describer's parts (text models), those off for a missing model, costs."""
    seen = session.model.get('perception', {}) if session is not None else {}
    return {'perception_parts': ','.join(seen.get('parts', [])),
            'perception_missing': '; '.join(f'{k}: {v}' for k, v in
                                            seen.get('missing', {}).items()),
            'perception_cost_ms': ', '.join(f"{k} {c['mean_s'] * 1e3:.0f}"
                                            for k, c in seen.get('cost', {}).items())}


def camera_status(name: str, cam: Any, status: RunnerStatus, reliability: str, now: float,
                  publishers: Optional[int]) -> Tuple[DiagnosticStatus, Optional[Tuple[str, str]]]:
    """Check one camera's arrival; return its status and ``(log key, warning)`` or None.

    ``cam`` is the node's CameraState; ``publishers`` the graph's count (None when the
    camera is not subscribed, nothing is then checked).
    """
    mon = cam.monitor
    level, message, warning = DiagnosticStatus.OK, 'not subscribed (node not active)', None
    if publishers is not None:
        cam.problem = mon.check(now, publishers)
        if cam.problem is not None:
            level, message = DiagnosticStatus.WARN, cam.problem.text
            warning = (f'{cam.topic}:arrival:{cam.problem.code}', cam.problem.text)
        elif mon.publishers == 0:
            message = 'no publisher on the topic'
        else:
            message = (f'{mon.arrival_rate(now):.1f} frames/s arriving from '
                       f'{mon.matched_publishers()} publisher(s)')
    age = '' if mon.last_arrival is None else f'{now - mon.last_arrival:.1f}'
    values = {
        'topic': cam.topic, 'reliability': reliability,
        'publishers': mon.publishers, 'matched_publishers': mon.matched_publishers(),
        'frames_received': cam.received,
        'frames_ingested': status.cameras[cam.topic].ingested
        if cam.topic in status.cameras else 0,
        'frames_lost': mon.lost, 'qos_incompatible': mon.incompatible,
        'arrival_rate_hz': f'{mon.arrival_rate(now):.2f}',
        'sent_rate_hz': f'{mon.sent_rate(now):.2f}',
        'last_frame_age_s': age,
        'problem': cam.problem.code if cam.problem else '',
    }
    return diagnostic_status(level, f'{name}: camera {cam.topic}', message, cam.topic,
                             values), warning


def duplicate_name(node: Node) -> str:
    """Say so when another node of ``node``'s name is on the graph, else ''.

    Why: a second node of the same name answers some of the queries and transitions meant
    for this one ("model not loaded"), and nothing else tells the user.
    """
    me = (node.get_name(), node.get_namespace())
    try:
        count = node.get_node_names_and_namespaces().count(me)
    except Exception:  # noqa: BLE001 - a graph query after shutdown: nothing to say
        return ''
    if count < 2:
        return ''
    return (f'{count} nodes named {node.get_fully_qualified_name()} are on the ROS graph: '
            'queries and lifecycle transitions may reach the other one; stop it or give this '
            'one another name or namespace')
