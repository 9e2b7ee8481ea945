"""ROS-free image decoding: raw or compressed camera bytes -> RGB uint8, or a FrameError.

The node hands every sensor_msgs/Image and sensor_msgs/CompressedImage field to these
functions; nothing here imports ROS, so the checks are unit-testable and shared by the
node, the replay tools and the benchmarks. Every check that can reject a frame runs
before any buffer is allocated, so a hostile header (20000x20000 with 10 bytes of
data) costs nothing. Each rejection carries a short ``reason`` key used as the drop
counter name in the node's diagnostics and DescribeMemory.

Encoding choices (documented in docs/reliability.md):

- ``mono16``/``rgb16``/... (intensity images) keep the high byte (value >> 8), as
  cv_bridge does when converting to 8 bit.
- ``16UC1`` and ``32FC1`` (depth images) are min-max normalised over the valid
  pixels (non-zero for 16UC1, finite for 32FC1) to 0..255 and shown as grey; invalid
  pixels become 0. A frame with no valid pixel is black, not an error.
- ``8UC1``/``8UC3``/``8UC4`` are read as mono8/bgr8/bgra8 (OpenCV's channel order).
- ``yuv422`` is UYVY and ``yuv422_yuy2`` is YUYV (ROS naming); ``uyvy``/``yuyv`` are
  accepted as aliases. They need an even width.
- ``bayer_*8`` and ``bayer_*16`` are demosaiced with OpenCV (bilinear).
- compressed ``jpeg``/``png`` (any image_transport format string naming one of them,
  e.g. ``"rgb8; jpeg compressed bgr8"``); ``compressedDepth`` is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..engine.native_log import native_stderr

__all__ = [
    "FrameError",
    "MAX_PIXELS",
    "REASONS",
    "SUPPORTED_ENCODINGS",
    "compressed_to_rgb",
    "image_to_rgb",
]

#: Largest accepted width*height (about 50 MP: an 8K frame passes, 20000x20000 does not).
MAX_PIXELS = 50_000_000
# Most pixels one byte of a stream can hold: a Huffman JPEG codes at least one bit per 8x8
# block (its DC), 512 pixels a byte, taken 16 times looser; a PNG at least one bit per pixel
# before deflate, which shrinks at most about 1032 to 1, taken 8 times looser. A header
# that claims more pixels than its bytes can hold is not a whole image.
MAX_PIXELS_PER_BYTE = {"jpeg": 8192, "png": 65536}
# what libjpeg / libpng print when a stream decodes only partly (the rest comes out grey)
DECODER_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file", "libpng warning",
                    "libpng error")

#: Every reason key a FrameError can carry (drop counter names).
REASONS = (
    "unknown_encoding",
    "unknown_format",
    "empty",
    "odd_width",
    "too_small",
    "step_too_small",
    "data_size",
    "too_large",
    "decode_failed",
    "truncated",
    "format_mismatch",
    "incomplete",
)


class FrameError(ValueError):
    """A frame that cannot be converted; ``reason`` is a short key for drop counters."""

    def __init__(self, reason: str, message: str) -> None:
        """Keep the key apart from the text so counters never parse messages."""
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class _Layout:
    """
    Byte layout of one raw encoding.

    Parameters
    ----------
    channels : int
        Samples per pixel in the message buffer.
    depth : int
        Bytes per sample (1, 2 or 4).
    kind : str
        How samples become RGB: rgb, bgr, rgba, bgra, mono, depth16, depthf,
        uyvy, yuyv or bayer_<pattern>.
    """

    channels: int
    depth: int
    kind: str


_LAYOUTS = {
    "rgb8": _Layout(3, 1, "rgb"),
    "bgr8": _Layout(3, 1, "bgr"),
    "rgba8": _Layout(4, 1, "rgba"),
    "bgra8": _Layout(4, 1, "bgra"),
    "mono8": _Layout(1, 1, "mono"),
    "8uc1": _Layout(1, 1, "mono"),
    "8uc3": _Layout(3, 1, "bgr"),
    "8uc4": _Layout(4, 1, "bgra"),
    "rgb16": _Layout(3, 2, "rgb"),
    "bgr16": _Layout(3, 2, "bgr"),
    "rgba16": _Layout(4, 2, "rgba"),
    "bgra16": _Layout(4, 2, "bgra"),
    "mono16": _Layout(1, 2, "mono"),
    "16uc1": _Layout(1, 2, "depth16"),
    "32fc1": _Layout(1, 4, "depthf"),
    "yuv422": _Layout(2, 1, "uyvy"),
    "uyvy": _Layout(2, 1, "uyvy"),
    "yuv422_yuy2": _Layout(2, 1, "yuyv"),
    "yuyv": _Layout(2, 1, "yuyv"),
}
for _pattern in ("rggb", "bggr", "gbrg", "grbg"):
    _LAYOUTS[f"bayer_{_pattern}8"] = _Layout(1, 1, f"bayer_{_pattern}")
    _LAYOUTS[f"bayer_{_pattern}16"] = _Layout(1, 2, f"bayer_{_pattern}")

#: Raw encodings image_to_rgb accepts (lower case; matching is case-insensitive).
SUPPORTED_ENCODINGS = tuple(sorted(_LAYOUTS))

_BAYER_CODES = {
    "bayer_rggb": cv2.COLOR_BayerRGGB2RGB,
    "bayer_bggr": cv2.COLOR_BayerBGGR2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGBRG2RGB,
    "bayer_grbg": cv2.COLOR_BayerGRBG2RGB,
}

try:  # optional: only used for encodings this module does not know
    from cv_bridge import CvBridge as _CvBridge  # type: ignore[import-not-found]
except ImportError:  # the normal case on pip-only installs
    _CvBridge = None

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_max_side(max_side: int) -> None:
    if int(max_side) < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FrameError(
            "too_large",
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
        )


def _downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longer side is <= max_side (area filter, aspect kept)."""
    h, w = rgb.shape[:2]
    longer = max(h, w)
    if longer <= max_side:
        return np.ascontiguousarray(rgb)
    scale = max_side / longer
    new_w = max(1, min(max_side, round(w * scale)))
    new_h = max(1, min(max_side, round(h * scale)))
    return np.ascontiguousarray(cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA))


