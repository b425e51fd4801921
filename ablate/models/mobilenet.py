"""MobileNet v1 (Howard et al., 2017, Table 1), one of the three networks of Bag of Tricks
(He et al., CVPR 2019, Tables 1 and 6), as in GluonCV's ``mobilenet1.0``.

A stride-2 3×3 conv-BN-ReLU stem (32 channels), then 13 depthwise-separable units (a 3×3
depthwise conv-BN-ReLU followed by a 1×1 pointwise conv-BN-ReLU), global average pooling and a
fully connected classifier. Convolutions have no bias. ``width`` is the paper's width multiplier
α (every channel count becomes ``int(c · α)``, as in GluonCV); width 1.0 with 1000 classes has
the published 4,231,976 parameters.

``small_input`` gives the stem stride 1, so a 28×28 image reaches the last units at 2×2 instead
of 1×1: the Fashion-MNIST proxy runs this same code.
"""

from __future__ import annotations

import torch
from torch import nn

from ablate.errors import AblateError
from ablate.models.init import INITS, init_weights
from ablate.registry import MODELS

STEM = 32
UNITS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),  # (out channels, stride)
         (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
                 ) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DepthwiseSeparable(nn.Sequential):
    """3×3 depthwise (stride ``stride``) then 1×1 pointwise, each conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(conv_bn_relu(cin, cin, 3, stride, groups=cin),
                         conv_bn_relu(cin, cout, 1))


class MobileNetV1(nn.Module):
    """MobileNet v1; see the module docstring."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                 small_input: bool = False) -> None:
        super().__init__()
        ch = lambda c: max(1, int(c * width))  # noqa: E731
        cin = ch(STEM)
        layers: list[nn.Module] = [conv_bn_relu(in_chans, cin, 3, 1 if small_input else 2)]
        for c, stride in UNITS:
            layers.append(DepthwiseSeparable(cin, ch(c), stride))
            cin = ch(c)
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


@MODELS.register("mobilenet_v1")
def build_mobilenet_v1(*, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                       small_input: bool = False, init: str = "torchvision") -> MobileNetV1:
    """Build MobileNet v1.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels (1 for Fashion-MNIST).
        width: the width multiplier α (1.0, 0.75, 0.5, 0.25 in the paper).
        small_input: stride-1 stem, for 28×28–64×64 images.
        init: ``ablate.models.init.INITS`` (the classification configs choose ``code``).
    """
    if width <= 0:
        raise AblateError(f"mobilenet_v1 width must be > 0, got {width}")
    if init not in INITS:
        raise AblateError(f"mobilenet_v1 init {init!r} is not one of {', '.join(INITS)}")
    return init_weights(MobileNetV1(num_classes=num_classes, in_chans=in_chans, width=width,
                                    small_input=small_input), init)
