"""The engine's speed options — ``train.compile``, ``train.cudnn_benchmark``, ``train.precision``
and ``optim.impl`` — read and checked here, apart from the build, so that the driver's
pre-launch check of every run does not import the models (torchvision: ~1.5 s a driver)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate.engine.precision import Precision
from ablate.errors import AblateError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value: Any) -> str | None:
    """``train.compile``: false/null (eager), true (torch.compile's default mode) or a mode."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise AblateError(f"train.compile={value!r}: use false, true or one of "
                      f"{', '.join(COMPILE_MODES)}")


def cudnn_autotune(setting: bool | None, task_cls: Any) -> bool:
    """``train.cudnn_benchmark``; null = on, except for tasks whose batches change shape every
    step (``fixed_shapes = False``: R-CNN's aspect-kept, padded images), where cuDNN would
    search the algorithms again for each new shape."""
    return bool(getattr(task_cls, "fixed_shapes", True)) if setting is None else bool(setting)


def check_options(cfg: DictConfig) -> None:
    """The engine options a run needs, checked before it is launched (the worker would
    otherwise refuse them only after start-up)."""
    from ablate.solver import check_optim

    tcfg = cfg.train
    compile_mode(tcfg.get("compile", False))
    Precision.check(tcfg.get("precision", "fp32"))
    check_optim(OmegaConf.to_container(cfg.optim, resolve=True)
                if isinstance(cfg.optim, DictConfig) else dict(cfg.optim))