def _as_bytes_view(data: object) -> np.ndarray:
    """Wrap message data (bytes, bytearray, memoryview, array.array, list) without copying."""
    try:
        return np.frombuffer(data, dtype=np.uint8)  # type: ignore[arg-type]
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _normalise(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Min-max scale the valid values to 0..255 (invalid -> 0) for depth images."""
    out = np.zeros(values.shape, dtype=np.uint8)
    if not valid.any():
        return out
    v = values[valid].astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        out[valid] = 255
        return out
    out[valid] = np.clip(np.rint((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    return out


def _to_rgb(layout: _Layout, samples: np.ndarray) -> np.ndarray:
    """Convert (h, w, channels) samples of the layout's dtype to HxWx3 uint8 RGB."""
    kind = layout.kind
    if kind == "depth16":
        plane = samples[:, :, 0]
        grey = _normalise(plane, plane != 0)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if kind == "depthf":
        plane = samples[:, :, 0]
        grey = _normalise(plane, np.isfinite(plane))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if kind.startswith("bayer_"):
        plane = np.ascontiguousarray(samples[:, :, 0])
        if plane.shape[0] < 2 or plane.shape[1] < 2:
            raise FrameError("too_small", "a Bayer image needs at least 2x2 pixels")
        rgb = cv2.cvtColor(plane, _BAYER_CODES[kind])
        return (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb
    if kind in ("uyvy", "yuyv"):
        code = cv2.COLOR_YUV2RGB_UYVY if kind == "uyvy" else cv2.COLOR_YUV2RGB_YUYV
        return cv2.cvtColor(np.ascontiguousarray(samples), code)
    if samples.dtype != np.uint8:
        samples = (samples >> 8).astype(np.uint8)
    if kind == "mono":
        return np.repeat(samples[:, :, :1], 3, axis=2)
    if kind == "rgb":
        return samples
    if kind == "bgr":
        return samples[:, :, ::-1]
    if kind == "rgba":
        return samples[:, :, :3]
    return samples[:, :, 2::-1]  # bgra


def image_to_rgb(
    encoding: str,
    width: int,
    height: int,
    step: int,
    data: object,
    is_bigendian: bool = False,
    max_side: int = 384,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """
    Convert sensor_msgs/Image fields to an HxWx3 uint8 RGB array, longer side <= max_side.

    Raises FrameError (with ``.reason``) for anything that is not a well-formed frame of a
    supported encoding; all size checks run before any allocation.
    """
    _check_max_side(max_side)
    enc = (encoding or "").strip().lower()
    layout = _LAYOUTS.get(enc)
    if layout is None and _CvBridge is not None:
        return _via_cv_bridge(encoding, width, height, step, data, is_bigendian, max_side,
                              max_pixels)
    if layout is None:
        raise FrameError(
            "unknown_encoding",
            f"encoding {encoding!r} is not supported"
            f" (supported: {', '.join(SUPPORTED_ENCODINGS)})",
        )
    width, height, step = int(width), int(height), int(step)
    if width <= 0 or height <= 0:
        raise FrameError("empty", f"image size {width}x{height} has no pixels")
    _check_pixels(width, height, max_pixels)
    if layout.kind in ("uyvy", "yuyv") and width % 2:
        raise FrameError("odd_width", f"{enc} needs an even width, got {width}")
    row_bytes = width * layout.channels * layout.depth
    if step < row_bytes:
        raise FrameError(
            "step_too_small",
            f"step {step} < width {width} x {layout.channels} channels x {layout.depth} bytes"
            f" = {row_bytes}",
        )
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise FrameError("empty", "image data is empty")
    if n != step * height:
        raise FrameError(
            "data_size",
            f"data has {n} bytes, expected step {step} x height {height} = {step * height}",
        )
    raw = _as_bytes_view(data).reshape(height, step)[:, :row_bytes]
    if layout.depth == 1:
        samples = raw.reshape(height, width, layout.channels)
    else:
        kind = "f" if layout.kind == "depthf" else "u"
        dtype = np.dtype(f"{'>' if is_bigendian else '<'}{kind}{layout.depth}")
        samples = np.ascontiguousarray(raw).view(dtype).reshape(height, width, layout.channels)
        samples = samples.astype(dtype.newbyteorder("="), copy=False)
    rgb = _to_rgb(layout, samples)
    out = _downscale(rgb, max_side)
    if out.base is not None or not out.flags.writeable:
        out = out.copy()  # never hand out a view of the message buffer
    return out


def _via_cv_bridge(encoding: str, width: int, height: int, step: int, data: object,
                   is_bigendian: bool, max_side: int, max_pixels: int) -> np.ndarray:
    """Fall back to cv_bridge for encodings not handled here (only when it is importable)."""
    from sensor_msgs.msg import Image  # noqa: WPS433 (ROS only on this optional path)

    width, height, step = int(width), int(height), int(step)
    if width <= 0 or height <= 0:
        raise FrameError("empty", f"image size {width}x{height} has no pixels")
    _check_pixels(width, height, max_pixels)
    if len(data) != step * height:  # type: ignore[arg-type]
        raise FrameError("data_size", f"data has {len(data)} bytes, expected {step * height}")
    msg = Image(encoding=encoding, width=width, height=height, step=step,
                is_bigendian=bool(is_bigendian), data=bytes(data))  # type: ignore[arg-type]
    try:
        rgb = _CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except Exception as exc:  # cv_bridge raises its own error types
        raise FrameError("unknown_encoding", f"cv_bridge cannot convert {encoding!r}: {exc}")
    return _downscale(np.asarray(rgb, dtype=np.uint8), max_side).copy()


def _compressed_kind(fmt: str) -> str:
    """Name the codec an image_transport format string announces ('jpeg' or 'png')."""
    text = (fmt or "").strip().lower()
    if "compresseddepth" in text:
        raise FrameError("unknown_format", f"format {fmt!r}: compressedDepth is not supported")
    has_jpeg = "jpeg" in text or "jpg" in text
    has_png = "png" in text
    if has_jpeg == has_png:
        raise FrameError(
            "unknown_format", f"format {fmt!r} does not name exactly one of jpeg, png"
        )
    return "jpeg" if has_jpeg else "png"


def _png_size(buf: bytes) -> Optional[tuple]:
    """(width, height) from the IHDR chunk, or None when the header is cut short."""
    if len(buf) < 24 or buf[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", buf[16:24])


def _jpeg_size(buf: bytes) -> Optional[tuple]:
    """(width, height) from the first SOF marker, walking the segment list; None if absent."""
    i, n = 2, len(buf)
    while i + 4 <= n:
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = struct.unpack(">H", buf[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", buf[i + 5:i + 9])
            return width, height
        if marker in (0xD9, 0xDA) or seg_len < 2:
            return None
        i += 2 + seg_len
    return None


def compressed_to_rgb(
    fmt: str, data: object, max_side: int = 384, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """
    Decode sensor_msgs/CompressedImage (JPEG or PNG) to HxWx3 uint8 RGB, longer side <= max_side.

    The bytes must start with the magic of the announced codec, the header's size must be
    within max_pixels (checked before decoding) and the stream must be complete.
    """
    _check_max_side(max_side)
    kind = _compressed_kind(fmt)
    buf = bytes(data) if not isinstance(data, bytes) else data  # type: ignore[arg-type]
    if not buf:
        raise FrameError("empty", "compressed data is empty")
    is_jpeg = buf.startswith(_JPEG_MAGIC)
    is_png = buf.startswith(_PNG_MAGIC)
    if (kind == "jpeg" and not is_jpeg) or (kind == "png" and not is_png):
        actual = "png" if is_png else "jpeg" if is_jpeg else "unknown bytes"
        raise FrameError(
            "format_mismatch", f"format {fmt!r} announces {kind} but the data is {actual}"
        )
    size = _jpeg_size(buf) if kind == "jpeg" else _png_size(buf)
    if size is None:
        raise FrameError("decode_failed", f"{kind} header is corrupt or cut short")
    width, height = size
    if width <= 0 or height <= 0:
        raise FrameError("empty", f"{kind} header says {width}x{height}")
    _check_pixels(width, height, max_pixels)
    if len(buf) < width * height // MAX_PIXELS_PER_BYTE[kind]:
        raise FrameError("incomplete", f"{kind} header claims {width}x{height} but the data "
                         f"has only {len(buf)} bytes: too few for that many pixels")
    tail = buf.rstrip(b"\x00")
    if kind == "jpeg" and not tail.endswith(b"\xff\xd9"):
        raise FrameError("truncated", "jpeg stream has no end-of-image marker (cut short?)")
    if kind == "png" and not tail.endswith(b"IEND\xaeB`\x82"):
        raise FrameError("truncated", "png stream has no IEND chunk (cut short?)")
    with native_stderr(DECODER_WARNINGS) as warnings:
        bgr = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if warnings and bgr is not None:
        raise FrameError("incomplete", f"{kind} decoded only partly ({warnings[0]}): the "
                         "missing part would be grey")
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise FrameError("decode_failed", f"OpenCV could not decode the {kind} data")
    if bgr.dtype != np.uint8:
        bgr = (bgr >> 8).astype(np.uint8)
    return _downscale(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side)
