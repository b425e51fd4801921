"""ResNet and the tweaks of Bag of Tricks (He et al., CVPR 2019, Sec. 4, Fig. 2).

One implementation; the variants are data:

- ``orig``: stride 2 on the first 1×1 conv of a down-sampling bottleneck (He et al., 2016).
- ``b``:    stride on the 3×3 conv instead (torchvision's ``resnet50`` is ResNet-B).
- ``c``:    ``b`` + a deep stem of three 3×3 convs (32, 32, 64 channels) instead of the 7×7.
- ``d``:    ``c`` + shortcut = 2×2 average pool (stride 2) then a 1×1 stride-1 conv.

``width`` scales every channel count and ``small_input`` drops the stem's max-pool (the stem
keeps its stride 2), so a 28×28 image reaches the last stage at 2×2 instead of 1×1: the
Fashion-MNIST proxy runs this same code.
"""

from __future__ import annotations


import torch
from torch import nn

from ablate.errors import AblateError
from ablate.models.init import INITS, init_weights
from ablate.registry import MODELS

VARIANTS = {
    "orig": dict(stride_in_1x1=True, deep_stem=False, avg_down=False),
    "b": dict(stride_in_1x1=False, deep_stem=False, avg_down=False),
    "c": dict(stride_in_1x1=False, deep_stem=True, avg_down=False),
    "d": dict(stride_in_1x1=False, deep_stem=True, avg_down=True),
}
DEPTHS = {  # depth: (block, layers)
    14: ("bottleneck", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    26: ("bottleneck", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.relu(x + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, s3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.relu(x + shortcut)


def _downsample(inplanes: int, outplanes: int, stride: int, avg_down: bool) -> nn.Module:
    if avg_down:  # ResNet-D: no information is thrown away by a strided 1×1 conv
        pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                if stride > 1 else nn.Identity())
        return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, 1, bias=False),
                             nn.BatchNorm2d(outplanes))
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False),
                         nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """ResNet backbone + classifier; see the module docstring for the variants."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], num_classes: int = 1000,
                 in_chans: int = 3, width: float = 1.0, stride_in_1x1: bool = False,
                 deep_stem: bool = False, avg_down: bool = False,
                 small_input: bool = False) -> None:
        super().__init__()
        ch = lambda c: max(8, int(round(c * width)))  # noqa: E731
        stem_stride = 2
        inplanes = ch(64)
        if deep_stem:
            sw = ch(32)
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, sw, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(sw),
                nn.ReLU(inplace=True),
                nn.Conv2d(sw, sw, 3, 1, 1, bias=False), nn.BatchNorm2d(sw), nn.ReLU(inplace=True),
                nn.Conv2d(sw, inplanes, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stem_stride, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        stages = []
        for i, n in enumerate(layers):
            planes, stride = ch(64 * 2 ** i), (1 if i == 0 else 2)
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                out = planes * block.expansion  # type: ignore[attr-defined]
                down = (_downsample(inplanes, out, s, avg_down)
                        if j == 0 and (s != 1 or inplanes != out) else None)
                blocks.append(block(inplanes, planes, s, down, stride_in_1x1))
                inplanes = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def zero_init_last(self) -> None:
        """Zero γ of the last BN in every residual block (Bag of Tricks, Sec. 3.1)."""
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


@MODELS.register("resnet")
def build_resnet(*, depth: int = 50, variant: str = "b", num_classes: int = 1000,
                 in_chans: int = 3, width: float = 1.0, small_input: bool = False,
                 init: str = "torchvision") -> ResNet:
    """Build a ResNet.

    Args:
        depth: 14, 18, 26, 34, 50, 101, 152 or 200.
        variant: ``orig``, ``b``, ``c`` or ``d`` (Bag of Tricks, Fig. 2).
        num_classes: classifier outputs.
        in_chans: input channels (1 for Fashion-MNIST).
        width: channel multiplier (1.0 = the paper's widths).
        small_input: no max-pool after the stem, for 28×28–64×64 images.
        init: ``ablate.models.init.INITS`` (the classification configs choose ``code``).
    """
    if init not in INITS:
        raise AblateError(f"resnet init {init!r} is not one of {', '.join(INITS)}")
    if depth not in DEPTHS:
        raise AblateError(f"ResNet depth {depth} is not one of {sorted(DEPTHS)}")
    if variant not in VARIANTS:
        raise AblateError(f"ResNet variant '{variant}' is not one of {sorted(VARIANTS)}")
    kind, layers = DEPTHS[depth]
    block: type[nn.Module] = Bottleneck if kind == "bottleneck" else BasicBlock
    return init_weights(ResNet(block, layers, num_classes=num_classes, in_chans=in_chans,
                               width=width, small_input=small_input, **VARIANTS[variant]), init)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


