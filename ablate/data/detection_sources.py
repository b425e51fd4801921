"""Detection data sources for the YOLOv3 and Faster R-CNN tables: Pascal VOC, COCO and
FashionScenes.

Each source is a ``build`` function, which opens the datasets and hands them to
``build_detection_loaders`` (or ``build_rcnn_loaders``, see ``pipeline`` below), and a ``check``
function, registered in ``ablate.data``. Their keyword arguments are the data config's keys,
typed: an unknown key or a value of the wrong type is refused by name. Tricks reach the
pipeline only through ``plugins`` (``ablate.data.loading.DataPlugins``: mixup's dataset
wrapper, the augmentation's sample transform, random shapes' batch transform). ``decode``
(``worker``, the default, or ``device``) says where images are decoded, combined and augmented
(``ablate.data.detection_loader``).

``pipeline`` picks the input pipeline (the data configs set it to the model's task): ``rcnn``
(the Faster R-CNN task, ``ablate.data.detection_rcnn``) resizes the shorter side to
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

from torch.utils.data import Dataset, Subset

from ablate.data.coco import LAYOUT as COCO_LAYOUT
from ablate.data.coco import COCODetection
from ablate.data.files import first_missing, missing_path_error
from ablate.data.detection_loader import build_detection_loaders, eval_sizes
from ablate.data.detection_rcnn import build_rcnn_loaders, check_scale
from ablate.data.encoded import decode_mode
from ablate.data.fashion_scenes import fashion_scenes_dataset, fashion_scenes_root
from ablate.data.loading import DataPlugins
from ablate.data.voc import DEFAULT_SETS, VOCDetection, read_image_set, resolve_devkit
from ablate.errors import AblateError
from ablate.typed import forwards_to



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
             decode: str = "worker"):
    """Common tail of the three builds: the pipeline options every detection source takes."""
    train, test = _first(train, train_subset), _first(test, test_subset)
    common = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, plugins=plugins,
                  rank=rank, world_size=world_size, seed=seed, num_workers=int(num_workers),
                  device=device, channels_last=channels_last, decode=decode)
    if pipeline == "rcnn":
        return build_rcnn_loaders(train, test, scale=check_scale(short_side, max_side), **common)
    return build_detection_loaders(train, test, train_size=int(train_size), eval_size=eval_size,
                                   **common)


def _check_eval(eval_size: Any, metric: str, pipeline: str = "yolo", short_side: Any = 600,
                max_side: Any = 1000, decode: Any = "worker") -> None:
    """Input sizes of the pipeline, the metric name and the decode mode, checked before any
    training."""
    from ablate.tasks.yolo import voc_metric_name

    decode_mode(decode, "detection")
    if pipeline == "rcnn":
        check_scale(short_side, max_side)
    else:
        eval_sizes(eval_size)
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
              decode: Any = "worker", keep_difficult: bool = True, deep: bool = False) -> int:
    """Fail early when the devkit, a year's folders or an image-set file is missing; with
    ``deep`` (``ablate data prepare``) also parse every annotation (sizes, classes, boxes).
    Returns the number of training ids listed (an upper bound of the training images)."""
    _check_eval(eval_size, metric, pipeline, short_side, max_side, decode)
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
               deep: bool = False) -> None:
    """Fail early when an annotation file or image folder is missing (without reading the
    json: train2017's is ~450 MB); with ``deep`` (``ablate data prepare``) also read both
    annotation files and every box in them."""
    _check_eval(eval_size, metric, pipeline, short_side, max_side, decode)
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
                         max_side: Any = 213, decode: Any = "worker") -> int:
    """Build the scenes now if needed (seconds): a missing Fashion-MNIST fails before training.
    Returns the number of training scenes."""
    _check_eval(eval_size, metric, pipeline, short_side, max_side, decode)
    for split in (train_set, test_set):
        if split not in ("train", "test"):
            raise AblateError(f"FashionScenes has no split '{split}' (use 'train' or 'test')")
    _scenes_root(cache_dir, num_train, num_test, scene_seed, min_size, max_size, fmnist_root)
    return int(num_train) if train_set == "train" else int(num_test)
