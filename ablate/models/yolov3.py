"""YOLOv3 (Redmon & Farhadi, 2018), as in GluonCV's ``yolo3_darknet53`` used by Bag of Freebies
(Zhang et al., 2019, Table 3).

Darknet-53 gives the stride-8/16/32 maps. Starting from stride 32, a detection block (five
alternating 1×1/3×3 conv-BN-LeakyReLU units with c, 2c, c, 2c, c channels; c = 512, 256, 128)
feeds a 3×3 "tip" (2c) and a 1×1 output conv *with bias* giving A·(5 + K) channels; its route
goes through a 1×1 transition conv (c/2), a nearest ×2 upsample and is concatenated with the
next finer backbone map. Anchors are in input pixels, three per scale (``ANCHORS``).

``forward(x)`` returns the raw outputs, a list ordered by stride 8, 16, 32 of tensors
``[B, A, H_s, W_s, 5 + K]`` with the last axis ``(tx, ty, tw, th, objectness, class_1..K)``
(all logits, nothing decoded). ``model.anchors`` ([3, A, 2], pixels) and ``model.strides``
describe them; ``ablate.tasks.yolo`` decodes and computes the loss.

``width``/``depth`` scale the backbone and head, and ``anchor_scale`` the anchors, so a tiny CPU
variant (e.g. width 0.25, depth 0.34, 160-pixel inputs, anchor_scale 160/416) runs this same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import AblateError
from ablate.models.darknet import ConvBNLeaky, Darknet53, scale_channels
from ablate.models.weights import load_weights
from ablate.registry import MODELS

STRIDES = (8, 16, 32)
ANCHORS = (((10, 13), (16, 30), (33, 23)),  # stride 8
           ((30, 61), (62, 45), (59, 119)),  # stride 16
           ((116, 90), (156, 198), (373, 326)))  # stride 32
HEAD_CHANNELS = (512, 256, 128)  # detection blocks, coarse (stride 32) to fine (stride 8)


class DetectionBlock(nn.Module):
    """GluonCV's ``YOLODetectionBlockV3``: returns (route [c], tip [2c])."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNLeaky(cin, c, 1), ConvBNLeaky(c, 2 * c, 3),
                                  ConvBNLeaky(2 * c, c, 1), ConvBNLeaky(c, 2 * c, 3),
                                  ConvBNLeaky(2 * c, c, 1))
        self.tip = ConvBNLeaky(c, 2 * c, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        route = self.body(x)
        return route, self.tip(route)


class YOLOv3(nn.Module):
    """YOLOv3 on Darknet-53; see the module docstring for the output format."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: float = 1.0, depth: float = 1.0,
                 anchors: Any = ANCHORS, strides: tuple[int, ...] = STRIDES,
                 obj_bias: float = 0.0) -> None:
        super().__init__()
        anc = torch.as_tensor(anchors, dtype=torch.float32)
        if anc.ndim != 3 or anc.shape[0] != 3 or anc.shape[2] != 2 or len(strides) != 3:
            raise AblateError(f"YOLOv3 needs anchors [3 scales, A, 2] and 3 strides, "
                              f"got {tuple(anc.shape)} and {strides}")
        self.num_classes, self.num_anchors = num_classes, anc.shape[1]
        self.strides = tuple(int(s) for s in strides)
        self.register_buffer("anchors", anc, persistent=False)
        self.backbone = Darknet53(None, in_chans=in_chans, width=width, depth=depth)
        c8, c16, c32 = self.backbone.out_channels
        h32, h16, h8 = (scale_channels(c, width) for c in HEAD_CHANNELS)
        self.blocks = nn.ModuleList([DetectionBlock(c32, h32), DetectionBlock(c16 + h16, h16),
                                     DetectionBlock(c8 + h8, h8)])
        self.transitions = nn.ModuleList([ConvBNLeaky(h32, h16, 1), ConvBNLeaky(h16, h8, 1)])
        out = self.num_anchors * (5 + num_classes)
        self.outputs = nn.ModuleList([nn.Conv2d(2 * c, out, 1) for c in (h32, h16, h8)])
        for m in [*self.blocks.modules(), *self.transitions.modules()]:
            if isinstance(m, nn.Conv2d):  # backbone convs were initialised by Darknet53
                nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
        for conv in self.outputs:
            # Small random weights; biases 0 as in GluonCV (objectness starts at σ(0) = 0.5).
            # ``obj_bias`` (e.g. −4.6 ≈ logit(0.01), the focal-loss prior) is an opt-in
            # alternative that is *not* the reference behaviour.
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
            with torch.no_grad():
                conv.bias.view(self.num_anchors, 5 + num_classes)[:, 4] = obj_bias
        self.backbone_report: dict[str, Any] | None = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        routes = self.backbone.forward_features(x)[::-1]  # stride 32, 16, 8
        outs, h = [], routes[0]
        for i, (block, conv) in enumerate(zip(self.blocks, self.outputs)):
            h, tip = block(h)
            o = conv(tip)
            b, _, gh, gw = o.shape
            outs.append(o.view(b, self.num_anchors, 5 + self.num_classes, gh, gw)
                        .permute(0, 1, 3, 4, 2))
            if i < 2:
                nxt = routes[i + 1]
                up = F.interpolate(self.transitions[i](h), scale_factor=2.0, mode="nearest")
                h = torch.cat([up[..., :nxt.shape[2], :nxt.shape[3]], nxt], dim=1)
        return outs[::-1]  # stride 8, 16, 32


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a local checkpoint into ``backbone`` (non-strict) and report what matched.

    ``ablate.models.weights.load_weights`` with the prefix ``backbone.`` (a whole YOLOv3)
    stripped: a bare state dict or a run checkpoint ``{"model": state_dict}``. Tensors whose
    shape differs are skipped and reported as ``mismatched``. Raises ``AblateError`` when the
    file cannot be read or not a single tensor matched.
    """
    report = load_weights(backbone, path, prefix_map={"backbone.": ""}, what="backbone_weights")
    print(report.summary("backbone_weights"))
    return report.as_dict()


@MODELS.register("yolov3")
def build_yolov3(*, num_classes: int, width: float = 1.0, depth: float = 1.0, in_chans: int = 3,
                 anchor_scale: float = 1.0, backbone_weights: str | None = None,
                 obj_bias: float = 0.0) -> YOLOv3:
    """Build YOLOv3 on Darknet-53.

    Args:
        num_classes: K (20 for VOC).
        width: channel multiplier for backbone and head (1.0 = the paper).
        depth: backbone block-count multiplier (at least one block per stage).
        in_chans: input channels.
        anchor_scale: multiplies every anchor (e.g. 160/416 for 160-pixel inputs).
        backbone_weights: local checkpoint for the backbone (e.g. a ``darknet53`` run);
            the load report is kept in ``model.backbone_report``.
        obj_bias: initial objectness bias; 0 = GluonCV (default).
    """
    if num_classes < 1:
        raise AblateError(f"yolov3 num_classes must be >= 1, got {num_classes}")
    if anchor_scale <= 0:
        raise AblateError(f"yolov3 anchor_scale must be > 0, got {anchor_scale}")
    anchors = torch.tensor(ANCHORS, dtype=torch.float32) * float(anchor_scale)
    model = YOLOv3(num_classes, in_chans=in_chans, width=width, depth=depth, anchors=anchors,
                   obj_bias=obj_bias)
    if backbone_weights:
        model.backbone_report = load_backbone_weights(model.backbone, backbone_weights)
    return model
