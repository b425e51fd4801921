"""Detection train/eval loaders for YOLOv3 ("Bag of Freebies", Zhang et al. 2019).

Per sample, in DataLoader workers: dataset → optional visually coherent mixup (``MixupDataset``,
Sec. 3.1, raw images) → a sample transform (``yolo_augment``, ``plain_resize``, ``eval_resize``)
→ ``collate_detection`` (boxes padded per batch). Per batch, on the device: uint8 → float,
ImageNet normalisation, optional channels-last, optional ``RandomShapes`` (training only).

Per-epoch state reaches the workers: the epoch lives in a shared-memory tensor (``SharedEpoch``)
read on every item, so ``set_epoch`` in the main process is seen by forked or spawned, persistent
or re-created workers (GluonCV's reference switches mixup off through an attribute its workers
never see). Every random draw of an item comes from a generator seeded by (seed, epoch, index):
samples do not depend on the number of workers.

Sharding follows ``DistributedSampler``: training shuffles with seed + epoch, pads by wrapping
and drops the last partial batch; evaluation gives rank r every world-th image, without padding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ablate.data.detection_transforms import (IMAGENET_MEAN, IMAGENET_STD, YoloAugment,
                                              eval_resize, mix_pair, plain_resize)
from ablate.errors import AblateError

SampleTransform = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
_MIX, _AUG, _SHAPES = 1, 2, 3  # RNG streams


def item_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded by hashing (seed, epoch, index, stream) (numpy SeedSequence)."""
    words = [int(x) % 2**32 for x in (seed, epoch, index, stream)]
    hi, lo = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(hi) << 31) ^ int(lo))


