"""``build_optimizer``: SGD with per-group base LRs and weight decay; its three update kernels
compute the same numbers."""

from __future__ import annotations

import pytest
import torch

from ablate.errors import AblateError
from ablate.solver import build_optimizer

CFG = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}


def _train(impl: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.randn(64, 32, requires_grad=True), torch.randn(10, requires_grad=True)]
    groups = [{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0,
                                       "lr_scale": 0.5}]
    opt = build_optimizer({**CFG, "impl": impl}, groups, base_lr=0.2)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach() for p in params]


def test_update_kernels_agree_and_fused_is_the_default():
    loop = _train("loop")
    for impl in ("foreach", "fused"):
        for a, b in zip(loop, _train(impl)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    opt = build_optimizer(CFG, [{"params": [torch.zeros(2, requires_grad=True)]}], 0.1)
    assert opt.defaults["fused"] is True and opt.defaults["nesterov"] is True


def test_hand_checked_nesterov_step_with_group_lr_and_decay():
    """One step from w=1, g=0.5: d = g + wd·w; buf = d; update = d + μ·buf (Nesterov)."""
    w = torch.ones(1, requires_grad=True)
    opt = build_optimizer({**CFG, "weight_decay": 0.1}, [{"params": [w], "lr_scale": 0.5}],
                          base_lr=0.2)
    assert opt.param_groups[0]["lr"] == opt.param_groups[0]["base_lr"] == pytest.approx(0.1)
    w.grad = torch.full((1,), 0.5)
    opt.step()
    d = 0.5 + 0.1 * 1.0
    assert w.item() == pytest.approx(1.0 - 0.1 * (d + 0.9 * d))


def test_unknown_kernel_is_refused():
    with pytest.raises(AblateError, match="unknown optim.impl 'fuse'"):
        build_optimizer({**CFG, "impl": "fuse"}, [{"params": [torch.zeros(1)]}], 0.1)
