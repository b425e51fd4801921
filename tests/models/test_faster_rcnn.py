"""Faster R-CNN: the FPN layout is torchvision's fasterrcnn_resnet50_fpn (parameters, keys,
features), the C4 layout has the paper's shapes and parameter count, the tiny proxy trains and
detects, and backbone weights load from ablate and torchvision ResNet checkpoints."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

from ablate.errors import AblateError
from ablate.models.faster_rcnn import FasterRCNN, build_faster_rcnn
from ablate.models.resnet import build_resnet
from ablate.registry import MODELS

TINY = dict(arch="c4", depth=14, width=0.25, norm="bn", trainable_layers=5,
            anchor_sizes=[16, 32, 64, 128],
            rpn=dict(pre_nms_train=2000, post_nms_train=300, pre_nms_test=1000,
                     post_nms_test=100, min_size=4),
            rcnn=dict(roi_size=7, batch=32))  # conf/model/faster_rcnn_tiny.yaml


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_fpn_equals_torchvision_fasterrcnn_resnet50_fpn():
    torch.manual_seed(0)
    # torchvision counts the background in num_classes; ours counts foreground classes
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=21).eval()
    ours = build_faster_rcnn(num_classes=20, arch="fpn", norm="bn", trainable_layers=5).eval()
    assert n_params(ours) == n_params(tv) == 41_449_656
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in tv.state_dict().items()}
    ours.load_state_dict(tv.state_dict())  # strict: the same keys and shapes
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = ours.backbone(x), tv.backbone(x)
    assert list(a) == list(b) == ["0", "1", "2", "3", "pool"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # with frozen BN the BN affines become buffers: torchvision's documented 41,755,286 for its
    # pretrained (frozen-BN) model with 91 classes (70 more: scores + 4 deltas from 1024 + bias)
    affines = sum(m.weight.numel() + m.bias.numel() for m in ours.modules()
                  if isinstance(m, nn.BatchNorm2d))
    frozen = build_faster_rcnn(num_classes=20, arch="fpn")
    assert n_params(frozen) == n_params(ours) - affines == 41_396_536
    assert n_params(frozen) + 70 * 5 * 1025 == 41_755_286


def test_c4_layout_shapes_and_parameter_count():
    torch.manual_seed(0)
    m = build_faster_rcnn(num_classes=20).eval()
    assert isinstance(m, FasterRCNN) and "faster_rcnn" in MODELS
    convs = sum(mod.weight.numel() for mod in torchvision.models.resnet50().modules()
                if isinstance(mod, nn.Conv2d))  # frozen BN: only the conv weights remain
    rpn = 1024 * 1024 * 9 + 1024 + (1024 + 1) * 15 + (1024 + 1) * 60  # 3×3 conv, 15 anchors
    predictor = (2048 + 1) * 21 + (2048 + 1) * 84  # K + 1 scores, 4 (K + 1) deltas
    assert n_params(m) == convs + rpn + predictor == 33_185_140
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert sum(isinstance(x, FrozenBatchNorm2d) for x in m.modules()) == 53
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert {"backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight"} <= frozen
    assert not any(n.startswith(("backbone.body.layer2", "roi_heads", "rpn")) for n in frozen)
    assert m.rpn.anchor_generator.num_anchors_per_location() == [15]
    assert m.rpn.anchor_generator.sizes == ((32.0, 64.0, 128.0, 256.0, 512.0),)  # 16 × 2…32
    assert m.rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = m.backbone(x)
        assert list(feats) == ["0"] and feats["0"].shape == (2, 1024, 4, 6)  # stride 16
        rois = [torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.tensor([[8.0, 8, 40, 56],
                                                                        [0, 0, 96, 64]])]
        pooled = m.roi_heads.box_roi_pool(feats, rois, [(64, 96)] * 2)
        assert pooled.shape == (3, 1024, 14, 14)  # RoIAlign 14×14
        assert m.roi_heads.box_head.layer4(pooled).shape == (3, 2048, 7, 7)
        head = m.roi_heads.box_head(pooled)
        assert head.shape == (3, 2048)  # layer4 + average pool
        scores, deltas = m.roi_heads.box_predictor(head)
    assert scores.shape == (3, 21) and deltas.shape == (3, 84)
    # 17 more layer3 bottlenecks (1024 → 256 → 256 → 1024 convs)
    block = 1024 * 256 + 256 * 256 * 9 + 256 * 1024
    assert n_params(build_faster_rcnn(num_classes=20, depth=101)) == n_params(m) + 17 * block


def test_tiny_variant_trains_and_detects():
    torch.manual_seed(0)
    m = build_faster_rcnn(num_classes=10, **TINY)
    assert n_params(m) == 1_140_099
    images, sizes = torch.randn(2, 3, 128, 192), torch.tensor([[128, 192], [128, 160]])
    targets = [{"boxes": torch.tensor([[10.0, 20, 60, 90], [80, 40, 150, 120]]),
                "labels": torch.tensor([1, 5]), "weights": torch.tensor([1.0, 0.5])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                "weights": torch.zeros(0)}]  # an image without boxes is all background
    losses = m.train()(images, sizes, targets)
    assert sorted(losses) == ["rcnn_box", "rcnn_cls", "rpn_box", "rpn_obj"]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    m.eval()
    with torch.no_grad():
        dets = m(images, sizes)
    assert len(dets) == 2
    for d, (h, w) in zip(dets, sizes.tolist()):
        assert d["boxes"].shape[1] == 4 and len(d["boxes"]) == len(d["scores"]) <= 100
        assert (d["boxes"][:, 2] <= w).all() and (d["boxes"][:, 3] <= h).all()
        assert ((d["labels"] >= 1) & (d["labels"] <= 10)).all() and (d["scores"] > 0.01).all()
    with pytest.raises(AblateError, match="targets in training"):
        m.train()(images, sizes)


def test_backbone_weights_from_ablate_and_torchvision(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "last.pt"
    cls = build_resnet(depth=14, width=0.25, num_classes=7)  # an ablate classification run
    torch.save({"model": cls.state_dict(), "epoch": 3}, path)
    det = build_faster_rcnn(num_classes=3, **{**TINY, "backbone_weights": str(path)})
    rep = det.backbone_report
    assert rep["missing"] == [] and rep["unexpected"] == ["fc.bias", "fc.weight"]
    assert rep["loaded"] == len(cls.state_dict()) - 2
    assert torch.equal(det.backbone.body.layer2[0].conv2.weight, cls.layer2[0].conv2.weight)
    assert torch.equal(det.roi_heads.box_head.layer4[0].conv3.weight, cls.layer4[0].conv3.weight)
    # torchvision key names (its ResNet with one bottleneck per stage = our depth 14), frozen BN
    tv = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1])
    with torch.no_grad():
        tv.layer3[0].bn2.running_mean.uniform_()
    torch.save(tv.state_dict(), path)
    det = build_faster_rcnn(num_classes=3, arch="c4", depth=14, backbone_weights=str(path))
    assert det.backbone_report["missing"] == []
    bn = det.backbone.body.layer3[0].bn2
    assert isinstance(bn, FrozenBatchNorm2d) and torch.equal(bn.running_mean,
                                                             tv.layer3[0].bn2.running_mean)
    assert torch.equal(det.backbone.body.conv1.weight, tv.conv1.weight)
    with pytest.raises(AblateError, match="no file"):
        build_faster_rcnn(num_classes=3, **{**TINY, "backbone_weights": str(tmp_path / "x.pt")})


def test_bad_arguments():
    with pytest.raises(AblateError, match="arch 'c5'"):
        build_faster_rcnn(num_classes=3, arch="c5")
    with pytest.raises(AblateError, match="did you mean 'post_nms_test'"):
        build_faster_rcnn(num_classes=3, depth=14, rpn={"post_nms_tset": 10})
    with pytest.raises(AblateError, match="5 anchor sizes"):
        build_faster_rcnn(num_classes=3, arch="fpn", depth=14, anchor_sizes=[16, 32])
    with pytest.raises(AblateError, match="norm"):
        build_faster_rcnn(num_classes=3, depth=14, norm="gn")
    with pytest.raises(AblateError, match="num_classes"):
        build_faster_rcnn(num_classes=0)


def test_every_registered_model_name_builds_its_model():
    """The registry maps each name to its builder (a decorator above the wrong function would
    register a helper in its place)."""
    assert MODELS.get("faster_rcnn") is build_faster_rcnn
    assert all(MODELS.get(name).__name__.startswith("build_") for name in MODELS), \
        {name: MODELS.get(name).__name__ for name in MODELS}
    model = MODELS.build("faster_rcnn", num_classes=3, depth=18, width=0.25, in_chans=3,
                         norm="bn", trainable_layers=5)
    assert isinstance(model, FasterRCNN)
