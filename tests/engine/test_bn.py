"""BN statistics groups: ghost batches equal per-group BN computed by hand."""

import pytest
import torch
from torch import nn

from ablate.engine.bn import GhostBatchNorm2d, convert_bn_groups
from ablate.errors import AblateError
from ablate.models.resnet import build_resnet


def test_ghost_bn_equals_bn_per_group():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    ghost = GhostBatchNorm2d(3, group_size=2)
    ghost.weight.data = torch.tensor([1.0, 2.0, 0.5])
    ghost.bias.data = torch.tensor([0.0, -1.0, 3.0])
    y = ghost(x)
    for g in range(4):  # each pair of images normalised with its own mean / biased variance
        xg = x[2 * g:2 * g + 2]
        mean = xg.mean((0, 2, 3), keepdim=True)
        var = xg.var((0, 2, 3), unbiased=False, keepdim=True)
        ref = (xg - mean) / torch.sqrt(var + 1e-5) * ghost.weight.view(1, -1, 1, 1) \
            + ghost.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(y[2 * g:2 * g + 2], ref, rtol=1e-5, atol=1e-5)
    # running stats: mean over groups of each group's (unbiased) statistics, momentum 0.1
    groups = x.view(4, 2, 3, 5, 5)
    exp_mean = 0.1 * groups.mean((1, 3, 4)).mean(0)
    exp_var = 0.9 + 0.1 * groups.var((1, 3, 4), unbiased=True).mean(0)
    torch.testing.assert_close(ghost.running_mean, exp_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ghost.running_var, exp_var, rtol=1e-5, atol=1e-6)


def test_ghost_bn_group_equal_to_batch_is_plain_bn_and_eval_uses_running_stats():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3, 3)
    ghost, bn = GhostBatchNorm2d(2, group_size=4), nn.BatchNorm2d(2)
    torch.testing.assert_close(ghost(x), bn(x))
    ghost.eval(), bn.eval()
    torch.testing.assert_close(ghost(x), bn(x))


def test_convert_bn_groups():
    model = build_resnet(depth=14, variant="d", width=0.25, num_classes=10)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert convert_bn_groups(model, None, 32, 1, torch.device("cpu")) is model
    assert convert_bn_groups(model, 32, 32, 1, torch.device("cpu")) is model
    converted = convert_bn_groups(model, 8, 32, 1, torch.device("cpu"))
    ghosts = [m for m in converted.modules() if isinstance(m, GhostBatchNorm2d)]
    assert len(ghosts) == n_bn and all(g.group_size == 8 for g in ghosts)
    with pytest.raises(AblateError, match="does not divide"):
        convert_bn_groups(build_resnet(depth=14), 6, 32, 1, torch.device("cpu"))
    with pytest.raises(AblateError, match="only has on CUDA"):
        convert_bn_groups(build_resnet(depth=14), 64, 32, 2, torch.device("cpu"))
    with pytest.raises(AblateError, match="spanning at most"):
        convert_bn_groups(build_resnet(depth=14), 64, 32, 1, torch.device("cpu"))
