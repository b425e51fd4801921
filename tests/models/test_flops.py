"""Bag of Tricks Table 5's FLOPs column as a sanity check of the ResNet-50 tweaks: multiply-adds
of one 224×224 forward (convolutions and the classifier, counted by torch's FlopCounterMode,
which reports 2 FLOPs per multiply-add). The paper prints 3.8 G, 4.1 G, 4.3 G and 4.3 G; the
original ResNet-50's 3.858 G is printed truncated. The D shortcut's average pool costs no
multiply-adds, so C and D count the same."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ablate.models.resnet import build_resnet


def gmacs(model: torch.nn.Module, size: int = 224) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2 / 1e9


@pytest.mark.parametrize("variant,ours,paper", [("orig", 3.858, 3.8), ("b", 4.089, 4.1),
                                               ("c", 4.329, 4.3), ("d", 4.329, 4.3)])
def test_resnet50_tweaks_match_the_papers_flops(variant, ours, paper):
    g = gmacs(build_resnet(depth=50, variant=variant))
    assert round(g, 3) == ours and abs(g - paper) < 0.06
