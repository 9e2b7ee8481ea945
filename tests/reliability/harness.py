"""Cross-process harness for the reliability tests and scripts: node process + DDS client.

The node runs in its own process (tests/reliability/instrumented_node.py, which wraps the
real session for fault injection and timing records); the client here is a plain rclpy
node in its own context on a private ROS_DOMAIN_ID, so test modules never see each other.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
INSTRUMENTED = Path(__file__).resolve().parent / "instrumented_node.py"
NODE_NAME = "infmllm"

# the reliability modules' node (tests import these from here, not from conftest:
# several test folders have a conftest.py)
CAM_GOOD = "/rel/cam0/image_raw"
CAM_BAD = "/rel/cam1/image_raw"
CAM_COMPRESSED = "/rel/cam2/image_raw/compressed"
MAX_QUESTION_CHARS = 200

BASE_PARAMS: Dict[str, Any] = {
    "model": "tiny-test",
    "device": "cpu",
    "image_topics": [CAM_GOOD, CAM_BAD, CAM_COMPRESSED],
    "frame_rate": 5.0,
    "max_new_tokens": 4,
    "max_question_chars": MAX_QUESTION_CHARS,
    "query_queue_size": 4,
    "image_max_side": 64,
}


def random_domain_id() -> int:
    """Pick a ROS_DOMAIN_ID in 1..200 so concurrent test modules/engineers do not cross-talk."""
    return random.SystemRandom().randint(1, 200)


def ros_env(domain_id: int, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a child process on `domain_id` (inherits the sourced install/)."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p
    )
    if extra:
        env.update(extra)
    return env


def to_dict(msg: Any) -> Any:
    """Recursively turn a ROS message into dicts/lists/plain values (for checks and JSON)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {k: to_dict(getattr(msg, k)) for k in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)):
        return [to_dict(v) for v in msg]
    if hasattr(msg, "tolist"):
        return msg.tolist()
    return msg


def stamp_to_float(t: Any) -> float:
    """builtin_interfaces/Time -> seconds."""
    return float(t.sec) + float(t.nanosec) * 1e-9


def params_args(params: Dict[str, Any]) -> List[str]:
    """--ros-args -p name:=value pairs (lists/strings written as YAML)."""
    out: List[str] = ["--ros-args"]
    for name, value in params.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            text = "[" + ",".join(f"'{v}'" if isinstance(v, str) else str(v) for v in value) + "]"
        elif isinstance(value, str):
            text = f"'{value}'" if value else "''"
        else:
            text = str(value)
        out += ["-p", f"{name}:={text}"]
    return out


