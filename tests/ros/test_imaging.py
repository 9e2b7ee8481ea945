"""Round trips for every encoding imaging.py accepts and a FrameError for every bad kind."""

import array
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

from ros2_infmllm.ros.imaging import (
    MAX_PIXELS,
    REASONS,
    SUPPORTED_ENCODINGS,
    FrameError,
    compressed_to_rgb,
    image_to_rgb,
)


def _pattern(h: int = 6, w: int = 8) -> np.ndarray:
    """A small RGB image where every pixel differs, so order/channel mix-ups show."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 30 + 5, y * 40 + 3, (x + y) * 13 + 1], axis=2).astype(np.uint8)


def _pad_rows(samples: np.ndarray, pad: int) -> tuple:
    """Serialise (h, w, c) samples row by row with `pad` junk bytes per row -> (step, bytes)."""
    h = samples.shape[0]
    rows = samples.reshape(h, -1).view(np.uint8).reshape(h, -1)
    junk = np.full((h, pad), 0xAB, dtype=np.uint8)
    full = np.concatenate([rows, junk], axis=1)
    return full.shape[1], full.tobytes()


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize(
    "encoding, make",
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[:, :, ::-1]),
        ("8UC3", lambda rgb: rgb[:, :, ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
        ("8UC4", lambda rgb: np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_8bit_round_trip(encoding, make, pad):
    rgb = _pattern()
    samples = np.ascontiguousarray(make(rgb))
    step, data = _pad_rows(samples, pad)
    out = image_to_rgb(encoding, 8, 6, step, data)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_round_trip(encoding):
    grey = _pattern()[:, :, 0]
    step, data = _pad_rows(grey[:, :, None], 3)
    out = image_to_rgb(encoding, 8, 6, step, data)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_keeps_high_byte_both_endians(bigendian):
    grey = _pattern()[:, :, 0].astype(np.uint16) * 256 + 77  # low byte is noise
    samples = grey.astype(">u2" if bigendian else "<u2")[:, :, None]
    step, data = _pad_rows(samples, 2)
    out = image_to_rgb("mono16", 8, 6, step, data, is_bigendian=bigendian)
    np.testing.assert_array_equal(out[:, :, 1], _pattern()[:, :, 0])


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["rgb16", "bgr16"])
def test_colour_16bit_round_trip(encoding, bigendian):
    rgb = _pattern()
    src = rgb if encoding == "rgb16" else rgb[:, :, ::-1]
    samples = (src.astype(np.uint16) * 256 + 200).astype(">u2" if bigendian else "<u2")
    step, data = _pad_rows(np.ascontiguousarray(samples), 0)
    out = image_to_rgb(encoding, 8, 6, step, data, is_bigendian=bigendian)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("bigendian", [False, True])
def test_16uc1_depth_is_normalised_and_zero_is_invalid(bigendian):
    depth = np.array([[0, 1000, 2000], [3000, 0, 1000]], dtype=np.uint16)
    step, data = _pad_rows(depth.astype(">u2" if bigendian else "<u2")[:, :, None], 0)
    out = image_to_rgb("16UC1", 3, 2, step, data, is_bigendian=bigendian)
    expected = np.array([[0, 0, 128], [255, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 2], expected)


def test_32fc1_depth_is_normalised_and_nan_is_black():
    depth = np.array([[np.nan, 1.0, 2.0], [3.0, np.inf, 1.0]], dtype="<f4")
    step, data = _pad_rows(depth[:, :, None], 4)
    out = image_to_rgb("32FC1", 3, 2, step, data)
    np.testing.assert_array_equal(out[:, :, 1], [[0, 0, 128], [255, 0, 0]])


def test_32fc1_all_invalid_is_black_not_an_error():
    depth = np.full((2, 2), np.nan, dtype="<f4")
    out = image_to_rgb("32FC1", 2, 2, 8, depth.tobytes())
    assert out.shape == (2, 2, 3) and not out.any()


def _yuv422(first: str, y_left: int, y_right: int, u: int, v: int, pairs: int = 2) -> bytes:
    """A 1-row YUV 4:2:2 image of `pairs` identical macropixels in UYVY or YUYV byte order."""
    macro = bytes([u, y_left, v, y_right]) if first == "uyvy" else bytes([y_left, u, y_right, v])
    return macro * pairs


@pytest.mark.parametrize(
    "encoding, order",
    [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")],
)
def test_yuv422_byte_order(encoding, order):
    grey = image_to_rgb(encoding, 4, 1, 8, _yuv422(order, 40, 200, 128, 128))
    assert np.all(grey[0, 0] == grey[0, 0, 0]) and np.all(grey[0, 1] == grey[0, 1, 0])
    assert grey[0, 0, 0] < 60 and grey[0, 1, 0] > 180  # dark then bright: Y order kept
    red = image_to_rgb(encoding, 4, 1, 8, _yuv422(order, 100, 100, 128, 230))
    assert red[0, 0, 0] > red[0, 0, 1] + 80 and red[0, 0, 0] > red[0, 0, 2] + 80
    blue = image_to_rgb(encoding, 4, 1, 8, _yuv422(order, 100, 100, 230, 128))
    assert blue[0, 0, 2] > blue[0, 0, 0] + 80


def test_yuv422_same_picture_in_both_orders():
    uyvy = image_to_rgb("yuv422", 4, 1, 8, _yuv422("uyvy", 60, 90, 100, 160))
    yuyv = image_to_rgb("yuv422_yuy2", 4, 1, 8, _yuv422("yuyv", 60, 90, 100, 160))
    np.testing.assert_array_equal(uyvy, yuyv)


_BAYER_OFFSETS = {  # (row, col) of R and B in the 2x2 cell of each pattern
    "rggb": ((0, 0), (1, 1)),
    "bggr": ((1, 1), (0, 0)),
    "gbrg": ((1, 0), (0, 1)),
    "grbg": ((0, 1), (1, 0)),
}


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("pattern", sorted(_BAYER_OFFSETS))
def test_bayer_uniform_colour(pattern, depth):
    colour = (200, 100, 30)
    h, w = 8, 8
    mosaic = np.full((h, w), colour[1], dtype=np.uint16)
    (ry, rx), (by, bx) = _BAYER_OFFSETS[pattern]
    mosaic[ry::2, rx::2] = colour[0]
    mosaic[by::2, bx::2] = colour[2]
    if depth == 16:
        samples, step = (mosaic * 256).astype("<u2"), w * 2
    else:
        samples, step = mosaic.astype(np.uint8), w
    out = image_to_rgb(f"bayer_{pattern}{depth}", w, h, step, samples.tobytes())
    np.testing.assert_allclose(out[2:6, 2:6].reshape(-1, 3).mean(axis=0), colour, atol=2)


@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b), list])
def test_message_data_containers(container):
    rgb = _pattern()
    out = image_to_rgb("rgb8", 8, 6, 24, container(rgb.tobytes()))
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable and out.flags.c_contiguous


def test_downscale_keeps_aspect_and_longer_side():
    img = np.zeros((400, 800, 3), dtype=np.uint8)
    img[:, 400:] = 255
    out = image_to_rgb("rgb8", 800, 400, 2400, img.tobytes(), max_side=384)
    assert out.shape == (192, 384, 3)
    assert out[:, :180].max() == 0 and out[:, 204:].min() == 255
    small = image_to_rgb("rgb8", 8, 6, 24, _pattern().tobytes(), max_side=384)
    assert small.shape == (6, 8, 3)
    tall = image_to_rgb("mono8", 10, 1000, 10, bytes(10000), max_side=50)
    assert tall.shape == (50, 1, 3)


_BYTES_PER_PIXEL = {
    "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3, "8uc4": 4,
    "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8, "mono16": 2, "16uc1": 2, "32fc1": 4,
    "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2,
    **{f"bayer_{p}{d}": d // 8 for p in ("rggb", "bggr", "gbrg", "grbg") for d in (8, 16)},
}


def test_supported_encodings_all_convert():
    assert sorted(SUPPORTED_ENCODINGS) == sorted(_BYTES_PER_PIXEL)
    for enc, bpp in _BYTES_PER_PIXEL.items():
        out = image_to_rgb(enc.upper(), 4, 4, 4 * bpp, bytes(16 * bpp))
        assert out.shape == (4, 4, 3), enc
        with pytest.raises(FrameError):
            image_to_rgb(enc, 4, 4, 4 * bpp - 1, bytes(16 * bpp))


# ---------------------------------------------------------------- bad raw images


def _reason(fn, *args, **kwargs) -> str:
    with pytest.raises(FrameError) as err:
        fn(*args, **kwargs)
    assert err.value.reason in REASONS
    assert str(err.value).startswith(err.value.reason + ": ")
    return err.value.reason


@pytest.mark.parametrize("encoding", ["rgb9", "", "jpeg", "nv12", "64FC1"])
def test_unknown_encoding(encoding):
    assert _reason(image_to_rgb, encoding, 2, 2, 6, bytes(12)) == "unknown_encoding"


@pytest.mark.parametrize("w, h", [(0, 4), (4, 0), (0, 0), (-3, 4)])
def test_zero_size(w, h):
    assert _reason(image_to_rgb, "rgb8", w, h, 12, bytes(48)) == "empty"


def test_empty_data():
    assert _reason(image_to_rgb, "mono8", 4, 4, 4, b"") == "empty"


def test_step_too_small():
    assert _reason(image_to_rgb, "rgb8", 4, 4, 11, bytes(44)) == "step_too_small"
    assert _reason(image_to_rgb, "mono16", 4, 4, 7, bytes(28)) == "step_too_small"


@pytest.mark.parametrize("n", [47, 49, 24, 4800])
def test_data_size_mismatch(n):
    assert _reason(image_to_rgb, "rgb8", 4, 4, 12, bytes(n)) == "data_size"


def test_odd_width_yuv():
    assert _reason(image_to_rgb, "yuv422", 3, 1, 6, bytes(6)) == "odd_width"


def test_bayer_needs_two_by_two():
    assert _reason(image_to_rgb, "bayer_rggb8", 1, 4, 1, bytes(4)) == "too_small"


def test_huge_header_rejected_without_allocating():
    tracemalloc.start()
    try:
        reason = _reason(image_to_rgb, "rgb8", 20000, 20000, 60000, bytes(16))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "too_large"
    assert peak < 1_000_000
    assert 20000 * 20000 > MAX_PIXELS
    assert _reason(image_to_rgb, "mono8", 10, 10, 10, bytes(100), max_pixels=99) == "too_large"


def test_bad_max_side_is_a_value_error_not_a_frame_error():
    with pytest.raises(ValueError, match="max_side"):
        image_to_rgb("mono8", 2, 2, 2, bytes(4), max_side=0)
    with pytest.raises(ValueError, match="max_side"):
        compressed_to_rgb("png", b"", max_side=-1)


# ---------------------------------------------------------------- compressed


def _encode(ext: str, rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("fmt", ["png", "PNG", "rgb8; png compressed bgr8", "bgr8; png"])
def test_png_round_trip_exact(fmt):
    rgb = _pattern()
    np.testing.assert_array_equal(compressed_to_rgb(fmt, _encode(".png", rgb)), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg"])
def test_jpeg_round_trip_close(fmt):
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[:, :24] = (220, 40, 40)
    rgb[:, 24:] = (30, 60, 210)
    out = compressed_to_rgb(fmt, array.array("B", _encode(".jpg", rgb)))
    assert out.shape == rgb.shape
    np.testing.assert_allclose(out[8:24, 4:20].mean(axis=(0, 1)), (220, 40, 40), atol=8)
    np.testing.assert_allclose(out[8:24, 28:44].mean(axis=(0, 1)), (30, 60, 210), atol=8)


def test_compressed_downscale():
    big = np.zeros((500, 1000, 3), dtype=np.uint8)
    assert compressed_to_rgb("png", _encode(".png", big), max_side=100).shape == (50, 100, 3)


def test_grey_png_becomes_rgb():
    ok, buf = cv2.imencode(".png", np.full((3, 5), 90, dtype=np.uint8))
    out = compressed_to_rgb("png", buf.tobytes())
    assert out.shape == (3, 5, 3) and np.all(out == 90)


@pytest.mark.parametrize("fmt", ["", "tiff", "rgb8; compressed", "jpeg png", "webp"])
def test_unknown_compressed_format(fmt):
    assert _reason(compressed_to_rgb, fmt, _encode(".png", _pattern())) == "unknown_format"


def test_compressed_depth_refused():
    png = _encode(".png", _pattern())
    assert _reason(compressed_to_rgb, "16UC1; compressedDepth png", png) == "unknown_format"


def test_compressed_empty():
    assert _reason(compressed_to_rgb, "jpeg", b"") == "empty"


@pytest.mark.parametrize("fmt, ext", [("jpeg", ".png"), ("png", ".jpg")])
def test_format_mismatch(fmt, ext):
    assert _reason(compressed_to_rgb, fmt, _encode(ext, _pattern())) == "format_mismatch"


def test_garbage_claiming_jpeg():
    assert _reason(compressed_to_rgb, "jpeg", b"GIF89a" + bytes(100)) == "format_mismatch"


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated(ext):
    data = _encode(ext, np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    fmt = "jpeg" if ext == ".jpg" else "png"
    assert _reason(compressed_to_rgb, fmt, data[: len(data) // 2]) == "truncated"


def test_jpeg_header_cut_inside_segments():
    data = _encode(".jpg", _pattern())
    assert _reason(compressed_to_rgb, "jpeg", data[:12]) == "decode_failed"


def test_corrupt_jpeg_without_frame_header():
    assert _reason(compressed_to_rgb, "jpeg", b"\xff\xd8\xff" + bytes(200) + b"\xff\xd9") == (
        "decode_failed"
    )


def test_corrupt_png_body():
    data = bytearray(_encode(".png", _pattern()))
    idat = data.index(b"IDAT")
    data[idat + 4:idat + 24] = bytes(20)  # wreck the zlib stream, keep IEND
    assert _reason(compressed_to_rgb, "png", bytes(data)) == "decode_failed"


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_png_bomb_header_rejected_before_decoding():
    data = _png_header(20000, 20000) + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    tracemalloc.start()
    try:
        reason = _reason(compressed_to_rgb, "png", data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "too_large" and peak < 1_000_000


def test_jpeg_bomb_header_rejected_before_decoding():
    data = bytearray(_encode(".jpg", _pattern()))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 30000, 30000)
    assert _reason(compressed_to_rgb, "jpeg", bytes(data)) == "too_large"
