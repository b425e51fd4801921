"""The Faster R-CNN data pipeline (Bag of Freebies, Zhang et al. 2019, Sec. 3.3 and 4.1).

"The shorter sides of input images are resized to 600 pixels while ensuring the longer side is
smaller than 1000 pixels. Training and validation … follow the same preprocessing steps, except
that training images have chances of 0.5 to flip horizontally": no crop, no expand, no colour
jitter (sampling-based detectors do not need them, Sec. 3.3). COCO uses 800 / 1333.

Per sample, in DataLoader workers: dataset → the tricks' dataset wrappers (visually coherent
mixup on the raw images, the same as YOLOv3's) → ``RcnnResize`` (the ``data_augmentation``
trick puts ``RcnnResize(flip=True)`` in its place; "- data augmentation" removes the flip) →
``collate_padded``:
images zero-padded at the bottom/right to the batch's largest size rounded up to a multiple of
32 (torchvision's ``GeneralizedRCNNTransform.batch_images``), with ``image_sizes`` (h, w) of each
unpadded image. On the device, ``DetectionLoader`` normalises and zeroes the padding again.
With ``decode: device`` the workers only read the files and draw (mixup, flip); the loader
decodes, mixes, resizes, flips and pads on its device (see ``pipelines.detection``).

The resize is GluonCV's ``resize_short_within`` (``rcnn_size``): scale = short / min(h, w),
unless round(scale · max(h, w)) > max_side, then scale = max_side / max(h, w); the new sides are
round(h · scale), round(w · scale); bilinear (cv2 INTER_LINEAR, no antialiasing); boxes scale by
(new w / w, new h / h).

Multi-scale training (the MMDetection benchmark's Table 8): ``data.train_scales`` lists
``[short, max_side]`` pairs and each training image draws its own, keeping its aspect ratio;
``data.train_scale_mode`` ``value`` (default) picks one pair uniformly, ``range`` takes two pairs
``[lo, hi]`` and draws short ~ randint(lo_short, hi_short) and max_side ~ randint(lo_max,
hi_max), bounds included (MMDetection's ``multiscale_mode``). The draw comes before the flip,
from the image's generator; evaluation stays at ``short_side`` / ``max_side``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from ablate.data.pipelines.detection import (DetectionLoader, DetectionTrainDataset,
                                          collate_detection)
from ablate.data.pipelines.transforms import SampleTransform, resize_image
from ablate.data.loading import IMAGENET_MEAN, IMAGENET_STD, DataPlugins
from ablate.errors import AblateError

SIZE_DIVISIBLE = 32  # torchvision's padding multiple (a stride-32 FPN level lines up)
SCALE_MODES = ("value", "range")


def rcnn_size(height: int, width: int, short: int, max_side: int) -> tuple[int, int]:
    """(new h, new w): shorter side ``short`` unless the longer would exceed ``max_side``."""
    lo, hi = min(height, width), max(height, width)
    scale = short / lo
    if round(scale * hi) > max_side:
        scale = max_side / hi
    return max(1, round(height * scale)), max(1, round(width * scale))


class RcnnResize(SampleTransform):
    """Resize (``rcnn_size``) and, with ``flip``, flip horizontally with probability 0.5
    (x1' = w − x2, x2' = w − x1); called with ``out_size=(short, max_side)``, or drawing it
    from ``scales`` (``[(short, max_side), …]``, ``mode`` value or range: module docstring);
    the draws come from ``generator`` (else the global RNG)."""

    def __init__(self, flip: bool = False, scales: Sequence[Sequence[int]] | None = None,
                 mode: str = "value") -> None:
        self.flip = bool(flip)
        self.scales = tuple(tuple(int(v) for v in pair) for pair in scales) if scales else None
        self.mode = mode

    def flipping(self) -> "RcnnResize":
        """This resize with the horizontal flip (the ``data_augmentation`` trick's)."""
        return RcnnResize(True, self.scales, self.mode)

    def scale(self, generator: torch.Generator | None = None) -> tuple[int, int]:
        """A training image's ``(short, max_side)`` drawn from ``scales``."""
        assert self.scales is not None
        if self.mode == "value":
            return self.scales[int(torch.randint(len(self.scales), (), generator=generator))]
        (lo_short, lo_max), (hi_short, hi_max) = self.scales
        short = int(torch.randint(lo_short, hi_short + 1, (), generator=generator))
        return short, int(torch.randint(lo_max, hi_max + 1, (), generator=generator))

    def draw(self, height: int, width: int, target: dict[str, Any], *,
             out_size: Sequence[int], generator: torch.Generator | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.scales is not None:
            out_size = self.scale(generator)
        short, max_side = (int(s) for s in out_size)
        h, w = int(height), int(width)
        nh, nw = rcnn_size(h, w, short, max_side)
        scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=torch.float32)
        boxes = target["boxes"].float().reshape(-1, 4) * scale
        flip = self.flip and float(torch.rand((), generator=generator)) < 0.5
        if flip:
            boxes = torch.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]],
                                1)
        return {"size": (nh, nw), "flip": flip}, {**target, "boxes": boxes}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        image = resize_image(image, params["size"], "bilinear")
        return (image.flip(-1) if params["flip"] else image).contiguous()


