"""Detection train/eval loaders for YOLOv3 ("Bag of Freebies", Zhang et al. 2019).

Per sample, in DataLoader workers: dataset → the tricks' dataset wrappers (mixup's pairs) → a
sample transform (``plain_resize`` or what a trick puts in its place, ``eval_resize``) to the
batch's side (``train_size``, or the side a trick's ``batch_side`` gives that batch: random
shapes, so each image is resized once, at the drawn size, as GluonCV's
``RandomTransformDataLoader`` does) → ``collate_detection`` (boxes padded per batch). Per batch,
on the device: uint8 → float, ImageNet normalisation, optional channels-last, the tricks' batch
transforms (training only). Tricks plug in through ``DataPlugins`` (``ablate.data.loading``);
this module never reads their options.

``decode: device`` (``DetectionTrainDataset(decode="device")``) moves the pixel work to the
training device, for GPUs that train faster than the host's cores decode and augment: a worker
reads the image file (and those a ``CombiningDataset`` wrapper pairs it with) as bytes, takes
the size from the JPEG header and makes every draw of the worker path, in its order, from the
sizes and boxes alone (the wrapper's ``plan``, the transform's ``draw``); the targets are
final. The loader then decodes the batch's files in one call on its device (nvJPEG on CUDA),
combines them (the wrapper's ``combine``), applies each transform's ``apply`` and pads
(``DetectionLoader.decode_on_device``). Files the device decoder may not take (PNG,
progressive, grey, CMYK JPEGs) come decoded from the worker. On CPU the batches equal the
worker path's bit for bit; on CUDA the pixels differ by a level or two (nvJPEG's inverse DCT,
float resize kernels), the targets not at all.

Per-epoch state reaches the workers: the epoch lives in a shared-memory tensor (``SharedEpoch``)
read on every item, so ``set_epoch`` in the main process is seen by forked or spawned, persistent
or re-created workers (GluonCV's reference switches mixup off through an attribute its workers
never see); wrappers with per-epoch draws get ``set_epoch`` too. Every random draw of an item
comes from a generator seeded by (seed, epoch, index): samples do not depend on the number of
workers.

Sharding follows ``DistributedSampler``: training shuffles with seed + epoch, pads by wrapping
and drops the last partial batch; evaluation gives rank r every world-th image, without padding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ablate.data.files import load_rgb
from ablate.data.pipelines.transforms import SampleTransform, eval_resize, plain_resize
from ablate.data.encoded import decode_batch, decode_mode, pack, read_encoded, unpack
from ablate.data.loading import (AUGMENT_STREAM, IMAGENET_MEAN, IMAGENET_STD, CombiningDataset,
                                 DataPlugins, DeviceLoader, SharedEpoch, item_generator)
from ablate.data.targets import with_weights
from ablate.errors import AblateError


def image_file_source(dataset: Dataset, i: int) -> tuple[Any, int]:
    """The dataset under any ``Subset`` wrappers and item ``i``'s index in it; it must read
    image files (``image_path(i)``, ``get_target(i)``: VOC, COCO, FashionScenes)."""
    while isinstance(dataset, Subset):
        dataset, i = dataset.dataset, int(dataset.indices[i])
    if not (hasattr(dataset, "image_path") and hasattr(dataset, "get_target")):
        raise AblateError(f"data.decode=device reads the image files of the dataset, but "
                          f"{type(dataset).__name__} has no image_path/get_target: use "
                          f"data.decode=worker")
    return dataset, i


def read_item(dataset: Dataset, i: int) -> tuple[torch.Tensor, tuple[int, int], dict[str, Any]]:
    """Item ``i`` undecoded: ``read_encoded``'s bytes (or pixels) and (H, W), and its target
    (``orig_size`` the image's)."""
    source, k = image_file_source(dataset, i)
    data, size = read_encoded(source.image_path(k), load_rgb)
    return data, size, {**source.get_target(k), "orig_size": size}


class DetectionTrainDataset(Dataset):
    """The per-sample pipeline: ``source`` item → ``sample_transform``, targets with
    ``weights``.

    Args:
        source: a detection dataset, or a tricks' wrapper of one (``DataPlugins.wrap``).
        sample_transform: called as ``f(image, target, out_size=…, generator=g)`` with
            ``g = item_generator(seed, epoch, index, AUGMENT_STREAM)`` (``YoloAugment``,
            ``plain_resize``; ``eval_resize`` makes this the evaluation dataset).
        out_size: the transform's output size (square side, or ``(short, max_side)``); an
            item asked for as ``(index, side)`` (``DeviceLoader``'s ``batch_key``) is
            transformed to ``side`` instead, with the same draws.
        seed: base seed of the per-item generators.
        decode: ``"worker"``: items are ``(uint8 image, target)``; ``"device"``: items are
            ``(EncodedItem, target)``, the image files' bytes and the transform's parameters
            (``sample_transform`` must be a ``SampleTransform``; ``source`` must read image
            files, or be a ``CombiningDataset`` over a dataset that does) for
            ``DetectionLoader`` to decode, combine and transform on its device.
    """

    def __init__(self, source: Dataset, sample_transform: SampleTransform | Callable,
                 out_size: Any, seed: int = 0, decode: str = "worker"):
        self.decode = decode_mode(decode, "detection")
        self.files = source.base if isinstance(source, CombiningDataset) else source
        if self.decode == "device":
            if not isinstance(sample_transform, SampleTransform):
                raise AblateError(f"data.decode=device needs a SampleTransform (draw + apply), "
                                  f"got {sample_transform!r}")
            if len(self.files):
                image_file_source(self.files, 0)
        self.source, self.transform = source, sample_transform
        self.out_size, self.seed = out_size, seed
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for the per-item generators and the source's draws (shared)."""
        self._epoch.set(epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, Any]) -> tuple[Any, dict[str, Any]]:
        i, out_size = key if isinstance(key, tuple) else (key, self.out_size)
        if self.decode == "device":
            return self._encoded_item(i, out_size)
        image, target = self.source[i]
        g = item_generator(self.seed, self._epoch.get(), i, AUGMENT_STREAM)
        return self.transform(image, with_weights(target), out_size=out_size, generator=g)

    def _encoded_item(self, i: int, out_size: Any) -> tuple[EncodedItem, dict[str, Any]]:
        """The worker path's draws, in its order, without decoding: the source's (a
        ``CombiningDataset``'s ``plan``), then the transform's; the target is final, the pixels
        are left to ``EncodedItem.pixels``."""
        epoch = self._epoch.get()
        if isinstance(self.source, CombiningDataset):
            data, size, target, how = self.source.plan(
                i, epoch, functools.partial(read_item, self.files))
        else:
            one, size, target = read_item(self.files, i)
            data, how = [one], None
        item = EncodedItem(data, how)
        g = item_generator(self.seed, epoch, i, AUGMENT_STREAM)
        item.params, target = self.transform.draw(*size, with_weights(target),
                                                  out_size=out_size, generator=g)
        return item, target

    def combine(self, images: list[torch.Tensor], how: Any) -> torch.Tensor:
        """One item's image from its decoded files (``EncodedItem.pixels``)."""
        if isinstance(self.source, CombiningDataset):
            return self.source.combine(images, how)
        return images[0]