class SharedEpoch:
    """An epoch counter in shared memory: set in the main process, read by DataLoader workers
    (fork: inherited mapping; spawn: torch shares the storage when pickling the dataset)."""

    def __init__(self, epoch: int = 0) -> None:
        self._t = torch.full((), int(epoch), dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._t.fill_(int(epoch))

    def get(self) -> int:
        return int(self._t)


def with_weights(target: dict[str, Any]) -> dict[str, Any]:
    """``target`` with a float ``weights`` column (1.0 per box) when it has none."""
    if "weights" in target:
        return target
    return {**target, "weights": torch.ones(len(target["boxes"]), dtype=torch.float32)}


class MixupDataset(Dataset):
    """Visually coherent mixup of raw detection samples (GluonCV's ``MixupDetection``).

    While active (``epoch < epochs - off_last_epochs``) item i is blended with a uniformly
    drawn other item j ≠ i by ``mix_pair``: λ ~ Beta(alpha, beta) clipped to [0, 1] with box
    weights λ / 1 − λ (``mode="beta"``), or λ = 0.5 with all weights 1.0 (``mode="even"``, the
    "0.5:0.5 evenly, unweighted" row); λ ≥ 1 returns item i unmixed. Inactive, or unmixed,
    items get weights 1.0. The draws use ``item_generator(seed, epoch, i)``.

    Args:
        base: a detection dataset (``(uint8 image, target)`` items, at least 2).
        alpha, beta: Beta parameters.
        mode: ``"beta"`` or ``"even"``.
        off_last_epochs: mixup is off for this many final epochs.
        epochs: total training epochs.
        seed: base seed.
    """

    def __init__(self, base: Dataset, *, alpha: float = 1.5, beta: float = 1.5,
                 mode: str = "beta", off_last_epochs: int = 20, epochs: int, seed: int = 0):
        if mode not in ("beta", "even") or min(alpha, beta) <= 0 or off_last_epochs < 0 \
                or epochs < 1 or len(base) < 2:
            raise AblateError(f"mixup needs mode 'beta' or 'even', alpha, beta > 0, "
                              f"off_last_epochs >= 0, epochs >= 1 and >= 2 images; got "
                              f"{mode!r}, {alpha}, {beta}, {off_last_epochs}, {epochs}, "
                              f"{len(base)} images")
        self.base, self.alpha, self.beta, self.mode = base, float(alpha), float(beta), mode
        self.off_last_epochs, self.epochs, self.seed = int(off_last_epochs), int(epochs), seed
        self._epoch = SharedEpoch()

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (shared with the workers)."""
        self._epoch.set(epoch)

    def active(self, epoch: int | None = None) -> bool:
        """Whether mixing happens in ``epoch`` (default: the current one)."""
        return (self.epoch if epoch is None else epoch) < self.epochs - self.off_last_epochs

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.base[i]
        target = with_weights(target)
        epoch = self.epoch
        if not self.active(epoch):
            return image, target
        g = item_generator(self.seed, epoch, i, _MIX)
        if self.mode == "even":
            lam = 0.5
        else:
            x = torch._standard_gamma(torch.tensor([self.alpha, self.beta], dtype=torch.float64),
                                      generator=g)  # Beta(a, b) = Ga / (Ga + Gb)
            lam = min(max(float(x[0] / x.sum()), 0.0), 1.0)
        if lam >= 1.0:
            return image, target
        j = int(torch.randint(len(self.base) - 1, (1,), generator=g))
        j += int(j >= i)  # uniform over the other items
        image2, target2 = self.base[j]
        return mix_pair(image, target, image2, with_weights(target2), lam,
                        weighted=self.mode == "beta")


class DetectionTrainDataset(Dataset):
    """(optional mixup) → ``sample_transform`` per item, targets with ``weights``.

    Args:
        base: a detection dataset.
        sample_transform: called as ``f(image, target, out_size=…, generator=g)`` with
            ``g = item_generator(seed, epoch, index)`` (``yolo_augment``, ``plain_resize``;
            ``eval_resize`` makes this the evaluation dataset).
        out_size: square network input side.
        mixup: None, a ``MixupDataset`` wrapping ``base``, or a dict of its keyword arguments.
        seed: base seed of the per-item generators.
    """

    def __init__(self, base: Dataset, sample_transform: SampleTransform, out_size: int,
                 mixup: MixupDataset | Mapping[str, Any] | None = None, seed: int = 0):
        if isinstance(mixup, Mapping):
            try:
                mixup = MixupDataset(base, **{"seed": seed, **mixup})
            except TypeError as e:  # a misspelt or missing option
                raise AblateError(f"mixup options {dict(mixup)}: {e}") from None
        if mixup is not None and mixup.base is not base:
            raise AblateError("DetectionTrainDataset: the MixupDataset must wrap `base`")
        self.base, self.mixup, self.transform = base, mixup, sample_transform
        self.source = mixup if mixup is not None else base
        self.out_size, self.seed = out_size, seed
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for the per-item generators and the mixup switch (shared)."""
        self._epoch.set(epoch)
        if self.mixup is not None:
            self.mixup.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.source[i]
        g = item_generator(self.seed, self._epoch.get(), i, _AUG)
        return self.transform(image, with_weights(target), out_size=self.out_size, generator=g)


def collate_detection(samples: Sequence[tuple[torch.Tensor, dict[str, Any]]],
                      with_gt: bool = False) -> dict[str, Any]:
    """Stack equally sized samples and pad their boxes to the batch's maximum M (≥ 1).

    Args:
        samples: ``(uint8 [3, S, S], target)`` pairs.
        with_gt: add ``gt`` (evaluation batches).
    Returns:
        ``image`` uint8 [B, 3, S, S], ``boxes`` float [B, M, 4] (0 padding), ``labels`` int64
        [B, M] (−1), ``weights`` float [B, M] (0), ``difficult`` bool [B, M] (False),
        ``image_id`` list, ``orig_size`` int64 [B, 2] (H, W); with ``with_gt``: ``gt``, one
        dict per image of numpy ``boxes`` (float32 [N, 4], original image coordinates:
        ``orig_boxes`` when the transform kept them), ``labels`` and ``difficult``.
    """
    images = [img for img, _ in samples]
    targets = [t for _, t in samples]
    if len({tuple(img.shape) for img in images}) > 1:
        raise AblateError(f"collate_detection needs equally sized images, got "
                          f"{sorted({tuple(img.shape) for img in images})}")
    b, m = len(samples), max([1] + [len(t["boxes"]) for t in targets])
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
    batch = {"image": torch.stack(images), "boxes": boxes, "labels": labels,
             "weights": weights, "difficult": difficult,
             "image_id": [t["image_id"] for t in targets],
             "orig_size": torch.tensor([list(t["orig_size"]) for t in targets],
                                       dtype=torch.int64).reshape(b, 2)}
    if with_gt:
        batch["gt"] = [{"boxes": t.get("orig_boxes", t["boxes"]).numpy().astype(np.float32),
                        "labels": t["labels"].numpy().astype(np.int64),
                        "difficult": t["difficult"].numpy().astype(bool)} for t in targets]
    return batch


class DetectionLoader:
    """Batches of a detection dataset for one rank, moved to ``device`` and normalised.

    The same interface as ``InMemoryLoader``: ``set_epoch``, ``__len__``, ``__iter__`` of dicts
    (``collate_detection``'s, with ``image`` float, normalised). ``batch_transform(batch,
    iteration)`` runs on the device batch with the global iteration ``epoch · len + i``.
    ``persistent_workers`` defaults to True with workers: the epoch is shared (see module
    docstring), so keeping workers alive between epochs is safe. ``collate`` replaces
    ``collate_detection`` (called with ``with_gt``); a batch with ``image_sizes`` (the padded
    Faster R-CNN batches) gets zeros outside each image after normalisation, as torchvision's
    ``GeneralizedRCNNTransform`` pads.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 rank: int = 0, world_size: int = 1, seed: int = 0, num_workers: int = 0,
                 device: torch.device | str = "cpu", channels_last: bool = False,
                 batch_transform: Callable[[dict, int], dict] | None = None,
                 persistent_workers: bool | None = None,
                 multiprocessing_context: str | None = None,
                 collate: Callable[..., dict[str, Any]] | None = None) -> None:
        self.dataset, self.train, self.epoch = dataset, train, 0
        self.device = torch.device(device)
        self.sampler: Sampler | list[int] = (
            DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                               seed=seed) if train else list(range(rank, len(dataset), world_size)))
        persistent = num_workers > 0 and (persistent_workers is None or persistent_workers)
        self.loader = DataLoader(
            dataset, batch_size, sampler=self.sampler, num_workers=num_workers,
            collate_fn=functools.partial(collate or collate_detection, with_gt=not train),
            pin_memory=self.device.type == "cuda", drop_last=train,
            persistent_workers=persistent,
            multiprocessing_context=multiprocessing_context if num_workers > 0 else None)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(std, device=self.device).view(shape) * 255
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batch_transform = batch_transform if train else None

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle (training) and publish the epoch to the dataset and its workers."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        """Stop persistent workers now and release their queues (the forked run process
        leaves with ``os._exit``, which skips the finalizers that would do it)."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None

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
            batch = self._to_device(batch)
            if self.batch_transform is not None:
                batch = self.batch_transform(batch, start + i)
                batch["image"] = batch["image"].contiguous(memory_format=self.memory_format)
            yield batch


def scaled_sizes(base: int = 416, proxy: int = 160, multiple: int | None = None
                 ) -> tuple[int, ...]:
    """The random training shapes {320, 352, …, 608} scaled by ``proxy / base``.

    Each size is rounded to the nearest multiple of ``multiple`` (duplicates removed). By
    default that is 32, which a stride-32 network needs for its up-sampled maps to line up,
    unless fewer than 3 distinct sizes remain (proxies under ~80 px): then 8, which needs a
    head that aligns its maps itself. ``scaled_sizes(416, 416)`` is the paper's set;
    ``scaled_sizes(416, 160)`` is (128, 160, 192, 224).
    """
    if base < 1 or proxy < 1:
        raise AblateError(f"scaled_sizes needs positive sizes, got base={base}, proxy={proxy}")
    raw = [s * proxy / base for s in range(320, 609, 32)]

    def rounded(m: int) -> tuple[int, ...]:
        return tuple(sorted({max(m, m * int(np.floor(s / m + 0.5))) for s in raw}))

    if multiple is None:
        multiple = 32 if len(rounded(32)) >= 3 else 8
    return rounded(int(multiple))


class RandomShapes:
    """Random training shapes (YOLOv3): one size per ``every`` iterations for the whole batch.

    The size for iteration t is drawn uniformly from ``sizes`` by a generator seeded with
    (seed, t // every), so it is the same on every rank and after a resume. The batch image is
    resized with bilinear ``F.interpolate`` and the boxes scaled by (s/W, s/H); padding boxes
    stay zero. Apply to training batches only; evaluation stays at its fixed size.

    Args:
        sizes: candidate square sizes (e.g. ``scaled_sizes(...)`` for proxies).
        every: iterations per size.
        seed: base seed.
    """

    def __init__(self, sizes: Sequence[int] = range(320, 609, 32), every: int = 10,
                 seed: int = 0) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        if not self.sizes or min(self.sizes) < 1 or every < 1:
            raise AblateError(f"RandomShapes needs positive sizes and every >= 1, got "
                              f"{self.sizes}, {every}")
        self.every, self.seed = int(every), seed

    def size_at(self, iteration: int) -> int:
        """The size used at ``iteration``."""
        g = item_generator(self.seed, iteration // self.every, 0, _SHAPES)
        return self.sizes[int(torch.randint(len(self.sizes), (1,), generator=g))]

    def __call__(self, batch: dict[str, Any], iteration: int) -> dict[str, Any]:
        s = self.size_at(iteration)
        image = batch["image"]
        h, w = image.shape[-2:]
        if (h, w) == (s, s):
            return batch
        out = F.interpolate(image.float(), size=(s, s), mode="bilinear", align_corners=False)
        if not image.is_floating_point():
            out = out.round().clamp(0, 255).to(image.dtype)
        boxes = batch["boxes"]
        old = torch.tensor([w, h] * 2, dtype=boxes.dtype, device=boxes.device)
        return {**batch, "image": out, "boxes": boxes * s / old}  # exact for s/old·old


def build_detection_loaders(train_dataset: Dataset, eval_dataset: Dataset | None = None, *,
                            batch_size: int, eval_batch_size: int | None = None,
                            train_size: int = 416, eval_size: int | Sequence[int] = 416,
                            augment: bool = True,
                            mixup: Mapping[str, Any] | None = None, epochs: int | None = None,
                            random_shapes: RandomShapes | None = None, rank: int = 0,
                            world_size: int = 1, seed: int = 0, num_workers: int = 0,
                            device: torch.device | str = "cpu", channels_last: bool = False,
                            mean: Sequence[float] = IMAGENET_MEAN,
                            std: Sequence[float] = IMAGENET_STD,
                            persistent_workers: bool | None = None
                            ) -> tuple[DetectionLoader, Any]:
    """Train and eval loaders for YOLOv3-style detection.

    Args:
        train_dataset, eval_dataset: detection datasets (eval may be None).
        batch_size, eval_batch_size: per-rank batch sizes (eval defaults to batch_size).
        train_size, eval_size: square input sides (training before ``random_shapes``). A list
            of eval sizes (Det-T5: ``[416, 320, 608]``) evaluates the same weights at each: the
            eval loader is then a dict ``{"416": …, "320": …}`` (metrics ``map@416``, …; the
            first size's metrics are also reported unprefixed).
        augment: ``yolo_augment`` (expand fill = ``mean`` × 255) else ``plain_resize``.
        mixup: ``MixupDataset`` keyword arguments (``alpha``, ``beta``, ``mode``,
            ``off_last_epochs``); ``epochs`` is taken from the argument below unless given.
        epochs: total training epochs (needed by mixup's off switch).
        random_shapes: batch transform for training (e.g. ``RandomShapes()``).
        rank, world_size, seed, num_workers, device, channels_last, mean, std,
        persistent_workers: see ``DetectionLoader``.
    Returns:
        ``(train_loader, eval_loader, a dict of them, or None)``.
    """
    if mixup is not None:
        mixup = {"epochs": epochs, **mixup}
        if mixup["epochs"] is None:
            raise AblateError("mixup needs the number of training epochs (epochs=...)")
    fill = tuple(round(255 * m) for m in mean)
    transform = YoloAugment(mean_pixel=fill) if augment else plain_resize
    common = dict(mean=mean, std=std, rank=rank, world_size=world_size, seed=seed,
                  num_workers=num_workers, device=device, channels_last=channels_last,
                  persistent_workers=persistent_workers)
    train = DetectionLoader(
        DetectionTrainDataset(train_dataset, transform, train_size, mixup=mixup, seed=seed),
        batch_size, train=True, batch_transform=random_shapes, **common)
    if len(train) == 0:
        raise AblateError(f"batch_size {batch_size} exceeds the {len(train.sampler)} training "
                          f"images of rank {rank}: no full batch per epoch")
    if eval_dataset is None:
        return train, None
    sizes = eval_sizes(eval_size)
    evaluation = {str(s): DetectionLoader(DetectionTrainDataset(eval_dataset, eval_resize, s,
                                                                seed=seed),
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
