"""FashionScenes: determinism, no train/test leakage, VOC == COCO views, tight boxes."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data.datasets import fashion_mnist
from ablate.data.datasets.fashion_scenes import (CLASSES, build_fashion_scenes, fashion_scenes_dataset,
                                        fashion_scenes_root, render_scene)
from ablate.data.datasets.voc import parse_voc_xml
from ablate.errors import AblateError

NUM_TRAIN, NUM_TEST = 200, 60


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_fashion_scenes(tmp_path_factory.mktemp("fs") / "scenes",
                                num_train=NUM_TRAIN, num_test=NUM_TEST)


@pytest.fixture(scope="module")
def pools() -> dict:
    return {s: tuple(t.numpy() for t in fashion_mnist.load_fashion_mnist(split=s))
            for s in ("train", "test")}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def _coco(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_same_seed_gives_identical_files(tmp_path):
    a = build_fashion_scenes(tmp_path / "a", num_train=12, num_test=6, seed=3)
    b = build_fashion_scenes(tmp_path / "b", num_train=12, num_test=6, seed=3, workers=1)
    ha, hb = _hashes(a), _hashes(b)
    assert len(ha) == 3 * 18 + 2 + 3 + 1  # jpg+xml+link per scene, 2 json, 3 lists, marker
    assert ha == hb
    c = build_fashion_scenes(tmp_path / "c", num_train=12, num_test=6, seed=4)
    jpg = "VOCdevkit/VOC2007/JPEGImages/000001.jpg"
    assert _hashes(c)[jpg] != ha[jpg]


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_no_leakage_between_splits(tmp_path):
    # Fake Fashion-MNIST whose train items are classes 0-4 and test items classes 5-9: any
    # test item in a train scene (or the reverse) would show up as a foreign class.
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for split, stem, n, lo in (("train", "train", 300, 0), ("test", "t10k", 100, 5)):
        images = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            x0, y0 = rng.integers(2, 10, 2)
            images[i, y0:y0 + 14, x0:x0 + 12] = 220
        _write_idx(root / f"{stem}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{stem}-labels-idx1-ubyte.gz",
                   rng.integers(lo, lo + 5, n).astype(np.uint8))
    out = build_fashion_scenes(tmp_path / "fs", num_train=40, num_test=20, fmnist_root=root)
    for split, allowed in (("train", set(range(5))), ("test", set(range(5, 10)))):
        ds = fashion_scenes_dataset(out, split, "voc")
        labels = {int(l) for i in range(len(ds)) for l in ds.get_target(i)["labels"]}
        assert labels and labels <= allowed
        cats = {a["category_id"] - 1 for a in _coco(out, split)["annotations"]}
        assert cats and cats <= allowed


def test_recorded_sources_match_their_split(built, pools):
    seen = {}
    for split in ("train", "test"):
        coco = _coco(built, split)
        assert {im["fmnist_split"] for im in coco["images"]} == {split}
        _, labels = pools[split]
        for a in coco["annotations"]:
            assert labels[a["fmnist_index"]] == a["category_id"] - 1
        seen[split] = {im["id"] for im in coco["images"]}
    assert seen["train"] == set(range(1, NUM_TRAIN + 1))
    assert seen["test"] == set(range(NUM_TRAIN + 1, NUM_TRAIN + NUM_TEST + 1))
    main = built / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    assert main.joinpath("trainval.txt").read_text() == main.joinpath("train.txt").read_text()
    assert main.joinpath("test.txt").read_text().split()[0] == f"{NUM_TRAIN + 1:06d}"


def test_voc_and_coco_views_agree(built):
    for split in ("train", "test"):
        voc = fashion_scenes_dataset(built, split, "voc")
        coco = fashion_scenes_dataset(built, split, "coco")
        assert voc.class_names == coco.class_names == CLASSES
        assert [int(i) for i in voc.ids] == coco.ids
        for i in range(len(voc)):
            tv, tc = voc.get_target(i), coco.get_target(i)
            assert torch.equal(tv["boxes"], tc["boxes"])
            assert torch.equal(tv["labels"], tc["labels"])
            assert torch.equal(tv["difficult"], tc["difficult"])
            assert tv["orig_size"] == tc["orig_size"]
            assert os.path.samefile(voc.image_path(i), coco.image_path(i))
        for i in (0, len(voc) - 1):
            (iv, tv), (ic, tc) = voc[i], coco[i]
            assert torch.equal(iv, ic) and tv["orig_size"] == tuple(iv.shape[1:])


def test_boxes_are_tight_and_match_the_render(built, pools):
    voc = fashion_scenes_dataset(built, "train", "voc")
    for i in range(40):
        scene = render_scene(*pools["train"], seed=0, split="train", index=i,
                             with_background=True)
        objects, owner = scene["objects"], scene["owner"]
        target = voc.get_target(i)
        assert target["boxes"].tolist() == [list(o["box"]) for o in objects]
        assert target["labels"].tolist() == [o["label"] for o in objects]
        assert target["difficult"].tolist() == [o["difficult"] for o in objects]
        diff = np.abs(scene["image"].astype(int) - scene["background"].astype(int)).max(-1)
        for o in objects:
            ys, xs = np.nonzero(owner == o["item"])
            # Tight: the visible item pixels span exactly the box (they touch all four edges).
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == o["box"]
            assert len(xs) == o["area"]
            # The labelled pixels really differ from the background.
            assert diff[ys, xs].mean() > 10 and (diff[ys, xs] > 10).mean() > 0.5
        decoded = voc[i][0].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(decoded - scene["image"]).mean() < 3.5  # JPEG q95 of the render


def test_scene_statistics(built, pools):
    marker = json.loads((built / ".complete").read_text())
    difficult = 0
    for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST)):
        voc = fashion_scenes_dataset(built, split, "voc")
        assert len(voc) == n
        counts = []
        for i in range(n):
            h, w = voc.get_image_size(i)
            assert 96 <= h <= 192 and 96 <= w <= 192
            t = voc.get_target(i)
            counts.append(len(t["labels"]))
            difficult += int(t["difficult"].sum())
            b = t["boxes"]
            assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all() and (b[:, :2] >= 0).all()
        assert 1 <= min(counts) and max(counts) <= 6 and len(set(counts)) >= 4
        assert marker["stats"][split]["objects"] == sum(counts)
    assert difficult > 0 and difficult == sum(s["difficult"] for s in marker["stats"].values())
    sizes = set()
    for i in range(60):  # the difficulty rule, checked on the renders
        scene = render_scene(*pools["test"], seed=0, split="test", index=i)
        sizes.add(scene["image"].shape[:2])
        for o in scene["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert o["visible"] >= 0.1
            assert o["difficult"] == (o["visible"] < 0.5 or min(x1 - x0, y1 - y0) < 12)
    assert len(sizes) > 30  # aspect ratios vary


def test_xml_is_devkit_format(built):
    xml = built / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml"
    text = xml.read_text()
    for tag in ("<folder>VOC2007</folder>", "<filename>000001.jpg</filename>", "<depth>3</depth>",
                "<pose>Unspecified</pose>", "<truncated>0</truncated>", "<difficult>"):
        assert tag in text
    ann = parse_voc_xml(xml, CLASSES)
    coco = _coco(built, "train")
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    # devkit xmin = COCO x + 1, xmax = x + w (1-based inclusive vs 0-based continuous)
    expect = [[x + 1, y + 1, x + w, y + h] for x, y, w, h in (a["bbox"] for a in first)]
    np.testing.assert_array_equal(ann["boxes"], expect)
    assert ann["boxes"].astype(int).tolist() == ann["boxes"].tolist()


def test_marker_reuse_mismatch_and_overwrite(tmp_path):
    out = build_fashion_scenes(tmp_path / "m", num_train=6, num_test=3)
    jpg = out / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg"
    stamp = jpg.stat().st_mtime_ns
    assert build_fashion_scenes(out, num_train=6, num_test=3) == out
    assert jpg.stat().st_mtime_ns == stamp  # reused, not rebuilt
    with pytest.raises(AblateError, match="overwrite=True"):
        build_fashion_scenes(out, num_train=7, num_test=3)
    build_fashion_scenes(out, num_train=7, num_test=3, overwrite=True)
    assert json.loads((out / ".complete").read_text())["params"]["num_train"] == 7
    assert len(fashion_scenes_dataset(out, "train", "coco")) == 7
    # An interrupted build (no marker) is redone from scratch, leftovers removed.
    (out / ".complete").unlink()
    junk = out / "VOCdevkit" / "VOC2007" / "JPEGImages" / "999999.jpg"
    junk.write_bytes(b"partial")
    build_fashion_scenes(out, num_train=5, num_test=3)
    assert not junk.exists() and len(fashion_scenes_dataset(out, "train")) == 5


def test_root_builds_once_in_cache(tmp_path):
    root = fashion_scenes_root(tmp_path, num_train=4, num_test=2, seed=1)
    assert root.parent == tmp_path and (root / ".complete").is_file()
    assert fashion_scenes_root(tmp_path, num_train=4, num_test=2, seed=1) == root
    other = fashion_scenes_root(tmp_path, num_train=4, num_test=2, seed=2)
    assert other != root and len(fashion_scenes_dataset(other, "test", "coco")) == 2


@pytest.mark.parametrize("kwargs", [{"num_train": 0}, {"min_size": 100, "max_size": 90},
                                    {"min_size": 8}])
def test_invalid_parameters(tmp_path, kwargs):
    with pytest.raises(AblateError):
        build_fashion_scenes(tmp_path, **kwargs)
    with pytest.raises(AblateError, match="no split"):
        fashion_scenes_dataset(tmp_path, "val")
