import pytest
import torch
import torchvision
from torch import nn

from ablate.errors import AblateError
from ablate.models.resnet import Bottleneck, build_resnet, count_params


@pytest.mark.parametrize("variant,params", [("orig", 25_557_032), ("b", 25_557_032),
                                            ("c", 25_576_264), ("d", 25_576_264)])
def test_resnet50_parameter_counts(variant, params):
    assert count_params(build_resnet(depth=50, variant=variant)) == params


@pytest.mark.parametrize("depth,tv", [(18, torchvision.models.resnet18),
                                      (50, torchvision.models.resnet50),
                                      (101, torchvision.models.resnet101),
                                      (152, torchvision.models.resnet152)])
def test_resnet_b_matches_torchvision_state_dict(depth, tv):
    ours, ref = build_resnet(depth=depth, variant="b").state_dict(), tv().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


def test_stride_placement():
    orig = build_resnet(depth=50, variant="orig").layer2[0]
    b = build_resnet(depth=50, variant="b").layer2[0]
    assert orig.conv1.stride == (2, 2) and orig.conv2.stride == (1, 1)
    assert b.conv1.stride == (1, 1) and b.conv2.stride == (2, 2)
    assert b.downsample[0].stride == (2, 2)


def test_deep_stem_and_avg_down_shortcut():
    c = build_resnet(depth=50, variant="c")
    convs = [m for m in c.conv1 if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    assert isinstance(c.layer2[0].downsample[0], nn.Conv2d)
    d = build_resnet(depth=50, variant="d")
    pool, conv = d.layer2[0].downsample[0], d.layer2[0].downsample[1]
    assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2 and pool.stride == 2
    assert pool.ceil_mode and not pool.count_include_pad
    assert conv.stride == (1, 1) and conv.kernel_size == (1, 1)
    assert isinstance(d.layer1[0].downsample[0], nn.Identity)  # stride 1: no pooling


def test_avg_down_shortcut_values():
    """ResNet-D's shortcut averages 2×2 windows, ceil mode without padding counted."""
    d = build_resnet(depth=50, variant="d")
    pool = d.layer2[0].downsample[0]
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert pool(x).flatten().tolist() == [2.0, 3.5, 6.5, 8.0]


def test_small_input_and_width():
    m = build_resnet(depth=14, variant="d", width=0.25, small_input=True, in_chans=1,
                     num_classes=10)
    assert isinstance(m.maxpool, nn.Identity)
    assert m.num_features == 512  # 2048 * 0.25
    assert sum(isinstance(x, Bottleneck) for x in m.modules()) == 4
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    feats = m.forward_features(torch.randn(1, 1, 28, 28))
    assert feats.shape == (1, 512, 2, 2)  # stem /2, no max-pool, three /2 stages: 28→2


def test_bad_depth_or_variant():
    with pytest.raises(AblateError, match="depth 49"):
        build_resnet(depth=49)
    with pytest.raises(AblateError, match="variant 'e'"):
        build_resnet(variant="e")
