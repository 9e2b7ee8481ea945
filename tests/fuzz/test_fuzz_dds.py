"""Generated bad input over DDS against a node process: it must never die.

Each case is one of: a raw Image with arbitrary fields, a CompressedImage with arbitrary
bytes/format, a question of any text (service), an ~/ask goal cancelled after a random
delay, or a parameter update of a random name with a value of a random type. After every
case the node must still answer ~/describe_memory; at the end it still answers a question,
and every bad frame ended as a counted drop.
"""

from __future__ import annotations

import threading
import time

import pytest
from fuzzing import JUNK_STRING, TEXT, count, examples
from harness import BASE_PARAMS, CAM_BAD, CAM_COMPRESSED, Client, NodeProcess, random_domain_id
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def dds(tmp_path_factory):
    pytest.importorskip("ros2_infmllm_msgs", reason="interfaces not built: run ./setup.sh")
    domain = random_domain_id()
    work = tmp_path_factory.mktemp("fuzz")
    # fuzzed memory.snapshot_path values are relative paths: they land in work, not the repo
    proc = NodeProcess(domain, dict(BASE_PARAMS, **{"limits.caller_burst": 10000}),
                       log=work / "node.log", cwd=work)
    client = Client(domain, "fuzz_client")
    client.wait_ready(timeout=120, proc=proc)
    raw = client.image_publisher(CAM_BAD, reliable=True, depth=50)
    comp = client.image_publisher(CAM_COMPRESSED, compressed=True, reliable=True, depth=50)
    from rclpy.action import ActionClient
    from ros2_infmllm_msgs.action import Ask
    ask = ActionClient(client.node, Ask, "/infmllm/ask")
    assert ask.wait_for_server(timeout_sec=30)
    time.sleep(1.0)
    yield proc, client, raw, comp, ask
    client.close()
    proc.stop()


PARAM_NAMES = st.sampled_from(["frame_rate", "memory.budget", "memory.policy", "image_topics",
                               "max_new_tokens", "query_queue_size", "memory.bias",
                               "memory.kernel", "model", "device", "memory.snapshot_path",
                               "memory.snapshot_period", "limits.caller_rate",
                               "camera_qos.depth", "image_max_side", "no_such_param"])
VALUES = (st.integers(-(1 << 62), 1 << 62) | st.floats(allow_nan=True) | st.booleans()
          | JUNK_STRING | st.lists(st.integers(-5, 5), max_size=3)
          | st.lists(JUNK_STRING, max_size=3) | st.sampled_from([0, -1, 1e308, "", "cuda:99"]))


def _raw(args):
    from sensor_msgs.msg import Image
    enc, w, h, step, data, big = args
    msg = Image(encoding=enc, width=w, height=h, step=step, is_bigendian=int(big))
    msg.data = data
    msg.header.stamp.sec = int(time.time())
    return msg


CASES = st.one_of(
    st.tuples(st.just("raw"), st.tuples(
        st.sampled_from(["rgb8", "bgr8", "mono16", "yuv422", "bayer_rggb8", "32FC1", "x"])
        | JUNK_STRING, st.integers(0, 70), st.integers(0, 70),
        st.integers(0, (1 << 32) - 1) | st.integers(0, 300), st.binary(max_size=2000),
        st.booleans())),
    st.tuples(st.just("compressed"), st.tuples(
        st.sampled_from(["jpeg", "png", "compressedDepth", ""]) | JUNK_STRING,
        st.binary(max_size=800) | st.just(b"\xff\xd8\xff" + b"\x00" * 100))),
    st.tuples(st.just("question"), st.tuples(TEXT, st.integers(0, 6))),
    st.tuples(st.just("cancel"), st.tuples(TEXT, st.floats(0.0, 0.5))),
    st.tuples(st.just("param"),
              st.lists(st.tuples(PARAM_NAMES, VALUES), min_size=1, max_size=3)),
)


def _send(dds, kind: str, args) -> None:
    """Deliver one fuzz case to the node over DDS (topics, query, action, parameters)."""
    _, client, raw, comp, ask = dds
    if kind == "raw":
        raw.publish(_raw(args))
    elif kind == "compressed":
        from sensor_msgs.msg import CompressedImage
        msg = CompressedImage(format=args[0])
        msg.data = args[1]
        msg.header.stamp.sec = int(time.time())
        comp.publish(msg)
    elif kind == "question":
        r = client.query(args[0], max_new_tokens=args[1], timeout=60)
        assert r.success or r.message, "refused without a reason"
    elif kind == "cancel":
        from ros2_infmllm_msgs.action import Ask
        fut = ask.send_goal_async(Ask.Goal(question=args[0] or "?", max_new_tokens=50))
        done = threading.Event()
        fut.add_done_callback(lambda _f: done.set())
        assert done.wait(30), "goal not answered"
        time.sleep(args[1])
        handle = fut.result()
        if handle.accepted:
            handle.cancel_goal_async()
            res = handle.get_result_async()
            ok = threading.Event()
            res.add_done_callback(lambda _f: ok.set())
            assert ok.wait(60), "no result after cancel"
    else:
        from rcl_interfaces.msg import ParameterValue  # noqa: F401 - interfaces present
        from rclpy.parameter import Parameter
        try:
            params = [Parameter(n, value=v).to_parameter_msg() for n, v in args]
        except (TypeError, ValueError):
            return                 # a value rclpy itself cannot express (mixed list...)
        from rcl_interfaces.srv import SetParameters
        client.call(SetParameters, "/infmllm/set_parameters",
                    SetParameters.Request(parameters=params), 20)


@examples(40, shrink=False)
@given(case=CASES)
def test_node_survives_any_input(dds, case):
    proc, client = dds[0], dds[1]
    kind, args = case
    count(f"dds_{kind}")
    try:
        _send(dds, kind, args)
        assert proc.alive(), proc.log_text()[-3000:]
        assert client.describe(timeout=30)["success"] in (True, False)
    except TimeoutError as exc:     # any service call of the case: where do its threads wait?
        assert proc.alive(), f"node died ({exc}):\n{proc.log_text()[-3000:]}"
        raise AssertionError(f"node alive but silent ({exc}); its threads:\n"
                             f"{proc.thread_stacks()}") from exc


def test_node_answers_after_the_fuzz(dds):
    proc, client, *_ = dds
    assert proc.alive()
    client.set_params({"max_new_tokens": 4, "query_queue_size": 4, "image_max_side": 64})
    d = client.describe(timeout=30)
    assert d["success"], d["message"]
    r = client.query("still there?", max_new_tokens=2, timeout=60)
    assert r.success or "queue full" in r.message, r.message
    bad = {c["camera"]: c for c in d["cameras"]}
    for cam in (CAM_BAD, CAM_COMPRESSED):
        if cam in bad:
            assert bad[cam]["frames_received"] >= bad[cam]["frames_dropped"]
