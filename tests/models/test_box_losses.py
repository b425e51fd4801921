"""The RCNN box losses of the MMDetection benchmark (Table 5): hand-computed values at and
around their branch points, MMDetection's reduction through ``rcnn_loss`` (decoded boxes with
gradients for the IoU family), the RPN options of Table 9 (allowed border, negative bound),
and bad options refused before training."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder

from ablate.errors import AblateError
from ablate.models.box_losses import build_box_loss
from ablate.models.faster_rcnn import (BoundedSampler, build_faster_rcnn, inside_anchors,
                                       rcnn_loss)
from tests.conftest import ROOT
from tests.study.test_detection_studies import data_root  # noqa: F401  (fixture)

D = torch.tensor([[0.5, -2.0, 1.0, 0.0]], dtype=torch.float64)  # pred − target, one box
ZERO = torch.zeros_like(D)


def loss(name, **options):
    spec = {"name": name, **({name: options} if options else {})}
    return build_box_loss(spec)


def test_delta_losses_by_hand_including_the_branch_point():
    # smooth L1, β = 1: 0.5·0.25 + (2 − 0.5) + (1 − 0.5 at x = β, both branches agree) + 0
    assert loss("smooth_l1")(D, ZERO).item() == pytest.approx(2.125, abs=1e-12)
    assert loss("smooth_l1", beta=1 / 9)(torch.tensor([[1 / 9, 0, 0, 0]]), torch.zeros(1, 4)
                                          ).item() == pytest.approx(1 / 18, abs=1e-8)
    assert loss("smooth_l1", beta=0)(D, ZERO).item() == pytest.approx(3.5, abs=1e-12)  # = L1
    assert loss("l1")(D, ZERO).item() == pytest.approx(3.5, abs=1e-12)
    # balanced L1 (α 0.5, γ 1.5, β 1), b = e³ − 1
    b = math.e ** 3 - 1
    at_half = 0.5 / b * (b * 0.5 + 1) * math.log(b * 0.5 + 1) - 0.25
    at_two = 1.5 * 2 + 1.5 / b - 0.5
    at_beta = 1 + 1.5 / b  # both branches: 1.5·(1 + 1/b) − 0.5
    assert at_half == pytest.approx(0.4005675, abs=1e-6)
    assert at_beta == pytest.approx(1.0785940, abs=1e-6)
    want = at_half + at_two + at_beta
    assert loss("balanced_l1")(D, ZERO).item() == pytest.approx(want, abs=1e-9)
    x = torch.tensor([[1 - 1e-9, 0, 0, 0]], dtype=torch.float64)
    assert loss("balanced_l1")(x, torch.zeros_like(x)).item() == pytest.approx(at_beta, abs=1e-7)


def test_iou_losses_by_hand_including_no_overlap():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 1, 1]], dtype=torch.float64)
    b = torch.tensor([[5.0, 0, 15, 10], [2, 2, 3, 3]], dtype=torch.float64)
    # IoU 50 / 150 = 1/3; the second pair does not overlap: IoU 0, clamped at eps 1e-6
    assert loss("iou")(a, b).tolist() == pytest.approx([math.log(3), -math.log(1e-6)], abs=1e-9)
    assert loss("iou", mode="linear")(a, b).tolist() == pytest.approx([2 / 3, 1.0], abs=1e-12)
    # GIoU: the enclosing box of the first pair is its union (GIoU = IoU); of the second 3×3
    # around a union of 2: GIoU = 0 − 7/9
    assert loss("giou")(a, b).tolist() == pytest.approx([2 / 3, 16 / 9], abs=1e-6)
    # bounded IoU (β 0.2, eps 1e-3): pred centre (5, 5) 10×10, target centre (8, 5) 12×10
    pred = torch.tensor([[0.0, 0, 10, 10]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[2.0, 0, 14, 10]], dtype=torch.float64, requires_grad=True)
    lx = 1 - 6 / 18.001
    ly = lh = 1 - 10 / 10.001
    lw = 1 - 10 / 12.001
    want = (lx - 0.1) + 2.5 * ly ** 2 + 2.5 * lw ** 2 + 2.5 * lh ** 2
    assert want == pytest.approx(0.6361876, abs=1e-6)
    out = loss("bounded_iou")(pred, target)
    assert out.item() == pytest.approx(want, abs=1e-12)
    out.sum().backward()
    assert pred.grad.abs().sum() > 0 and target.grad is None  # the target carries no gradient


def test_rcnn_loss_reduction_weights_and_decoded_boxes():
    # 4 sampled RoIs, 2 positive (classes 1 and 2 of K = 2), mixup weights 0.5 and 1
    labels = torch.tensor([1, 0, 2, 0])
    logits = torch.zeros(4, 3)
    deltas = torch.zeros(4, 3, 4)
    deltas[0, 1] = torch.tensor([0.5, -2.0, 1.0, 0.0])
    deltas[2, 2] = torch.tensor([0.1, 0.0, 0.0, 0.0])
    targets = torch.zeros(4, 4)
    w = torch.tensor([0.5, 1.0, 1.0, 1.0])
    _, box = rcnn_loss(logits, deltas.reshape(4, 12), labels, targets, w,
                       box_loss=build_box_loss({"name": "smooth_l1", "weight": 2}))
    # (0.5 · 2.125 + 1 · 0.5·0.01) / 4 sampled RoIs × weight 2
    assert box.item() == pytest.approx((0.5 * 2.125 + 0.005) / 4 * 2, abs=1e-7)

    # IoU family: deltas decoded on the proposals (torchvision's coder, weights 10, 10, 5, 5)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    props = torch.tensor([[0.0, 0, 10, 10], [0, 0, 5, 5], [20, 20, 40, 30], [1, 1, 2, 2]])
    gt = torch.tensor([[5.0, 0, 15, 10], [0, 0, 0, 0], [20, 20, 40, 30], [0, 0, 0, 0]])
    d = torch.zeros(4, 3, 4, requires_grad=True)
    _, box = rcnn_loss(logits, d.reshape(4, 12), labels, targets, w,
                       box_loss=build_box_loss({"name": "giou", "weight": 5}),
                       decode=(coder, props, gt))
    # zero deltas decode to the proposals: GIoU losses 2/3 and 0, weighted 0.5 and 1, / 4, × 5
    assert box.item() == pytest.approx(0.5 * (2 / 3) / 4 * 5, abs=1e-6)
    box.backward()
    assert d.grad[0, 1].abs().sum() > 0 and d.grad[1].abs().sum() == 0  # through the decode
    with pytest.raises(AblateError, match="needs the proposals"):
        rcnn_loss(logits, d.reshape(4, 12), labels, targets, w,
                  box_loss=build_box_loss({"name": "iou"}))

    # no positive RoI: a zero loss that still back-propagates
    d = torch.zeros(4, 12, requires_grad=True)
    for name in ("smooth_l1", "iou", "bounded_iou"):
        _, box = rcnn_loss(logits, d, torch.zeros(4, dtype=torch.long), targets, w,
                           box_loss=build_box_loss({"name": name}), decode=(coder, props, gt))
        assert box.item() == 0.0
        box.backward()


def test_rpn_allowed_border_and_negative_bound():
    anchors = torch.tensor([[-1.0, 0, 10, 10], [0, 0, 10, 10], [90, 50, 100, 60],
                            [90, 50, 101, 60], [-3, -3, 4, 4]])
    assert inside_anchors(anchors, (60, 100), 0).tolist() == [False, True, False, False, False]
    assert inside_anchors(anchors, (60, 100), 1).tolist() == [True, True, True, False, False]
    assert inside_anchors(anchors, (60, 100), -1).all()

    labels = [torch.tensor([1.0] * 3 + [0.0] * 1000 + [-1.0] * 5)]
    torch.manual_seed(0)
    pos, neg = BoundedSampler(256, 0.5, 3)(labels)
    assert int(pos[0].sum()) == 3 and int(neg[0].sum()) == 9  # 3 · max(1, 3)
    pos, neg = BoundedSampler(256, 0.5, 5)([torch.tensor([0.0] * 1000)])
    assert int(pos[0].sum()) == 0 and int(neg[0].sum()) == 5  # 5 · max(1, 0)
    torch.manual_seed(1)
    a = BoundedSampler(256, 0.5, -1)(labels)
    torch.manual_seed(1)
    b = BalancedPositiveNegativeSampler(256, 0.5)(labels)
    assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))  # torchvision's draws


def test_rpn_border_leaves_outside_anchors_out_of_the_assignment():
    model = build_faster_rcnn(num_classes=2, arch="c4", depth=14, width=0.25, norm="bn",
                              trainable_layers=5, anchor_sizes=[16, 32],
                              rpn={"allowed_border": 0})
    anchors = [torch.tensor([[-4.0, 0, 12, 16], [0, 0, 16, 16], [40, 40, 56, 56]])]
    target = [{"boxes": torch.tensor([[-2.0, 0, 14, 16]])}]
    model.rpn._image_sizes = [(64, 64)]
    labels, _ = model.rpn.assign_targets_to_anchors(anchors, target)
    # the first anchor matches best (IoU 0.78) but crosses the border: ignored (−1); the
    # inside one becomes the box's best match (a positive, low-quality rule); the far one 0
    assert labels[0].tolist() == [-1.0, 1.0, 0.0]
    model.rpn._image_sizes = None
    with pytest.raises(AblateError, match="allowed_border needs the image sizes"):
        model.rpn.assign_targets_to_anchors(anchors, target)
    model.rpn.allowed_border = -1
    labels, _ = model.rpn.assign_targets_to_anchors(anchors, target)
    assert labels[0].tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("spec, message", [
    ({"name": "gio"}, "model.rcnn.box_loss.name='gio': unknown box loss (did you mean 'giou'?)"),
    ({"name": "smooth_l1", "weight": 0}, "model.rcnn.box_loss.weight=0: must be a number > 0"),
    ({"name": "smooth_l1", "smooth_l1": {"beta": -1}},
     "model.rcnn.box_loss.smooth_l1.beta=-1: must be >= 0"),
    ({"name": "bounded_iou", "bounded_iou": {"beta": 0}},
     "model.rcnn.box_loss.bounded_iou.beta=0: must be > 0"),
    ({"name": "giou", "giou": {"beta": 1}}, "model.rcnn.box_loss.giou.beta: giou has no option"),
    ({"name": "iou", "iou": {"mode": "square"}},
     "model.rcnn.box_loss.iou.mode='square': must be one of log, linear"),
])
def test_bad_box_loss_options(spec, message):
    with pytest.raises(AblateError) as e:
        build_box_loss(spec, "model.rcnn.box_loss")
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("override, message", [
    ("model.rcnn.box_loss={name:gio}", "model.rcnn.box_loss.name='gio': unknown box loss"),
    ("model.rcnn.box_loss={name:iou,weight:-1}", "model.rcnn.box_loss.weight=-1: must be"),
    ("model.rpn.smoothl1_beta=-0.1", "model.rpn.smoothl1_beta=-0.1: must be >= 0"),
    ("model.rpn.allowed_border=-2", "model.rpn.allowed_border=-2: must be >= 0, or -1"),
    ("data.train_scales=[[800,1000],[600,1000]] data.train_scale_mode=range",
     "data.train_scales: range lo [800, 1000] > hi [600, 1000]"),
])
def test_bad_head_options_exit_2_before_training(cli, results, data_root, override,  # noqa: F811
                                                 message):
    study = ROOT / "studies" / "faster_rcnn_voc.yaml"
    sets = [x for o in override.split() for x in ("--set", o)]
    r = cli("run", study, "--dry-run", "--results", results, *sets)
    assert r.code == 2, r.out + r.err
    assert r.err.startswith(f"error: {study}: step 'no_aug': {message}"), r.err
    assert not results.exists()


def test_every_box_loss_drives_a_training_step_of_the_model():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    for name in ("smooth_l1", "l1", "balanced_l1", "iou", "giou", "bounded_iou"):
        torch.manual_seed(0)
        m = build_faster_rcnn(num_classes=2, arch="c4", depth=14, width=0.25, norm="bn",
                              trainable_layers=5, anchor_sizes=[16, 32],
                              rpn={"allowed_border": 0, "neg_pos_ub": 3},
                              rcnn={"batch": 16, "box_loss": {"name": name, "weight": 2}}).train()
        losses = m(images, [(64, 64), (48, 64)], targets)
        assert m.roi_heads.box_loss.name == name and m.roi_heads.box_loss.weight == 2
        total = sum(losses.values())
        assert torch.isfinite(total) and losses["rcnn_box"] > 0, (name, losses)
        total.backward()
        assert m.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0, name
