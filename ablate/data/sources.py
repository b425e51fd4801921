"""The data sources: each ties a dataset (``ablate.data.datasets``) to its input pipeline
(``ablate.data.pipelines``) and is registered by name in ``ablate.data``. Classification:
Fashion-MNIST (in memory, ``pipelines.tensors``) and ImageNet folders
(``pipelines.classification``); detection, for the YOLOv3 and Faster R-CNN tables: Pascal VOC,
COCO and FashionScenes.

Each source is a ``build`` function, which opens the datasets and hands them to the pipeline's
loaders (for detection ``build_detection_loaders`` or ``build_rcnn_loaders``, see ``pipeline``
below), and a ``check`` function. Their keyword arguments are the data config's keys,
typed: an unknown key or a value of the wrong type is refused by name. Tricks reach the
pipeline only through ``plugins`` (``ablate.data.loading.DataPlugins``: mixup's dataset
wrapper, the augmentation's sample transform, random shapes' batch transform). ``decode``
(``worker``, the default, or ``device``) says where images are decoded, combined and augmented
(``ablate.data.pipelines.detection``).

``pipeline`` picks the input pipeline (the data configs set it to the model's task): ``rcnn``
(the Faster R-CNN task, ``ablate.data.pipelines.rcnn``) resizes the shorter side to
``short_side`` with the longer at most ``max_side`` and pads batches; any other value
(``yolo``) resizes to ``train_size``/``eval_size`` squares.

Which boxes are kept, following GluonCV's ``train_yolo3.py`` (the paper's reference code):

* VOC: difficult objects are kept for training as well (GluonCV's ``VOCDetection`` has no
  switch to drop them; its label's 6th column only matters to ``VOC07MApMetric``) and for
  evaluation, where the metric ignores them. ``keep_difficult: false`` drops them from training.
* COCO: training drops crowd regions and images left without boxes
  (``COCODetection(use_crowd=False)``, ``skip_empty=True``); evaluation keeps every image
  (``skip_empty=False``) and keeps crowd regions flagged ``difficult``, i.e. ignored.
* FashionScenes (VOC view): like VOC.

``check`` only looks at the layout (no annotation parsing), except for FashionScenes, which it
builds on first use (a few seconds for the default 2000 + 500 scenes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset, Subset

from ablate.data.datasets.coco import LAYOUT as COCO_LAYOUT
from ablate.data.datasets.coco import COCODetection
from ablate.data.datasets.fashion_mnist import MEAN, STD, load_fashion_mnist
from ablate.data.datasets.fashion_scenes import fashion_scenes_dataset, fashion_scenes_root
from ablate.data.datasets.imagenet import IMAGE_EXTENSIONS, few, find_classes
from ablate.data.datasets.voc import DEFAULT_SETS, VOCDetection, read_image_set, resolve_devkit
from ablate.data.encoded import decode_mode
from ablate.data.files import first_missing, missing_path_error
from ablate.data.loading import DataPlugins
from ablate.data.pipelines.classification import (EvalTransform, ImageFolderLoader,
                                                  ImageFolderSplit, TrainTransform)
from ablate.data.pipelines.detection import build_detection_loaders, eval_sizes
from ablate.data.pipelines.rcnn import build_rcnn_loaders, check_scale, check_train_scales
from ablate.data.pipelines.tensors import InMemoryLoader, random_crop_flip
from ablate.errors import AblateError
from ablate.typed import forwards_to


# --- classification ------------------------------------------------------------------------

def _subset(n: int, size: int | None, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of ``size`` indices (the same for every run and seed)."""
    if size is None or size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def build_fashion_mnist(*, root: str | None = None, train_subset: int | None = None,
                        test_subset: int | None = None, pad: int = 4, flip: bool = True,
                        batch_size: int, eval_batch_size: int, rank: int = 0,
                        world_size: int = 1, seed: int = 0,
                        device: torch.device = torch.device("cpu"),
                        channels_last: bool = False, plugins: DataPlugins = DataPlugins()):
    """Train and eval loaders over Fashion-MNIST (images 1×28×28).

    Args:
        root: idx(.gz) folder (default: the Debian package's).
        train_subset / test_subset: use a fixed random subset of this many images (proxies).
        pad, flip: training augmentation (random crop after ``pad`` zero padding, h-flip).
        batch_size / eval_batch_size: per-rank batch sizes.
        plugins: none (tricks act on the batches, not on this pipeline).
    """
    plugins.refuse("fashion_mnist")

    xtr, ytr = load_fashion_mnist(root, "train")
    xte, yte = load_fashion_mnist(root, "test")
    itr, ite = _subset(len(ytr), train_subset), _subset(len(yte), test_subset)
    common = dict(mean=MEAN, std=STD, rank=rank, world_size=world_size, seed=seed, device=device,
                  channels_last=channels_last)
    train = InMemoryLoader(xtr[itr, None], ytr[itr], batch_size, train=True,
                           augment=lambda x: random_crop_flip(x, pad, flip), **common)
    test = InMemoryLoader(xte[ite, None], yte[ite], eval_batch_size, train=False, **common)
    return train, test


