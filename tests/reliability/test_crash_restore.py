"""Nothing lost across a crash: kill -9 mid-answer and mid-stream, respawn, replay the rest.

Real processes over DDS: ``python -m ros2_infmllm.ros.launch --respawn`` runs the node (tiny
model, snapshots every PERIOD s); a bag of the sample scene is replayed frame by frame
(each one waited for until ingested, so both runs ingest the same frames). The node is
killed with SIGKILL once while answering a question (the question's answer must still
arrive on ~/answers: the restarted node answers it again from the restored memory) and
once mid-stream (frames ingested more than one period before the kill must be in the
snapshot; the replay resumes after the snapshot's last frame). Every answer, the one cut
by the kill included, must equal the answer of the same run without kills.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import BASE_PARAMS, Client, NodeProcess, image_msg, wait_until
from test_respawn import _node_pid

PERIOD = 0.3
FRAMES = 12
LONG = 200             # tokens of the answer that is cut by the kill (takes seconds)
QUESTIONS = ("What happened at the very start?", "What was the last thing seen?")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """The first FRAMES frames (1 Hz) of the sample scene as (stamp, rgb)."""
    from ros2_infmllm.eval.bagio import decode_image, iter_frames
    from ros2_infmllm.eval.make_sample_bag import write_sample_bag
    bag = tmp_path_factory.mktemp("crash") / "bag"
    write_sample_bag(bag, duration=float(FRAMES), rate=1.0, second_camera=False,
                     width=96, height=72)
    out = [(f.stamp, decode_image(f.msgtype, f.msg), f.topic) for f in iter_frames(bag)]
    return out[:FRAMES]


class Run:
    """One launcher + client; frames fed one at a time, answers collected from ~/answers."""

    def __init__(self, domain, tmp: Path, topic: str):
        tmp.mkdir(parents=True, exist_ok=True)
        self.snap = str(tmp / "memory.safetensors")
        params = dict(BASE_PARAMS, image_topics=[topic], frame_rate=20.0,
                      max_new_tokens=LONG, query_queue_size=4)
        params.update({"memory.budget": 192, "memory.n_recent": 48,
                       "memory.snapshot_path": self.snap, "memory.snapshot_period": PERIOD})
        self.proc = NodeProcess(domain, params, log=tmp / "launch.log",
                                command=[sys.executable, "-m", "ros2_infmllm.ros.launch",
                                         "--respawn"])
        self.client = Client(domain, "crash_client")
        self.client.subscribe_answers()
        self.client.wait_ready(timeout=120, proc=self.proc)
        self.pub = self.client.image_publisher(topic, reliable=True)
        self.topic = topic
        self.ingested_at: list = []         # (frame index, monotonic time confirmed)

    def _count(self) -> int:
        return sum(c["frames_ingested"] for c in self.client.describe()["cameras"]
                   if c["camera"] == self.topic)

    def feed(self, frames, indices) -> None:
        from builtin_interfaces.msg import Time
        for i in indices:
            before = self._count()
            stamp, rgb, _ = frames[i]
            msg = image_msg(rgb, Time(sec=int(stamp), nanosec=int((stamp % 1) * 1e9)))
            ok = False
            for _ in range(5):         # a frame published before the match may be missed
                self.pub.publish(msg)
                if wait_until(lambda: self._count() > before, 5.0, 0.05):
                    ok = True
                    break
            assert ok, f"frame {i} never ingested:\n{self.proc.log_text()[-3000:]}"
            self.ingested_at.append((i, time.monotonic()))

    def snapshot_frames(self) -> int:
        from ros2_infmllm.memory.snapshot import read_header
        return int(read_header(self.snap)["state"]["session"]["frames_ingested"])

    def answer_of(self, question: str, timeout: float = 60.0):
        got = wait_until(lambda: any(a.question == question for a in self.client.answers),
                         timeout)
        assert got, f"no answer on ~/answers for {question!r}:\n{self.proc.log_text()[-3000:]}"
        a = next(a for a in self.client.answers if a.question == question)
        return a.answer, [(s.sec, s.nanosec) for s in a.evidence_stamps]

    def ask_long(self, question: str, kill: bool) -> float:
        """~/ask with a long answer; with ``kill``, SIGKILL the node at the first token."""
        from rclpy.action import ActionClient
        from ros2_infmllm_msgs.action import Ask
        ac = ActionClient(self.client.node, Ask, "/infmllm/ask")
        assert ac.wait_for_server(timeout_sec=30)
        first = threading.Event()
        ac.send_goal_async(Ask.Goal(question=question, max_new_tokens=LONG),
                           feedback_callback=lambda _fb: first.set())
        if not kill:
            return 0.0
        assert first.wait(60), "no feedback token"
        pid = _node_pid(self.proc.pid)
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    def kill_now(self) -> float:
        os.kill(_node_pid(self.proc.pid), signal.SIGKILL)
        return time.monotonic()

    def wait_respawned(self, old_pid: int) -> None:
        assert wait_until(lambda: _node_pid(self.proc.pid) not in (-1, old_pid), 30)
        self.client.wait_ready(timeout=120, proc=self.proc)

    def close(self) -> None:
        self.client.close()
        self.proc.stop()


def _scenario(frames, domain, tmp: Path, kill: bool) -> dict:
    run = Run(domain, tmp, frames[0][2])
    answers = {}
    try:
        run.feed(frames, range(0, 4))
        if kill:     # the question below must start from a snapshot holding these frames
            assert wait_until(lambda: os.path.exists(run.snap)
                              and run.snapshot_frames() == 4, 10)
        pid = _node_pid(run.proc.pid)
        run.ask_long("Describe everything so far in detail.", kill)
        if kill:
            run.wait_respawned(pid)
            assert "answering them again" in run.proc.log_text()
        answers["cut"] = run.answer_of("Describe everything so far in detail.", 120)
        run.feed(frames, range(4, 9))
        resume = 9
        if kill:
            pid = _node_pid(run.proc.pid)
            t_kill = run.kill_now()
            run.wait_respawned(pid)
            saved = run.snapshot_frames()       # frames the restored memory holds
            old = [i for i, t in run.ingested_at if t < t_kill - PERIOD - 0.5]
            assert saved >= len(old), (saved, old)     # nothing older than one period lost
            resume = saved
        run.feed(frames, range(resume, len(frames)))
        for q in QUESTIONS:
            r = run.client.query(q, max_new_tokens=8, timeout=60)
            assert r.success, r.message
            answers[q] = run.answer_of(q)
        return answers
    finally:
        run.close()


def test_kill_mid_answer_and_mid_stream_loses_nothing(frames, domain_id, tmp_path):
    t0 = time.monotonic()
    reference = _scenario(frames, domain_id, tmp_path / "ref", kill=False)
    t1 = time.monotonic()
    killed = _scenario(frames, domain_id, tmp_path / "kill", kill=True)
    print(f"reference run {t1 - t0:.1f} s, run with two kills {time.monotonic() - t1:.1f} s")
    assert killed == reference
