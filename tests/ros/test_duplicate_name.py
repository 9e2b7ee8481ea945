"""A second node of the same name is caught at start, over real DDS (issue 36).

Two processes named ``/<ns>/infmllm`` split the queries and transitions meant for one
(the second one answered "model not loaded" while the launcher said "active"). The launch
runner looks at the graph before it starts the node and refuses (exit status 3, the reason
logged); the node reports another node of its name in /diagnostics (ERROR) and the log.
The nodes stay unconfigured here (no model is loaded), so the test is quick.
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

import pytest
from test_launch import _ros_env

REPO = Path(__file__).resolve().parents[2]


def _node(domain: int, ns: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'ros2_infmllm.ros.node', '--ros-args', '-r', f'__ns:={ns}',
           '-p', 'model:=tiny-test', '-p', 'device:=cpu',
           '-p', f'image_topics:=["{ns}/cam/image_raw"]']
    with open(log, 'w') as out:
        return subprocess.Popen(cmd, cwd=REPO, env=_ros_env(domain), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_duplicate_node_name_refused_by_launcher_and_reported_by_node(tmp_path):
    pytest.importorskip('ros2_infmllm_msgs', reason='interfaces not built: ./setup.sh')
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor

    domain = random.randint(1, 200)
    ns = f'/dup_{domain}_{os.getpid()}'
    first = _node(domain, ns, tmp_path / 'first.log')
    procs = [first]
    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=domain)
    watcher = rclpy.create_node(f'dup_watch_{os.getpid()}', context=context)
    seen: dict = {}

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.name == f'{ns}/infmllm: memory':
                values = {kv.key: kv.value for kv in st.values}
                if values.get('duplicate_name'):
                    seen['text'], seen['level'] = values['duplicate_name'], st.level

    watcher.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watcher)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60
        while ('infmllm', ns) not in watcher.get_node_names_and_namespaces():
            assert first.poll() is None and time.monotonic() < deadline, \
                (tmp_path / 'first.log').read_text()[-3000:]
            time.sleep(0.2)
        launch = subprocess.run(
            [sys.executable, '-m', 'ros2_infmllm.ros.launch', '--model', 'tiny-test',
             '--namespace', ns, '--ros-args', '-p', 'device:=cpu'],
            cwd=REPO, env=_ros_env(domain), capture_output=True, text=True, timeout=120)
        assert launch.returncode == 3, launch.stdout + launch.stderr
        assert f'a node named {ns}/infmllm is already running' in launch.stdout + launch.stderr
        assert not seen, 'a duplicate reported while only one node ran'
        procs.append(_node(domain, ns, tmp_path / 'second.log'))
        deadline = time.monotonic() + 60
        while 'text' not in seen and time.monotonic() < deadline:
            time.sleep(0.2)
        assert 'text' in seen, 'no node reported the duplicate name in /diagnostics'
        assert f'2 nodes named {ns}/infmllm' in seen['text']
        assert seen['level'] == DiagnosticStatus.ERROR
        logs = (tmp_path / 'first.log').read_text() + (tmp_path / 'second.log').read_text()
        assert 'are on the ROS graph' in logs
    finally:
        stop.set()
        spinner.join(5)
        executor.shutdown()
        for proc in procs:
            _stop(proc)
        watcher.destroy_node()
        rclpy.shutdown(context=context)
