"""Label smoothing (Szegedy et al., 2016; Bag of Tricks Sec. 5.2).

Two formulas, both selectable (``formula``):

- ``code`` (GluonCV, the default: it produced the published numbers): true class
  ``1 − ε + ε/K``, every other class ``ε/K``.
- ``paper`` (Bag of Tricks eq. 4): true class ``1 − ε``, every other class ``ε/(K − 1)``.

Both are linear in the one-hot target, so the result mixes correctly with mixup in any order.

Detection with sigmoid classifiers (YOLOv3; Bag of Freebies Sec. 3.3, eq. 3) smooths each
per-class sigmoid target instead: ``code`` (GluonCV) uses sw = min(1/K, 1/40), positives 1 − sw,
negatives sw (ε is not used); ``paper`` uses 1 − ε and ε/(K − 1).

Faster R-CNN (``rcnn``; Bag of Freebies Sec. 3.2, eq. 1–3) smooths the softmax targets of the
RCNN classification head over its K + 1 outputs (background included), with the two formulas
above, K + 1 in place of K; the RPN's objectness is not smoothed. GluonCV's Faster R-CNN script
has no label smoothing, so ``code`` there means the classification code's formula; eq. 3 of the
detection paper is ``paper``.
"""

from __future__ import annotations

import torch

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import Trick

FORMULAS = ("code", "paper")


def smooth_one_hot(targets: torch.Tensor, epsilon: float, formula: str = "code") -> torch.Tensor:
    """Smooth (soft) one-hot targets ``[..., K]``.

    Args:
        targets: one-hot or already soft targets, last dim = classes.
        epsilon: smoothing ε.
        formula: ``code`` or ``paper`` (see the module docstring).
    """
    k = targets.shape[-1]
    if formula == "code":
        return targets * (1 - epsilon) + epsilon / k
    return targets * (1 - epsilon) + (1 - targets) * epsilon / (k - 1)


@TRICKS.register("label_smoothing")
class LabelSmoothing(Trick):
    name = "label_smoothing"
    tasks = ("classification", "yolo", "rcnn")

    def __init__(self, epsilon: float = 0.1, formula: str = "code") -> None:
        if not 0 <= epsilon < 1:
            raise AblateError(f"label_smoothing.epsilon must be in [0, 1), got {epsilon}")
        if formula not in FORMULAS:
            raise AblateError(f"label_smoothing.formula must be one of {FORMULAS}, "
                              f"got '{formula}'")
        self.epsilon, self.formula = float(epsilon), formula

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "yolo":
            from ablate.tasks.yolo import sigmoid_smooth

            return sigmoid_smooth(targets, self.formula, self.epsilon)
        return smooth_one_hot(targets, self.epsilon, self.formula)
