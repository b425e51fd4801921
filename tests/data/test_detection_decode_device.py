"""``decode: device`` for the detection loaders: the workers read the files and draw, the loader
decodes, mixes and transforms on its device; on CPU the batches equal the worker path's bit for
bit (YOLO with augmentation, mixup and random shapes; Faster R-CNN with flip, mixup and
padding; evaluation batches with their ground truth)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, Subset
from torchvision.io import encode_jpeg, encode_png, write_file

from ablate.data.files import load_rgb
from ablate.data.pipelines.detection import (DetectionLoader, DetectionTrainDataset, EncodedItem,
                                          build_detection_loaders)
from ablate.data.pipelines.rcnn import build_rcnn_loaders
from ablate.data.sources import check_fashion_scenes
from ablate.data.pipelines.transforms import YoloAugment, plain_resize, yolo_augment
from ablate.data.datasets.fashion_scenes import fashion_scenes_dataset, fashion_scenes_root
from ablate.data.targets import make_target
from ablate.errors import AblateError
from ablate.tricks.mixup import MixupDataset
from tests.conftest import trick_plugins

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return fashion_scenes_root(tmp_path_factory.mktemp("scenes"), num_train=24, num_test=6)


def _batches(loader, epochs) -> list[dict]:
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += list(loader)
    return out


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], torch.Tensor):
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k
            elif k == "gt":
                for g, h in zip(x[k], y[k]):
                    assert all((g[c] == h[c]).all() for c in ("boxes", "labels", "difficult"))
            else:
                assert x[k] == y[k], k


def test_yolo_batches_equal_the_worker_path(scenes):
    train = Subset(fashion_scenes_dataset(scenes, "train"), range(20))  # train_subset's wrapper
    test = fashion_scenes_dataset(scenes, "test")
    runs = {}
    for decode, workers in (("worker", 0), ("device", 2)):
        plugins = trick_plugins(
            "yolo", {"data_augmentation": {}, "mixup": {"off_last_epochs": 1},
                     "random_shapes": {"sizes": [96, 128], "every": 1}}, epochs=2)
        tr, ev = build_detection_loaders(
            train, test, batch_size=4, eval_batch_size=4, train_size=128, eval_size=128,
            plugins=plugins, num_workers=workers, decode=decode)
        runs[decode] = _batches(tr, (0, 1)), _batches(ev, (0,))
    _assert_same(runs["worker"][0], runs["device"][0])
    _assert_same(runs["worker"][1], runs["device"][1])
    weights = torch.cat([b["weights"][b["labels"] >= 0] for b in runs["device"][0][:5]])
    assert (weights < 1).any()  # epoch 0 mixes: the mixup path ran
    sizes = {b["image"].shape[-1] for b in runs["device"][0]}
    assert sizes == {96, 128}


@pytest.mark.parametrize("train_scales", [None, [[84, 160], [116, 160]]])
def test_rcnn_batches_equal_the_worker_path(scenes, train_scales):
    train, test = (fashion_scenes_dataset(scenes, s) for s in ("train", "test"))
    runs = {}
    for decode in ("worker", "device"):
        plugins = trick_plugins("rcnn", {"data_augmentation": {}, "mixup": {}})
        tr, ev = build_rcnn_loaders(train, test, batch_size=3, scale=(100, 160),
                                    plugins=plugins, decode=decode, train_scales=train_scales,
                                    train_scale_mode="range" if train_scales else None)
        runs[decode] = _batches(tr, (0,)), _batches(ev, (0,))
    _assert_same(runs["worker"][0], runs["device"][0])
    _assert_same(runs["worker"][1], runs["device"][1])
    batch = runs["device"][0][0]
    assert batch["image"].shape[-2] % 32 == 0 and batch["image"].shape[-1] % 32 == 0
    shorts = {int(min(hw)) for hw in batch["image_sizes"]}
    if train_scales is None:
        assert 100 in shorts  # a shorter side resized to 100
    else:  # randint(84, 116) per image (or less where the longer side caps at 160)
        assert all(s <= 116 for s in shorts) and shorts != {100}
    assert {int(min(hw)) for b in runs["device"][1] for hw in b["image_sizes"]} <= set(
        range(50, 101))  # evaluation at the fixed scale (short 100, long at most 160)


class Files(Dataset):
    """Image files of any format through ``load_rgb``, one box each: the device path's fallback."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def image_path(self, i: int) -> Path:
        return self.paths[i]

    def get_target(self, i: int) -> dict:
        return make_target([[2, 3, 20, 18]], [i], [False], i, (0, 0))

    def __getitem__(self, i: int):
        image = load_rgb(self.paths[i])
        return image, {**self.get_target(i), "orig_size": tuple(image.shape[-2:])}


def test_files_the_device_decoder_cannot_take_come_as_pixels(tmp_path):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8, generator=g)
    paths = [tmp_path / "a.jpg", tmp_path / "b.png", tmp_path / "c.jpg"]
    write_file(str(paths[0]), encode_jpeg(image, quality=90))
    write_file(str(paths[1]), encode_png(image))
    write_file(str(paths[2]), encode_jpeg(image[:1], quality=90))  # grey
    ds = DetectionTrainDataset(MixupDataset(Files(paths), epochs=1, off_last_epochs=0),
                               YoloAugment(), 32, decode="device")
    items = [ds[i][0] for i in range(3)]
    assert all(isinstance(it, EncodedItem) for it in items)
    first = [it.data[0] for it in items]
    assert first[0].dim() == 1 and torch.equal(first[0], torch.frombuffer(
        bytearray(paths[0].read_bytes()), dtype=torch.uint8))
    assert first[1].shape == (3, 30, 40) and first[2].shape == (3, 30, 40)  # decoded in the worker
    runs = {}
    for decode in ("worker", "device"):
        ds = DetectionTrainDataset(MixupDataset(Files(paths), epochs=1, off_last_epochs=0),
                                   YoloAugment(), 32, decode=decode)
        runs[decode] = _batches(DetectionLoader(ds, 3, train=True), (0,))
    _assert_same(runs["worker"], runs["device"])


def test_decode_device_input_errors(scenes):
    train = fashion_scenes_dataset(scenes, "train")
    with pytest.raises(AblateError, match="data.decode must be one of worker, device; got 'gpu'"):
        DetectionTrainDataset(train, plain_resize, 32, decode="gpu")
    with pytest.raises(AblateError, match="needs a SampleTransform"):
        DetectionTrainDataset(train, yolo_augment, 32, decode="device")

    class InMemory(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise AssertionError("not read")

    with pytest.raises(AblateError, match="InMemory has no image_path/get_target"):
        DetectionTrainDataset(InMemory(), plain_resize, 32, decode="device")
    with pytest.raises(AblateError, match="detection: data.decode must be one of"):
        check_fashion_scenes(cache_dir=str(scenes.parent), num_train=24, num_test=6,
                             decode="cuda")
