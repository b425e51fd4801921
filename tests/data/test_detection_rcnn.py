"""The Faster R-CNN data pipeline: GluonCV's shorter-side resize, the flip, padded batches with
zero padding after normalisation, and the detection sources in the rcnn mode."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ablate.config import compose
from ablate.data.pipelines.rcnn import (RcnnResize, build_rcnn_loaders, check_scale,
                                        check_train_scales, collate_padded, rcnn_eval_resize,
                                        rcnn_resize, rcnn_size)
from ablate.data.loading import IMAGENET_MEAN, IMAGENET_STD
from ablate.errors import AblateError
from ablate.registry import DATASETS
from tests.conftest import trick_plugins
from tests.data.test_detection_loader import Toy

RUN = dict(rank=0, world_size=1, seed=0, device=torch.device("cpu"), channels_last=False)
SOURCES = {"fashion_scenes": DATASETS.get("fashion_scenes")}


def test_shorter_side_within_the_longer_cap():
    assert rcnn_size(375, 500, 600, 1000) == (600, 800)  # a typical VOC image
    assert rcnn_size(500, 375, 600, 1000) == (800, 600)
    assert rcnn_size(500, 1500, 600, 1000) == (333, 1000)  # 1800 > 1000: the long side caps
    assert rcnn_size(640, 480, 800, 1333) == (1067, 800)  # COCO
    assert rcnn_size(96, 192, 128, 213) == (106, 213)  # FashionScenes proxy (round half even)
    with pytest.raises(AblateError, match="short_side <= max_side"):
        check_scale(600, 500)
    assert check_scale("600", 1000) == (600, 1000)


def test_resize_scales_boxes_and_flip_mirrors_them():
    image = torch.arange(10 * 20, dtype=torch.uint8).view(1, 10, 20).repeat(3, 1, 1)
    target = {"boxes": torch.tensor([[2.0, 3.0, 6.0, 8.0]]), "labels": torch.tensor([4])}
    out, t = rcnn_resize(image, target, out_size=(20, 100))
    assert out.shape == (3, 20, 40) and t["boxes"].tolist() == [[4.0, 6.0, 12.0, 16.0]]
    seen = set()
    for seed in range(12):
        flipped, tf = rcnn_resize(image, target, out_size=(20, 100), flip=True,
                                  generator=torch.Generator().manual_seed(seed))
        if torch.equal(flipped, out):
            assert tf["boxes"].tolist() == [[4.0, 6.0, 12.0, 16.0]]
            seen.add("kept")
        else:
            assert torch.equal(flipped, out.flip(-1))
            assert tf["boxes"].tolist() == [[28.0, 6.0, 36.0, 16.0]]  # 40 − x2, 40 − x1
            seen.add("flipped")
    assert seen == {"kept", "flipped"}
    _, te = rcnn_eval_resize(image, target, out_size=(20, 100))
    assert te["orig_boxes"].tolist() == [[2.0, 3.0, 6.0, 8.0]]


def test_multi_scale_training_draws_one_scale_an_image():
    image = torch.zeros(3, 10, 20, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[2.0, 3.0, 6.0, 8.0]]), "labels": torch.tensor([4])}
    # value mode: one of the listed (short, max_side) pairs, uniformly; the ratio is kept
    value = RcnnResize(scales=[[20, 100], [30, 100], [40, 60]], mode="value")
    got = {}
    for seed in range(60):
        out, t = value(image, target, out_size=(999, 9999),  # the fixed scale is not used
                       generator=torch.Generator().manual_seed(seed))
        got[tuple(out.shape[1:])] = t["boxes"].tolist()
    # 40 / 10 would make the long side 80 > 60: capped, scale 3 → (30, 60), as (30, 100)
    assert got == {(20, 40): [[4.0, 6.0, 12.0, 16.0]], (30, 60): [[6.0, 9.0, 18.0, 24.0]]}
    # range mode: short ~ randint(4, 6), max ~ randint(100, 100), bounds included
    ranged = RcnnResize(scales=[[4, 100], [6, 100]], mode="range")
    sides = {ranged.scale(torch.Generator().manual_seed(seed)) for seed in range(40)}
    assert sides == {(4, 100), (5, 100), (6, 100)}
    # the same draws give the same scale; the flip of data_augmentation keeps the scales
    flipping = value.flipping()
    assert flipping.flip and flipping.scales == value.scales and flipping.mode == "value"
    aug = trick_plugins("rcnn", {"data_augmentation": {}}).transform(ranged)
    assert aug.flip and aug.scales == ((4, 100), (6, 100)) and aug.mode == "range"


def test_multi_scale_loader_trains_at_the_drawn_scales_and_evaluates_at_the_fixed_one():
    tr, ev = build_rcnn_loaders(Toy(), Toy(), batch_size=2, scale=(32, 100),
                                train_scales=[[24, 100], [40, 100], [48, 100]], **RUN)
    shorts = [int(min(hw)) for epoch in range(3) if not tr.set_epoch(epoch)
              for b in tr for hw in b["image_sizes"]]  # (Toy's sides are at most 1:2)
    assert set(shorts) == {24, 40, 48}
    assert {int(min(hw)) for b in ev for hw in b["image_sizes"]} == {32}


def test_train_scales_checked():
    assert check_train_scales(None, None) is None
    assert check_train_scales([[640, 1333], [800, 1333]], "range") == ((640, 1333), (800, 1333))
    for scales, mode, message in [
        ([[800, 1333], [640, 1333]], "range", r"range lo \[800, 1333\] > hi \[640, 1333\]"),
        ([[640, 1333]], "range", "takes two pairs"),
        ([[640, 1333]], "ranges", "data.train_scale_mode='ranges': must be one of value, range"),
        ([[1333, 640]], "value", "has max_side < short_side"),
        ([640, 1333], "value", "must be a list of \\[short_side, max_side\\] pairs"),
        ([], None, "must be a list"),
        (None, "range", "data.train_scale_mode='range' needs data.train_scales"),
    ]:
        with pytest.raises(AblateError, match=message):
            check_train_scales(scales, mode)


def test_collate_pads_to_a_multiple_of_32():
    a = torch.full((3, 20, 40), 7, dtype=torch.uint8)
    b = torch.full((3, 30, 10), 9, dtype=torch.uint8)
    t = {"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": torch.tensor([1]),
         "difficult": torch.tensor([False]), "image_id": 0, "orig_size": (20, 40)}
    batch = collate_padded([(a, t), (b, {**t, "image_id": 1})])
    assert batch["image"].shape == (2, 3, 32, 64)
    assert batch["image_sizes"].tolist() == [[20, 40], [30, 10]]
    assert batch["image"][0, :, :20, :40].eq(7).all() and batch["image"][0, :, 20:].eq(0).all()
    assert batch["image"][1, :, :30, :10].eq(9).all() and batch["image"][1, :, :, 10:].eq(0).all()


def test_loaders_normalise_and_zero_the_padding():
    train, test = build_rcnn_loaders(Toy(), Toy(), batch_size=2, scale=(20, 40), **RUN)
    batch = next(iter(train))
    assert batch["image"].dtype == torch.float32
    assert all(s % 32 == 0 for s in batch["image"].shape[-2:])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    for img, (h, w), i in zip(batch["image"], batch["image_sizes"].tolist(),
                              batch["image_id"]):
        pixel = torch.tensor(10.0 * (i + 1)).view(1, 1, 1)  # Toy image i is constant 10·(i+1)
        torch.testing.assert_close(img[:, :h, :w], ((pixel - mean) / std).expand(3, h, w))
        assert img[:, h:].eq(0).all() and img[:, :, w:].eq(0).all()
        assert min(h, w) == 20 or max(h, w) == 40
    sizes = {i: tuple(s) for b in test for i, s in zip(b["image_id"], b["image_sizes"].tolist())}
    assert sizes == {0: (20, 40), 1: (40, 20), 2: (20, 20), 3: (20, 31), 4: (40, 20),
                     5: (20, 31)}  # Toy sizes (10, 20), (16, 8), (12, 12), (9, 14), …
    gt = next(iter(test))["gt"][0]
    assert gt["boxes"].tolist() == [[0.0, 0.0, 5.0, 6.0]]  # original coordinates


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, fmnist_root) -> dict:
    cfg = compose(["model=faster_rcnn_tiny", "data=fashion_scenes",
                   f"data.cache_dir={tmp_path_factory.mktemp('scenes')}",
                   f"data.fmnist_root={fmnist_root}", "data.num_train=8", "data.num_test=4",
                   "data.num_workers=0"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert data.pop("name") == "fashion_scenes" and data["pipeline"] == "rcnn"
    assert (data["short_side"], data["max_side"]) == (128, 213)
    SOURCES["fashion_scenes"].check(**data)
    return data


def test_fashion_scenes_in_the_rcnn_mode(scenes):
    plugins = trick_plugins("rcnn", {"data_augmentation": {}, "mixup": {}}, epochs=2)
    train, test = SOURCES["fashion_scenes"].build(**scenes, batch_size=4, eval_batch_size=4,
                                                  plugins=plugins, **RUN)
    batch = next(iter(train))
    assert batch["image"].shape[0] == 4 and batch["image"].shape[-2] % 32 == 0
    for h, w in batch["image_sizes"].tolist():
        assert (min(h, w) == 128 and max(h, w) <= 213) or max(h, w) == 213
    assert batch["weights"][batch["labels"] >= 0].lt(1).any()  # mixup weights reach the batch
    b = next(iter(test))
    assert len(b["gt"]) == 4 and "image_sizes" in b
    with pytest.raises(AblateError, match="random_shapes"):
        SOURCES["fashion_scenes"].build(**scenes, batch_size=4, **RUN,
                                        plugins=trick_plugins("yolo", {"random_shapes": {}}))
    with pytest.raises(AblateError, match="short_side <= max_side"):
        SOURCES["fashion_scenes"].check(**{**scenes, "short_side": 300})
