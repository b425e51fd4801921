"""The Faster R-CNN forms of the Table 4 freebies: flip-only augmentation, dataset-level mixup
with Beta(1.5, 1.5) and no switch-off, softmax label smoothing over K + 1 outputs, cosine and
warmup per iteration."""

import pytest
import torch
import torch.nn.functional as F

from ablate.errors import AblateError
from ablate.solver.lr import CosineShape, StepShape, WarmupShape
from ablate.tricks import BuildContext, TrainState, build_tricks, check_tricks

CTX = BuildContext(task="rcnn", epochs=20, iters_per_epoch=10, total_batch=4)


def test_table4_tricks_accept_rcnn_and_yolo_only_ones_do_not():
    check_tricks(["data_augmentation", "cosine", "warmup", "label_smoothing", "mixup"], "rcnn")
    with pytest.raises(AblateError, match="does not apply to the rcnn task"):
        check_tricks(["random_shapes"], "rcnn")
    with pytest.raises(AblateError, match="does not apply to the rcnn task"):
        check_tricks(["zero_gamma"], "rcnn")


def test_flip_and_mixup_defaults():
    from ablate.data.pipelines.rcnn import RcnnResize
    from ablate.engine.types import DataContext

    tricks = {t.name: t for t in build_tricks(
        {"data_augmentation": {}, "mixup": {"alpha": None, "beta": None,
                                            "off_last_epochs": None, "mode": "beta"}}, "rcnn")}
    ctx = DataContext("rcnn", epochs=20)
    flip = tricks["data_augmentation"].sample_transform(RcnnResize(), ctx)
    assert type(flip) is RcnnResize and flip.flip
    mixed = tricks["mixup"].wrap_dataset([("image", {})] * 2, ctx)
    assert (mixed.alpha, mixed.beta, mixed.mode, mixed.off_last_epochs) == (1.5, 1.5, "beta", 0)
    batch = {"image": torch.ones(2, 3, 4, 4)}
    assert tricks["mixup"].batch_transform(batch, TrainState(epochs=20)) is batch
    (yolo,) = build_tricks({"mixup": {}}, "yolo")  # unchanged for YOLOv3
    assert (yolo.alpha, yolo.off_last_epochs) == (1.5, 20)


def test_label_smoothing_is_the_softmax_form_over_k_plus_one():
    one_hot = F.one_hot(torch.tensor([2]), 5).float()  # K = 4 classes + background
    (code,) = build_tricks({"label_smoothing": {"epsilon": 0.1, "formula": "code"}}, "rcnn")
    assert code.targets(one_hot)[0].tolist() == pytest.approx([0.02, 0.02, 0.92, 0.02, 0.02])
    (paper,) = build_tricks({"label_smoothing": {"epsilon": 0.1, "formula": "paper"}}, "rcnn")
    assert paper.targets(one_hot)[0].tolist() == pytest.approx([0.025, 0.025, 0.9, 0.025, 0.025])


def test_cosine_and_warmup_per_iteration():
    tricks = build_tricks({"warmup": {"epochs": 1}, "cosine": {"target_lr": 0.0}}, "rcnn")
    shape = StepShape(milestones=(140,))
    for t in tricks:
        shape = t.schedule(shape, CTX, 0.001)
    assert isinstance(shape, WarmupShape) and isinstance(shape.inner, CosineShape)
    assert shape(0) == pytest.approx(0.1) and shape(9) == pytest.approx(1.0)
    assert shape(199) == pytest.approx(0.0)
