"""Box-regression losses of the RCNN head, as the MMDetection benchmark compares them (its
Table 5; the v1 code behind it, ``mmdet/models/losses``).

Each loss gives one value per positive RoI, and the head reduces them as MMDetection does:
Σ_pos w · ℓ / N_sampled × ``weight`` (w: the RoI's mixup weight, 1 without mixup). For the
delta losses ℓ sums the 4 coordinates of the encoded deltas (target stds 0.1, 0.1, 0.2, 0.2 =
torchvision's ``BoxCoder`` weights 10, 10, 5, 5); the IoU family works on boxes decoded from
the deltas (gradients through the decode) against the matched ground-truth box:

- ``smooth_l1`` (β ≥ 0): 0.5x²/β if |x| < β else |x| − 0.5β (β = 0 is L1).
- ``l1``: |x|.
- ``balanced_l1`` (Libra R-CNN; α, γ, β > 0), b = e^(γ/α) − 1:
  α/b·(b|x| + 1)·ln(b|x|/β + 1) − α|x| if |x| < β, else γ|x| + γ/b − αβ.
- ``iou``: −ln(max(IoU, eps)) (``mode: log``) or 1 − IoU (``mode: linear``), one term a box.
- ``giou``: 1 − GIoU (torchvision's ``generalized_box_iou_loss``), one term a box.
- ``bounded_iou`` (β, eps; the target carries no gradient): for centres c and sizes w, h,
  ℓx = 1 − max((w_t − 2|Δcx|)/(w_t + 2|Δcx| + eps), 0), ℓw = 1 − min(w_t/(w_p + eps),
  w_p/(w_t + eps)), ℓy and ℓh likewise; each through smooth L1 with β; 4 terms a box.

Box sizes are ``x2 − x1`` (torchvision's continuous convention, that of the box coder
here); MMDetection v1 adds one pixel to widths and heights, a difference of about 1/w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from ablate.errors import AblateError, did_you_mean

# name → its options and their defaults (MMDetection v1's)
LOSSES: dict[str, dict[str, Any]] = {
    "smooth_l1": {"beta": 1.0},
    "l1": {},
    "balanced_l1": {"alpha": 0.5, "gamma": 1.5, "beta": 1.0},
    "iou": {"mode": "log", "eps": 1e-6},
    "giou": {"eps": 1e-7},
    "bounded_iou": {"beta": 0.2, "eps": 1e-3},
}
DECODED = ("iou", "giou", "bounded_iou")  # losses on decoded boxes, not on deltas
IOU_MODES = ("log", "linear")


@dataclass(frozen=True)
class BoxLoss:
    """A chosen box loss: ``name``, its ``options`` (defaults filled in) and ``weight``."""

    name: str = "smooth_l1"
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def decoded(self) -> bool:
        return self.name in DECODED

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-box loss [P] of ``pred`` and ``target`` [P, 4] (deltas, or decoded boxes for
        the IoU family), before the weight and the reduction."""
        o = self.options
        if self.name == "smooth_l1":
            return F.smooth_l1_loss(pred, target, beta=float(o["beta"]), reduction="none").sum(1)
        if self.name == "l1":
            return (pred - target).abs().sum(1)
        if self.name == "balanced_l1":
            return balanced_l1(pred - target, o["alpha"], o["gamma"], o["beta"]).sum(1)
        if self.name == "iou":
            iou = aligned_iou(pred, target)
            return -iou.clamp(min=o["eps"]).log() if o["mode"] == "log" else 1 - iou
        if self.name == "giou":
            return generalized_box_iou_loss(pred, target, reduction="none", eps=o["eps"])
        return bounded_iou(pred, target, o["beta"], o["eps"]).sum(1)


def balanced_l1(diff: torch.Tensor, alpha: float, gamma: float, beta: float) -> torch.Tensor:
    """Libra R-CNN's balanced L1 of ``diff`` (elementwise)."""
    x = diff.abs()
    b = math.exp(gamma / alpha) - 1
    return torch.where(x < beta, alpha / b * (b * x + 1) * torch.log(b * x / beta + 1) - alpha * x,
                       gamma * x + gamma / b - alpha * beta)


def aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box ``a[i]`` with box ``b[i]`` ([P, 4] x1y1x2y2 → [P]); 0 without overlap."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (area_a + area_b - inter).clamp(min=torch.finfo(a.dtype).tiny)


def bounded_iou(pred: torch.Tensor, target: torch.Tensor, beta: float, eps: float
                ) -> torch.Tensor:
    """The four smooth-L1'd bounded-IoU terms [P, 4] (x, y, w, h); ``target`` is detached."""
    target = target.detach()
    pc, pw = (pred[:, :2] + pred[:, 2:]) / 2, pred[:, 2:] - pred[:, :2]
    tc, tw = (target[:, :2] + target[:, 2:]) / 2, target[:, 2:] - target[:, :2]
    d = (tc - pc).abs()
    centre = 1 - torch.clamp((tw - 2 * d) / (tw + 2 * d + eps), min=0)
    size = 1 - torch.minimum(tw / (pw + eps), pw / (tw + eps))
    ell = torch.cat([centre, size], 1)
    return torch.where(ell < beta, 0.5 * ell * ell / beta, ell - 0.5 * beta)


def build_box_loss(spec: Mapping[str, Any] | None, where: str = "rcnn.box_loss") -> BoxLoss:
    """A ``BoxLoss`` from ``{name, weight, <name>: {options}}``: the chosen loss's options over
    its defaults; other losses' option blocks may be present and are ignored. Raises
    ``AblateError`` naming the key for an unknown loss or option, or a value out of range."""
    spec = dict(spec or {})
    name = spec.pop("name", "smooth_l1")
    if name not in LOSSES:
        raise AblateError(f"{where}.name={name!r}: unknown box loss"
                          f"{did_you_mean(str(name), LOSSES)}; known: {', '.join(LOSSES)}")
    weight = spec.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise AblateError(f"{where}.weight={weight!r}: must be a number > 0")
    for k in spec:
        if k not in LOSSES:
            raise AblateError(f"{where}.{k}: unknown key"
                              f"{did_you_mean(k, [*LOSSES, 'name', 'weight'])}; known: name, "
                              f"weight, {', '.join(LOSSES)}")
    given = dict(spec.get(name) or {})
    for k in given:
        if k not in LOSSES[name]:
            known = ", ".join(LOSSES[name]) or "none"
            raise AblateError(f"{where}.{name}.{k}: {name} has no option '{k}'"
                              f"{did_you_mean(k, LOSSES[name])}; its options: {known}")
    options = {**LOSSES[name], **given}
    _check_options(name, options, f"{where}.{name}")
    return BoxLoss(name, float(weight), options)


def _check_options(name: str, o: dict[str, Any], where: str) -> None:
    for k, v in o.items():
        if k == "mode":
            if v not in IOU_MODES:
                raise AblateError(f"{where}.mode={v!r}: must be one of {', '.join(IOU_MODES)}")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AblateError(f"{where}.{k}={v!r}: must be a number")
        zero_ok = name == "smooth_l1" and k == "beta"  # β = 0 is L1
        if v < 0 or (v == 0 and not zero_ok):
            raise AblateError(f"{where}.{k}={v!r}: must be {'>= 0' if zero_ok else '> 0'}")
        o[k] = float(v)