class NodeProcess:
    """The node (real session, optional fault injection) in a child process."""

    def __init__(
        self,
        domain_id: int,
        params: Dict[str, Any],
        control: Optional[Path] = None,
        record: Optional[Path] = None,
        log: Optional[Path] = None,
        command: Optional[Sequence[str]] = None,
        extra_env: Optional[Dict[str, str]] = None,
        launcher_args: Sequence[str] = (),
        cwd: Optional[Path] = None,
    ) -> None:
        """Start it at once; `command` replaces the instrumented launcher (e.g. launch).

        `cwd` (default: the repo) is where relative paths in parameters land.
        """
        self.log_path = log
        self.domain_id = domain_id
        self.instrumented = command is None
        if command is None:
            command = [sys.executable, str(INSTRUMENTED)]
            if control is not None:
                command += ["--control", str(control)]
            if record is not None:
                command += ["--record", str(record)]
            command += list(launcher_args)
        argv = list(command) + params_args(params)
        self._log = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv,
            cwd=str(cwd or REPO),
            env=ros_env(domain_id, extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """Process id of the launcher (the node runs in it)."""
        return self.proc.pid

    def alive(self) -> bool:
        """Tell whether the process is still running."""
        return self.proc.poll() is None

    def log_text(self, chars: int = 6000) -> str:
        """Return the last ``chars`` of what the process printed (for assertion messages)."""
        if self.log_path and Path(self.log_path).exists():
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        return ""

    def thread_stacks(self) -> str:
        """Ask the instrumented node for every thread's stack (SIGUSR1); return the log tail.

        For a node that is alive but answers nothing: the stacks say where it waits.
        """
        if self.instrumented and self.alive() and self.log_path:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(1.0)
        return self.log_text(20000)

    def rss_bytes(self) -> int:
        """Resident memory of the node process (sum over its process group)."""
        total = 0
        for pid in _group_pids(self.proc.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGINT, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode


def _group_pids(pgid: int) -> List[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


class Client:
    """An rclpy client node in a private context on `domain_id`, spun in a thread."""

    def __init__(self, domain_id: int, name: str = "reliability_client",
                 node_name: str = NODE_NAME, service_depth: int = 10) -> None:
        """Create the context, node and executor thread; nothing is called yet.

        ``service_depth`` is the history depth of the service clients (rclpy's default 10).
        """
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.ns = "/" + node_name
        self.service_depth = service_depth
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._clients: Dict[str, Any] = {}
        self.answers: List[Any] = []
        self.diagnostics: List[Any] = []
        self._subs: List[Any] = []

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down while spinning
            pass

    # ------------------------------------------------------------------ services
    def _client(self, srv_type: Any, name: str) -> Any:
        key = f"{srv_type.__name__}:{name}"
        if key not in self._clients:
            from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.service_depth,
                             reliability=ReliabilityPolicy.RELIABLE)
            self._clients[key] = self.node.create_client(srv_type, name, qos_profile=qos)
        return self._clients[key]

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
        """Call a service; raises TimeoutError when no response came within `timeout`."""
        cli = self._client(srv_type, name)
        deadline = time.monotonic() + timeout
        if not cli.wait_for_service(timeout_sec=max(0.1, deadline - time.monotonic())):
            raise TimeoutError(f"service {name} not available within {timeout:.0f}s")
        future = cli.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(max(0.0, deadline - time.monotonic())):
            cli.remove_pending_request(future)
            raise TimeoutError(f"service {name} gave no response within {timeout:.0f}s")
        return future.result()

    def wait_ready(self, timeout: float = 90.0, proc: Optional[NodeProcess] = None) -> dict:
        """Wait until describe_memory answers with success (model loaded); return it."""
        deadline = time.monotonic() + timeout
        last: Optional[Exception] = None
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"node exited ({proc.proc.returncode}):\n{proc.log_text()}")
            try:
                d = self.describe(timeout=min(10.0, max(0.5, deadline - time.monotonic())))
                if d.get("success", True):
                    return d
                last = RuntimeError(d.get("message", "describe_memory: success=false"))
            except TimeoutError as exc:
                last = exc
            time.sleep(0.3)
        log = proc.log_text() if proc is not None else ""
        raise TimeoutError(f"node not ready within {timeout:.0f}s ({last})\n{log}")

    def query(self, question: str, camera: str = "", max_new_tokens: int = 4,
              timeout: float = 60.0) -> Any:
        """Call ~/query."""
        from ros2_infmllm_msgs.srv import Query

        req = Query.Request(question=question, camera=camera, max_new_tokens=max_new_tokens)
        return self.call(Query, f"{self.ns}/query", req, timeout)

    def describe(self, timeout: float = 20.0) -> dict:
        """Call ~/describe_memory; return a plain dict."""
        from ros2_infmllm_msgs.srv import DescribeMemory

        return to_dict(self.call(DescribeMemory, f"{self.ns}/describe_memory",
                                 DescribeMemory.Request(), timeout))

    def reset(self, timeout: float = 30.0) -> Any:
        """Clear the memory through the ~/reset Trigger service."""
        from std_srvs.srv import Trigger

        return self.call(Trigger, f"{self.ns}/reset", Trigger.Request(), timeout)

    def set_params(self, values: Dict[str, Any], timeout: float = 20.0) -> List[Any]:
        """Set parameters at run time, one request; returns the SetParametersResult list."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        return list(self.call(SetParameters, f"{self.ns}/set_parameters", req, timeout).results)

    def get_params(self, names: Sequence[str], timeout: float = 20.0) -> Dict[str, Any]:
        """Get current parameter values as Python values."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        res = self.call(GetParameters, f"{self.ns}/get_parameters",
                        GetParameters.Request(names=list(names)), timeout)
        return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}

    def lifecycle(self, transition: str, timeout: float = 60.0) -> bool:
        """Trigger a lifecycle transition by label (configure, activate, deactivate...)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        tid = getattr(Transition, f"TRANSITION_{transition.upper()}")
        req = ChangeState.Request(transition=Transition(id=tid))
        return bool(self.call(ChangeState, f"{self.ns}/change_state", req, timeout).success)

    def lifecycle_state(self, timeout: float = 10.0) -> str:
        """Get the current lifecycle state label ('active', 'inactive', 'unconfigured', ...)."""
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"{self.ns}/get_state", GetState.Request(),
                         timeout).current_state.label

    # ------------------------------------------------------------------ topics
    def subscribe_answers(self) -> None:
        """Collect ~/answers into self.answers, with the ones published before the match.

        Transient local: a respawned node answers its replayed questions before this
        subscription has matched the new publisher.
        """
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from ros2_infmllm_msgs.msg import Answer

        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs.append(self.node.create_subscription(
            Answer, f"{self.ns}/answers", self.answers.append, qos))

    def subscribe_diagnostics(self) -> None:
        """Collect /diagnostics into self.diagnostics."""
        from diagnostic_msgs.msg import DiagnosticArray

        self._subs.append(self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self.diagnostics.append, 50))

    def image_publisher(self, topic: str, compressed: bool = False, reliable: bool = False,
                        depth: int = 5) -> Any:
        """Create a camera publisher with sensor-data (best effort) or reliable QoS."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        return self.node.create_publisher(CompressedImage if compressed else Image, topic, qos)

    def now_msg(self, offset_s: float = 0.0) -> Any:
        """builtin_interfaces/Time for wall-clock now + offset."""
        from builtin_interfaces.msg import Time

        t = time.time() + offset_s
        return Time(sec=int(t), nanosec=int((t - int(t)) * 1e9))

    def close(self) -> None:
        """Shut the executor and context down."""
        try:
            self.executor.shutdown(timeout_sec=2.0)
        except Exception:
            pass
        try:
            self.node.destroy_node()
        except Exception:
            pass
        if self.context.ok():
            self.rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5.0)


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until true or `timeout` seconds passed (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def scene(i: int, width: int = 320, height: int = 240, camera: int = 0):
    """Draw a generated camera frame (RGB uint8): a moving disc and a slowly changing backdrop."""
    import cv2
    import numpy as np

    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = ((40 + 3 * i + 60 * camera) % 256, (90 + i) % 256, (150 + 2 * camera) % 256)
    x = int((i * 7) % width)
    y = int(height / 2 + (height / 3) * np.sin(i / 15.0))
    cv2.circle(img, (x, y), 25, (230, 40, 40), -1)
    cv2.rectangle(img, (20, 20), (20 + (i % 60), 60), (20, 200, 60), -1)
    return img


def image_msg(rgb, stamp, frame_id: str = "camera", encoding: str = "rgb8"):
    """sensor_msgs/Image from an RGB array (converted to `encoding` rgb8/bgr8/mono8)."""
    from sensor_msgs.msg import Image

    if encoding == "bgr8":
        rgb = rgb[:, :, ::-1]
    elif encoding == "mono8":
        rgb = rgb[:, :, 1:2]
    h, w, c = rgb.shape
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.data = rgb.tobytes()
    return msg


def percentile(values: Sequence[float], q: float) -> float:
    """Return the nearest-rank percentile; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100.0 * (len(ordered) - 1)))))
    return float(ordered[k])
