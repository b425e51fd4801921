"""Detection data sources: configs compose, options are typed, check fails early, loaders take
the tricks' plug-ins."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ablate.config import compose
from ablate.data import DataSource
from ablate.errors import AblateError
from ablate.registry import DATASETS
from ablate.tricks.random_shapes import scaled_sizes
from tests.conftest import trick_plugins
from tests.data.test_coco import make_coco
from tests.data.test_voc import make_devkit

RUN = dict(rank=0, world_size=1, seed=0, device=torch.device("cpu"), channels_last=False)
SOURCES = {name: DATASETS.get(name) for name in ("voc", "coco", "fashion_scenes")}


def data_cfg(*overrides: str) -> dict:
    """The composed, resolved ``data`` node as keyword arguments (without ``name``)."""
    cfg = compose(list(overrides))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert data.pop("name") == overrides[0].split("=")[1]
    return data


@pytest.mark.parametrize("name, classes, size, sets", [
    ("voc", 20, 416, ([[2007, "trainval"], [2012, "trainval"]], [2007, "test"])),
    ("coco", 80, 416, ("train2017", "val2017")),
    ("fashion_scenes", 10, 160, ("train", "test"))])
def test_configs_compose(name, classes, size, sets, monkeypatch):
    monkeypatch.setenv("ABLATE_DATA", "/datasets")
    data = data_cfg(f"data={name}")
    assert data["num_classes"] == classes and data["in_chans"] == 3
    assert data["train_size"] == data["eval_size"] == size
    assert (data.get("train_sets", data.get("train_set")), data["test_set"]) == sets
    assert data["train_subset"] is None and data["test_subset"] is None
    assert isinstance(data["num_workers"], int)
    where = data.get("root", data.get("cache_dir"))
    assert where == f"/datasets/{'voc' if name == 'voc' else name}"
    text = (Path(__file__).parents[2] / "conf" / "data" / f"{name}.yaml").read_text()
    assert text.startswith("# ")


def test_sources_are_registered_with_typed_options():
    assert all(isinstance(s, DataSource) and s.tasks == ("yolo", "rcnn") for s in SOURCES.values())
    options = SOURCES["voc"].options()
    assert {"root", "train_sets", "keep_difficult", "train_size", "eval_size", "pipeline",
            "short_side", "decode"} <= set(options)
    # positional, another source's, or the run's own arguments
    assert not {"train", "test", "cache_dir", "batch_size", "seed", "plugins"} & set(options)
    data = data_cfg("data=voc", "data.root=/nowhere")
    with pytest.raises(AblateError, match=r"^data\.keep_dificult: unknown option \(did you mean "
                                          r"'keep_difficult'"):
        SOURCES["voc"].check(**data, keep_dificult=True)
    with pytest.raises(AblateError, match=r"^data\.cache_dir: unknown option"):
        SOURCES["voc"].build(**data, cache_dir="/tmp", batch_size=2)  # fashion_scenes' key
    with pytest.raises(AblateError, match=r"^data\.num_workers='4': must be an integer"):
        SOURCES["voc"].check(**{**data, "num_workers": "4"})
    with pytest.raises(AblateError, match=r"^data\.seed: unknown option$"):  # the run's own
        SOURCES["voc"].check(**data, seed=3)


# --- FashionScenes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes(tmp_path_factory, fmnist_root) -> dict:
    cache = tmp_path_factory.mktemp("scenes")
    data = data_cfg("data=fashion_scenes", f"data.cache_dir={cache}",
                    f"data.fmnist_root={fmnist_root}", "data.num_train=12", "data.num_test=6",
                    "data.num_workers=0")
    SOURCES["fashion_scenes"].check(**data)  # builds on first use
    assert len(list(cache.glob("fashion_scenes_v*/.complete"))) == 1
    return data


def _build(name: str, data: dict, batch_size: int = 4, **options):
    return SOURCES[name].build(**data, batch_size=batch_size, eval_batch_size=4,
                               **{**RUN, **options})


def test_fashion_scenes_plain_loaders(scenes):
    train, test = _build("fashion_scenes", scenes)
    assert len(train) == 3 and len(test) == 2
    batch = next(iter(train))
    assert batch["image"].shape == (4, 3, 160, 160) and batch["image"].dtype == torch.float32
    valid = batch["labels"] >= 0
    assert valid.any() and torch.all(batch["weights"][valid] == 1)
    seen = 0
    for b in test:
        assert b["image"].shape[-2:] == (160, 160) and len(b["gt"]) == len(b["image_id"])
        for gt, (h, w) in zip(b["gt"], b["orig_size"].tolist()):
            assert 96 <= h <= 192 and 96 <= w <= 192
            assert gt["boxes"].shape[1] == 4 and len(gt["labels"]) == len(gt["difficult"])
        seen += len(b["gt"])
    assert seen == 6


def test_fashion_scenes_augment_mixup_random_shapes(scenes):
    tricks = {"data_augmentation": {}, "mixup": {"alpha": 1.5, "beta": 1.5, "off_last_epochs": 1},
              "random_shapes": {"every": 1}}
    train, _ = _build("fashion_scenes", scenes, batch_size=2,
                      plugins=trick_plugins("yolo", tricks, epochs=2))
    expected = scaled_sizes(416, 160)
    assert expected == (128, 160, 192, 224)
    sizes, weights = set(), {}
    for epoch in (0, 1):
        train.set_epoch(epoch)
        w = []
        for b in train:
            sizes.add(b["image"].shape[-1])
            assert b["image"].shape[:2] == (2, 3) and b["image"].shape[-1] == b["image"].shape[-2]
            w.append(b["weights"][b["labels"] >= 0])
        weights[epoch] = torch.cat(w)
    assert sizes <= set(expected) and len(sizes) > 1
    assert (weights[0] < 1).any()  # mixup weighs boxes by λ, 1 − λ
    assert torch.all(weights[1] == 1)  # ... and is off for the last epoch


def test_random_shapes_explicit_sizes_and_errors(scenes):
    plugins = trick_plugins("yolo", {"random_shapes": {"sizes": [96], "every": 2}})
    train, _ = _build("fashion_scenes", scenes, plugins=plugins)
    assert {b["image"].shape[-1] for b in train} == {96}
    with pytest.raises(AblateError, match="random_shapes"):
        trick_plugins("yolo", {"random_shapes": {"sizez": [96]}})
    with pytest.raises(AblateError, match="mixup"):
        trick_plugins("yolo", {"mixup": {"alpah": 1.0}})


def test_subsets_take_first_images(scenes):
    train, test = _build("fashion_scenes", {**scenes, "train_subset": 4, "test_subset": 3},
                         batch_size=2)
    assert len(train) == 2 and sum(len(b["gt"]) for b in test) == 3
    ids = [i for b in test for i in b["image_id"]]
    assert ids == ["000013", "000014", "000015"]


def test_fashion_scenes_check_without_fmnist(tmp_path):
    with pytest.raises(AblateError, match="Fashion-MNIST"):
        SOURCES["fashion_scenes"].check(cache_dir=str(tmp_path / "c"), num_train=2,
                                        num_test=2, fmnist_root=str(tmp_path / "nothing"))


# --- VOC -------------------------------------------------------------------------------------

def test_check_voc_missing_root_names_path(tmp_path):
    data = data_cfg("data=voc", f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(AblateError, match="nowhere"):
        SOURCES["voc"].check(**data)


def test_check_voc_missing_image_set_names_file(tmp_path):
    make_devkit(tmp_path)
    (tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(AblateError, match="test.txt"):
        SOURCES["voc"].check(**data_cfg("data=voc", f"data.root={tmp_path}"))


def test_voc_loaders_on_a_tiny_devkit(tmp_path):
    make_devkit(tmp_path)
    data = data_cfg("data=voc", f"data.root={tmp_path}", "data.num_workers=0",
                    "data.train_size=64", "data.eval_size=96")
    SOURCES["voc"].check(**data)
    train, test = _build("voc", data, batch_size=3)
    assert len(train) == 1 and train.dataset.source.keep_difficult
    assert len(train.dataset.source) == 3  # 07 trainval (2) + 12 trainval (1)
    batch = next(iter(train))
    assert batch["image"].shape == (3, 3, 64, 64)
    assert int((batch["labels"] >= 0).sum()) == 3  # chair, difficult dog, car
    (b,) = list(test)
    assert b["image"].shape == (1, 3, 96, 96) and b["image_id"] == ["000001"]
    assert b["gt"][0]["boxes"].tolist() == [[2.0, 3.0, 10.0, 12.0]]  # original, 0-based xyxy

    no_diff, _ = _build("voc", {**data, "keep_difficult": False}, batch_size=3)
    assert int((next(iter(no_diff))["labels"] >= 0).sum()) == 2
    with pytest.raises(AblateError, match="num_classes"):
        _build("voc", {**data, "num_classes": 10}, batch_size=3)


# --- COCO ------------------------------------------------------------------------------------

def test_coco_check_and_loaders(tmp_path):
    data = data_cfg("data=coco", f"data.root={tmp_path}", "data.num_workers=0",
                    "data.num_classes=3", "data.train_size=64", "data.eval_size=64")
    with pytest.raises(AblateError, match="instances_train2017.json"):
        SOURCES["coco"].check(**{**data, "root": str(tmp_path)})
    make_coco(tmp_path, "val2017")
    shutil.copytree(tmp_path / "val2017", tmp_path / "train2017")
    shutil.copy(tmp_path / "annotations" / "instances_val2017.json",
                tmp_path / "annotations" / "instances_train2017.json")
    SOURCES["coco"].check(**data)
    train, test = _build("coco", data, batch_size=2)
    assert len(train.dataset.source) == 2  # the crowd-only and the box-less image are skipped
    gts = {i: g for b in test for i, g in zip(b["image_id"], b["gt"])}
    assert set(gts) == {42, 9, 100, 7}  # evaluation scores every image
    assert gts[7]["difficult"].tolist() == [True]  # crowd regions kept, ignored
    assert len(next(iter(train))["image"]) == 2


def test_coco_several_eval_sizes_give_one_loader_each(tmp_path):
    """Det-T5: one set of weights scored at 320/416/608 — here 64, 32 and 96 on tiny images."""
    make_coco(tmp_path, "val2017")
    shutil.copytree(tmp_path / "val2017", tmp_path / "train2017")
    shutil.copy(tmp_path / "annotations" / "instances_val2017.json",
                tmp_path / "annotations" / "instances_train2017.json")
    data = data_cfg("data=coco", f"data.root={tmp_path}", "data.num_workers=0",
                    "data.num_classes=3", "data.train_size=64", "data.eval_size=[64,32,96]")
    SOURCES["coco"].check(**data)
    _, test = _build("coco", data, batch_size=2)
    assert list(test) == ["64", "32", "96"]
    for size, loader in test.items():
        shapes = {tuple(b["image"].shape[2:]) for b in loader}
        assert shapes == {(int(size), int(size))}
        assert sorted(i for b in loader for i in b["image_id"]) == [7, 9, 42, 100]
    for bad in ("[64,64]", "[64,50]", "[]"):
        with pytest.raises(AblateError, match="eval_size"):
            SOURCES["coco"].check(**{**data, "eval_size": data_cfg(
                "data=coco", f"data.eval_size={bad}")["eval_size"]})
