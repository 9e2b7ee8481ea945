"""Launch description of the node, and a runner for machines without ROS 2 `launch`.

One plain-data description (:func:`node_spec` -> :class:`NodeSpec`: executable, node name,
namespace, parameters file, overrides, remappings) is used by both
``launch/node.launch.py`` (standard launch API, ``ros2 launch ros2_infmllm
node.launch.py``) and ``python -m ros2_infmllm.ros.launch``, so the two start the same node
the same way. ROS 2 ``launch``/``launch_ros`` are not installable from PyPI wheels; the
runner here starts the node process, drives the lifecycle node to *active* through its
``change_state`` service (configure, then activate) and, with ``--respawn``, restarts the
node when it dies and drives it to active again.

Usage::

    python -m ros2_infmllm.ros.launch [--params-file F] [--namespace NS] [--model M]
        [--image-topics T1,T2] [--dds-profile FILE|none] [--respawn] [--no-autostart]
        [--ros-args ...]

The node process gets the shipped Fast DDS profile (config/fastdds_large_frames.xml) in
FASTDDS_DEFAULT_PROFILES_FILE unless one is set already, so raw camera frames from other
processes of this host arrive (docs/node.md, "Real cameras").

``name:=value`` arguments (as with ``ros2 launch``) are accepted too, and everything after
``--ros-args`` is handed to the node unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

PACKAGE = 'ros2_infmllm'
EXECUTABLE = 'infmllm_node'
NODE_NAME = 'infmllm'
PARAMS_FILE_NAME = 'params.yaml'
# Graph discovery time of the duplicate-name check (it answers as soon as the other node is
# seen): node names arrive over ros_discovery_info after participant and endpoint
# discovery, which took over 2.5 s once while the full test suite loaded the machine.
DISCOVERY_S = 5.0
DUPLICATE_EXIT = 3          # exit status when a node of the same name already runs
# Fast DDS profile for raw camera frames on one host (shared memory with room for them)
DDS_PROFILE_NAME = 'fastdds_large_frames.xml'
DDS_PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
# a profile the user chose already (the older name is Fast DDS 2's)
DDS_PROFILE_USER_ENVS = (DDS_PROFILE_ENV, 'FASTRTPS_DEFAULT_PROFILES_FILE')

# launch argument name -> (default, description); node.launch.py declares exactly these.
LAUNCH_ARGUMENTS: Dict[str, Tuple[str, str]] = {
    'params_file': ('', 'parameters YAML file (empty = the package config/params.yaml)'),
    'namespace': ('', 'namespace of the node (empty = root)'),
    'model': ('', 'model parameter override: default, tiny-test, a local path or cached id '
                  '(empty = from the parameters file)'),
    'image_topics': ('', "camera topics override, comma separated or a YAML list, e.g. "
                         "/cam/image_raw,/cam2/image_raw/compressed (empty = from the file)"),
    'dds_profile': ('', 'Fast DDS XML profile of the node process (empty = the shipped '
                        'config/fastdds_large_frames.xml unless FASTDDS_DEFAULT_PROFILES_FILE '
                        'is set; none = Fast DDS defaults); give camera drivers the same'),
    'autostart': ('true', 'drive the lifecycle node to active (configure + activate)'),
    'respawn': ('false', 'restart the node when it dies'),
}


@dataclass
class NodeSpec:
    """Everything needed to start the node, as plain data.

    Parameters
    ----------
    package : str
        ROS package of the executable.
    executable : str
        Executable name in ``lib/<package>``.
    name : str
        Node name.
    namespace : str
        Node namespace, '' or starting with '/'.
    params_file : str or None
        Parameters YAML file loaded first ('' / None = none).
    parameters : dict
        Parameter overrides applied after the file (name -> value).
    remappings : list of (str, str)
        Topic/service remappings.
    env : dict
        Environment variables set for the node process (the DDS profile).
    autostart : bool
        Drive the lifecycle node to active after start.
    respawn : bool
        Restart the node process when it exits.
    """

    package: str = PACKAGE
    executable: str = EXECUTABLE
    name: str = NODE_NAME
    namespace: str = ''
    params_file: Optional[str] = None
    parameters: Dict[str, Any] = field(default_factory=dict)
    remappings: List[Tuple[str, str]] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    autostart: bool = True
    respawn: bool = False

    @property
    def fully_qualified_name(self) -> str:
        """Return '/ns/name' (or '/name'): the prefix of the node's private services."""
        ns = self.namespace.rstrip('/')
        return f'{ns}/{self.name}'

    def ros_arguments(self) -> List[str]:
        """Return the ``--ros-args`` command-line arguments equivalent to this spec."""
        args = ['--ros-args', '-r', f'__node:={self.name}']
        if self.namespace:
            args += ['-r', f'__ns:={self.namespace}']
        if self.params_file:
            args += ['--params-file', self.params_file]
        for key, value in self.parameters.items():
            args += ['-p', f'{key}:={json.dumps(value)}']
        for src, dst in self.remappings:
            args += ['-r', f'{src}:={dst}']
        return args