class EncodedItem:
    """A ``decode: device`` item: its image files as bytes or pixels (``read_encoded``), how
    to combine them (a ``CombiningDataset``'s ``plan`` params; None for one file) and the
    transform's ``params``."""

    def __init__(self, data: list[torch.Tensor], how: Any = None, params: Any = None,
                 count: int | None = None) -> None:
        self.data, self.how, self.params = data, how, params
        self.count = len(data) if count is None else count

    def without_data(self) -> EncodedItem:
        return EncodedItem([], self.how, self.params, self.count)

    def pixels(self, decoded: Iterator[torch.Tensor], dataset: DetectionTrainDataset
               ) -> torch.Tensor:
        """The worker path's image, from the next ``count`` of ``decoded`` (the batch's
        decoded files in order, on their device)."""
        image = dataset.combine([next(decoded) for _ in range(self.count)], self.how)
        return dataset.transform.apply(image, self.params)


def collate_detection(samples: Sequence[tuple[torch.Tensor, dict[str, Any]]],
                      with_gt: bool = False, size_divisible: int | None = None
                      ) -> dict[str, Any]:
    """Stack the samples' images and pad their boxes to the batch's maximum M (≥ 1).

    Args:
        samples: ``(uint8 [3, h, w], target)`` pairs, equally sized unless ``size_divisible``.
        with_gt: add ``gt`` (evaluation batches).
        size_divisible: zero-pad the images (bottom, right) to the batch's largest size rounded
            up to this multiple (torchvision's ``GeneralizedRCNNTransform.batch_images``) and
            add ``image_sizes`` int64 [B, 2] (h, w unpadded).
    Returns:
        ``image`` uint8 [B, 3, S, S], ``boxes`` float [B, M, 4] (0 padding), ``labels`` int64
        [B, M] (−1), ``weights`` float [B, M] (0), ``difficult`` bool [B, M] (False),
        ``image_id`` list, ``orig_size`` int64 [B, 2] (H, W); with ``with_gt``: ``gt``, one
        dict per image of numpy ``boxes`` (float32 [N, 4], original image coordinates:
        ``orig_boxes`` when the transform kept them), ``labels`` and ``difficult``.
    """
    images = [img for img, _ in samples]
    batch = collate_targets([t for _, t in samples], with_gt)
    if size_divisible is not None:
        sizes = [tuple(img.shape[-2:]) for img in images]
        images = pad_images(images, sizes, size_divisible)
        batch["image_sizes"] = torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2)
    if len({tuple(img.shape) for img in images}) > 1:
        raise AblateError(f"collate_detection needs equally sized images, got "
                          f"{sorted({tuple(img.shape) for img in images})}")
    batch["image"] = torch.stack(images)
    return batch


