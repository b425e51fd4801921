"""Mixup dataset (incl. the per-epoch switch in DataLoader workers), collate, random shapes,
sharding and one run of the whole YOLO train loader over FashionScenes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ablate.data.pipelines.detection import (DetectionLoader, DetectionTrainDataset,
                                          build_detection_loaders, collate_detection)
from ablate.data.loading import DataPlugins
from ablate.tricks.mixup import MixupDataset
from ablate.tricks.random_shapes import RandomShapes, scaled_sizes
from ablate.data.pipelines.transforms import YoloAugment, plain_resize
from ablate.data.datasets.fashion_scenes import fashion_scenes_dataset, fashion_scenes_root
from ablate.errors import AblateError

SIZES = [(10, 20), (16, 8), (12, 12), (9, 14), (20, 10), (11, 17)]


class Toy(Dataset):
    """Image i: constant 10·(i+1) of size SIZES[i]; one box [i, i, i+5, i+6] of label i."""

    def __init__(self, n: int = len(SIZES)) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        h, w = SIZES[i % len(SIZES)]
        image = torch.full((3, h, w), 10 * (i + 1), dtype=torch.uint8)
        target = {"boxes": torch.tensor([[i, i, i + 5.0, i + 6.0]]),
                  "labels": torch.tensor([i]), "difficult": torch.tensor([i % 2 == 1]),
                  "image_id": i, "orig_size": (h, w)}
        return image, target


def test_mixup_canvas_pixels_weights_and_boxes():
    ds = MixupDataset(Toy(2), epochs=10, off_last_epochs=2, seed=3)
    image, t = ds[0]  # its partner can only be item 1
    lam = t["mix_lambda"]
    assert 0 < lam < 1 and t["mixed_with"] == 1
    assert image.shape == (3, 16, 20) and t["orig_size"] == (16, 20)
    assert image[0, 0, 0] == round(lam * 10 + (1 - lam) * 20)  # overlap
    assert image[1, 0, 15] == round(lam * 10)  # item 0 alone (rows < 10, cols >= 8)
    assert image[2, 12, 0] == round((1 - lam) * 20)  # item 1 alone
    assert image[0, 12, 15] == 0  # zero canvas
    assert torch.equal(t["boxes"], torch.tensor([[0.0, 0, 5, 6], [1, 1, 6, 7]]))
    assert t["labels"].tolist() == [0, 1] and t["difficult"].tolist() == [False, True]
    torch.testing.assert_close(t["weights"], torch.tensor([lam, 1 - lam], dtype=torch.float32))


def test_mixup_even_mode_is_half_and_unweighted():
    image, t = MixupDataset(Toy(2), mode="even", epochs=3, off_last_epochs=0)[1]
    assert t["mix_lambda"] == 0.5 and t["weights"].tolist() == [1.0, 1.0]
    assert image[0, 0, 0] == 15  # 0.5·20 + 0.5·10


def test_mixup_is_deterministic_per_seed_epoch_and_index():
    a = MixupDataset(Toy(), epochs=10, seed=7, off_last_epochs=0)
    b = MixupDataset(Toy(), epochs=10, seed=7, off_last_epochs=0)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            (ia, ta), (ib, tb) = a[i], b[i]
            assert torch.equal(ia, ib) and ta["mix_lambda"] == tb["mix_lambda"]
            assert ta["mixed_with"] == tb["mixed_with"] != i
    lams = set()
    for epoch in range(4):
        a.set_epoch(epoch)
        lams.add(a[0][1]["mix_lambda"])
    assert len(lams) == 4


def test_mixup_off_for_the_last_epochs():
    ds = MixupDataset(Toy(), epochs=5, off_last_epochs=2)
    assert [ds.active(e) for e in range(5)] == [True, True, True, False, False]
    ds.set_epoch(3)
    image, t = ds[4]
    base_image, base_t = Toy()[4]
    assert torch.equal(image, base_image) and torch.equal(t["boxes"], base_t["boxes"])
    assert t["weights"].tolist() == [1.0] and "mix_lambda" not in t
    with pytest.raises(AblateError):
        MixupDataset(Toy(), mode="half", epochs=5)
    with pytest.raises(AblateError):
        MixupDataset(Toy(1), epochs=5)


def _mixed_flags(loader) -> list[bool]:
    return ["mix_lambda" in t for batch in loader for _, t in batch]


@pytest.mark.parametrize("context,persistent", [("fork", True), ("fork", False),
                                                ("spawn", True)])
def test_epoch_switch_reaches_dataloader_workers(context, persistent):
    # Persistent workers never see a plain attribute set after they started (GluonCV's bug).
    ds = MixupDataset(Toy(), epochs=6, off_last_epochs=2)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=list,
                        persistent_workers=persistent, multiprocessing_context=context)
    ds.set_epoch(0)
    assert _mixed_flags(loader) == [True] * 6
    ds.set_epoch(4)  # the workers (kept alive when persistent) must see this
    assert _mixed_flags(loader) == [False] * 6
    ds.set_epoch(1)
    assert _mixed_flags(loader) == [True] * 6


def test_train_dataset_samples_do_not_depend_on_workers():
    ds = DetectionTrainDataset(MixupDataset(Toy(), epochs=4, off_last_epochs=1), plain_resize, 16)
    ds.set_epoch(2)
    main = [ds[i] for i in range(len(ds))]
    got = [s for batch in DataLoader(ds, batch_size=3, num_workers=2, collate_fn=list)
           for s in batch]
    for (ia, ta), (ib, tb) in zip(main, got):
        assert torch.equal(ia, ib) and torch.equal(ta["weights"], tb["weights"])


def test_collate_pads_exactly():
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    t1 = {"boxes": torch.tensor([[1.0, 2, 3, 4]]), "labels": torch.tensor([5]),
          "difficult": torch.tensor([True]), "weights": torch.tensor([0.3]), "image_id": "a",
          "orig_size": (40, 50), "orig_boxes": torch.tensor([[10.0, 20, 30, 40]])}
    t2 = {"boxes": torch.tensor([[0.0, 0, 1, 1], [2, 2, 4, 4]]), "labels": torch.tensor([1, 2]),
          "difficult": torch.tensor([False, False]), "image_id": "b", "orig_size": (8, 9)}
    batch = collate_detection([(image, t1), (image + 1, t2)], with_gt=True)
    assert batch["image"].shape == (2, 3, 4, 4) and batch["image"].dtype == torch.uint8
    assert torch.equal(batch["boxes"], torch.tensor([[[1.0, 2, 3, 4], [0, 0, 0, 0]],
                                                     [[0, 0, 1, 1], [2, 2, 4, 4]]]))
    assert batch["labels"].tolist() == [[5, -1], [1, 2]]
    assert batch["weights"].tolist() == [[pytest.approx(0.3), 0.0], [1.0, 1.0]]
    assert batch["difficult"].tolist() == [[True, False], [False, False]]
    assert batch["image_id"] == ["a", "b"] and batch["orig_size"].tolist() == [[40, 50], [8, 9]]
    assert batch["gt"][0]["boxes"].tolist() == [[10, 20, 30, 40]]
    assert batch["gt"][1]["labels"].tolist() == [1, 2]
    empty = {**t2, "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "difficult": torch.zeros(0, dtype=torch.bool)}
    assert collate_detection([(image, empty)])["labels"].tolist() == [[-1]]
    with pytest.raises(AblateError):
        collate_detection([(image, t1), (torch.zeros(3, 5, 4, dtype=torch.uint8), t2)])


def test_random_shapes_every_ten_iterations():
    rs = RandomShapes(every=10, seed=1)
    sizes = [rs.size_at(t) for t in range(200)]
    assert set(sizes) <= set(range(320, 609, 32)) and len(set(sizes)) > 3
    for t in range(200):
        if t % 10:
            assert sizes[t] == sizes[t - 1]
    assert sizes == [RandomShapes(every=10, seed=1).size_at(t) for t in range(200)]


def test_a_batch_side_resizes_each_image_once_with_the_same_draws(tmp_path):
    """Random shapes build the batch at the drawn side from the source image (one resize, as
    GluonCV's RandomTransformDataLoader), with the draws the item makes at any side."""
    root = fashion_scenes_root(tmp_path, num_train=16, num_test=4)
    source = fashion_scenes_dataset(root, "train")
    sides = {0: 96, 1: 160, 2: 96, 3: 128}
    train, _ = build_detection_loaders(
        source, None, batch_size=4, train_size=128,
        plugins=DataPlugins(batch_side=[lambda side, it: sides[it % 4] if side == 128 else 0]))
    plain = DetectionTrainDataset(source, plain_resize, 128)
    train.set_epoch(0)
    order = list(train.sampler)
    for b, batch in enumerate(train):
        s = sides[b]
        assert batch["image"].shape == (4, 3, s, s)
        for j, i in enumerate(order[4 * b:4 * b + 4]):
            image, target = plain[(i, s)]  # the source image resized to s directly
            want = (image.float() - train.mean[0]) / train.std[0]
            torch.testing.assert_close(batch["image"][j], want, rtol=0, atol=1e-5)
            n = len(target["boxes"])
            assert torch.equal(batch["boxes"][j, :n], target["boxes"])
    aug = DetectionTrainDataset(source, YoloAugment(), 128)
    (_, t416), (_, t96) = aug[(3, 416)], aug[(3, 96)]  # the same crop, flip and mode
    torch.testing.assert_close(t96["boxes"], t416["boxes"] * (96 / 416), rtol=1e-5, atol=1e-4)


def test_scaled_sizes():
    assert scaled_sizes(416, 416) == tuple(range(320, 609, 32))
    assert scaled_sizes(416, 160) == (128, 160, 192, 224)
    tiny = scaled_sizes(416, 64)
    assert all(s % 8 == 0 for s in tiny) and len(tiny) >= 5 and min(tiny) == 48
    assert scaled_sizes(416, 160, multiple=8) == (120, 136, 144, 160, 176, 184, 200, 208, 224,
                                                  232)


def test_sharding_train_pads_and_eval_covers_once():
    ds = DetectionTrainDataset(Toy(), plain_resize, 8)
    ranks = [DetectionLoader(ds, 1, train=True, rank=r, world_size=4, seed=3) for r in range(4)]
    ids = [[b["image_id"][0] for b in loader] for loader in ranks]
    assert [len(x) for x in ids] == [2] * 4 and set(sum(ids, [])) == set(range(6))
    for loader in ranks:
        loader.set_epoch(1)  # reshuffled with seed + epoch, the same permutation on all ranks
    ids1 = [[b["image_id"][0] for b in loader] for loader in ranks]
    assert ids1 != ids and set(sum(ids1, [])) == set(range(6))
    evals = [DetectionLoader(ds, 4, train=False, rank=r, world_size=4) for r in range(4)]
    seen = sorted(i for loader in evals for b in loader for i in b["image_id"])
    assert seen == list(range(6))


def test_fashion_scenes_train_loader_with_workers_mixup_and_random_shapes(tmp_path):
    root = fashion_scenes_root(tmp_path, num_train=40, num_test=10)
    train_ds = fashion_scenes_dataset(root, "train")
    test_ds = fashion_scenes_dataset(root, "test")
    shapes = RandomShapes(scaled_sizes(416, 128), every=2, seed=0)
    train, evaluation = build_detection_loaders(
        train_ds, test_ds, batch_size=8, eval_batch_size=4, train_size=128, eval_size=128,
        plugins=DataPlugins(wrap_dataset=[lambda d: MixupDataset(d, off_last_epochs=1, epochs=3)],
                            batch_side=[lambda side, it: shapes.size_at(it)]), num_workers=2)
    assert len(train) == 5 and len(evaluation) == 3
    for epoch in (0, 2):
        train.set_epoch(epoch)
        n, mixed = 0, False
        for i, batch in enumerate(train):
            s = shapes.size_at(epoch * len(train) + i)
            assert batch["image"].shape == (8, 3, s, s) and batch["image"].dtype == torch.float32
            m = batch["boxes"].shape[1]
            assert batch["labels"].shape == (8, m) and batch["weights"].shape == (8, m)
            valid = batch["labels"] >= 0
            assert (batch["weights"][~valid] == 0).all() and (batch["weights"][valid] > 0).all()
            assert (batch["boxes"] >= 0).all() and (batch["boxes"] <= s + 1e-3).all()
            mixed |= bool((batch["weights"][valid] < 1).any())
            n += len(batch["image"])
        assert n == 40 and mixed == (epoch == 0)  # mixup off in the last epoch
    ids = []
    for batch in evaluation:
        assert batch["image"].shape[1:] == (3, 128, 128)
        for image_id, gt, size in zip(batch["image_id"], batch["gt"], batch["orig_size"]):
            k = test_ds.ids.index(image_id)
            target = test_ds.get_target(k)
            assert gt["boxes"].tolist() == target["boxes"].tolist()
            assert tuple(size.tolist()) == test_ds[k][1]["orig_size"]
            ids.append(image_id)
    assert sorted(ids) == sorted(test_ds.ids)