def _truthy(text: Any) -> bool:
    """Parse a launch-argument boolean; raises ValueError on anything else."""
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ('1', 'true', 'yes', 'on'):
        return True
    if low in ('0', 'false', 'no', 'off', ''):
        return False
    raise ValueError(f'not a boolean: {text!r}')


def parse_image_topics(text: str) -> List[str]:
    """Turn 'a,b' or a YAML list "['a', 'b']" into a list of topic names."""
    text = text.strip()
    if not text:
        return []
    if text.startswith('['):
        value = yaml.safe_load(text)
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ValueError(f'image_topics must be a list of strings, got {text!r}')
        topics = [t.strip() for t in value]
    else:
        topics = [t.strip() for t in text.split(',')]
    topics = [t for t in topics if t]
    if not topics:
        raise ValueError(f'image_topics {text!r} names no topic')
    return topics


def config_file(name: str) -> Optional[str]:
    """Locate config/<name>: the installed share directory first, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory(PACKAGE)) / 'config' / name
        if shared.is_file():
            return str(shared)
    except Exception:  # noqa: BLE001 - package not in the ament index (not built): fall back
        pass
    source = Path(__file__).resolve().parent.parent / 'config' / name
    return str(source) if source.is_file() else None


def default_params_file() -> Optional[str]:
    """Locate config/params.yaml (installed share directory first, else the source tree)."""
    return config_file(PARAMS_FILE_NAME)


def dds_environment(dds_profile: str = '',
                    environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment that gives the node the Fast DDS profile: {} to leave DDS as it is.

    '' = the shipped profile, unless the environment names a profile already (the user's
    choice wins); 'none' = Fast DDS defaults; anything else is a profile file.
    """
    environ = os.environ if environ is None else environ
    choice = dds_profile.strip()
    if choice.lower() == 'none':
        return {}
    if not choice:
        if any(environ.get(name) for name in DDS_PROFILE_USER_ENVS):
            return {}
        shipped = config_file(DDS_PROFILE_NAME)
        return {DDS_PROFILE_ENV: shipped} if shipped else {}
    path = Path(choice).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'DDS profile not found: {dds_profile}')
    return {DDS_PROFILE_ENV: str(path.resolve())}


def node_spec(params_file: str = '', namespace: str = '', model: str = '',
              image_topics: str = '', dds_profile: str = '', autostart: Any = True,
              respawn: Any = False) -> NodeSpec:
    """Build the node description from launch-argument strings ('' = not given)."""
    namespace = namespace.strip()
    if namespace and not namespace.startswith('/'):
        namespace = '/' + namespace
    namespace = namespace.rstrip('/') if namespace != '/' else ''
    if params_file:
        path = Path(params_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'parameters file not found: {params_file}')
        params_file = str(path.resolve())
    else:
        params_file = default_params_file() or ''
    overrides: Dict[str, Any] = {}
    if model.strip():
        overrides['model'] = model.strip()
    topics = parse_image_topics(image_topics)
    if topics:
        overrides['image_topics'] = topics
    return NodeSpec(namespace=namespace, params_file=params_file or None,
                    parameters=overrides, env=dds_environment(dds_profile),
                    autostart=_truthy(autostart), respawn=_truthy(respawn))


# ----------------------------------------------------------------------------- runner
def executable_command(spec: NodeSpec) -> List[str]:
    """Command that starts the node executable (installed, on PATH, or the module)."""
    try:
        from ament_index_python.packages import get_package_prefix

        exe = Path(get_package_prefix(spec.package)) / 'lib' / spec.package / spec.executable
        if exe.is_file() and os.access(exe, os.X_OK):
            return [str(exe)]
    except Exception:  # noqa: BLE001 - not built with colcon: use PATH or the module
        pass
    found = shutil.which(spec.executable)
    if found:
        return [found]
    return [sys.executable, '-c',
            'import sys; from ros2_infmllm.ros.node import main; sys.exit(main())']


def _log(text: str) -> None:
    print(f'[ros2_infmllm.ros.launch] {text}', file=sys.stderr, flush=True)


class _Stop(Exception):
    """Raised inside the runner when SIGINT/SIGTERM asked it to stop."""