def _sizes(train_size: Any, eval_size: Any, eval_resize: Any) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(s) for s in (train_size, eval_size, eval_resize))
    except (TypeError, ValueError):
        sizes = (0, 0, 0)
    if min(sizes) < 1 or sizes[2] < sizes[1]:
        raise AblateError(f"ImageNet sizes must be positive integers with eval_resize >= "
                          f"eval_size; got train_size={train_size!r}, eval_size={eval_size!r}, "
                          f"eval_resize={eval_resize!r}")
    return sizes  # type: ignore[return-value]


def build_imagenet(*, root: str, train_dir: str = "train", val_dir: str = "val",
                   num_classes: int | None = 1000, train_size: int = 224, eval_size: int = 224,
                   eval_resize: int = 256, crop_scale: Sequence[float] = (0.08, 1.0),
                   flip: bool = True, jitter: float = 0.4, lighting: float = 0.1,
                   train_subset: int | None = None, test_subset: int | None = None,
                   num_workers: int = 8, batch_size: int, eval_batch_size: int, rank: int = 0,
                   world_size: int = 1, seed: int = 0, device: torch.device | str = "cpu",
                   channels_last: bool = False, decode: str = "worker",
                   plugins: DataPlugins = DataPlugins()
                   ) -> tuple[ImageFolderLoader, ImageFolderLoader]:
    """Train and val loaders over an ImageNet ImageFolder tree (see the module docstring).

    Args:
        root, train_dir, val_dir: ``<root>/<train_dir>/<wnid>/*.JPEG``, same for val.
        num_classes: expected number of classes (None: any).
        train_size: RandomResizedCrop side; eval_size / eval_resize: centre crop side and the
            shorter side before it.
        crop_scale: RandomResizedCrop area range; flip; jitter: brightness, contrast and
            saturation strength; lighting: std of the PCA lighting α (0 = off).
        train_subset / test_subset: keep the first N files, class-interleaved.
        num_workers: DataLoader workers per process and loader.
        decode: ``"worker"`` (decode and augment in the workers) or ``"device"`` (on the
            run's device, see the module docstring).
        batch_size / eval_batch_size: per-rank batch sizes.
        rank, world_size, seed, device, channels_last: the run's.
        plugins: none (tricks act on the batches, not on this pipeline).
    Returns:
        ``(train_loader, eval_loader)``.
    """
    plugins.refuse("imagenet")
    train_size, eval_size, eval_resize = _sizes(train_size, eval_size, eval_resize)
    decode = decode_mode(decode, "ImageNet")
    classes = find_classes(root, train_dir, val_dir, num_classes)
    train = ImageFolderSplit(Path(root) / train_dir, classes,
                             transform=TrainTransform(train_size, scale=crop_scale, flip=flip,
                                                      jitter=jitter),
                             random=True, lighting=lighting, subset=train_subset, seed=seed,
                             decode=decode)
    empty = [c for c, n in zip(classes, train.counts) if n == 0]
    if empty:
        raise AblateError(f"ImageNet: {len(empty)} class folders of {Path(root) / train_dir} "
                          f"hold no image ({', '.join(IMAGE_EXTENSIONS)}): {few(empty)}")
    val = ImageFolderSplit(Path(root) / val_dir, classes,
                           transform=EvalTransform(eval_size, eval_resize), subset=test_subset,
                           decode=decode)
    if len(val) == 0:
        raise AblateError(f"ImageNet: no image in the class folders of {Path(root) / val_dir}")
    common = dict(rank=rank, world_size=world_size, seed=seed, num_workers=int(num_workers),
                  device=device, channels_last=channels_last)
    train_loader = ImageFolderLoader(train, batch_size, train=True, **common)
    if len(train_loader) == 0:
        raise AblateError(f"batch_size {batch_size} exceeds the {len(train_loader.sampler)} "
                          f"training images of rank {rank}: no full batch per epoch")
    return train_loader, ImageFolderLoader(val, eval_batch_size, train=False, **common)


