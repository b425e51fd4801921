"""Image classification: owns the loss (soft-target cross-entropy) and the evaluation.

Hard labels become one-hot targets, then every trick's ``targets`` transform (label smoothing)
applies; batch transforms (mixup) see soft targets. Label smoothing and mixup are both linear in
the target, so one soft-target cross-entropy covers every combination.

A model may return a tuple in training: ``(logits, *auxiliary logits)`` (Inception-V3's
auxiliary classifier); each auxiliary output adds ``aux_weight`` × its cross-entropy as
``aux_loss``. ``losses(outputs, batch)`` is separate from the forward so that a task wrapper
(distillation) can reuse it on the same outputs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ablate.engine.dist import all_reduce_sum
from ablate.eval.topk import topk_correct
from ablate.registry import TASKS


def main_logits(outputs: Any) -> torch.Tensor:
    """The main logits of a model's output (the first element of a training tuple)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −Σ target · log softmax(logits) (fp32 for stability)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


@TASKS.register("classification")
class ClassificationTask:
    """Args:
        model: the (possibly DDP-wrapped) network.
        num_classes: K.
        target_fns: the tricks' ``targets`` transforms, in order.
        aux_weight: weight of each auxiliary output's loss (0.4: TF-slim's Inception-V3).
    """

    def __init__(self, model: nn.Module, num_classes: int,
                 target_fns: Iterable[Callable[[torch.Tensor], torch.Tensor]] = (),
                 aux_weight: float = 0.4) -> None:
        self.model, self.num_classes, self.target_fns = model, num_classes, list(target_fns)
        self.aux_weight = float(aux_weight)

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        target = F.one_hot(batch["label"], self.num_classes).float()
        for fn in self.target_fns:
            target = fn(target)
        return {**batch, "target": target}

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.losses(self.model(batch["image"]), batch)

    def losses(self, outputs: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Soft-target cross-entropy of the main logits (+ weighted auxiliary losses)."""
        logits, *aux = outputs if isinstance(outputs, tuple) else (outputs,)
        losses = {"loss": soft_cross_entropy(logits, batch["target"])}
        aux = [a for a in aux if a is not None]
        if aux:
            losses["aux_loss"] = self.aux_weight * sum(
                soft_cross_entropy(a, batch["target"]) for a in aux)
        return losses

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