class LifecycleDriver:
    """DDS client that drives the node's lifecycle (configure, activate) from outside."""

    def __init__(self, spec: NodeSpec) -> None:
        """Create a small rclpy node in this process (own context) for the service calls."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(f'infmllm_launcher_{os.getpid()}', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spec = spec

    def close(self) -> None:
        """Destroy the client node and its context."""
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)

    def name_taken(self, discovery_s: float = DISCOVERY_S) -> bool:
        """Whether a node of the spec's name and namespace is already on the graph.

        Looks for ``discovery_s`` (nodes of this host are discovered well within it, also
        on a loaded machine) and answers as soon as one is seen.
        """
        ns = self.spec.namespace or '/'
        deadline = time.monotonic() + discovery_s
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
            if (self.spec.name, ns) in self.node.get_node_names_and_namespaces():
                return True
        return False

    def _wait(self, future: Any, proc: subprocess.Popen, timeout: float,
              stop: Dict[str, bool]) -> Any:
        """Spin until `future` is done; None when the process died or time ran out."""
        deadline = time.monotonic() + timeout
        while not future.done():
            if stop['stop']:
                raise _Stop()
            if proc.poll() is not None or time.monotonic() > deadline:
                return None
            self.executor.spin_once(timeout_sec=0.1)
        return future.result()

    def _is_lifecycle(self, proc: subprocess.Popen, timeout: float,
                      stop: Dict[str, bool]) -> Optional[bool]:
        """Wait for the node on the graph; tell whether it offers lifecycle services."""
        ns = self.spec.namespace or '/'
        change_state = f'{self.spec.fully_qualified_name}/change_state'
        deadline = time.monotonic() + timeout
        seen_since: Optional[float] = None
        while time.monotonic() < deadline:
            if stop['stop']:
                raise _Stop()
            if proc.poll() is not None:
                return None
            self.executor.spin_once(timeout_sec=0.2)
            names = self.node.get_node_names_and_namespaces()
            if (self.spec.name, ns) not in names:
                continue
            services = [n for n, _ in self.node.get_service_names_and_types()]
            if change_state in services:
                return True
            # a node that has been visible for a while without change_state is a plain node
            seen_since = seen_since or time.monotonic()
            if time.monotonic() - seen_since > 5.0:
                return False
        return None

    def drive_to_active(self, proc: subprocess.Popen, stop: Dict[str, bool],
                        timeout: float) -> bool:
        """Configure and activate the node; False (with a logged reason) when that failed."""
        from lifecycle_msgs.msg import State, Transition
        from lifecycle_msgs.srv import ChangeState, GetState

        fqn = self.spec.fully_qualified_name
        kind = self._is_lifecycle(proc, timeout, stop)
        if kind is None:
            _log(f'{fqn} did not come up (process exited or {timeout:.0f} s passed)')
            return False
        if kind is False:
            _log(f'{fqn} has no lifecycle services: it runs as a plain node (already active)')
            return True
        get_state = self.node.create_client(GetState, f'{fqn}/get_state')
        change = self.node.create_client(ChangeState, f'{fqn}/change_state')
        try:
            # Retry with short timeouts: right after a respawn the graph may still list the
            # dead process's services, and a request sent before the new server is matched
            # is lost. Once get_state answers, change_state requests reach the new node.
            res = None
            deadline = time.monotonic() + timeout
            while res is None and proc.poll() is None and time.monotonic() < deadline:
                get_state.wait_for_service(timeout_sec=1.0)
                res = self._wait(get_state.call_async(GetState.Request()), proc, 2.0, stop)
            if res is None:
                _log(f'{fqn}/get_state gave no answer')
                return False
            state = res.current_state.id
            steps = []
            if state == State.PRIMARY_STATE_UNCONFIGURED:
                steps = [('configure', Transition.TRANSITION_CONFIGURE),
                         ('activate', Transition.TRANSITION_ACTIVATE)]
            elif state == State.PRIMARY_STATE_INACTIVE:
                steps = [('activate', Transition.TRANSITION_ACTIVATE)]
            for label, tid in steps:
                t0 = time.monotonic()
                req = ChangeState.Request(transition=Transition(id=tid))
                res = self._wait(change.call_async(req), proc, timeout, stop)
                if res is None or not res.success:
                    why = 'no answer' if res is None else 'transition refused (see node log)'
                    _log(f'{label} of {fqn} failed: {why}')
                    return False
                _log(f'{fqn}: {label} done in {time.monotonic() - t0:.1f} s')
            _log(f'{fqn} is active')
            return True
        finally:
            self.node.destroy_client(get_state)
            self.node.destroy_client(change)


def _stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT the node, then SIGTERM and SIGKILL if it does not exit in time."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def run(spec: NodeSpec, extra_ros_args: Sequence[str] = (), transition_timeout: float = 600.0,
        respawn_delay: float = 1.0) -> int:
    """Start the node, drive it to active, supervise it; returns the exit status."""
    command = executable_command(spec) + spec.ros_arguments() + list(extra_ros_args)
    stop = {'stop': False}
    for key, value in spec.env.items():
        _log(f'{key}={value}')

    def on_signal(signum: int, _frame: Any) -> None:
        stop['stop'] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    driver: Optional[LifecycleDriver] = None
    proc: Optional[subprocess.Popen] = None
    starts = 0
    delay = 0.0
    try:
        if spec.autostart:
            driver = LifecycleDriver(spec)
            if driver.name_taken():
                _log(f'not starting: a node named {spec.fully_qualified_name} is already running '
                     'on this ROS graph (same ROS_DOMAIN_ID); a second one would take part of '
                     'its queries. Stop it, or pass --namespace / another node name')
                return DUPLICATE_EXIT
        while True:
            starts += 1
            _log(('starting' if starts == 1 else f'respawning ({starts - 1})') + ': '
                 + ' '.join(command))
            started = time.monotonic()
            proc = subprocess.Popen(command, env=dict(os.environ, **spec.env))
            if driver is not None:
                try:
                    driver.drive_to_active(proc, stop, transition_timeout)
                except _Stop:
                    pass
            while proc.poll() is None and not stop['stop']:
                time.sleep(0.1)
            if stop['stop']:
                return _stop_process(proc)
            code = proc.returncode
            _log(f'node exited with status {code}')
            if not spec.respawn:
                return code
            # a node that keeps dying right after its start is restarted ever more slowly
            delay = respawn_delay if time.monotonic() - started >= 10.0 else min(
                max(delay * 2, respawn_delay), 8.0)
            end = time.monotonic() + delay
            while time.monotonic() < end and not stop['stop']:
                time.sleep(0.05)
            if stop['stop']:
                return code
    finally:
        if proc is not None and proc.poll() is None:
            _stop_process(proc)
        if driver is not None:
            driver.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _split_argv(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split off '--ros-args ...' (passed to the node) and turn name:=value into options."""
    argv = list(argv)
    ros: List[str] = []
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        argv, ros = argv[:i], argv[i:]
    out: List[str] = []
    for arg in argv:
        if ':=' in arg and not arg.startswith('-'):
            name, value = arg.split(':=', 1)
            if name not in LAUNCH_ARGUMENTS:
                raise SystemExit(f'unknown launch argument {name!r}; known: '
                                 + ', '.join(LAUNCH_ARGUMENTS))
            out += [f'--{name.replace("_", "-")}={value}']
        else:
            out.append(arg)
    return out, ros


