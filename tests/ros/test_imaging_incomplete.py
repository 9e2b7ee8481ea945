"""JPEG/PNG that decode only partly are dropped as ``incomplete`` (issue 36).

OpenCV returns such a frame whole-looking, its missing part grey: a cut JPEG with an end
marker appended (libjpeg only warns on stderr), and a small file whose header claims a
huge image. Real photos of any content still decode.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from ros2_infmllm.engine.native_log import native_stderr
from ros2_infmllm.ros import imaging


def _photo() -> np.ndarray:
    """A textured 480x640 picture (noise, edges, colours): a JPEG of it is ~100 kB."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cv2.rectangle(img, (100, 80), (400, 300), (0, 0, 255), -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def _encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def test_whole_jpeg_and_png_decode():
    for kind, ext in (("jpeg", ".jpg"), ("png", ".png")):
        assert imaging.compressed_to_rgb(kind, _encode(ext, _photo())).shape == (288, 384, 3)
    flat = _encode(".jpg", np.full((480, 640, 3), 128, np.uint8))     # a grey wall is fine
    assert imaging.compressed_to_rgb("jpeg", flat).shape == (288, 384, 3)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_cut_jpeg_with_end_marker_is_incomplete(keep):
    data = _encode(".jpg", _photo())
    cut = data[:int(len(data) * keep)] + b"\xff\xd9"
    with pytest.raises(imaging.FrameError) as err:
        imaging.compressed_to_rgb("jpeg", cut)
    assert err.value.reason == "incomplete" and "partly" in str(err.value)


@pytest.mark.parametrize("kind,ext", [("jpeg", ".jpg"), ("png", ".png")])
def test_header_claiming_more_pixels_than_bytes_is_incomplete(kind, ext):
    data = bytearray(_encode(ext, np.full((8, 8, 3), 128, np.uint8)))
    if kind == "jpeg":
        at = data.index(b"\xff\xc0") + 5                      # SOF0: height, width
        data[at:at + 4] = (7000).to_bytes(2, "big") * 2
    else:
        at = data.index(b"IHDR") + 4                          # IHDR: width, height
        data[at:at + 8] = (7000).to_bytes(4, "big") * 2
    with pytest.raises(imaging.FrameError) as err:
        imaging.compressed_to_rgb(kind, bytes(data))
    assert err.value.reason == "incomplete" and "7000x7000" in str(err.value)


def test_native_stderr_keeps_its_lines_and_passes_the_rest(capfd):
    with native_stderr(("Corrupt JPEG",)) as caught:
        os.write(2, b"Corrupt JPEG data: 3 extraneous bytes\nanother thread's log line\n")
    assert caught == ["Corrupt JPEG data: 3 extraneous bytes"]
    assert "another thread's log line" in capfd.readouterr().err
