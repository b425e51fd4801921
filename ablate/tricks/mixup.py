"""Mixup for classification (Zhang et al., 2018; Bag of Tricks Sec. 5.4).

λ ~ Beta(α, α) once per batch; every sample is paired with the batch reversed (GluonCV's
``x[::-1]``) and the (smoothed) one-hot targets are mixed with the same λ. Optionally off for
the last N epochs. The λ draw uses the global RNG, which the trainer seeds per epoch and rank,
so an interrupted run resumes with the same draws.
"""

from __future__ import annotations

from typing import Any

import torch

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import TrainState, Trick


def mix_batch(images: torch.Tensor, targets: torch.Tensor, lam: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each sample with its partner in the reversed batch."""
    return (lam * images + (1 - lam) * images.flip(0),
            lam * targets + (1 - lam) * targets.flip(0))


@TRICKS.register("mixup")
class Mixup(Trick):
    name = "mixup"

    def __init__(self, alpha: float = 0.2, off_last_epochs: int = 0) -> None:
        if alpha <= 0:
            raise AblateError(f"mixup.alpha must be positive, got {alpha}")
        if off_last_epochs < 0:
            raise AblateError(f"mixup.off_last_epochs must be >= 0, got {off_last_epochs}")
        self.alpha, self.off_last_epochs = float(alpha), int(off_last_epochs)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    def active(self, state: TrainState) -> bool:
        return state.epoch < state.epochs - self.off_last_epochs

    def batch_transform(self, batch: dict[str, Any], state: TrainState) -> dict[str, Any]:
        if not self.active(state):
            return batch
        lam = float(self._beta.sample())
        image, target = mix_batch(batch["image"], batch["target"], lam)
        return {**batch, "image": image, "target": target}
