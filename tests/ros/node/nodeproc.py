"""The node in a child process and an rclpy client in this one, on a private DDS domain.

Used by tests/node and scripts/measure_latency.py. The node runs as
``python -m ros2_infmllm.ros.node`` (the real executable's code) so that the lifecycle is driven
here through lifecycle_msgs services, as a user or the launch runner would.
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
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[3]
NS = '/infmllm'


def random_domain(probe_s: float = 1.0) -> int:
    """Pick a ROS_DOMAIN_ID in 1..200 on which no other `infmllm` node is seen.

    Other test runs on this host use random domains too; a collision would make two nodes
    answer one client, so a candidate domain is watched for ``probe_s`` first.
    """
    import rclpy
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    rng = random.SystemRandom()
    for _ in range(10):
        domain = rng.randint(1, 200)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain)
        try:
            probe = rclpy.create_node('node_test_domain_probe', context=context)
            time.sleep(probe_s)
            names = probe.get_node_names_and_namespaces()
            probe.destroy_node()
        finally:
            context.try_shutdown()
        if not any(n == NS.strip('/') for n, _ in names):
            return domain
    raise RuntimeError('every probed ROS domain already has an infmllm node')


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(f"'{v}'" if isinstance(v, str) else str(v) for v in value) + ']'
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


class NodeProc:
    """``python -m ros2_infmllm.ros.node`` in its own process group, output to a log file."""

    def __init__(self, domain: int, params: Dict[str, Any], log: Path,
                 extra_env: Optional[Dict[str, str]] = None) -> None:
        """Start the node at once (unconfigured unless it is a plain node)."""
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1',
                   ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
        env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH'))
                                            if p)
        env.update(extra_env or {})
        argv = [sys.executable, '-m', 'ros2_infmllm.ros.node', '--ros-args']
        for name, value in params.items():
            argv += ['-p', f'{name}:={_param_text(value)}']
        self.log = log
        self._out = open(log, 'w')
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        """Tell whether the node process still runs."""
        return self.proc.poll() is None

    def log_tail(self) -> str:
        """Last lines the node printed (for failure messages)."""
        return self.log.read_text(errors='replace')[-4000:] if self.log.exists() else ''

    def stop(self) -> Optional[int]:
        """SIGINT, then SIGKILL after 15 s; the exit code."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode


def to_sec(t: Any) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return t.sec + t.nanosec * 1e-9


class Client:
    """rclpy node in a private context, spun by a multi-threaded executor in a thread."""

    def __init__(self, domain: int, name: str = 'node_test_client') -> None:
        """Create context, node and spinning thread."""
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=8, context=self.context)
        self.executor.add_node(self.node)
        self._clients: Dict[str, Any] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down while spinning
            pass

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 60.0) -> Any:
        """Call a service and wait; TimeoutError when no response came."""
        with self._lock:
            key = f'{srv_type.__name__}:{name}'
            if key not in self._clients:
                from rclpy.qos import QoSProfile
                # deep reply history: a burst of replies must not be lost on this side
                self._clients[key] = self.node.create_client(
                    srv_type, name, qos_profile=QoSProfile(depth=256))
            cli = self._clients[key]
        if not cli.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f'service {name} not available in {timeout} s')
        future = cli.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f'no response from {name} in {timeout} s')
        return future.result()

    def query(self, question: str, camera: str = '', max_new_tokens: int = 0,
              timeout: float = 60.0) -> Any:
        """Call ~/query."""
        from ros2_infmllm_msgs.srv import Query
        return self.call(Query, f'{NS}/query', Query.Request(
            question=question, camera=camera, max_new_tokens=max_new_tokens), timeout)

    def describe(self, timeout: float = 30.0) -> Any:
        """Call ~/describe_memory."""
        from ros2_infmllm_msgs.srv import DescribeMemory
        return self.call(DescribeMemory, f'{NS}/describe_memory', DescribeMemory.Request(),
                         timeout)

    def reset(self) -> Any:
        """Call ~/reset."""
        from std_srvs.srv import Trigger
        return self.call(Trigger, f'{NS}/reset', Trigger.Request())

    def transition(self, label: str, timeout: float = 120.0) -> bool:
        """Lifecycle transition by label (configure, activate, deactivate, cleanup)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        tid = getattr(Transition, f'TRANSITION_{label.upper()}')
        return bool(self.call(ChangeState, f'{NS}/change_state',
                              ChangeState.Request(transition=Transition(id=tid)),
                              timeout).success)

    def state(self) -> str:
        """Return the current lifecycle state label."""
        from lifecycle_msgs.srv import GetState
        return self.call(GetState, f'{NS}/get_state', GetState.Request()).current_state.label

    def set_params(self, values: Dict[str, Any]) -> Any:
        """Set parameters atomically (one SetParametersAtomically request); the result."""
        from rcl_interfaces.srv import SetParametersAtomically
        from rclpy.parameter import Parameter
        req = SetParametersAtomically.Request(parameters=[
            Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(SetParametersAtomically, f'{NS}/set_parameters_atomically',
                         req).result

    def get_params(self, names: List[str]) -> Dict[str, Any]:
        """Return the current values of parameters `names`."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        res = self.call(GetParameters, f'{NS}/get_parameters',
                        GetParameters.Request(names=list(names)))
        return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}

    def wait_ready(self, proc: NodeProc, timeout: float = 120.0) -> Any:
        """Wait until describe_memory reports a loaded model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f'node exited:\n{proc.log_tail()}')
            try:
                d = self.describe(timeout=5.0)
                if d.success:
                    return d
            except TimeoutError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f'node not ready:\n{proc.log_tail()}')

    def image_pub(self, topic: str, compressed: bool = False) -> Any:
        """Create an image publisher with sensor-data QoS (best effort), as cameras use."""
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image
        return self.node.create_publisher(CompressedImage if compressed else Image, topic,
                                          qos_profile_sensor_data)

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
        finally:
            self.context.try_shutdown()


def make_image(stamp: float, width: int = 32, height: int = 24, seed: int = 0) -> Any:
    """Build a valid rgb8 sensor_msgs/Image with the given stamp."""
    from sensor_msgs.msg import Image
    rng = np.random.default_rng(seed)
    img = Image(height=height, width=width, encoding='rgb8', step=width * 3)
    img.data = rng.integers(0, 255, (height * width * 3,), dtype=np.uint8).tobytes()
    img.header.stamp.sec = int(stamp)
    img.header.stamp.nanosec = int((stamp - int(stamp)) * 1e9)
    img.header.frame_id = 'cam'
    return img
