"""Generated bad input, in process: frame decoding, questions, parameter sets.

Properties: the decoders return an HxWx3 uint8 frame no larger than max_side or raise
FrameError with a known reason; the engine answers any question string or refuses it
with ValueError; the node's parameter validation returns None or a reason for any value
of the declared type. Nothing else may escape.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fuzzing import JUNK_STRING, TEXT, count, examples
from hypothesis import given
from hypothesis import strategies as st

from ros2_infmllm.ros import imaging


def _check_frame(rgb: np.ndarray, max_side: int) -> None:
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert 0 < max(rgb.shape[:2]) <= max_side


ENCODINGS = st.sampled_from(imaging.SUPPORTED_ENCODINGS) | JUNK_STRING | st.sampled_from(
    ["RGB8", " bgr8 ", "jpeg", "16UC1", "32FC1", "bayer_rggb8 ", "64FC1", "yuv420"])


@st.composite
def raw_images(draw):
    """Geometry near valid (step/data derived from the encoding) or anywhere."""
    enc = draw(ENCODINGS)
    layout = imaging._LAYOUTS.get(enc.strip().lower())
    bpp = layout.channels * layout.depth if layout else draw(st.integers(1, 8))
    w = draw(st.integers(0, 48) | st.sampled_from([1, 2, 3, 1 << 16, (1 << 31) - 1]))
    h = draw(st.integers(0, 48) | st.sampled_from([1, 2, 1 << 16, (1 << 32) - 1]))
    exact = draw(st.booleans())
    if exact and w <= 48 and h <= 48:      # derived sizes stay small (0 x 2^32 would not)
        step = w * bpp + draw(st.sampled_from([0, 0, 0, 1, 4]))
        size = step * h + draw(st.sampled_from([0, 0, 0, -1, 1, 7]))
    else:
        step = draw(st.integers(0, 1 << 20) | st.sampled_from([0, (1 << 32) - 1]))
        size = draw(st.integers(0, 4096))
    size = max(0, size)
    data = draw(st.binary(min_size=size, max_size=size)) if size < 512 else \
        np.random.default_rng(draw(st.integers(0, 999))).integers(0, 256, size,
                                                                  dtype=np.uint8).tobytes()
    return enc, w, h, step, data, draw(st.booleans()), draw(st.sampled_from([16, 32, 64]))


@examples(400)
@given(raw_images())
def test_raw_image_any_fields(args):
    count("raw_image")
    enc, w, h, step, data, big, max_side = args
    try:
        rgb = imaging.image_to_rgb(enc, w, h, step, data, is_bigendian=big, max_side=max_side)
    except imaging.FrameError as exc:
        assert exc.reason in imaging.REASONS, exc.reason
        return
    _check_frame(rgb, max_side)


def _encoded(kind: str, w: int, h: int, seed: int) -> bytes:
    import cv2
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png" if kind == "png" else ".jpg", img)
    assert ok
    return buf.tobytes()


@st.composite
def compressed_images(draw):
    """Valid JPEG/PNG, cut or bit-flipped, under right/wrong/odd format strings, or junk."""
    fmt = draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "JPG",
                                "16UC1; compressedDepth png", "bmp", "", "jpeg png"])
               | JUNK_STRING)
    if draw(st.booleans()):
        data = bytearray(_encoded(draw(st.sampled_from(["jpeg", "png"])),
                                  draw(st.integers(1, 40)), draw(st.integers(1, 40)),
                                  draw(st.integers(0, 99))))
        cut = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data = data[:cut]
        for _ in range(draw(st.integers(0, 4))):
            if data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] ^= draw(st.integers(1, 255))
        data = bytes(data)
    else:
        data = draw(st.binary(max_size=600) | st.sampled_from(
            [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30]))
    return fmt, data, draw(st.sampled_from([16, 64]))


@examples(300)
@given(compressed_images())
def test_compressed_image_any_bytes(args):
    count("compressed_image")
    fmt, data, max_side = args
    try:
        rgb = imaging.compressed_to_rgb(fmt, data, max_side=max_side)
    except imaging.FrameError as exc:
        assert exc.reason in imaging.REASONS, exc.reason
        return
    _check_frame(rgb, max_side)


@pytest.fixture(scope="module")
def session():
    from ros2_infmllm.engine import SessionConfig, build_session
    s = build_session(SessionConfig(model="tiny-test", device="cpu", budget=128, n_recent=32,
                                    window=8, image_max_side=32))
    s.ingest_frame(np.zeros((8, 8, 3), np.uint8), 1.0, "cam")
    return s


@examples(25)
@given(question=TEXT, camera=st.none() | JUNK_STRING, tokens=st.integers(-2, 3))
def test_engine_any_question(session, question, camera, tokens):
    count("question")
    try:
        ans = session.ask(question, camera=camera, max_new_tokens=tokens)
    except ValueError:
        assert not question.strip() or tokens < 1
        return
    assert isinstance(ans.text, str) and tokens >= 1 and question.strip()


@examples(20)
@given(image=st.integers(0, 3).flatmap(lambda nd: st.tuples(
    st.just(nd), st.lists(st.integers(0, 12), min_size=nd, max_size=nd))),
    stamp=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5),
    dtype=st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]))
def test_engine_any_frame_array(session, image, stamp, dtype):
    count("frame_array")
    nd, shape = image
    arr = np.ones(shape, dtype=dtype) if nd else np.array(3, dtype=dtype)
    try:
        session.ingest_frame(arr, stamp, "cam")
    except ValueError:
        return
    assert math.isfinite(float(stamp))


def _param_values():
    from ros2_infmllm.ros import node
    out = {}
    for name, (default, desc) in node.PARAMETERS.items():
        if isinstance(default, bool):
            out[name] = st.booleans()
        elif isinstance(default, int):
            out[name] = st.integers(-(1 << 40), 1 << 40) | st.sampled_from([0, 1, -1, 3, 7])
        elif isinstance(default, float):
            out[name] = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
                [0.0, -0.0, 1e-300, 1e300])
        elif isinstance(default, list):
            out[name] = st.lists(JUNK_STRING | st.just("/cam/image_raw"), max_size=20)
        else:
            out[name] = JUNK_STRING | st.just(default)
    return out


@examples(200)
@given(st.data())
def test_parameter_validation_any_values_of_the_declared_type(data):
    """rclpy enforces the declared type; any value of that type gets None or a reason."""
    pytest.importorskip("rclpy")
    from ros2_infmllm.ros import node
    strategies = _param_values()
    values = {k: d for k, (d, _) in node.PARAMETERS.items()}
    for name in data.draw(st.lists(st.sampled_from(sorted(strategies)), max_size=4)):
        values[name] = data.draw(strategies[name])
    count("parameters")
    reason = node.validate_parameters(values)
    assert reason is None or (isinstance(reason, str) and reason)
    if reason is None:
        node.session_config(values)