class RcnnEvalResize(RcnnResize):
    """``RcnnResize`` without flip, keeping the original boxes (``orig_boxes``) for scoring."""

    def __init__(self) -> None:
        super().__init__(flip=False)

    def draw(self, height: int, width: int, target: dict[str, Any], *,
             out_size: Sequence[int], generator: torch.Generator | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        params, out = super().draw(height, width, target, out_size=out_size)
        out["orig_boxes"] = target["boxes"].float().reshape(-1, 4).clone()
        return params, out


def rcnn_resize(image: torch.Tensor, target: dict[str, Any], *, out_size: Sequence[int],
                generator: torch.Generator | None = None, flip: bool = False
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """``RcnnResize(flip)`` as a function.

    Args:
        image: uint8 ``[3, H, W]`` (a float 0–255 mixup canvas is rounded).
        target: dataset target (float xyxy ``boxes`` in pixels).
        out_size: ``(short, max_side)``.
        generator: the flip draw's generator (else the global RNG).
        flip: draw the horizontal flip.
    Returns:
        ``(uint8 [3, h, w], target)`` with boxes in the new pixels.
    """
    return RcnnResize(flip)(image, target, out_size=out_size, generator=generator)


rcnn_eval_resize = RcnnEvalResize()


def collate_padded(samples: Sequence[tuple[torch.Tensor, dict[str, Any]]], with_gt: bool = False,
                   size_divisible: int = SIZE_DIVISIBLE) -> dict[str, Any]:
    """``collate_detection`` of images zero-padded (bottom, right) to the batch's largest size,
    rounded up to ``size_divisible``, plus ``image_sizes`` int64 [B, 2] (h, w unpadded)."""
    return collate_detection(samples, with_gt=with_gt, size_divisible=size_divisible)


def check_train_scales(scales: Any, mode: Any) -> tuple[tuple[int, int], ...] | None:
    """``data.train_scales`` as ``((short, max_side), …)`` (None: the fixed scale), checked
    against ``data.train_scale_mode``, or an ``AblateError`` naming the key."""
    given_mode, mode = mode, "value" if mode is None else mode
    if mode not in SCALE_MODES:
        raise AblateError(f"data.train_scale_mode={mode!r}: must be one of "
                          f"{', '.join(SCALE_MODES)}")
    if scales is None:
        if given_mode is not None:
            raise AblateError(f"data.train_scale_mode={given_mode!r} needs data.train_scales "
                              "(the [short_side, max_side] pairs to draw from)")
        return None
    pairs = list(scales) if isinstance(scales, (list, tuple)) else None
    ok = bool(pairs) and all(isinstance(p, (list, tuple)) and len(p) == 2 and
                             all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                 for v in p) for p in pairs)
    if not ok:
        raise AblateError(f"data.train_scales={scales!r}: must be a list of [short_side, "
                          "max_side] pairs of positive integers")
    pairs = [(int(a), int(b)) for a, b in pairs]
    for short, longest in pairs:
        if longest < short:
            raise AblateError(f"data.train_scales: [{short}, {longest}] has max_side < "
                              "short_side")
    if mode == "range":
        if len(pairs) != 2:
            raise AblateError(f"data.train_scales with train_scale_mode=range takes two pairs "
                              f"[lo, hi], got {len(pairs)}")
        (ls, lm), (hs, hm) = pairs
        if ls > hs or lm > hm:
            raise AblateError(f"data.train_scales: range lo {[ls, lm]} > hi {[hs, hm]}")
    return tuple(pairs)


def check_scale(short_side: Any, max_side: Any) -> tuple[int, int]:
    """``(short_side, max_side)`` as ints, or an ``AblateError`` naming the config keys."""
    try:
        short, longest = int(short_side), int(max_side)
    except (TypeError, ValueError):
        short = longest = 0
    if short < 1 or longest < short:
        raise AblateError(f"the rcnn pipeline resizes the shorter side to data.short_side and "
                          f"the longer to at most data.max_side: need 1 <= short_side <= "
                          f"max_side, got {short_side!r} and {max_side!r}")
    return short, longest


def build_rcnn_loaders(train_dataset: Dataset, eval_dataset: Dataset | None = None, *,
                       batch_size: int, eval_batch_size: int | None = None,
                       scale: Sequence[int] = (600, 1000),
                       plugins: DataPlugins = DataPlugins(), rank: int = 0,
                       world_size: int = 1, seed: int = 0, num_workers: int = 0,
                       device: torch.device | str = "cpu", channels_last: bool = False,
                       mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD,
                       persistent_workers: bool | None = None,
                       size_divisible: int = SIZE_DIVISIBLE, decode: str = "worker",
                       train_scales: Sequence[Sequence[int]] | None = None,
                       train_scale_mode: str | None = None
                       ) -> tuple[DetectionLoader, Any]:
    """Train and eval loaders for Faster R-CNN (see the module docstring).

    Args:
        train_dataset, eval_dataset: detection datasets (eval may be None).
        batch_size, eval_batch_size: per-rank batch sizes (eval defaults to batch_size).
        scale: ``(shorter side, longer-side cap)``: evaluation, and training unless
            ``train_scales`` is given.
        plugins: the tricks' dataset wrappers and sample transform (in place of
            ``RcnnResize()``), for training; batch sides and batch transforms are refused (the
            batches are padded, not square).
        rank, world_size, seed, num_workers, device, channels_last, mean, std,
        persistent_workers: see ``DetectionLoader``.
        size_divisible: padded sides are multiples of this.
        decode: ``"worker"`` or ``"device"`` (see ``build_detection_loaders``).
        train_scales, train_scale_mode: multi-scale training (module docstring).
    Returns:
        ``(train_loader, eval_loader or None)``.
    """
    if plugins.batch_transform or plugins.batch_side:
        raise AblateError("the rcnn pipeline resizes each image by short_side / max_side and "
                          "pads the batch: it takes no batch side or batch transform "
                          "(random_shapes is for the yolo pipeline)")
    common = dict(mean=mean, std=std, rank=rank, world_size=world_size, seed=seed,
                  num_workers=num_workers, device=device, channels_last=channels_last,
                  persistent_workers=persistent_workers, size_divisible=size_divisible)
    train = DetectionLoader(
        DetectionTrainDataset(plugins.wrap(train_dataset), plugins.transform(RcnnResize(
            scales=check_train_scales(train_scales, train_scale_mode),
            mode=train_scale_mode or "value")),
                              tuple(scale), seed=seed, decode=decode),
        batch_size, train=True, **common)
    if len(train) == 0:
        raise AblateError(f"batch_size {batch_size} exceeds the {len(train.sampler)} training "
                          f"images of rank {rank}: no full batch per epoch")
    if eval_dataset is None:
        return train, None
    evaluation = DetectionLoader(
        DetectionTrainDataset(eval_dataset, rcnn_eval_resize, tuple(scale), seed=seed,
                              decode=decode),
        eval_batch_size or batch_size, train=False, **common)
    return train, evaluation
