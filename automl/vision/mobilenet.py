"""MobileNetV2 (Sandler et al., 2018) as a compact torch module.

Parameter and buffer names match torchvision's `mobilenet_v2` exactly, so its ImageNet
state_dict loads with `strict=True`; torchvision itself is not needed (nor importable beside
our torch build).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["FEATURE_DIM", "MobileNetV2"]

FEATURE_DIM = 1280
# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class _ConvBNReLU6(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6: torchvision's Conv2dNormActivation keys (0, 1)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), with a skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 at width 1.0: `features` is 19 blocks (stem, 17 inverted residuals, a
    1x1 conv to 1280 channels), `classifier` is Dropout + Linear(1280, num_classes).

    Any input of at least 32x32 works (the network downsamples by 32 and pools globally).
    """

    feature_dim = FEATURE_DIM

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        blocks: list[nn.Module] = [_ConvBNReLU6(3, 32, stride=2)]
        cin = 32
        for expand, cout, repeats, stride in _SETTINGS:
            for i in range(repeats):
                blocks.append(_InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        blocks.append(_ConvBNReLU6(cin, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a randomly built network trains like its own.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images [N, 3, H, W] (normalized) -> pooled features [N, 1280]."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Images [N, 3, H, W] (normalized) -> logits [N, num_classes]."""
        logits: Tensor = self.classifier(self.forward_features(x))
        return logits
