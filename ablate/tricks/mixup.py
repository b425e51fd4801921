"""Mixup.

Classification (Zhang et al., 2018; Bag of Tricks Sec. 5.4): λ ~ Beta(α, α), α = 0.2, once per
optimizer step; every sample is paired with its process's micro-batch reversed (GluonCV's
``x[::-1]`` on each device's slice) and the (smoothed) one-hot targets are mixed with the same
λ. As GluonCV draws one λ before splitting the batch over its devices, λ is the same on every
rank and every accumulation micro-batch of a step: it is drawn from a generator keyed by (run
seed, iteration) (``step_lambda``), so an interrupted run resumes with the same draws too.

Detection (Bag of Freebies Sec. 3.1, "visually coherent"): λ ~ Beta(1.5, 1.5) per image pair,
both images on one zero-filled canvas before the geometric augmentation, every box kept with a
loss weight λ or 1 − λ; off for the last 20 epochs. ``mode: even`` is Table 1's unweighted
0.5:0.5 blend. It wraps the raw training set (``MixupDataset``, the data layer's
``wrap_dataset`` point), whose per-epoch switch reaches DataLoader workers; with
``data.decode=device`` the workers draw the pairs and λ and the blend runs on the training
device (``MixupDataset.plan`` / ``combine``).

Faster R-CNN (``rcnn``, Table 4) uses the same dataset-level mixup (before the resize and flip);
each anchor and RoI matched to a box takes that box's weight in the RPN and RCNN losses
(ablate/models/faster_rcnn.py; YOLOv3's losses in ablate/tasks/yolo.py take it the same way).
The paper mentions no switch-off for Faster R-CNN, so ``off_last_epochs`` defaults to 0 there.
**≠** GluonCV's script mixes with a fixed 0.5 that scales the whole loss, off for the last 20
epochs — all of its 20 VOC epochs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ablate.data.loading import MIX_STREAM, CombiningDataset, SharedEpoch, item_generator
from ablate.data.targets import per_box_keys, with_weights
from ablate.engine.types import DataContext
from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import TrainState, Trick

DEFAULTS = {"classification": dict(alpha=0.2, off_last_epochs=0),
            "yolo": dict(alpha=1.5, off_last_epochs=20),
            "rcnn": dict(alpha=1.5, off_last_epochs=0)}
MODES = ("beta", "even")


def step_lambda(alpha: float, beta: float, seed: int, iteration: int) -> float:
    """λ ~ Beta(alpha, beta) of optimizer step ``iteration``: the same in every process."""
    rng = np.random.default_rng((seed, iteration, MIX_STREAM))
    return float(rng.beta(alpha, beta))


def mix_batch(images: torch.Tensor, targets: torch.Tensor, lam: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each sample with its partner in the reversed batch."""
    return (lam * images + (1 - lam) * images.flip(0),
            lam * targets + (1 - lam) * targets.flip(0))


@TRICKS.register("mixup")
class Mixup(Trick):
    name = "mixup"
    tasks = ("classification", "yolo", "rcnn")

    def __init__(self, alpha: float | None = None, beta: float | None = None,
                 off_last_epochs: int | None = None, mode: str = "beta") -> None:
        d = DEFAULTS[self.task]
        self.alpha = float(d["alpha"] if alpha is None else alpha)
        self.beta = self.alpha if beta is None else float(beta)
        self.off_last_epochs = int(d["off_last_epochs"] if off_last_epochs is None
                                   else off_last_epochs)
        self.mode = mode
        if self.alpha <= 0 or self.beta <= 0:
            raise AblateError(f"mixup.alpha and mixup.beta must be positive, got "
                              f"{self.alpha}, {self.beta}")
        if self.off_last_epochs < 0:
            raise AblateError(f"mixup.off_last_epochs must be >= 0, got {self.off_last_epochs}")
        if mode not in MODES or (mode == "even" and self.task == "classification"):
            raise AblateError(f"mixup.mode must be one of {MODES} ('even' is for detection), "
                              f"got '{mode}'")

    def active(self, state: TrainState) -> bool:
        return state.epoch < state.epochs - self.off_last_epochs

    def uses(self, point: str) -> bool:
        # classification mixes the batch; detection mixes whole images in the dataset
        if point in ("batch_transform", "wrap_dataset"):
            return (point == "batch_transform") == (self.task == "classification")
        return super().uses(point)

    def batch_transform(self, batch: dict[str, Any], state: TrainState) -> dict[str, Any]:
        if self.task != "classification" or not self.active(state):
            return batch
        lam = step_lambda(self.alpha, self.beta, state.seed, state.iteration)
        image, target = mix_batch(batch["image"], batch["target"], lam)
        return {**batch, "image": image, "target": target}

    def wrap_dataset(self, dataset: Dataset, ctx: DataContext) -> Dataset:
        if self.task == "classification":
            return dataset
        return MixupDataset(dataset, alpha=self.alpha, beta=self.beta, mode=self.mode,
                            off_last_epochs=self.off_last_epochs, epochs=ctx.epochs,
                            seed=ctx.seed)


# --- detection: visually coherent mixup of raw images ---------------------------------------

