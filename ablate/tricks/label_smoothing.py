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


def sigmoid_smooth(one_hot: torch.Tensor, formula: str = "code",
                   epsilon: float | None = None) -> torch.Tensor:
    """Label smoothing for sigmoid classifiers (Bag of Freebies Sec. 3.3), on ``[..., K]``.

    ``code`` (GluonCV): sw = min(1/K, 1/40), positive 1 − sw, negative sw (``epsilon`` is
    ignored: the reference code has no ε). ``paper`` (eq. 3): positive 1 − ε, negative
    ε/(K − 1), ε = 0.1 when not given. Both are linear in the target.
    """
    k = one_hot.shape[-1]
    if formula == "code":
        sw = min(1.0 / k, 1.0 / 40)
        return one_hot * (1 - 2 * sw) + sw
    if formula == "paper":
        eps = 0.1 if epsilon is None else float(epsilon)
        return one_hot * (1 - eps) + (1 - one_hot) * eps / max(k - 1, 1)
    raise AblateError(f"sigmoid label smoothing formula must be one of {FORMULAS}, "
                      f"got '{formula}'")


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
            return sigmoid_smooth(targets, self.formula, self.epsilon)
        return smooth_one_hot(targets, self.epsilon, self.formula)
