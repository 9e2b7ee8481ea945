"""The ROS 2 node `infmllm`: cameras in, questions answered from a bounded visual memory.

ROS only: parameters (``parameters.py``), QoS, subscriptions (``cameras.py``), services,
the action, publishers, diagnostics (``diagnostics.py``) and the lifecycle. Frames are
decoded with :mod:`ros2_infmllm.ros.imaging`; everything model related goes through the
engine: its :class:`~ros2_infmllm.engine.runner.Runner`, the admission of questions
(limits, rate) and the persistence of the memory (snapshots, question journal).

Threads: subscription and service callbacks never run inference. Camera callbacks only
check the stamp and hand the newest frame per camera to the engine's
:class:`~ros2_infmllm.engine.runner.Runner`, whose one worker thread decodes and feeds
frames at ``frame_rate`` per camera and serves a bounded FIFO of questions between frames;
the node publishes what the runner reports. Service and action callbacks enqueue and wait
on their own question, in reentrant callback groups of a MultiThreadedExecutor, so a long
answer blocks neither cameras nor other services.

Lifecycle (when ``rclpy.lifecycle`` imports): configure builds the session (loads the
model), activate subscribes to the cameras, deactivate unsubscribes (questions are still
answered from what memory holds), cleanup frees the model. Without lifecycle support (or
with ``INFMLLM_PLAIN_NODE=1``) a plain node configures and activates itself at start.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from ros2_infmllm_msgs.action import Ask
from ros2_infmllm_msgs.msg import Answer as AnswerMsg
from ros2_infmllm_msgs.srv import DescribeMemory, Query

from .. import engine
from ..engine import heap
from ..engine.admission import Admission
from ..engine.memory_view import render as render_memory_view
from ..engine.persistence import Persistence
from ..engine.questions import Question, QuestionLimits
from ..engine.runner import MAX_QUEUE, Runner
from . import imaging
from .cameras import CameraState, decode_frame, subscribe_camera
from .diagnostics import camera_status, duplicate_name, memory_status
from .launch import NODE_NAME
from .parameters import (CAMERA_QOS_PARAMS, FLOAT_PARAMS, MEMORY_PARAMS, MODEL_PARAMS,
                         PARAMETERS, camera_qos, session_config, validate_parameters)
from .status_msgs import answer_msg, camera_msg, fill_describe, to_time

try:  # lifecycle support comes with rclpy >= Humble; fall back to a plain node without it
    if os.environ.get('INFMLLM_PLAIN_NODE', '') not in ('', '0'):
        raise ImportError('INFMLLM_PLAIN_NODE is set')
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    LIFECYCLE_ERROR = ''
except ImportError as exc:  # pragma: no cover - exercised by the plain-node test
    LifecycleNode, TransitionCallbackReturn = Node, None
    LIFECYCLE_ERROR = str(exc)

EXECUTOR_THREADS = MAX_QUEUE + 8       # every waiting request may hold one thread
# The model runs in one Python thread that hands the GIL back and forth hundreds of times
# per decoded token (every torch op releases it), while the executor's threads run Python
# for every camera message. With CPython's default 5 ms switch interval each hand-off can
# wait 5 ms: at 20 camera messages/s an answer took 15-24 s instead of 1.6 s (CPU, default
# model). 0.5 ms bounds that wait.
GIL_SWITCH_S = 0.0005
# requests of a burst must all reach a callback (a full queue refuses them with a reason);
# the default services QoS (keep last 10) would drop the oldest of a larger burst unanswered
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=4 * MAX_QUEUE,
                         reliability=ReliabilityPolicy.RELIABLE)
# ~/answers keeps its last answers for subscribers that join late (transient local): after a
# respawn, the questions replayed from the journal are answered within a second or two, before
# a subscriber has matched the new process's publisher; volatile, those answers reached no one
ANSWERS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
DEACTIVATE_SAVE_WAIT_S = 1.5           # deactivate waits this long for its snapshot
STAMP_FUTURE_S = 60.0                  # frames stamped further ahead of the clock are dropped
LOOP_JUMP_S = 1.0                      # a backwards jump larger than this is a replay loop
LOG_EVERY_S = 5.0                      # rate limit of drop/error logs, per reason
ARRIVAL_LOG_EVERY_S = 30.0             # rate limit of a camera's arrival warning
# Why a frame is dropped: the decoder's reasons (imaging.REASONS) and the node's own; the
# table in docs/node.md lists every one (a test checks)
NODE_DROP_REASONS = ('stamp_future', 'stamp_not_increasing', 'superseded', 'frame_rejected',
                     'model_error')
DROP_REASONS = tuple(imaging.REASONS) + NODE_DROP_REASONS


class InfMllmNode(LifecycleNode):
    """Lifecycle node `infmllm` (a plain node where lifecycle support is missing)."""

    def __init__(self, session_factory: Optional[Callable[[Any], Any]] = None,
                 **kwargs: Any) -> None:
        """Declare and check parameters, create the interfaces; no model is loaded yet."""
        super().__init__(NODE_NAME, **kwargs)
        self._session_factory = session_factory or engine.build_session
        self._lock = threading.RLock()           # node state (not the model, not the runner)
        self._cameras: Dict[str, CameraState] = {}
        self._retired: Dict[str, CameraState] = {}   # topics no longer listed, counters kept
        self._last_log: Dict[str, float] = {}
        self._state = 'unconfigured'
        self._load_error = ''                     # why the last configure failed
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

        for name, (default, desc) in PARAMETERS.items():
            self.declare_parameter(name, default, desc)
        self._values = {name: self.get_parameter(name).value for name in PARAMETERS}
        reason = validate_parameters(self._values)
        if reason:
            raise ValueError(f'invalid parameter at start-up: {reason}')
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for topic in self._values['image_topics']:
            self._cameras[topic] = CameraState(topic, self._values['camera_stall_s'])
        self.persistence = Persistence(log=self._log_persistence)
        self.runner = Runner(decode_frame, on_answer=self._publish_answer,
                             on_drop=self._log_drop, on_error=self._log_error,
                             store=self.persistence, require_frames=True)
        self.admission = Admission(self.runner.submit)
        self.runner.set_cameras(list(self._cameras))
        self._configure_runner()

        self._answers_pub = self.create_publisher(AnswerMsg, '~/answers', ANSWERS_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._view_pub = self.create_publisher(Image, '~/memory_view', 1)
        self._next_view = 0.0
        self.create_service(Query, '~/query', self._on_query,
                            qos_profile=SERVICE_QOS, callback_group=self._service_group)
        self.create_service(Trigger, '~/reset', self._on_reset,
                            qos_profile=SERVICE_QOS, callback_group=self._service_group)
        self.create_service(DescribeMemory, '~/describe_memory', self._on_describe,
                            qos_profile=SERVICE_QOS, callback_group=self._service_group)
        self.create_service(Trigger, '~/save_memory', self._on_save_memory,
                            qos_profile=SERVICE_QOS, callback_group=self._service_group)
        self._action = ActionServer(
            self, Ask, '~/ask', execute_callback=self._on_ask_execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            goal_service_qos_profile=SERVICE_QOS, result_service_qos_profile=SERVICE_QOS,
            cancel_service_qos_profile=SERVICE_QOS, callback_group=self._service_group)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._timer_group)
        self.create_timer(0.1, self._publish_memory_view, callback_group=self._timer_group)
        if LIFECYCLE_ERROR:
            self.get_logger().warning(
                f'lifecycle support unavailable ({LIFECYCLE_ERROR}): running as a plain node '
                'that configures and activates itself')
            if not self._configure():
                raise RuntimeError(f'model could not be loaded: {self._load_error}')
            self._activate()

    # ---- lifecycle ------------------------------------------------------------------------
    def on_configure(self, state: Any) -> Any:
        """Load the model and start the worker."""
        ok = self._configure()
        return TransitionCallbackReturn.SUCCESS if ok else TransitionCallbackReturn.FAILURE

    def on_activate(self, state: Any) -> Any:
        """Subscribe to the cameras."""
        self._activate()
        return super().on_activate(state)

    def on_deactivate(self, state: Any) -> Any:
        """Stop feeding frames; questions are still answered.

        The snapshot is the worker's next step: the transition waits for it up to
        DEACTIVATE_SAVE_WAIT_S, so during a long answer it returns and the save follows
        that answer.
        """
        self._deactivate()
        self.runner.save_soon('deactivate').wait(DEACTIVATE_SAVE_WAIT_S)
        return super().on_deactivate(state)

    def on_cleanup(self, state: Any) -> Any:
        """Free the model; waiting questions are failed with the reason."""
        self._cleanup('the node was cleaned up (model unloaded)')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Any) -> Any:
        """Stop everything (an answer in progress is cancelled), snapshot the memory."""
        self.shutdown('shutdown')
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: Any) -> Any:
        """Free the model after an error in a transition."""
        self._cleanup('the node hit an error and unloaded the model')
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> bool:
        with self._lock:
            self._state = 'configuring'
            values = dict(self._values)
        self.get_logger().info(f"loading model {values['model']!r} on {values['device']} "
                               f"(memory {values['memory.policy']}, "
                               f"budget {values['memory.budget']})")
        t0 = time.perf_counter()
        try:
            session = self._session_factory(session_config(values))
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, node stays up
            with self._lock:
                self._load_error = f'{type(exc).__name__}: {exc}'
                self._state = 'unconfigured'
            self.get_logger().error(f'model could not be loaded: {self._load_error}')
            return False
        self.runner.start(session)       # restores the snapshot, replays the journal
        with self._lock:
            self._load_error, self._state = '', 'inactive'
        self.get_logger().info(f'model ready in {time.perf_counter() - t0:.1f} s')
        return True

    def _activate(self) -> None:
        with self._lock:
            self._state = 'active'
            self._subscribe(self._values['image_topics'])
            self.runner.set_feeding(True)

    def _deactivate(self) -> None:
        with self._lock:
            if self._state == 'active':
                self._state = 'inactive'
            self.runner.set_feeding(False)
            for cam in self._cameras.values():
                if cam.subscription is not None:
                    self.destroy_subscription(cam.subscription)
                    cam.subscription = None
            self.runner.clear_frames()

    def _cleanup(self, reason: str, save_as: str = '') -> None:
        self.runner.stop(reason, save_as)   # not under the node's lock: the worker may need it
        with self._lock:
            self._state = 'unconfigured'

    def _configure_runner(self) -> None:
        """Hand the runner, admission and persistence their parameters (lock held)."""
        values = self._values
        self.runner.frame_rate = values['frame_rate']
        self.runner.image_max_side = values['image_max_side']
        self.runner.limits = self.admission.limits = QuestionLimits(
            values['max_question_chars'], values['max_new_tokens'], values['query_queue_size'])
        self.admission.caller_rate = values['limits.caller_rate']
        self.admission.caller_burst = values['limits.caller_burst']
        self.persistence.configure(values['memory.snapshot_path'],
                                   values['memory.snapshot_period'])

    def _subscribe(self, topics: List[str]) -> None:
        """(Re)subscribe so that exactly ``topics`` are watched (called with the lock).

        A topic dropped keeps its counters (``_retired``) for when it is listed again.
        """
        for topic in list(self._cameras):
            if topic not in topics:
                cam = self._retired[topic] = self._cameras.pop(topic)
                if cam.subscription is not None:
                    self.destroy_subscription(cam.subscription)
                    cam.subscription = None
        for topic in topics:
            cam = self._cameras.get(topic) or self._retired.pop(topic, None) \
                or CameraState(topic, self._values['camera_stall_s'])
            self._cameras[topic] = cam
            if cam.subscription is None and self._state == 'active':
                cam.subscription = subscribe_camera(
                    self, cam, camera_qos(self._values), self._on_frame, self._lock,
                    lambda key, text: self._log_limited(key, text))
        self.runner.set_cameras(list(self._cameras))

    # ---- parameters -----------------------------------------------------------------------
    def _on_set_parameters(self, params: List[Any]) -> SetParametersResult:
        """Validate the whole resulting set; apply all or nothing."""
        with self._lock:
            values = dict(self._values)
            for p in params:
                if p.name not in PARAMETERS:
                    continue
                value = p.value
                if p.name in FLOAT_PARAMS and isinstance(value, int):
                    value = float(value)
                values[p.name] = list(value) if p.name == 'image_topics' else value
            reason = validate_parameters(values)
            changed = {k for k in PARAMETERS if values[k] != self._values[k]}
            loaded = self.runner.session is not None
            if not reason and loaded and changed & set(MODEL_PARAMS):
                reason = (f"{', '.join(sorted(changed & set(MODEL_PARAMS)))} cannot change "
                          'while the model is loaded: deactivate, clean up, set, configure')
            if reason:
                self.get_logger().warning(f'parameters rejected: {reason}')
                return SetParametersResult(successful=False, reason=reason)
            self._values = values
            self._configure_runner()
            if changed & set(MEMORY_PARAMS) and loaded:
                self.runner.rebuild(self._rebuilt_session)   # between two steps of the worker
            if changed & {'memory.snapshot_path', 'memory.snapshot_period'} and loaded:
                self.runner.schedule_saves()
            if 'camera_stall_s' in changed:
                for cam in self._cameras.values():
                    cam.monitor.stall_s = values['camera_stall_s']
            if changed & set(CAMERA_QOS_PARAMS):
                for cam in self._cameras.values():   # new QoS: subscribe again
                    if cam.subscription is not None:
                        self.destroy_subscription(cam.subscription)
                        cam.subscription = None
            if changed & (set(CAMERA_QOS_PARAMS) | {'image_topics'}):
                self._subscribe(values['image_topics'])
        return SetParametersResult(successful=True)

    # ---- cameras --------------------------------------------------------------------------
    def _on_frame(self, cam: CameraState, msg: Any, compressed: bool) -> None:
        """Check the stamp and hand the message to the runner; never decode or infer here.

        Decoding waits for the runner's worker (``cameras.decode_frame``), so a camera at
        30 Hz costs the callback only the message: a frame superseded before it is fed is
        never decoded (at 1 Hz fed, 29 of 30 raw 1080p frames).
        """
        with self._lock:
            cam.received += 1
            cam.monitor.frame(time.monotonic())
        try:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        except Exception as exc:  # noqa: BLE001 - a message must never kill the node
            self._drop(cam, 'decode_failed', f'header: {type(exc).__name__}: {exc}')
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        unstamped = stamp == 0.0
        if unstamped:
            stamp = now                       # unstamped sources: arrival time, no ordering
        with self._lock:
            if now > 0 and stamp > now + STAMP_FUTURE_S:
                self._drop(cam, 'stamp_future', f'stamp {stamp:.3f} is {stamp - now:.1f} s '
                           'ahead of the clock')
                return
            if not unstamped and cam.last_stamp is not None and stamp <= cam.last_stamp:
                if cam.last_stamp - stamp <= LOOP_JUMP_S:
                    self._drop(cam, 'stamp_not_increasing',
                               f'stamp {stamp:.3f} not after the last one {cam.last_stamp:.3f}')
                    return
                self._log_limited('loop', f'{cam.topic}: stamp jumped back by '
                                  f'{cam.last_stamp - stamp:.1f} s (replay loop?); accepted')
            self.runner.offer(cam.topic, (msg, compressed), stamp)
            cam.last_stamp = stamp

    def _drop(self, cam: CameraState, reason: str, detail: str) -> None:
        self.runner.count_drop(cam.topic, reason, detail)

    def _log_drop(self, camera: str, reason: str, count: int, detail: str) -> None:
        self._log_limited(f'{camera}:{reason}',
                          f'{camera}: frame dropped ({reason}, {count} so far): {detail}')

    def _log_error(self, key: str, text: str) -> None:
        self._log_limited(key, text, error=True)

    def _log_limited(self, key: str, text: str, error: bool = False,
                     every: float = LOG_EVERY_S) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= every:
            self._last_log[key] = now
            # one call site per severity: rclpy refuses a severity change at one call site
            try:
                if error:
                    self.get_logger().error(text)
                else:
                    self.get_logger().warning(text)
            except Exception:  # noqa: BLE001 - logging after shutdown must not kill a thread
                pass

    # ---- questions ------------------------------------------------------------------------
    def _admit(self, question: str, camera: str, max_new_tokens: int,
               on_token: Optional[Callable[[str], None]] = None, caller: str = '') -> Question:
        """Check and queue through the admission; refused: finished at once with the reason."""
        with self._lock:
            cameras, loaded = list(self._cameras), self.runner.session is not None
            why = '' if loaded else ('model not loaded (node state: ' + self._state + (
                f'; {self._load_error}' if self._load_error else '') + ')')
        return self.admission.admit(question, camera, max_new_tokens, on_token, caller,
                                    cameras, why)

    def _on_query(self, request: Any, response: Any) -> Any:
        req = self._admit(request.question, request.camera, request.max_new_tokens,
                          caller=request.caller)
        req.done.wait()
        response.success, response.answer, response.message = req.success, req.answer, \
            req.message
        response.evidence_stamps = [to_time(s) for s in req.evidence]
        response.latency_s = float(req.latency_s)
        return response

    def _on_ask_execute(self, goal_handle: Any) -> Any:
        goal = goal_handle.request
        tokens = [0, '']

        def on_token(piece: str) -> None:
            tokens[0] += 1
            tokens[1] += piece
            goal_handle.publish_feedback(Ask.Feedback(partial_answer=tokens[1],
                                                      tokens=tokens[0]))

        req = self._admit(goal.question, goal.camera, goal.max_new_tokens, on_token,
                          caller=goal.caller)
        while not req.done.wait(0.05):
            if goal_handle.is_cancel_requested:
                req.cancel.set()
        result = Ask.Result(success=req.success, answer=req.answer, message=req.message,
                            evidence_stamps=[to_time(s) for s in req.evidence],
                            latency_s=float(req.latency_s))
        if req.cancelled and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif req.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    # ---- what the runner reports ---------------------------------------------------------
    def _publish_answer(self, req: Question) -> None:
        """Publish an answered question on ~/answers (from the runner's worker)."""
        session = self.runner.status().session
        msg = answer_msg(req, int(session.cache_tokens) if session is not None else 0)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = req.camera
        self._answers_pub.publish(msg)

    def _rebuilt_session(self) -> Any:
        """Apply changed memory.* parameters: a new session (the memory starts empty)."""
        with self._lock:
            values = dict(self._values)
        session = self._session_factory(session_config(values))
        self.get_logger().info(f"memory rebuilt: {values['memory.policy']}, "
                               f"budget {values['memory.budget']} (memory reset)")
        return session

    # ---- memory snapshots -----------------------------------------------------------------
    def _log_persistence(self, level: str, text: str) -> None:
        """Log what the engine's persistence reports (errors and warnings rate-limited)."""
        if level == 'info':
            self.get_logger().info(text)
        else:
            self._log_limited(f'persistence:{text[:40]}', text, error=level == 'error')

    def _on_save_memory(self, request: Any, response: Any) -> Any:
        if self.runner.session is None:
            response.success = False
            response.message = f'model not loaded (node state: {self._state})'
            return response
        response.success, response.message = self.runner.save_memory('service')
        return response

    # ---- reset / describe / diagnostics ---------------------------------------------------
    def _on_reset(self, request: Any, response: Any) -> Any:
        if self.runner.session is None:
            response.success = False
            response.message = f'model not loaded (node state: {self._state})'
            return response
        self.runner.reset()      # waits for the step in progress (the engine's lock)
        with self._lock:
            for cam in self._cameras.values():
                cam.last_stamp = None
        response.success, response.message = True, 'memory cleared'
        return response

    def _on_describe(self, request: Any, response: Any) -> Any:
        status = self.runner.status()
        with self._lock:
            fill_describe(response, status, f'model not loaded (node state: {self._state})',
                          self._values['memory.policy'], self._values['device'])
            response.model = str(self._values['model'])
            response.cameras = [camera_msg(status.cameras[cam.topic], cam.received, cam.monitor,
                                           cam.problem)
                                for cam in self._cameras.values() if cam.topic in status.cameras]
        response.device_memory_bytes = heap.device_memory_bytes(
            status.session.device if status.session is not None else 'cpu')
        return response

    def _publish_memory_view(self) -> None:
        """Publish the memory picture at memory_view_rate while someone subscribes."""
        rate, session = self._values['memory_view_rate'], self.runner.session
        now = time.monotonic()
        if rate <= 0 or session is None or now < self._next_view \
                or self._view_pub.get_subscription_count() == 0:
            return
        self._next_view = now + 1.0 / rate
        try:
            rgb = render_memory_view(session.memory_map())
        except Exception as exc:  # noqa: BLE001 - a picture must never stop the node
            self._log_limited('memory_view', f'memory view failed: {type(exc).__name__}: {exc}')
            return
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                    step=rgb.shape[1] * 3, is_bigendian=0)
        msg.data = rgb.tobytes()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = 'memory_view'
        self._view_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        status, snap = self.runner.status(), self.persistence.status()
        problems = {'duplicate_name': duplicate_name(self), 'load_error': self._load_error}
        if problems['duplicate_name']:
            self._log_limited('duplicate_name', problems['duplicate_name'], error=True,
                              every=ARRIVAL_LOG_EVERY_S)
        device_memory = heap.device_memory_bytes(
            status.session.device if status.session is not None else 'cpu')
        name, now = self.get_fully_qualified_name(), time.monotonic()
        statuses, warnings = [], []
        with self._lock:
            statuses.append(memory_status(name, self._state, self._values, status, snap,
                                          self.admission, problems, device_memory))
            for cam in self._cameras.values():
                publishers = None if cam.subscription is None \
                    else self.count_publishers(cam.topic)
                one, warning = camera_status(name, cam, status,
                                             self._values['camera_qos.reliability'], now,
                                             publishers)
                statuses.append(one)
                warnings += [warning] if warning else []
        for key, text in warnings:
            self._log_limited(key, text, every=ARRIVAL_LOG_EVERY_S)
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def shutdown(self, why: str = 'exit') -> None:
        """Stop feeding, cancel an answer in progress, stop the worker, snapshot the memory.

        The process exit path (SIGINT) and the shutdown transition; waiting questions fail
        with the reason. A second call finds no session and saves nothing.
        """
        self._deactivate()
        self._cleanup('the node is shutting down', save_as=why)


def spin(executor: MultiThreadedExecutor, node: InfMllmNode) -> None:
    """Spin until shutdown, surviving an entity destroyed while the executor used it.

    Why: a camera_qos or image_topics change destroys camera subscriptions (and their
    event handlers) from the parameter callback while another executor thread may be
    taking from them; rclpy then raises InvalidHandle out of ``spin``, which used to end
    the node. The entity is gone by then, so spinning on is correct.
    """
    while rclpy.ok():
        try:
            executor.spin()
            return
        except InvalidHandle as exc:
            node.get_logger().warning(f'executor: an entity was destroyed while in use '
                                      f'({exc}); spinning on')


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point `infmllm_node`."""
    heap.limit_malloc_arenas()
    sys.setswitchinterval(GIL_SWITCH_S)
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = InfMllmNode()
    except Exception as exc:  # noqa: BLE001 - report bad start-up parameters and exit
        print(f'[infmllm] cannot start: {exc}', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    try:
        spin(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown('exit')
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