def check_imagenet(*, root: str, train_dir: str = "train", val_dir: str = "val",
                   num_classes: int | None = 1000, train_size: Any = 224, eval_size: Any = 224,
                   eval_resize: Any = 256, decode: Any = "worker") -> None:
    """Fail early when the layout is wrong: folders missing or without class folders, val's
    classes not train's, their number not ``num_classes``, bad sizes or decode mode (no image
    is read)."""
    _sizes(train_size, eval_size, eval_resize)
    decode_mode(decode, "ImageNet")
    find_classes(root, train_dir, val_dir, num_classes)


# --- detection -----------------------------------------------------------------------------

def _pairs(sets: Any) -> list[tuple[str, str]]:
    """``[2007, "test"]`` or ``[[2007, "trainval"], …]`` → ``[("2007", "test"), …]``."""
    sets = list(sets)
    if len(sets) == 2 and not isinstance(sets[0], (list, tuple)):
        sets = [sets]
    out = []
    for s in sets:
        if not isinstance(s, (list, tuple)) or len(s) != 2:
            raise AblateError(f"VOC sets are [year, split] pairs, got {s!r}")
        out.append((str(s[0]), str(s[1])))
    return out


def _first(dataset: Dataset, n: int | None) -> Dataset:
    """The first ``n`` images (smoke tests); ``None`` keeps all."""
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise AblateError(f"train_subset/test_subset must be >= 1 or null, got {n}")
    return Subset(dataset, range(int(n)))


def _loaders(train: Dataset, test: Dataset, /, *, batch_size: int,
             eval_batch_size: int | None = None,
             train_size: int = 416, eval_size: int | list[int] = 416, num_workers: int = 0,
             train_subset: int | None = None, test_subset: int | None = None,
             plugins: DataPlugins = DataPlugins(), rank: int = 0, world_size: int = 1,
             seed: int = 0, device: Any = "cpu", channels_last: bool = False,
             pipeline: str = "yolo", short_side: int = 600, max_side: int = 1000,
             decode: str = "worker", train_scales: Any = None, train_scale_mode: Any = None):
    """Common tail of the three builds: the pipeline options every detection source takes."""
    train, test = _first(train, train_subset), _first(test, test_subset)
    common = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, plugins=plugins,
                  rank=rank, world_size=world_size, seed=seed, num_workers=int(num_workers),
                  device=device, channels_last=channels_last, decode=decode)
    if pipeline == "rcnn":
        return build_rcnn_loaders(train, test, scale=check_scale(short_side, max_side),
                                  train_scales=train_scales, train_scale_mode=train_scale_mode,
                                  **common)
    _no_train_scales(train_scales, train_scale_mode)
    return build_detection_loaders(train, test, train_size=int(train_size), eval_size=eval_size,
                                   **common)


