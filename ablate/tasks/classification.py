"""Image classification: owns the loss (soft-target cross-entropy) and the evaluation.

Hard labels become one-hot targets, then every trick's ``targets`` transform (label smoothing)
applies; batch transforms (mixup) see soft targets. Label smoothing and mixup are both linear in
the target, so one soft-target cross-entropy covers every combination.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ablate.engine.dist import all_reduce_sum
from ablate.eval.topk import topk_correct
from ablate.registry import TASKS


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −Σ target · log softmax(logits) (fp32 for stability)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


@TASKS.register("classification")
class ClassificationTask:
    """Args:
        model: the (possibly DDP-wrapped) network.
        num_classes: K.
        target_fns: the tricks' ``targets`` transforms, in order.
    """

    def __init__(self, model: nn.Module, num_classes: int,
                 target_fns: Iterable[Callable[[torch.Tensor], torch.Tensor]] = ()) -> None:
        self.model, self.num_classes, self.target_fns = model, num_classes, list(target_fns)

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        target = F.one_hot(batch["label"], self.num_classes).float()
        for fn in self.target_fns:
            target = fn(target)
        return {**batch, "target": target}

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.model(batch["image"])
        return {"loss": soft_cross_entropy(logits, batch["target"])}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[dict[str, Any]],
                 autocast: Callable[[], Any]) -> dict[str, float]:
        """Top-1 / top-5 accuracy in percent, summed over every process."""
        model.eval()
        counts = None
        device = next(model.parameters()).device
        for batch in loader:
            with autocast():
                logits = model(batch["image"])
            c = torch.cat([topk_correct(logits.float(), batch["label"], (1, 5)),
                           torch.tensor([len(batch["label"])], device=logits.device)])
            counts = c if counts is None else counts + c
        counts = all_reduce_sum(counts if counts is not None
                                else torch.zeros(3, dtype=torch.long, device=device))
        n = max(int(counts[2]), 1)
        return {"top1": 100.0 * int(counts[0]) / n, "top5": 100.0 * int(counts[1]) / n}
