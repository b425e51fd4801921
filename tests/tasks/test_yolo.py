import math

import numpy as np
import pytest
import torch
from torch import nn

from ablate.errors import AblateError
from ablate.models.yolov3 import ANCHORS, build_yolov3
from ablate.registry import TASKS
from ablate.tricks.label_smoothing import sigmoid_smooth
from ablate.tasks.yolo import (YoloTask, build_targets, decode, ignore_mask,
                               to_original, yolo_loss)

LOG2 = math.log(2.0)
ANC = torch.tensor(ANCHORS, dtype=torch.float32)


def zeros(b: int, k: int, s: int) -> list[torch.Tensor]:
    return [torch.zeros(b, 3, s // st, s // st, 5 + k) for st in (8, 16, 32)]


def bce(x: float, t: float) -> float:
    return math.log1p(math.exp(x)) - t * x


def batch_of(boxes, labels, s, weights=None, **extra):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    labels = torch.tensor(labels)
    w = torch.ones(labels.shape) if weights is None else torch.tensor(weights)
    return {"image": torch.zeros(labels.shape[0], 3, s, s), "boxes": boxes, "labels": labels,
            "weights": w, **extra}


def test_assignment_hand_computed():
    # A 100×60 box centred at (200, 150) at S = 416: shape IoU with all 9 anchors.
    ious = [130 / 6000, 480 / 6000, 759 / 6000,  # (10,13) (16,30) (33,23)
            1800 / 6030, 2790 / 6000, 3540 / 9481,  # (30,61) (62,45) (59,119)
            6000 / 10440, 6000 / 30888, 6000 / 121598]  # (116,90) (156,198) (373,326)
    assert int(np.argmax(ious)) == 6  # → stride 32, anchor 0 (116×90)
    b = batch_of([[[150, 120, 250, 180], [0, 0, 50, 50]]], [[4, -1]], 416, [[0.3, 1.0]])
    tg = build_targets(zeros(1, 20, 416), b["boxes"], b["labels"], b["weights"], ANC,
                       image_hw=(416, 416))
    assert tg["batch"].tolist() == [0] and tg["box"].tolist() == [0]  # padding assigns nothing
    assert (tg["scale"].item(), tg["anchor"].item()) == (2, 0)
    assert (tg["gx"].item(), tg["gy"].item()) == (200 // 32, 150 // 32) == (6, 4)
    assert tg["txy"][0].tolist() == pytest.approx([200 / 32 - 6, 150 / 32 - 4], abs=1e-6)
    assert tg["twh"][0].tolist() == pytest.approx([math.log(100 / 116), math.log(60 / 90)],
                                                  abs=1e-6)
    assert tg["box_weight"].item() == pytest.approx((2 - 6000 / 416 ** 2) * 0.3, abs=1e-6)
    assert tg["mix_weight"].item() == pytest.approx(0.3)
    # flat index: after 3·52² + 3·26² stride-8/16 cells, anchor 0, row 4, column 6
    assert tg["index"].item() == 3 * 52 * 52 + 3 * 26 * 26 + 4 * 13 + 6


def test_same_cell_later_box_wins():
    s = 416
    boxes = [[[150, 120, 250, 180], [152, 121, 250, 179], [0, 0, 12, 14], [150, 120, 250, 180]],
             [[150, 120, 250, 180], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]
    labels = [[1, 2, 3, -1], [5, -1, -1, -1]]  # a padding row after does not win
    b = batch_of(boxes, labels, s)
    tg = build_targets(zeros(2, 20, s), b["boxes"], b["labels"], b["weights"], ANC)
    pairs = sorted(zip(tg["batch"].tolist(), tg["box"].tolist()))
    assert pairs == [(0, 1), (0, 2), (1, 0)]  # box 0 lost to box 1; other image unaffected
    b["class_targets"] = torch.eye(20)[b["labels"].clamp(min=0)]
    out = zeros(2, 20, s)
    out[2][0, 0, 4, 6, 5 + 2] = 8.0  # confident in box 1's class → low class loss for it
    loss = yolo_loss(out, b, ANC, ignore_iou=1.0)["cls"].item()
    assert loss == pytest.approx((bce(8.0, 1.0) + 19 * LOG2 + 2 * 20 * LOG2) / 2, abs=1e-5)


def test_loss_terms_zero_logits():
    s, k = 64, 3
    n = 3 * (8 * 8 + 4 * 4 + 2 * 2)
    b = batch_of([[[20, 20, 52, 52]], [[0, 0, 1, 1]]], [[1], [-1]], s, [[0.5], [1.0]])
    # 32×32 box: best anchor (33,23) (IoU 736/1047), stride 8, cell (4, 4); weight 0.5
    tw, th = math.log(32 / 33), math.log(32 / 23)
    box_w = (2 - 32 * 32 / s ** 2) * 0.5
    out = zeros(2, k, s)
    got = {key: v.item() for key, v in yolo_loss(out, b, ANC, ignore_iou=1.0).items()}
    assert got["obj"] == pytest.approx(((2 * n - 1) * LOG2 + 0.5 * LOG2) / 2, abs=1e-4)
    assert got["center"] == pytest.approx(2 * LOG2 * box_w / 2, abs=1e-6)
    assert got["scale"] == pytest.approx((abs(tw) + abs(th)) * box_w / 2, abs=1e-6)
    assert got["cls"] == pytest.approx(k * LOG2 * 0.5 / 2, abs=1e-6)

    # non-zero logits on the positive, smoothed class targets
    v = [1.0, -1.0, 0.5, 0.2, 2.0, 1.0, -1.0, 0.5]
    out[0][0, 2, 4, 4] = torch.tensor(v)
    b["class_targets"] = sigmoid_smooth(torch.eye(k)[b["labels"].clamp(min=0)])
    t = [0.025, 0.975, 0.025]
    got = {key: v.item() for key, v in yolo_loss(out, b, ANC, ignore_iou=1.0).items()}
    assert got["obj"] == pytest.approx(((2 * n - 1) * LOG2 + 0.5 * bce(2.0, 1.0)) / 2, abs=1e-4)
    assert got["center"] == pytest.approx((bce(1, 0.5) + bce(-1, 0.5)) * box_w / 2, abs=1e-6)
    assert got["scale"] == pytest.approx((abs(0.5 - tw) + abs(0.2 - th)) * box_w / 2, abs=1e-6)
    assert got["cls"] == pytest.approx(sum(bce(x, y) for x, y in zip(v[5:], t)) * 0.5 / 2,
                                       abs=1e-6)


def test_ignore_threshold():
    s, n = 64, 3 * (8 * 8 + 4 * 4 + 2 * 2)
    b = batch_of([[[20, 20, 52, 52]]], [[0]], s)
    out = zeros(1, 1, s)
    for o in out:
        o[..., 2:4] = -10.0  # tiny boxes: no overlap with anything
    # stride 8, anchor 0 (10×13), cell (4, 4): a 32×24 box centred on the GT → IoU 0.75
    out[0][0, 0, 4, 4, 2:4] = torch.tensor([math.log(32 / 10), math.log(24 / 13)])
    # the positive (anchor 2, 33×23) predicts the GT exactly: IoU 1, but never ignored
    out[0][0, 2, 4, 4, 2:4] = torch.tensor([math.log(32 / 33), math.log(32 / 23)])
    obj = lambda thr: yolo_loss(out, b, ANC, ignore_iou=thr)["obj"].item()  # noqa: E731
    assert obj(0.7) == pytest.approx((n - 1) * LOG2, abs=1e-4)
    assert obj(0.8) == pytest.approx(n * LOG2, abs=1e-4)
    pred = torch.tensor([[[0, 0, 10, 10], [0, 0, 10, 7.4]]])
    gt = torch.tensor([[[0, 0, 10, 7.5], [0, 0, 10, 10]]])
    assert ignore_mask(pred, gt, torch.tensor([[True, False]]), 0.7).tolist() == [[True, True]]
    assert ignore_mask(pred, gt, torch.tensor([[True, False]]), 0.8).tolist() == [[False, True]]


def test_sigmoid_smooth():
    t = sigmoid_smooth(torch.eye(20)[[3]])
    assert t[0, 3].item() == pytest.approx(0.975) and t[0, 0].item() == pytest.approx(0.025)
    t = sigmoid_smooth(torch.eye(80)[[3]], "code", epsilon=0.1)  # code has no ε
    assert t[0, 3].item() == pytest.approx(1 - 1 / 80) and t[0, 0].item() == pytest.approx(1 / 80)
    t = sigmoid_smooth(torch.eye(20)[[3]], "paper", epsilon=0.1)
    assert t[0, 3].item() == pytest.approx(0.9) and t[0, 0].item() == pytest.approx(0.1 / 19)
    with pytest.raises(AblateError):
        sigmoid_smooth(torch.eye(3), "other")


def crafted(second_class: int, with_c: bool = True) -> list[torch.Tensor]:
    """Stride-8 predictions at cell (4, 4): A (32×32 at (36, 36), class 0), B (30×30, IoU 0.88
    with A, class ``second_class``), optionally C (32×32, class 1); all else scores ≈ 0."""
    out = [torch.full((1, 3, g, g, 7), -20.0) for g in (8, 4, 2)]
    cell = out[0][0, :, 4, 4]
    cell[:, :2] = 0.0
    cell[0, 2:5] = torch.tensor([math.log(32 / 10), math.log(32 / 13), 10.0])
    cell[1, 2:5] = torch.tensor([math.log(30 / 16), 0.0, 10.0])
    cell[2, 2:5] = torch.tensor([math.log(32 / 33), math.log(32 / 23), 10.0])
    cell[0, 5], cell[1, 5 + second_class], cell[2, 6] = 5.0, 3.0, 4.0 if with_c else -20.0
    return out


def test_decode_and_nms():
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    d = decode(crafted(0), 64, anchors=ANCHORS)[0]
    assert d["labels"].tolist() == [0, 1]  # B suppressed by A (same class)
    assert d["scores"].tolist() == pytest.approx([sig(10) * sig(5), sig(10) * sig(4)], rel=1e-5)
    assert torch.allclose(d["boxes"], torch.tensor([[20.0, 20, 52, 52]] * 2), atol=1e-4)
    d = decode(crafted(1, with_c=False), 64, anchors=ANCHORS)[0]
    assert d["labels"].tolist() == [0, 1]  # class-aware: B (class 1) survives A (class 0)
    assert d["scores"].tolist() == pytest.approx([sig(10) * sig(5), sig(10) * sig(3)], rel=1e-5)
    assert torch.allclose(d["boxes"], torch.tensor([[20.0, 20, 52, 52], [21, 21, 51, 51]]),
                          atol=1e-4)
    assert len(decode(crafted(0), 64, max_det=1, anchors=ANCHORS)[0]["labels"]) == 1
    assert len(decode(crafted(0), 64, conf_thresh=0.999, anchors=ANCHORS)[0]["labels"]) == 0


def test_to_original():
    dets = [{"boxes": torch.tensor([[41.6, 104, 208, 416], [-10, 0, 500, 430]]),
             "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}]
    out = to_original(dets, torch.tensor([[300, 500]]), 416)[0]
    # x · 500/416, y · 300/416, then clipped to the 500×300 image
    assert torch.allclose(out["boxes"], torch.tensor([[50.0, 75, 250, 300], [0, 0, 500, 300]]),
                          atol=1e-4)
    assert out["labels"].tolist() == [1, 2]


def test_prepare_and_options():
    model = build_yolov3(num_classes=3, width=0.25, depth=0.34)
    task = TASKS.get("yolo")(model, 3, target_fns=[sigmoid_smooth])
    out = task.prepare({"labels": torch.tensor([[1, -1]])})
    assert torch.allclose(out["class_targets"],
                          torch.tensor([[[0.025, 0.975, 0.025], [0.025, 0.025, 0.025]]]))
    assert YoloTask(model, 3).prepare({"labels": torch.tensor([[2, -1]])})[
        "class_targets"].tolist() == [[[0, 0, 1], [0, 0, 0]]]
    with pytest.raises(AblateError, match="ignore_iou"):
        YoloTask(model, 3, ignore_iu=0.5)
    with pytest.raises(AblateError):
        YoloTask(model, 3, eval_coords="both")


class Crafted(nn.Module):
    def __init__(self, second_class: int = 0) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.anchors, self.strides, self.second = ANC, (8, 16, 32), second_class

    def forward(self, x):
        return [o.expand(x.shape[0], *o.shape[1:]) for o in crafted(self.second)]


@pytest.mark.parametrize("coords", ["original", "input"])
def test_evaluate_maps_back_to_original(coords):
    gt = [{"boxes": np.array([[80.0, 40, 208, 104]]), "labels": np.array([0]),
           "difficult": np.array([False])},  # input [20,20,52,52] in a 128×256 image
          {"boxes": np.array([[20.0, 20, 52, 52], [0, 0, 10, 10]]), "labels": np.array([0, 1]),
           "difficult": np.array([False, False])}]
    loader = [{"image": torch.zeros(2, 3, 64, 64),
               "orig_size": torch.tensor([[128, 256], [64, 64]]), "gt": gt}]
    model = Crafted()
    res = YoloTask(model, 2, eval_coords=coords).evaluate(model, loader, torch.no_grad)
    assert not model.training
    assert res["map"] == pytest.approx(50.0)  # class 0: both found; class 1: missed


def test_overfit_tiny_batch():
    torch.manual_seed(0)
    model = build_yolov3(num_classes=3, width=0.25, depth=0.34, anchor_scale=64 / 416)
    task = YoloTask(model, 3)
    batch = task.prepare(batch_of(
        [[[4, 8, 40, 60], [30, 30, 60, 50], [0, 0, 0, 0]], [[10, 10, 30, 20], [0, 0, 0, 0],
                                                           [0, 0, 0, 0]]],
        [[0, 2, -1], [1, -1, -1]], 64, [[1.0, 0.6, 1.0], [1.0, 1.0, 1.0]]))
    batch["image"] = torch.rand(2, 3, 64, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(20):
        total = sum(task(batch).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) < 0.75 * sum(losses[:3])
    res = task.evaluate(model, [{"image": batch["image"], "orig_size": torch.tensor(
        [[64, 64], [64, 64]]), "gt": [{"boxes": np.array([[4.0, 8, 40, 60]]), "labels": [0]}] * 2}],
        torch.no_grad)
    assert 0.0 <= res["map"] <= 100.0


def test_coco_metrics_hand_checked_with_a_crowd_region():
    """One GT box and one detection at IoU exactly 0.5: matched only at the 0.5 threshold, so
    AP@[.5:.95] = 1/10. A higher-scored detection on a crowd (difficult) region is ignored, not
    a false positive (else AP50 would drop to 50)."""
    from ablate.tasks.yolo import coco_metrics

    gts = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
            "labels": np.array([0, 0]), "difficult": np.array([False, True])}]
    dets = [{"boxes": np.array([[20, 20, 30, 30], [0, 0, 10, 5]], np.float32),
             "scores": np.array([0.9, 0.8], np.float32), "labels": np.array([0, 0])}]
    m = coco_metrics(gts, dets, num_classes=2)
    assert m["map"] == pytest.approx(10.0) and m["ap50"] == pytest.approx(100.0)
    assert m["ap75"] == 0.0


def test_detection_metric_names_are_checked():
    from ablate.tasks.yolo import voc_metric_name

    assert voc_metric_name("VOC07") == "voc07"
    with pytest.raises(AblateError, match="did you mean 'coco'"):
        voc_metric_name("cocoo")
