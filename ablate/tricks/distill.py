"""Knowledge distillation (Hinton et al., 2015; Bag of Tricks Sec. 5.3, eq. 6).

A frozen teacher (ResNet-152-D in the paper, ``teacher``: a model config as in ``conf/model/``)
loaded from a local checkpoint (``weights``, required) sees the same, possibly mixed-up, images
as the student, in eval mode, without gradients and under the same autocast. With student
logits z, teacher logits r, temperature T (20) and the task's (smoothed, mixed) target p, the
soft term is ``KD = T²·CE(softmax(r/T), softmax(z/T))`` and the hard term ``CE(p, softmax(z))``.
Two formulas, both selectable (``formula``):

- ``code`` (GluonCV's ``DistillationSoftmaxCrossEntropyLoss``, the default: it produced the
  published numbers): ``h·CE + (1 − h)·KD`` with ``hard_weight`` h = 0.5, i.e. half the paper's
  loss.
- ``paper`` (eq. 6): ``CE + KD``.

KD is a cross-entropy, as in both: it exceeds the KL divergence by the teacher's entropy, a
constant for the student (same gradients) that dominates the logged ``train_loss`` at T = 20.
The hard term is the classification task's own loss, so label smoothing and mixup apply to it
as without distillation (and an auxiliary classifier's loss is kept, unweighted by h). The
teacher belongs to the task wrapper, not to the student: it is never in a checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import Trick

FORMULAS = ("code", "paper")


def distillation_term(logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """``T²·CE(softmax(r/T), softmax(z/T))``, averaged over the batch (fp32)."""
    from ablate.tasks.classification import soft_cross_entropy

    t = float(temperature)
    soft_target = F.softmax(teacher_logits.float() / t, dim=-1)
    return t * t * soft_cross_entropy(logits.float() / t, soft_target)


def weigh(hard: torch.Tensor, soft: torch.Tensor, formula: str = "code",
          hard_weight: float = 0.5) -> dict[str, torch.Tensor]:
    """The two terms as named losses (their sum is the training loss).

    Args:
        hard: CE(p, softmax(z)), the task's loss.
        soft: the ``distillation_term``.
        formula: ``code`` (h·hard + (1 − h)·soft) or ``paper`` (hard + soft).
        hard_weight: h of the ``code`` formula.
    """
    if formula == "paper":
        return {"loss": hard, "distill": soft}
    return {"loss": hard_weight * hard, "distill": (1 - hard_weight) * soft}


class FrozenTeacher(nn.Module):
    """A teacher that stays in eval mode without gradients whatever ``train()`` is called."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(x)
        return out[0] if isinstance(out, tuple) else out


class DistillationTask:
    """Wraps a classification task: same targets and evaluation, eq. 6's loss."""

    def __init__(self, task: Any, teacher: nn.Module, temperature: float, formula: str,
                 hard_weight: float) -> None:
        self.task, self.teacher = task, teacher
        self.temperature, self.formula, self.hard_weight = temperature, formula, hard_weight

    @property
    def model(self) -> nn.Module:
        return self.task.model

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.task.prepare(batch)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        return self.task.evaluate(*args, **kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from ablate.tasks.classification import main_logits

        outputs = self.task.model(batch["image"])
        losses = self.task.losses(outputs, batch)
        logits, teacher_logits = main_logits(outputs), self.teacher(batch["image"])
        if teacher_logits.shape != logits.shape:
            raise AblateError(f"distill: the teacher gives {tuple(teacher_logits.shape)} logits, "
                              f"the student {tuple(logits.shape)}; set the teacher's "
                              "num_classes to the data's")
        soft = distillation_term(logits, teacher_logits, self.temperature)
        return {**losses, **weigh(losses["loss"], soft, self.formula, self.hard_weight)}


def build_teacher(cfg: Mapping[str, Any], weights: str | None, *, num_classes: int,
                  like: nn.Module | None = None) -> FrozenTeacher:
    """Build the teacher from a model config, load its checkpoint (every tensor must fit) and
    place it on the device (and memory format) of ``like``."""
    from ablate.models.weights import load_weights  # (imports and registers the models)
    from ablate.registry import MODELS

    if not weights:
        raise AblateError("distill.weights is required: the path of the teacher's local "
                          "checkpoint (e.g. its run's checkpoints/last.pt)")
    kwargs = dict(cfg)
    name = kwargs.pop("name")
    for key in ("task", "task_kwargs"):  # a pasted conf/model file may carry them
        kwargs.pop(key, None)
    if "weights" in kwargs:
        raise AblateError("distill.teacher.weights: set the teacher's checkpoint as "
                          "distill.weights")
    kwargs.setdefault("num_classes", num_classes)
    try:
        model = MODELS.build(name, **kwargs)
    except TypeError as e:
        raise AblateError(f"distill.teacher: {e}") from None
    report = load_weights(model, weights, strict=True, what="distill.weights")
    if os.environ.get("RANK", "0") == "0":
        print(report.summary("distill.weights"), flush=True)
    teacher = FrozenTeacher(model)
    params = list(like.parameters()) if like is not None else []
    if params:
        conv = next((p for p in params if p.ndim == 4), None)
        channels_last = conv is not None and conv.is_contiguous(memory_format=torch.channels_last)
        teacher = teacher.to(params[0].device, memory_format=torch.channels_last
                             if channels_last else torch.contiguous_format)
    return teacher


@TRICKS.register("distill")
class Distill(Trick):
    name = "distill"
    tasks = ("classification",)

    def __init__(self, teacher: Mapping[str, Any] | None = None, weights: str | None = None,
                 temperature: float = 20.0, formula: str = "code",
                 hard_weight: float = 0.5) -> None:
        if not isinstance(teacher, Mapping) or "name" not in teacher:
            raise AblateError("distill.teacher must be a model config with a 'name' "
                              f"(as in conf/model/), got {teacher!r}")
        if temperature <= 0:
            raise AblateError(f"distill.temperature must be > 0, got {temperature}")
        if formula not in FORMULAS:
            raise AblateError(f"distill.formula must be one of {FORMULAS}, got '{formula}'")
        if not 0 <= hard_weight <= 1:
            raise AblateError(f"distill.hard_weight must be in [0, 1], got {hard_weight}")
        self.teacher, self.weights = dict(teacher), weights
        self.temperature, self.formula = float(temperature), formula
        self.hard_weight = float(hard_weight)

    def wrap_task(self, task: Any) -> DistillationTask:
        teacher = build_teacher(self.teacher, self.weights, num_classes=task.num_classes,
                                like=task.model)
        return DistillationTask(task, teacher, self.temperature, self.formula, self.hard_weight)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.formula == "paper":  # h belongs to the code's formula only
            d.pop("hard_weight")
        return d
