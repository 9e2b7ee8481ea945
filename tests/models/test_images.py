"""models/images.py, the one resize of models/: each caller's result is what it was before.

The describer's ``downscale``, SmolVLM/LLaVA's ``resize`` and Qwen2-VL's square resize were
three functions; the references below are their former bodies, so the same interpolation
and the same output size are checked pixel for pixel.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ros2_infmllm.models.images import downscale, fit_size, resize

SHAPES = [(720, 1280), (1280, 720), (100, 400), (40, 56), (384, 384), (383, 385), (3, 1000),
          (1000, 3), (2, 2), (900, 1600)]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _old_downscale(image, max_side):
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def _old_vlm_resize(image, width, height):
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_CUBIC
    return cv2.resize(image, (int(width), int(height)), interpolation=interp)


def _old_qwen2_vl_resize(image, side):
    h, w = image.shape[:2]
    if (h, w) == (side, side):
        return image
    interp = cv2.INTER_AREA if side < max(h, w) else cv2.INTER_CUBIC
    return cv2.resize(image, (side, side), interpolation=interp)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("max_side", [16, 96, 384, 1920])
def test_downscale_is_the_describers_former_downscale(shape, max_side):
    img = _image(*shape)
    got, want = downscale(img, max_side), _old_downscale(img, max_side)
    assert got.shape == want.shape and np.array_equal(got, want)
    assert max(got.shape[:2]) == min(max_side, max(shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [(512, 512), (1024, 1024), (336, 336), (200, 120)])
def test_resize_is_the_vision_adapters_former_resize(shape, size):
    img = _image(*shape, seed=1)
    got, want = resize(img, *size), _old_vlm_resize(img, *size)
    assert got.shape == want.shape == (size[1], size[0], 3) and np.array_equal(got, want)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("side", [56, 112, 364, 1008])
def test_longer_side_rule_is_qwen2_vls_former_resize(shape, side):
    img = _image(*shape, seed=2)
    got = resize(img, side, side, by_longer_side=True)
    want = _old_qwen2_vl_resize(img, side)
    assert got.shape == want.shape == (side, side, 3) and np.array_equal(got, want)


def test_the_two_shrink_rules_differ_where_they_were_different():
    """A wide frame squeezed into a larger square: fewer pixels no, shorter longer side yes."""
    img = _image(720, 1280, seed=3)
    by_pixels = resize(img, 1024, 1024)
    by_side = resize(img, 1024, 1024, by_longer_side=True)
    assert np.array_equal(by_pixels, cv2.resize(img, (1024, 1024),
                                                interpolation=cv2.INTER_CUBIC))
    assert np.array_equal(by_side, cv2.resize(img, (1024, 1024), interpolation=cv2.INTER_AREA))


def test_an_image_of_the_target_size_is_returned_as_it_is():
    img = _image(48, 64)
    assert resize(img, 64, 48) is img and downscale(img, 64) is img
    assert resize(img, 48, 48, by_longer_side=True) is not img


@pytest.mark.parametrize("shape", SHAPES)
def test_fit_size_keeps_the_aspect_inside_the_square(shape):
    h, w = fit_size(*shape, 384)
    scale = 384 / max(shape)
    assert max(h, w) == 384
    for got, side in ((h, shape[0]), (w, shape[1])):       # rounded, at least one pixel
        assert abs(got - side * scale) <= 0.5 or got == 1
