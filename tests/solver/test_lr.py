import math

import pytest

from ablate.solver import step_schedule
from ablate.solver.lr import ConstantShape, CosineShape, StepShape, WarmupShape


def test_step_at_given_iterations():
    shape = step_schedule(milestones=[30, 60, 90], factor=0.1, iters_per_epoch=10)
    assert shape.milestones == (300, 600, 900)
    assert [shape(i) for i in (0, 299, 300, 599, 600, 899, 900, 1199)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], abs=1e-15)


def test_cosine_reaches_target_exactly_at_last_iteration():
    shape = CosineShape(total=101, target_ratio=0.0)
    assert shape(0) == 1.0
    assert shape(50) == pytest.approx(0.5, abs=1e-15)
    assert shape(25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2, abs=1e-15)
    assert shape(100) == 0.0
    target = CosineShape(total=11, target_ratio=0.1)
    assert target(10) == pytest.approx(0.1, abs=1e-15)
    assert target(5) == pytest.approx(0.55, abs=1e-15)


def test_warmup_first_step_is_base_over_n_then_inner_starts_after():
    shape = WarmupShape(CosineShape(total=25), iters=5)
    assert [shape(i) for i in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-15)
    # cosine spans iterations 5..24: t = it - 5, T = 19
    assert shape(5) == 1.0
    assert shape(24) == 0.0
    assert shape(14) == pytest.approx((1 + math.cos(math.pi * 9 / 19)) / 2, abs=1e-15)


def test_warmup_from_a_start_factor():
    shape = WarmupShape(StepShape(milestones=(10,)), iters=4, start_factor=1 / 3)
    # 1/3 + 2/3 · (it + 1)/4
    assert [shape(i) for i in range(5)] == pytest.approx([0.5, 2 / 3, 5 / 6, 1.0, 1.0],
                                                         abs=1e-15)
    assert shape(10) == pytest.approx(0.1, abs=1e-15)


def test_warmup_keeps_step_milestones_absolute():
    shape = WarmupShape(StepShape(milestones=(10, 20)), iters=4)
    assert [shape(i) for i in (0, 3, 4, 9, 10, 19, 20)] == pytest.approx(
        [0.25, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01], abs=1e-15)


def test_constant():
    assert ConstantShape()(12345) == 1.0


def test_step_with_one_factor_per_milestone():
    """MegDet's long policy: ×0.1 at 11, ×0.1 at 14, ×0.5 at 17 (epochs; 10 iterations each)."""
    from ablate.errors import AblateError
    from ablate.solver import step_schedule

    shape = step_schedule(milestones=[11, 14, 17], factor=[0.1, 0.1, 0.5], iters_per_epoch=10)
    assert [shape(it) for it in (109, 110, 139, 140, 169, 170, 179)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01, 0.01, 0.005, 0.005])
    with pytest.raises(AblateError, match="schedule.factor has 2 values for 3 milestones"):
        step_schedule(milestones=[11, 14, 17], factor=[0.1, 0.1], iters_per_epoch=10)
