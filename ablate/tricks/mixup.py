"""Mixup.

Classification (Zhang et al., 2018; Bag of Tricks Sec. 5.4): λ ~ Beta(α, α), α = 0.2, once per
batch; every sample is paired with the batch reversed (GluonCV's ``x[::-1]``) and the (smoothed)
one-hot targets are mixed with the same λ. The λ draw uses the global RNG, which the trainer
seeds per epoch and rank, so an interrupted run resumes with the same draws.

Detection (Bag of Freebies Sec. 3.1, "visually coherent"): λ ~ Beta(1.5, 1.5) per image pair,
both images on one zero-filled canvas before the geometric augmentation, every box kept with a
loss weight λ or 1 − λ; off for the last 20 epochs. ``mode: even`` is Table 1's unweighted
0.5:0.5 blend. Implemented in the dataset (ablate/data/detection_loader.py), whose per-epoch
switch reaches DataLoader workers; with ``data.decode=device`` the workers draw the pairs and λ
and the blend runs on the training device.

Faster R-CNN (``rcnn``, Table 4) uses the same dataset-level mixup (before the resize and flip);
each anchor and RoI matched to a box takes that box's weight in the RPN and RCNN losses
(ablate/models/faster_rcnn.py). The paper mentions no switch-off for Faster R-CNN, so
``off_last_epochs`` defaults to 0 there. **≠** GluonCV's script mixes with a fixed 0.5 that
scales the whole loss, off for the last 20 epochs — all of its 20 VOC epochs.
"""

from __future__ import annotations

from typing import Any

import torch

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import TrainState, Trick

DEFAULTS = {"classification": dict(alpha=0.2, off_last_epochs=0),
            "yolo": dict(alpha=1.5, off_last_epochs=20),
            "rcnn": dict(alpha=1.5, off_last_epochs=0)}
MODES = ("beta", "even")


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
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.beta))

    def active(self, state: TrainState) -> bool:
        return state.epoch < state.epochs - self.off_last_epochs

    def batch_transform(self, batch: dict[str, Any], state: TrainState) -> dict[str, Any]:
        if self.task != "classification" or not self.active(state):
            return batch  # detection mixes whole images in the dataset (data_options)
        lam = float(self._beta.sample())
        image, target = mix_batch(batch["image"], batch["target"], lam)
        return {**batch, "image": image, "target": target}

    def data_options(self) -> dict[str, Any]:
        if self.task == "classification":
            return {}
        return {"mixup": {"alpha": self.alpha, "beta": self.beta, "mode": self.mode,
                          "off_last_epochs": self.off_last_epochs}}
