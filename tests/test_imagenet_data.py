"""ImageNet ImageFolder source: layout checks, class indexing, exact eval pixels, PCA lighting,
sharding, per-item determinism across worker counts, and one run through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ablate.config import compose
from ablate.data.datasets import imagenet
from ablate.data.datasets.imagenet import find_classes
from ablate.data.encoded import jpeg_size, unpack
from ablate.data.pipelines import classification
from ablate.data.pipelines.classification import (TrainTransform, collate_encoded, decode_rgb,
                                                  jitter_batch, lighting_offset, normalize)
from ablate.data.sources import check_imagenet
from ablate.errors import AblateError
from ablate.registry import DATASETS

CLASSES = ("n01440764", "n01443537", "n01484850")
COLOURS = ((220, 40, 30), (30, 200, 60), (40, 50, 210))
SIZES = ((40, 56), (64, 48), (36, 36), (50, 70))  # (h, w)
SOLID = (10, 128, 250)  # val/n01440764/ILSVRC2012_val_00000001.JPEG, 50×70, one colour
MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])
RUN = dict(rank=0, world_size=1, seed=0, device=torch.device("cpu"), channels_last=False)


def _image(rng: np.random.Generator, colour, size) -> Image.Image:
    h, w = size
    noise = rng.integers(-30, 30, (h, w, 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))


def make_imagenet(root: Path) -> Path:
    """3 classes × 4 train images (a grey JPEG, a PNG, upper- and lower-case extensions, a
    non-image and hidden entries that must be ignored); val 3 + 2 + 2, one of a single colour."""
    rng = np.random.default_rng(0)
    for c, (wnid, colour) in enumerate(zip(CLASSES, COLOURS)):
        d = root / "train" / wnid
        d.mkdir(parents=True)
        for k, size in enumerate(SIZES):
            img = _image(rng, colour, size)
            if c == 0 and k == 1:
                img.convert("L").save(d / f"{wnid}_{k}.JPEG", quality=90)
            elif c == 1 and k == 2:
                img.save(d / f"{wnid}_{k}.png")
            else:
                img.save(d / f"{wnid}_{k}.{'jpg' if k == 3 else 'JPEG'}", format="JPEG",
                         quality=90)
        (d / "synset.txt").write_text(wnid)
        (d / ".hidden.JPEG").write_bytes(b"")
        v = root / "val" / wnid
        v.mkdir(parents=True)
        for k in range(3 if c == 0 else 2):
            img = _image(rng, colour, SIZES[(k + c) % 4])
            if c == 0 and k == 0:
                img = Image.new("RGB", (70, 50), SOLID)
            img.save(v / f"ILSVRC2012_val_{c * 10 + k + 1:08d}.JPEG", format="JPEG", quality=100)
    (root / "train" / ".cache").mkdir()
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_imagenet(tmp_path_factory.mktemp("imagenet"))


def data_cfg(root: Path, *overrides: str) -> dict:
    cfg = compose(["data=imagenet", f"data.root={root}", "data.num_classes=3",
                   "data.train_size=32", "data.eval_size=32", "data.eval_resize=36",
                   "data.num_workers=0", *overrides])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert data.pop("name") == "imagenet"
    return data


def build(root: Path, *overrides: str, batch_size: int = 4, **run):
    return DATASETS.get("imagenet").build(**data_cfg(root, *overrides), batch_size=batch_size,
                                          eval_batch_size=4, **{**RUN, **run})


# --- config, registry, layout checks ---------------------------------------------------------

def test_config_composes_and_source_is_registered(monkeypatch):
    monkeypatch.setenv("ABLATE_DATA", "/datasets")
    data = OmegaConf.to_container(compose(["data=imagenet"]).data, resolve=True)
    assert data["root"] == "/datasets/imagenet" and data["num_classes"] == 1000
    assert (data["train_size"], data["eval_size"], data["eval_resize"]) == (224, 224, 256)
    assert (data["train_dir"], data["val_dir"]) == ("train", "val")
    assert data["lighting"] == 0.1 and data["jitter"] == 0.4
    assert data["train_subset"] is None and data["test_subset"] is None
    assert DATASETS.get("imagenet").tasks == ("classification",)


def test_check_passes_without_reading_images(tree, monkeypatch):
    def no(*_):
        raise AssertionError("check must not list or decode images")

    monkeypatch.setattr(classification, "decode_rgb", no)
    monkeypatch.setattr(classification, "list_images", no)
    monkeypatch.setattr(imagenet, "list_images", no)
    DATASETS.get("imagenet").check(**data_cfg(tree))
    assert find_classes(tree) == list(CLASSES)


def test_check_errors_spell_out_the_layout(tree, tmp_path):
    with pytest.raises(AblateError, match=r"(?s)does not exist.*train/<wnid>/\*\.JPEG"):
        check_imagenet(root=str(tmp_path / "nowhere"))
    (tmp_path / "a" / "train" / "n1").mkdir(parents=True)
    with pytest.raises(AblateError, match=r"(?s)a/val does not exist.*val/<wnid>/"):
        check_imagenet(root=str(tmp_path / "a"), num_classes=1)
    (tmp_path / "a" / "val").mkdir()
    (tmp_path / "a" / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(AblateError, match="val has no class folders"):
        check_imagenet(root=str(tmp_path / "a"), num_classes=1)
    with pytest.raises(AblateError, match="3 class folders in train/ but data.num_classes=1000"):
        check_imagenet(root=str(tree))
    with pytest.raises(AblateError, match="eval_resize >= eval_size"):
        check_imagenet(root=str(tree), num_classes=3, eval_size=224, eval_resize=200)


def test_val_classes_must_match_train(tmp_path):
    for split, names in (("train", ["n1", "n2", "n3"]), ("val", ["n1", "n2", "n9"])):
        for n in names:
            (tmp_path / split / n).mkdir(parents=True)
    with pytest.raises(AblateError, match="missing in val: n3; not in train: n9"):
        check_imagenet(root=str(tmp_path), num_classes=3)


def test_train_class_without_images_fails_at_build(tree, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tree, root)
    for f in (root / "train" / CLASSES[2]).iterdir():
        f.unlink()
    with pytest.raises(AblateError, match=f"hold no image.*{CLASSES[2]}"):
        build(root)


# --- files, pixels ---------------------------------------------------------------------------

def test_class_indexing_and_file_listing(tree):
    train, val = build(tree)
    ds = train.dataset
    assert ds.classes == CLASSES and ds.counts == [4, 4, 4]
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    names = [n.decode() for n in ds.names]
    assert names[:4] == [f"{CLASSES[0]}/{CLASSES[0]}_{k}.{e}"
                         for k, e in enumerate(["JPEG", "JPEG", "JPEG", "jpg"])]
    assert names[6] == f"{CLASSES[1]}/{CLASSES[1]}_2.png"
    assert val.dataset.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_grey_and_cmyk_jpegs_decode_to_rgb(tree, tmp_path):
    grey = decode_rgb(str(tree / "train" / CLASSES[0] / f"{CLASSES[0]}_1.JPEG"))
    assert grey.shape == (3, 64, 48) and grey.dtype == torch.uint8
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    Image.new("CMYK", (20, 10), (10, 20, 30, 40)).save(tmp_path / "c.JPEG")
    cmyk = decode_rgb(str(tmp_path / "c.JPEG"))
    assert cmyk.shape == (3, 10, 20)
    assert cmyk[:, 0, 0].tolist() == list(Image.open(tmp_path / "c.JPEG").convert("RGB")
                                          .getpixel((0, 0)))
    (tmp_path / "bad.JPEG").write_bytes(b"not an image")
    with pytest.raises(AblateError, match="cannot decode"):
        decode_rgb(str(tmp_path / "bad.JPEG"))


def test_eval_batches_are_exact(tree):
    _, val = build(tree)
    batches = list(val)
    assert [len(b["label"]) for b in batches] == [4, 3] and len(val) == 2
    b = batches[0]
    assert set(b) == {"image", "label"}
    assert b["image"].shape == (4, 3, 32, 32) and b["image"].dtype == torch.float32
    assert b["label"].dtype == torch.int64 and b["label"].tolist() == [0, 0, 0, 1]
    v = decode_rgb(str(tree / "val" / CLASSES[0] / "ILSVRC2012_val_00000001.JPEG"))
    assert v.shape == (3, 50, 70) and v.amax((1, 2)).tolist() == v.amin((1, 2)).tolist()
    assert all(abs(a - b) <= 2 for a, b in zip(v[:, 0, 0].tolist(), SOLID))
    expected = (v[:, 0, 0].double() / 255 - MEAN.double()) / STD.double()
    torch.testing.assert_close(b["image"][0].double(), expected[:, None, None].expand(3, 32, 32),
                               atol=1e-6, rtol=0)


def test_pca_lighting_hand_checked():
    e = torch.tensor([-0.5675, -0.5808, -0.5836])  # first eigenvector (R, G, B)
    torch.testing.assert_close(lighting_offset(torch.tensor([1.0, 0, 0])), 0.2175 * e)
    # α = (0.1, -0.2, 0.3): R = 0.1·0.2175·(-0.5675) - 0.2·0.0188·0.7192 + 0.3·0.0045·0.4009
    expected = torch.tensor([-0.012343125 - 0.002704192 + 0.000541215,
                             -0.012632400 + 0.000016920 - 0.001098900,
                             -0.012693300 + 0.002612448 + 0.000567405])
    torch.testing.assert_close(lighting_offset(torch.tensor([0.1, -0.2, 0.3])), expected)
    images = torch.full((1, 3, 2, 2), 100, dtype=torch.uint8)
    mean, std = (MEAN * 255).view(1, 3, 1, 1), (STD * 255).view(1, 3, 1, 1)
    out = normalize(images, mean, std, expected[None])
    want = ((100 + 255 * expected) / 255 - MEAN) / STD
    torch.testing.assert_close(out[0, :, 0, 0], want, atol=1e-6, rtol=0)


def test_train_batch_is_the_normalised_items(tree):
    train, _ = build(tree, "data.jitter=0.4", channels_last=True)
    assert len(train) == 3
    train.set_epoch(1)
    batch = next(iter(train))
    assert set(batch) == {"image", "label"}
    x = batch["image"]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    idx = list(train.sampler)[:4]
    items = [train.dataset[i] for i in idx]
    assert batch["label"].tolist() == [label for _, label, _ in items]
    offsets = torch.stack([o for _, _, o in items])
    assert offsets.abs().gt(0).all() and offsets.abs().lt(0.2).all()
    want = normalize(torch.stack([im for im, _, _ in items]), train.mean, train.std, offsets)
    assert torch.equal(x, want)
    _, val = build(tree, "data.lighting=0")
    assert val.dataset[0][2] is None


def test_batches_do_not_depend_on_workers_and_change_per_epoch(tree):
    def epochs(loader):
        out = []
        for e in (0, 1):
            loader.set_epoch(e)
            out.append([b["image"] for b in loader])
        loader.close()
        return out

    a = epochs(build(tree)[0])
    b = epochs(build(tree, "data.num_workers=1")[0])
    assert all(torch.equal(x, y) for ea, eb in zip(a, b) for x, y in zip(ea, eb))
    assert not torch.equal(a[0][0], a[1][0])


# --- decode: device --------------------------------------------------------------------------

def test_jpeg_size_reads_sequential_colour_jpegs_only(tree, tmp_path):
    rgb = Image.new("RGB", (70, 50), (1, 2, 3))
    rgb.save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    assert jpeg_size(data) == (50, 70)
    assert jpeg_size(torch.frombuffer(bytearray(data), dtype=torch.uint8)) == (50, 70)
    rgb.save(tmp_path / "p.jpg", progressive=True)  # nvJPEG's batched decoder: baseline only
    rgb.convert("L").save(tmp_path / "g.jpg")
    Image.new("CMYK", (20, 10)).save(tmp_path / "c.jpg")
    rgb.save(tmp_path / "i.png")
    for name in ("p.jpg", "g.jpg", "c.jpg", "i.png"):
        assert jpeg_size((tmp_path / name).read_bytes()) is None, name
    for cut in (data[:3], data[:20], b"", b"\xff\xd8\xff\xd9", b"\xff\xd8junk"):
        assert jpeg_size(cut) is None

    def header(marker: int, bits: int, components: int = 3) -> bytes:  # SOI, APP0, fill, SOF
        return (b"\xff\xd8\xff\xe0\x00\x04ab\xff" +
                bytes([0xFF, marker, 0, 17, bits, 0, 50, 1, 2, components]) + bytes(9))

    assert jpeg_size(header(0xC1, 8)) == (50, 258)  # extended sequential, 8-bit
    assert jpeg_size(header(0xC1, 12)) is None  # 12-bit samples
    assert jpeg_size(header(0xC2, 8)) is None  # progressive
    assert jpeg_size(header(0xC0, 8, components=1)) is None


def test_draw_then_geometry_is_the_worker_transform():
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    for jitter in (0.0, 0.4):
        t = TrainTransform(32, jitter=jitter)
        for seed in range(6):
            torch.manual_seed(seed)
            want = t(image)
            torch.manual_seed(seed)
            p = t.draw(60, 80)
            got = jitter_batch(t.geometry(image, p)[None], [p.get("jitter")])[0]
            assert got.shape == want.shape == (3, 32, 32)
            assert (got.int() - want.int()).abs().max() <= (1 if jitter else 0)
            if jitter:
                order, *factors = p["jitter"]
                assert sorted(order) == [0, 1, 2, 3] and all(0.6 <= f <= 1.4 for f in factors)


def test_jitter_batch_hand_checked():
    # 1×2 images, pixels (204, 102, 51) and (51, 51, 51). Image 0: saturation 0.5, brightness
    # 1.5, contrast 0.8 (luma 0.2989 R + 0.587 G + 0.114 B, contrast blends with its mean):
    # (0.8, 0.4, 0.2) → (0.64836, 0.44836, 0.34836) → ×1.5 → mean luma 0.5224989 →
    # 0.8 x + 0.2 · 0.5224989 = (0.88253, 0.64253, 0.52253) → ×255 → (225, 164, 133); the grey
    # pixel → 0.34449 → 88. Image 1: brightness 2 (R clamps at 1), contrast 1 (identity),
    # saturation 0 (luma): (1, 0.8, 0.4) → 0.8141 → 208; grey 0.4 → 0.39996 → 102.
    images = torch.tensor([[[204, 51]], [[102, 51]], [[51, 51]]], dtype=torch.uint8)
    images = images[None].repeat(3, 1, 1, 1)
    params = [((2, 0, 1, 3), 1.5, 0.8, 0.5), ((0, 1, 2, 3), 2.0, 1.0, 0.0), None]
    out = jitter_batch(images, params)
    assert out[0, :, 0, 0].tolist() == [225, 164, 133] and out[0, :, 0, 1].tolist() == [88] * 3
    assert out[1, :, 0, 0].tolist() == [208] * 3 and out[1, :, 0, 1].tolist() == [102] * 3
    assert torch.equal(out[2], images[2])  # no jitter
    assert jitter_batch(images, [None] * 3) is images


def test_encoded_batches_travel_as_one_buffer(tree):
    train, _ = build(tree, "data.decode=device")
    train.set_epoch(0)
    items = [train.dataset[i] for i in range(4)]
    # class 0: baseline colour JPEGs travel as bytes, the grey JPEG (item 1) as pixels
    assert [d.dim() for d, *_ in items] == [1, 3, 1, 1] and items[1][0].shape == (3, 64, 48)
    assert items[0][0].numel() == (tree / "train" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG"
                                   ).stat().st_size
    batch = collate_encoded(items)
    assert batch["data"].dim() == 1 and batch["label"].tolist() == [0, 0, 0, 0]
    assert all(torch.equal(a, d) for a, (d, *_) in zip(unpack(batch["data"], batch["shapes"]),
                                                      items))
    assert batch["lighting"].shape == (4, 3)


@pytest.mark.parametrize("workers", [0, 1])
def test_device_decode_matches_the_worker_path(tree, workers):
    def epochs(loader):
        out = []
        for e in (0, 1):
            loader.set_epoch(e)
            out += list(loader)
        loader.close()
        return out

    for split in (0, 1):  # train (crop, flip, jitter, lighting), val (resize, centre crop)
        want = epochs(build(tree, "data.jitter=0.4", channels_last=True)[split])
        got = epochs(build(tree, "data.jitter=0.4", "data.decode=device",
                           f"data.num_workers={workers}", channels_last=True)[split])
        assert len(got) == len(want) == (6 if split == 0 else 4)
        for a, b in zip(want, got):
            assert torch.equal(a["label"], b["label"])
            assert b["image"].is_contiguous(memory_format=torch.channels_last)
            levels = ((a["image"] - b["image"]) * STD.view(1, 3, 1, 1) * 255).abs()
            assert levels.max() < 1.01  # the jitter's float rounding order, at most a level
            assert (levels > 0.5).float().mean() < 0.01


def test_decode_mode_is_checked(tree):
    with pytest.raises(AblateError, match="data.decode must be one of worker, device; got 'gpu'"):
        DATASETS.get("imagenet").check(**data_cfg(tree, "data.decode=gpu"))


def test_two_ranks_shard_train_evenly_and_val_exactly_once(tree):
    ranks = [build(tree, rank=r, world_size=2, batch_size=3)
             for r in (0, 1)]
    for train, _ in ranks:
        train.set_epoch(0)
    seen = [list(train.sampler) for train, _ in ranks]
    assert len(ranks[0][0]) == len(ranks[1][0]) == 2
    assert sorted(seen[0] + seen[1]) == list(range(12))
    shards = [val.sampler for _, val in ranks]
    assert sorted(shards[0] + shards[1]) == list(range(7))
    labels = [b["label"] for _, val in ranks for b in val]
    assert sum(len(x) for x in labels) == 7
    assert sorted(torch.cat(labels).tolist()) == [0, 0, 0, 1, 1, 2, 2]


def test_subsets_take_the_first_files_class_interleaved(tree):
    train, val = build(tree, "data.train_subset=5", "data.test_subset=4", batch_size=2)
    assert train.dataset.labels.tolist() == [0, 0, 1, 1, 2]
    assert [n.decode().split("/")[1] for n in train.dataset.names][:2] == \
        [f"{CLASSES[0]}_0.JPEG", f"{CLASSES[0]}_1.JPEG"]
    assert val.dataset.labels.tolist() == [0, 0, 1, 2]
    assert len(train) == 2


# --- end to end ------------------------------------------------------------------------------

def test_trains_through_the_engine(tree, tmp_path):
    from ablate.worker import run

    cfg = compose(["data=imagenet", f"data.root={tree}", "data.num_classes=3",
                   "data.train_size=32", "data.eval_size=32", "data.eval_resize=36",
                   "data.num_workers=0", "model=resnet_tiny_d", "train.batch_size=4",
                   "train.eval_batch_size=4", "train.epochs=2", "schedule.milestones=[1]",
                   "tricks=[mixup,label_smoothing]", "train.threads=1"])
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    threads = torch.get_num_threads()  # one thread: 2 busy cores thrash with two
    try:
        result = run(tmp_path / "config.yaml")
    finally:
        torch.set_num_threads(threads)
    assert result["status"] == "completed" and result["iterations"] == 6
    assert 0 <= result["metrics"]["top1"] <= 100 and result["metrics"]["top5"] == 100.0
    assert np.isfinite(result["metrics"]["train_loss"])


def test_cli_data_prepare(tree, cli):
    r = cli("data", "prepare", "imagenet", f"data.root={tree}", "data.num_classes=3")
    assert r.code == 0 and "imagenet is ready" in r.out
    r = cli("data", "prepare", "imagenet", f"data.root={tree}")
    assert r.code == 2 and "data.num_classes=1000" in r.err