def _no_train_scales(train_scales: Any, train_scale_mode: Any) -> None:
    if train_scales is not None or train_scale_mode is not None:
        raise AblateError("data.train_scales and data.train_scale_mode are for the rcnn "
                          "pipeline (the yolo pipeline's random_shapes trick draws its sides)")


def _check_eval(eval_size: Any, metric: str, pipeline: str = "yolo", short_side: Any = 600,
                max_side: Any = 1000, decode: Any = "worker", train_scales: Any = None,
                train_scale_mode: Any = None) -> None:
    """Input sizes of the pipeline, the metric name and the decode mode, checked before any
    training."""
    from ablate.tasks.yolo import voc_metric_name

    decode_mode(decode, "detection")
    if pipeline == "rcnn":
        check_scale(short_side, max_side)
        check_train_scales(train_scales, train_scale_mode)
    else:
        eval_sizes(eval_size)
        _no_train_scales(train_scales, train_scale_mode)
    if metric != "coco":
        voc_metric_name(metric)


def _check_classes(dataset: Any, num_classes: int | None, what: str) -> None:
    if num_classes is not None and len(dataset.class_names) != int(num_classes):
        raise AblateError(f"{what} has {len(dataset.class_names)} classes but data.num_classes="
                          f"{num_classes}")


# --- Pascal VOC ------------------------------------------------------------------------------

@forwards_to(_loaders)
def build_voc_loaders(*, root: str, train_sets: Sequence = DEFAULT_SETS,
                      test_set: Sequence = ("2007", "test"), keep_difficult: bool = True,
                      num_classes: int | None = 20, **kw: Any):
    """VOC loaders: ``train_sets`` (07+12 trainval) for training, ``test_set`` (07 test) for
    evaluation, the latter always with its difficult objects (flagged, ignored by the metric)."""
    train = VOCDetection(root, _pairs(train_sets), keep_difficult=keep_difficult)
    test = VOCDetection(root, _pairs(test_set), keep_difficult=True)
    _check_classes(train, num_classes, f"VOC in {root}")
    return _loaders(train, test, **kw)


def check_voc(*, root: str, train_sets: Sequence = DEFAULT_SETS,
              test_set: Sequence = ("2007", "test"), eval_size: Any = 416, metric: str = "voc07",
              pipeline: str = "yolo", short_side: Any = 600, max_side: Any = 1000,
              decode: Any = "worker", keep_difficult: bool = True, deep: bool = False,
              train_scales: Any = None, train_scale_mode: Any = None) -> int:
    """Fail early when the devkit, a year's folders or an image-set file is missing; with
    ``deep`` (``ablate data prepare``) also parse every annotation (sizes, classes, boxes).
    Returns the number of training ids listed (an upper bound of the training images)."""
    _check_eval(eval_size, metric, pipeline, short_side, max_side, decode, train_scales,
                train_scale_mode)
    devkit = resolve_devkit(root)
    for year, split in _pairs(test_set):
        read_image_set(devkit, year, split)
    if deep:
        VOCDetection(root, _pairs(train_sets), keep_difficult=keep_difficult)
        VOCDetection(root, _pairs(test_set), keep_difficult=True)
    return sum(len(read_image_set(devkit, year, split)[1]) for year, split in _pairs(train_sets))


# --- COCO ------------------------------------------------------------------------------------

@forwards_to(_loaders)
def build_coco_loaders(*, root: str, train_set: str = "train2017", test_set: str = "val2017",
                       num_classes: int | None = 80, **kw: Any):
    """COCO loaders (GluonCV's choices: no crowd and no empty images for training; every
    image for evaluation, crowd regions kept as ignored ``difficult`` boxes)."""
    train = COCODetection(root, train_set, remove_crowd=True, skip_empty=True)
    test = COCODetection(root, test_set, remove_crowd=False, skip_empty=False)
    _check_classes(train, num_classes, f"COCO {train_set} in {root}")
    return _loaders(train, test, **kw)