def pad_images(images: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]],
               size_divisible: int) -> list[torch.Tensor]:
    """``images`` (of ``sizes``) zero-padded at the bottom and right to the largest size
    rounded up to a multiple of ``size_divisible``."""
    d = int(size_divisible)
    ph = -(-max(h for h, _ in sizes) // d) * d
    pw = -(-max(w for _, w in sizes) // d) * d
    return [F.pad(img, (0, pw - w, 0, ph - h)) for img, (h, w) in zip(images, sizes)]


def collate_targets(targets: Sequence[dict[str, Any]], with_gt: bool = False) -> dict[str, Any]:
    """``collate_detection``'s batch without ``image``."""
    b, m = len(targets), max([1] + [len(t["boxes"]) for t in targets])
    boxes = torch.zeros(b, m, 4)
    labels = torch.full((b, m), -1, dtype=torch.int64)
    weights = torch.zeros(b, m)
    difficult = torch.zeros(b, m, dtype=torch.bool)
    for k, t in enumerate(targets):
        n = len(t["boxes"])
        boxes[k, :n] = t["boxes"]
        labels[k, :n] = t["labels"]
        weights[k, :n] = t["weights"] if "weights" in t else 1.0
        difficult[k, :n] = t["difficult"] if "difficult" in t else False
    batch = {"boxes": boxes, "labels": labels, "weights": weights, "difficult": difficult,
             "image_id": [t["image_id"] for t in targets],
             "orig_size": torch.tensor([list(t["orig_size"]) for t in targets],
                                       dtype=torch.int64).reshape(b, 2)}
    if with_gt:
        batch["gt"] = [{"boxes": t.get("orig_boxes", t["boxes"]).numpy().astype(np.float32),
                        "labels": t["labels"].numpy().astype(np.int64),
                        "difficult": t["difficult"].numpy().astype(bool),
                        "image_id": t["image_id"]} for t in targets]
    return batch


def collate_encoded(samples: Sequence[tuple[EncodedItem, dict[str, Any]]],
                    with_gt: bool = False, size_divisible: int | None = None
                    ) -> dict[str, Any]:
    """``decode: device`` items: ``collate_targets``' batch plus ``data`` (every file's bytes or
    pixels in one flat uint8 buffer, ``encoded.pack``), ``shapes`` and ``items`` (the
    ``EncodedItem``s without their data); with ``size_divisible``, ``image_sizes`` as
    ``collate_detection`` has it (from the parameters' output sizes)."""
    items, targets = zip(*samples)
    batch = collate_targets(targets, with_gt)
    batch["data"], batch["shapes"] = pack([d for item in items for d in item.data])
    batch["items"] = [item.without_data() for item in items]
    if size_divisible is not None:
        sizes = [SampleTransform.output_size(item.params) for item in items]
        batch["image_sizes"] = torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2)
    return batch


class DetectionLoader(DeviceLoader):
    """Batches of a detection dataset for one rank, moved to ``device`` and normalised
    (sharding, epochs and workers: ``DeviceLoader``).

    ``__iter__`` gives ``collate_detection``'s dicts with ``image`` float, normalised.
    ``batch_side(iteration)`` (training) is the square side of global batch
    ``epoch · len + i``: its items are transformed to it in the workers.
    ``batch_transform(batch, iteration)`` runs on the device batch. With ``size_divisible``
    the images are zero-padded to a common size (``collate_detection``, the Faster R-CNN
    batches) and the batch has ``image_sizes``: the normalised image gets zeros outside each
    image again, as torchvision's ``GeneralizedRCNNTransform`` pads.

    A ``decode: device`` dataset (``DetectionTrainDataset(decode="device")``) yields encoded
    batches (``collate_encoded``): the loader decodes their files in one call on ``device``
    (``encoded.decode_batch``: nvJPEG on CUDA), combines and transforms each image there
    (``EncodedItem.pixels``) and pads them with ``size_divisible``; the result equals the
    worker path's batch (bit for bit on CPU).
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool,
                 batch_side: Callable[[int], int] | None = None,
                 batch_transform: Callable[[dict, int], dict] | None = None,
                 size_divisible: int | None = None, **kw: Any) -> None:
        collate = collate_encoded if getattr(dataset, "decode", None) == "device" \
            else collate_detection
        super().__init__(dataset, batch_size, train=train, collate_fn=functools.partial(
            collate, with_gt=not train, size_divisible=size_divisible),
            batch_key=batch_side if train else None, **kw)
        self.size_divisible = size_divisible
        self.batch_transform = batch_transform if train else None

    def decode_on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A ``collate_encoded`` batch with its ``image`` (uint8 [B, 3, H, W]) built on the
        loader's device, in place of ``data``, ``shapes`` and ``items``."""
        batch = dict(batch)
        data = iter(decode_batch(unpack(batch.pop("data"), batch.pop("shapes")), self.device))
        images = [item.pixels(data, self.dataset) for item in batch.pop("items")]
        if self.size_divisible is not None:
            images = pad_images(images, [tuple(im.shape[-2:]) for im in images],
                                self.size_divisible)
        batch["image"] = torch.stack(images)
        return batch

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
               for k, v in batch.items()}
        image = (out["image"].float() - self.mean) / self.std
        if "image_sizes" in out:  # zero padding after normalisation
            h, w = image.shape[-2:]
            sizes = out["image_sizes"]
            rows = torch.arange(h, device=image.device)[:, None] < sizes[:, 0, None, None]
            cols = torch.arange(w, device=image.device) < sizes[:, 1, None, None]
            image = image.masked_fill(~(rows & cols)[:, None], 0.0)
        out["image"] = image.contiguous(memory_format=self.memory_format)
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start = self.epoch * len(self)
        for i, batch in enumerate(self.loader):
            if "data" in batch:
                batch = self.decode_on_device(batch)
            batch = self._to_device(batch)
            if self.batch_transform is not None:
                batch = self.batch_transform(batch, start + i)
                batch["image"] = batch["image"].contiguous(memory_format=self.memory_format)
            yield batch


