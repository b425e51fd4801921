"""Darknet-53 (Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018, Table 1).

52 convolutions, each conv (no bias) → BatchNorm → LeakyReLU(0.1): a 3×3 stem with 32 channels,
then five stages, each a stride-2 3×3 down-sampling conv (64, 128, 256, 512, 1024 channels)
followed by [1, 2, 8, 8, 4] residual blocks (1×1 conv to half the channels, 3×3 conv back,
identity shortcut). Layer names and order follow GluonCV's ``darknet53``.

Without a classifier (``num_classes=None``) ``forward`` returns the stride-8, 16 and 32 feature
maps (the outputs of stages 3, 4 and 5) that the YOLOv3 head consumes: 40,584,928 parameters.
The ``darknet53`` classifier adds global average pooling + a 1000-way fc: 41,609,928.

``width`` scales every channel count and ``depth`` every stage's block count (at least one
block per stage), so the CPU proxy runs this same code.
"""

from __future__ import annotations

import torch
from torch import nn

from ablate.errors import AblateError
from ablate.registry import MODELS

BLOCKS = (1, 2, 8, 8, 4)  # residual blocks per stage


def scale_channels(c: int, width: float) -> int:
    """Channel count under the ``width`` multiplier (at least 8, even so c/2 stays whole)."""
    return max(8, 2 * int(round(c * width / 2)))


class ConvBNLeaky(nn.Module):
    """Darknet's unit: conv (no bias, 'same' padding) → BN → LeakyReLU(0.1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DarknetBlock(nn.Module):
    """Residual block: 1×1 conv to c/2, 3×3 conv back to c, identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNLeaky(channels, channels // 2, 1)
        self.conv2 = ConvBNLeaky(channels // 2, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class Darknet53(nn.Module):
    """Darknet-53 backbone (``num_classes=None``) or classifier; see the module docstring."""

    def __init__(self, num_classes: int | None = None, in_chans: int = 3, width: float = 1.0,
                 depth: float = 1.0) -> None:
        super().__init__()
        if width <= 0 or depth <= 0:
            raise AblateError(f"darknet width and depth must be > 0, got {width}, {depth}")
        ch = lambda c: scale_channels(c, width)  # noqa: E731
        self.stem = ConvBNLeaky(in_chans, ch(32), 3)
        cin, stages = ch(32), []
        for i, n in enumerate(BLOCKS):
            cout = ch(64 * 2 ** i)
            n = max(1, int(round(n * depth)))
            stages.append(nn.Sequential(ConvBNLeaky(cin, cout, 3, 2),
                                        *[DarknetBlock(cout) for _ in range(n)]))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = (ch(256), ch(512), ch(1024))  # strides 8, 16, 32
        self.blocks_per_stage = tuple(len(s) - 1 for s in stages)
        self.fc = nn.Linear(cin, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stride-8, 16 and 32 feature maps."""
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Class logits [B, num_classes] with a classifier, else the three feature maps."""
        feats = self.forward_features(x)
        if self.fc is None:
            return feats
        return self.fc(feats[-1].mean(dim=(2, 3)))


@MODELS.register("darknet53")
def build_darknet53(*, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                    depth: float = 1.0) -> Darknet53:
    """Build the Darknet-53 classifier (global average pool + fc).

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        width: channel multiplier (1.0 = the paper's widths).
        depth: block-count multiplier (1.0 = [1, 2, 8, 8, 4]; at least one block per stage).
    """
    if num_classes < 1:
        raise AblateError(f"darknet53 num_classes must be >= 1, got {num_classes}")
    return Darknet53(num_classes=num_classes, in_chans=in_chans, width=width, depth=depth)
