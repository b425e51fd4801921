import pytest
import torch
from torch import nn

from ablate.errors import AblateError
from ablate.models.darknet import ConvBNLeaky, Darknet53, DarknetBlock, build_darknet53
from ablate.models.yolov3 import ANCHORS, YOLOv3, build_yolov3
from ablate.registry import MODELS


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def expected_darknet53_backbone() -> int:
    """52 convs (no bias) + BN γ, β, counted from the paper's Table 1."""
    conv = lambda cin, cout, k: cin * cout * k * k + 2 * cout  # noqa: E731
    total, cin = conv(3, 32, 3), 32
    for i, n in enumerate((1, 2, 8, 8, 4)):
        c = 64 * 2 ** i
        total += conv(cin, c, 3) + n * (conv(c, c // 2, 1) + conv(c // 2, c, 3))
        cin = c
    return total


def test_darknet53_parameter_counts():
    assert expected_darknet53_backbone() == 40_584_928
    backbone = Darknet53()
    assert n_params(backbone) == 40_584_928
    assert sum(isinstance(m, nn.Conv2d) for m in backbone.modules()) == 52
    assert backbone.blocks_per_stage == (1, 2, 8, 8, 4)
    assert n_params(build_darknet53()) == 41_609_928  # + fc 1024·1000 + 1000
    assert "darknet53" in MODELS and "yolov3" in MODELS


def test_darknet_units_and_classifier():
    unit = Darknet53().stages[2][0]
    assert isinstance(unit, ConvBNLeaky) and unit.conv.stride == (2, 2)
    assert unit.act.negative_slope == 0.1 and unit.conv.bias is None
    block = Darknet53().stages[0][1]
    assert isinstance(block, DarknetBlock) and block.conv1.conv.out_channels == 32
    m = build_darknet53(num_classes=10, width=0.25, depth=0.34, in_chans=1)
    assert m(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    with pytest.raises(AblateError):
        build_darknet53(num_classes=0)


def test_yolov3_parameter_count():
    # Darknet's yolov3.cfg with 80 classes: the well-known 61,949,149.
    assert n_params(build_yolov3(num_classes=80)) == 61_949_149
    # VOC: the three output convs (1024, 512, 256 inputs + bias) lose 3·60 channels each
    assert n_params(build_yolov3(num_classes=20)) == 61_949_149 - 180 * (1025 + 513 + 257)


@pytest.mark.parametrize("size,grids", [(416, (52, 26, 13)), (320, (40, 20, 10))])
def test_yolov3_output_shapes(size, grids):
    torch.manual_seed(0)
    m = build_yolov3(num_classes=20).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(1, 3, g, g, 25) for g in grids]
    assert m.strides == (8, 16, 32) and m.num_anchors == 3
    assert m.anchors.tolist() == [[list(map(float, a)) for a in s] for s in ANCHORS]


def test_tiny_variant():
    m = build_yolov3(num_classes=5, width=0.25, depth=0.34, anchor_scale=160 / 416)
    assert m.backbone.blocks_per_stage == (1, 1, 3, 3, 1)
    assert m.backbone.out_channels == (64, 128, 256)
    outs = m(torch.randn(2, 3, 160, 160))
    assert [tuple(o.shape) for o in outs] == [(2, 3, g, g, 10) for g in (20, 10, 5)]
    assert torch.allclose(m.anchors[2, 2], torch.tensor([373.0, 326.0]) * 160 / 416)
    assert "anchors" not in m.state_dict()  # geometry is not a checkpoint tensor
    # an input size that is not a multiple of 32 still works (upsample is cropped)
    assert [o.shape[2] for o in m(torch.randn(1, 3, 100, 100))] == [13, 7, 4]


def test_output_layout_and_init():
    m = build_yolov3(num_classes=2, width=0.25, depth=0.34, obj_bias=-4.6)
    bias = m.outputs[0].bias.view(3, 7)
    assert bias[:, 4].tolist() == pytest.approx([-4.6] * 3)
    assert bias[:, [0, 1, 2, 3, 5, 6]].abs().max() == 0
    assert build_yolov3(num_classes=2, width=0.25, depth=0.34).outputs[1].bias.abs().max() == 0
    # channel c of the output conv is anchor c // (5+K), field c % (5+K)
    m.eval()
    with torch.no_grad():
        m.outputs[2].bias.zero_()
        m.outputs[2].weight.zero_()
        m.outputs[2].bias[1 * 7 + 4] = 3.0  # stride-8 head (outputs run coarse → fine)
        outs = m(torch.randn(1, 3, 64, 64))
    assert (outs[0][:, 1, :, :, 4] == 3.0).all() and outs[0].abs().sum() == 3.0 * 64


def test_backbone_weights(tmp_path):
    torch.manual_seed(0)
    cls = build_darknet53(num_classes=7, width=0.25, depth=0.34)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": cls.state_dict(), "epoch": 3}, path)
    det = build_yolov3(num_classes=3, width=0.25, depth=0.34, backbone_weights=str(path))
    assert torch.equal(det.backbone.stages[3][1].conv2.conv.weight,
                       cls.stages[3][1].conv2.conv.weight)
    rep = det.backbone_report
    assert rep["missing"] == [] and rep["unexpected"] == ["fc.bias", "fc.weight"]
    assert rep["loaded"] == len(cls.state_dict()) - 2
    # a bare state dict with DDP prefixes, and a width mismatch reported (not crashed on)
    torch.save({"module." + k: v for k, v in cls.state_dict().items()}, path)
    assert build_yolov3(num_classes=3, width=0.25, depth=0.34,
                        backbone_weights=str(path)).backbone_report["loaded"] > 0
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(AblateError, match="nothing in"):
        build_yolov3(num_classes=3, width=0.25, depth=0.34, backbone_weights=str(path))
    with pytest.raises(AblateError, match="no file"):
        build_yolov3(num_classes=3, backbone_weights=str(tmp_path / "missing.pt"))


def test_bad_arguments():
    with pytest.raises(AblateError):
        build_yolov3(num_classes=0)
    with pytest.raises(AblateError):
        build_yolov3(num_classes=3, anchor_scale=0)
    with pytest.raises(AblateError):
        YOLOv3(3, anchors=[[1, 2]])