def build_detection_loaders(train_dataset: Dataset, eval_dataset: Dataset | None = None, *,
                            batch_size: int, eval_batch_size: int | None = None,
                            train_size: int = 416, eval_size: int | Sequence[int] = 416,
                            plugins: DataPlugins = DataPlugins(), rank: int = 0,
                            world_size: int = 1, seed: int = 0, num_workers: int = 0,
                            device: torch.device | str = "cpu", channels_last: bool = False,
                            mean: Sequence[float] = IMAGENET_MEAN,
                            std: Sequence[float] = IMAGENET_STD,
                            persistent_workers: bool | None = None, decode: str = "worker"
                            ) -> tuple[DetectionLoader, Any]:
    """Train and eval loaders for YOLOv3-style detection (square inputs).

    Args:
        train_dataset, eval_dataset: detection datasets (eval may be None).
        batch_size, eval_batch_size: per-rank batch sizes (eval defaults to batch_size).
        train_size, eval_size: square input sides (training before any batch transform). A
            list of eval sizes (Det-T5: ``[416, 320, 608]``) evaluates the same weights at
            each: the eval loader is then a dict ``{"416": …, "320": …}`` (metrics
            ``map@416``, …; the first size's metrics are also reported unprefixed).
        plugins: the tricks' dataset wrappers, sample transform (in place of
            ``plain_resize``), batch sides and batch transforms, for training.
        rank, world_size, seed, num_workers, device, channels_last, mean, std,
        persistent_workers: see ``DetectionLoader``.
        decode: ``"worker"`` (decode, combine and transform in the workers) or ``"device"``
            (the workers read the files and draw; ``device`` decodes, combines and transforms).
    Returns:
        ``(train_loader, eval_loader, a dict of them, or None)``.
    """
    common = dict(mean=mean, std=std, rank=rank, world_size=world_size, seed=seed,
                  num_workers=num_workers, device=device, channels_last=channels_last,
                  persistent_workers=persistent_workers)
    train = DetectionLoader(
        DetectionTrainDataset(plugins.wrap(train_dataset), plugins.transform(plain_resize),
                              train_size, seed=seed, decode=decode),
        batch_size, train=True, batch_side=plugins.side_fn(int(train_size)),
        batch_transform=plugins.batch_fn(), **common)
    if len(train) == 0:
        raise AblateError(f"batch_size {batch_size} exceeds the {len(train.sampler)} training "
                          f"images of rank {rank}: no full batch per epoch")
    if eval_dataset is None:
        return train, None
    sizes = eval_sizes(eval_size)
    evaluation = {str(s): DetectionLoader(DetectionTrainDataset(eval_dataset, eval_resize, s,
                                                                seed=seed, decode=decode),
                                          eval_batch_size or batch_size, train=False, **common)
                  for s in sizes}
    return train, evaluation if len(sizes) > 1 else evaluation[str(sizes[0])]


def eval_sizes(eval_size: int | Sequence[int]) -> list[int]:
    """``416`` → ``[416]``; ``[416, 320, 608]`` stays (order kept: the first is the main one)."""
    sizes = [eval_size] if isinstance(eval_size, (int, float, str)) else list(eval_size)
    try:
        out = [int(s) for s in sizes]
    except (TypeError, ValueError):
        out = []
    if not out or any(s < 32 or s % 32 for s in out) or len(set(out)) != len(out):
        raise AblateError(f"eval_size must be a multiple of 32 or a list of distinct ones, "
                          f"got {eval_size!r}")
    return out