def build_parser() -> argparse.ArgumentParser:
    """Command-line options, one per launch argument of launch/node.launch.py."""
    ap = argparse.ArgumentParser(
        prog='python -m ros2_infmllm.ros.launch',
        description='Start the ros2_infmllm node and drive it to active (the launch '
                    'description of launch/node.launch.py, without ROS 2 launch).')
    for name, (default, help_text) in LAUNCH_ARGUMENTS.items():
        opt = '--' + name.replace('_', '-')
        if name in ('autostart', 'respawn'):
            continue
        ap.add_argument(opt, default=default, help=help_text)
    ap.add_argument('--respawn', nargs='?', const='true', default='false',
                    help=LAUNCH_ARGUMENTS['respawn'][1])
    ap.add_argument('--autostart', default='true', help=LAUNCH_ARGUMENTS['autostart'][1])
    ap.add_argument('--no-autostart', dest='autostart', action='store_const', const='false',
                    help='leave the node unconfigured')
    ap.add_argument('--transition-timeout', type=float, default=600.0,
                    help='seconds to wait for the node and for each lifecycle transition')
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m ros2_infmllm.ros.launch``."""
    args_in, ros_args = _split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_in)
    try:
        spec = node_spec(params_file=args.params_file, namespace=args.namespace,
                         model=args.model, image_topics=args.image_topics,
                         dds_profile=args.dds_profile, autostart=args.autostart,
                         respawn=args.respawn)
    except (ValueError, FileNotFoundError) as exc:
        print(f'ros2_infmllm.ros.launch: {exc}', file=sys.stderr)
        return 2
    return run(spec, ros_args, transition_timeout=args.transition_timeout)


if __name__ == '__main__':
    sys.exit(main())