def check_coco(*, root: str, train_set: str = "train2017", test_set: str = "val2017",
               eval_size: Any = 416, metric: str = "coco", pipeline: str = "yolo",
               short_side: Any = 800, max_side: Any = 1333, decode: Any = "worker",
               deep: bool = False, train_scales: Any = None, train_scale_mode: Any = None
               ) -> None:
    """Fail early when an annotation file or image folder is missing (without reading the
    json: train2017's is ~450 MB); with ``deep`` (``ablate data prepare``) also read both
    annotation files and every box in them."""
    _check_eval(eval_size, metric, pipeline, short_side, max_side, decode, train_scales,
                train_scale_mode)
    base = Path(root)
    paths = [base]
    for split in (train_set, test_set):
        paths += [base / "annotations" / f"instances_{split}.json", base / split]
    missing = first_missing(paths)
    if missing is not None:
        raise missing_path_error(missing, "COCO", COCO_LAYOUT)
    if deep:  # every box of both splits, as the loaders will read them
        for split in (train_set, test_set):
            ds = COCODetection(root, split, remove_crowd=False, skip_empty=False)
            for i in range(len(ds)):
                ds.get_target(i)


# --- FashionScenes ---------------------------------------------------------------------------

def _scenes_root(cache_dir: str | None, num_train: int, num_test: int, scene_seed: int,
                 min_size: int, max_size: int, fmnist_root: str | None) -> Path:
    return fashion_scenes_root(cache_dir, num_train=int(num_train), num_test=int(num_test),
                               seed=int(scene_seed), min_size=int(min_size),
                               max_size=int(max_size), fmnist_root=fmnist_root)


@forwards_to(_loaders)
def build_fashion_scenes_loaders(*, cache_dir: str | None = None, num_train: int = 2000,
                                 num_test: int = 500, scene_seed: int = 0, min_size: int = 96,
                                 max_size: int = 192, fmnist_root: str | None = None,
                                 train_set: str = "train", test_set: str = "test",
                                 **kw: Any):
    """FashionScenes loaders (built under ``cache_dir`` on first use; VOC view, difficult
    objects kept and flagged). ``scene_seed`` fixes the scenes, independent of the run seed."""
    root = _scenes_root(cache_dir, num_train, num_test, scene_seed, min_size, max_size,
                        fmnist_root)
    train = fashion_scenes_dataset(root, train_set, "voc")
    test = fashion_scenes_dataset(root, test_set, "voc")
    return _loaders(train, test, **kw)


def check_fashion_scenes(*, cache_dir: str | None = None, num_train: int = 2000,
                         num_test: int = 500, scene_seed: int = 0, min_size: int = 96,
                         max_size: int = 192, fmnist_root: str | None = None,
                         train_set: str = "train", test_set: str = "test", eval_size: Any = 160,
                         metric: str = "voc07", pipeline: str = "yolo", short_side: Any = 128,
                         max_side: Any = 213, decode: Any = "worker",
                         train_scales: Any = None, train_scale_mode: Any = None) -> int:
    """Build the scenes now if needed (seconds): a missing Fashion-MNIST fails before training.
    Returns the number of training scenes."""
    _check_eval(eval_size, metric, pipeline, short_side, max_side, decode, train_scales,
                train_scale_mode)
    for split in (train_set, test_set):
        if split not in ("train", "test"):
            raise AblateError(f"FashionScenes has no split '{split}' (use 'train' or 'test')")
    _scenes_root(cache_dir, num_train, num_test, scene_seed, min_size, max_size, fmnist_root)
    return int(num_train) if train_set == "train" else int(num_test)
