"""No bias decay (Jia et al., 2018; Bag of Tricks Sec. 3.1): weight decay only on the weights of
convolution and fully-connected layers; biases and BN γ, β get none. Parameters with fewer than
two dimensions are exactly the biases and normalisation affines."""

from __future__ import annotations

from torch import nn

from ablate.registry import TRICKS
from ablate.tricks.base import Trick


def split_no_decay(groups: list[dict]) -> list[dict]:
    """Split each group into a decayed (ndim ≥ 2) and an undecayed (ndim ≤ 1) group."""
    out = []
    for g in groups:
        params = list(g["params"])
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            out.append({**g, "params": decay})
        if no_decay:
            out.append({**g, "params": no_decay, "weight_decay": 0.0})
    return out


@TRICKS.register("no_bias_decay")
class NoBiasDecay(Trick):
    name = "no_bias_decay"
    tasks = ("classification", "yolo", "rcnn")

    def param_groups(self, model: nn.Module, groups: list[dict]) -> list[dict]:
        return split_no_decay(groups)