def mix_images(image1: torch.Tensor, image2: torch.Tensor, lam: float) -> torch.Tensor:
    """``mix_pair``'s pixels: uint8 ``[3, max H, max W]``, a zero canvas with image1·lam and
    image2·(1 − lam) added at the top-left, rounded (on the images' device)."""
    (h1, w1), (h2, w2) = image1.shape[-2:], image2.shape[-2:]
    h, w = max(h1, h2), max(w1, w2)
    # the canvas takes image 1's layout (decoded images are HWC-strided views): the products
    # then stream through memory in order; the values do not depend on the layout
    hwc = image1.stride(0) == 1
    canvas = (torch.zeros(h, w, 3, device=image1.device).permute(2, 0, 1) if hwc
              else torch.zeros(3, h, w, device=image1.device))
    torch.mul(image1, lam, out=canvas[:, :h1, :w1])  # float32 products, written in place
    canvas[:, :h2, :w2].add_(torch.mul(image2, 1 - lam))
    return canvas.round_().clamp_(0, 255).to(torch.uint8)


def mix_targets(target1: dict[str, Any], target2: dict[str, Any], lam: float,
                size: tuple[int, int], *, weighted: bool = True) -> dict[str, Any]:
    """``mix_pair``'s target for a canvas of ``size`` (h, w)."""
    out = {k: v for k, v in target1.items()}
    keys2 = per_box_keys(target2)
    for k in per_box_keys(target1):
        if k not in keys2 or k == "weights":
            del out[k]  # a column only one image has cannot follow the union of boxes
    keys = [k for k in per_box_keys(target1) if k in keys2 and k != "weights"]
    for k in ["boxes"] + keys:
        out[k] = torch.cat([target1[k], target2[k].to(target1[k].dtype)])
    parts = []
    for t, f in ((target1, lam), (target2, 1 - lam)):
        base = t.get("weights", torch.ones(len(t["boxes"])))
        parts.append(base.float() * (float(f) if weighted else 1.0))
    out.update(weights=torch.cat(parts), orig_size=(int(size[0]), int(size[1])),
               mixed_with=target2.get("image_id"), mix_lambda=float(lam))
    return out


def mix_pair(image1: torch.Tensor, target1: dict[str, Any], image2: torch.Tensor,
             target2: dict[str, Any], lam: float, *, weighted: bool = True
             ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Visually coherent mixup of two raw samples (GluonCV's ``MixupDetection``).

    Args:
        image1, image2: uint8 ``[3, H_i, W_i]``.
        target1, target2: their targets.
        lam: blend factor of image 1 (image 2 gets 1 − lam).
        weighted: box weights lam / 1 − lam (else 1.0 for all: the "0.5:0.5 unweighted" row).
    Returns:
        ``(uint8 [3, max H, max W], target)``: ``mix_images``' canvas; the boxes (and every
        per-box column) of both, image 1's first; ``weights`` multiplies any existing weights;
        ``orig_size`` is the canvas size, ``mixed_with`` image 2's id and ``mix_lambda`` lam.
    """
    image = mix_images(image1, image2, lam)
    return image, mix_targets(target1, target2, lam, tuple(image.shape[-2:]),
                              weighted=weighted)


class MixupDataset(CombiningDataset):
    """Visually coherent mixup of raw detection samples (GluonCV's ``MixupDetection``).

    While active (``epoch < epochs - off_last_epochs``) item i is blended with a uniformly
    drawn other item j ≠ i by ``mix_pair``: λ ~ Beta(alpha, beta) clipped to [0, 1] with box
    weights λ / 1 − λ (``mode="beta"``), or λ = 0.5 with all weights 1.0 (``mode="even"``, the
    "0.5:0.5 evenly, unweighted" row); λ ≥ 1 returns item i unmixed. Inactive, or unmixed,
    items get weights 1.0. The draws use ``item_generator(seed, epoch, i, MIX_STREAM)``.

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
        if mode not in MODES or min(alpha, beta) <= 0 or off_last_epochs < 0 \
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

    def draw(self, i: int, epoch: int | None = None) -> tuple[float, int] | None:
        """Item ``i``'s mixup in ``epoch`` (default: the current one): ``(lam, j)``, or None
        when it stays unmixed."""
        epoch = self.epoch if epoch is None else epoch
        if not self.active(epoch):
            return None
        g = item_generator(self.seed, epoch, i, MIX_STREAM)
        if self.mode == "even":
            lam = 0.5
        else:
            x = torch._standard_gamma(torch.tensor([self.alpha, self.beta], dtype=torch.float64),
                                      generator=g)  # Beta(a, b) = Ga / (Ga + Gb)
            lam = min(max(float(x[0] / x.sum()), 0.0), 1.0)
        if lam >= 1.0:
            return None
        j = int(torch.randint(len(self.base) - 1, (1,), generator=g))
        return lam, j + int(j >= i)  # uniform over the other items

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.base[i]
        target = with_weights(target)
        mix = self.draw(i)
        if mix is None:
            return image, target
        image2, target2 = self.base[mix[1]]
        return mix_pair(image, target, image2, with_weights(target2), mix[0],
                        weighted=self.mode == "beta")

    def plan(self, i: int, epoch: int, read: Callable[[int], tuple[Any, tuple[int, int], dict]]
             ) -> tuple[list[Any], tuple[int, int], dict[str, Any], float | None]:
        """``__getitem__``'s draws and target from the files' sizes; ``params`` is λ (None:
        unmixed)."""
        data, size, target = read(i)
        target = with_weights(target)
        mix = self.draw(i, epoch)
        if mix is None:
            return [data], size, target, None
        data2, size2, target2 = read(mix[1])
        size = (max(size[0], size2[0]), max(size[1], size2[1]))
        target = mix_targets(target, with_weights(target2), mix[0], size,
                             weighted=self.mode == "beta")
        return [data, data2], size, target, mix[0]

    def combine(self, images: list[torch.Tensor], lam: float | None) -> torch.Tensor:
        return images[0] if lam is None else mix_images(images[0], images[1], lam)
