"""A run's config values checked before it is launched: each core key's type and range, and
the relations between values that would otherwise fail only inside the worker, hours into a
study (an epoch without one full batch, a warmup not shorter than training).

Trick options are checked by the tricks themselves (their constructors' types and checks,
``ablate.tricks.build_tricks``); here they are built with the run's real iteration counts so
that a trick's schedule refuses what it would refuse in the worker.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate.errors import AblateError, did_you_mean

# key: (kind, minimum, maximum, may be null); float accepts integers, int refuses booleans
RULES: dict[str, tuple[type, float | None, float | None, bool]] = {
    "seed": (int, 0, None, False),
    "train.epochs": (int, 1, None, False),
    "train.batch_size": (int, 1, None, False),
    "train.accum_steps": (int, 1, None, False),
    "train.eval_batch_size": (int, 1, None, False),
    "train.eval_every": (int, 1, None, False),
    "train.log_every": (int, 1, None, False),
    "train.diverge_factor": (float, 1, None, True),
    "train.threads": (int, 0, None, False),
    "train.bn_group_size": (int, 1, None, True),
    "train.channels_last": (bool, None, None, False),
    "optim.lr": (float, 0, None, False),
    "optim.momentum": (float, 0, 1, False),
    "optim.weight_decay": (float, 0, None, False),
    "optim.nesterov": (bool, None, None, False),
    "data.train_subset": (int, 1, None, True),
    "data.test_subset": (int, 1, None, True),
    "data.num_workers": (int, 0, None, False),
}
STRICT_MINIMUM = {"optim.lr"}  # > minimum, not >=
KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false"}


def _get(cfg: Any, key: str) -> tuple[bool, Any]:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, (dict, DictConfig)) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_value(key: str, value: Any) -> None:
    """Raise ``AblateError`` naming ``key`` when ``value`` breaks its rule in ``RULES``."""
    kind, lo, hi, nullable = RULES[key]
    if value is None and nullable:
        return
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
          else isinstance(value, int) and not isinstance(value, bool) if kind is int
          else isinstance(value, kind))
    what = KIND_NAMES[kind] + (" or null" if nullable else "")
    tail = " (or null)" if nullable else ""
    if not ok:
        raise AblateError(f"{key}={value!r}: must be {what}")
    if lo is not None and (value <= lo if key in STRICT_MINIMUM else value < lo):
        raise AblateError(f"{key}={value!r}: must be {'>' if key in STRICT_MINIMUM else '>='} "
                          f"{lo:g}{tail}")
    if hi is not None and value > hi:
        raise AblateError(f"{key}={value!r}: must be <= {hi:g}{tail}")


def check_values(cfg: Any) -> None:
    """Every key of ``RULES`` present in the (resolved) config has a value of its type and
    range; the schedule's milestones and factors are numbers."""
    for key in RULES:
        found, value = _get(cfg, key)
        if found:
            check_value(key, value)
    found, init = _get(cfg, "model.init")
    if found:
        from ablate.models.init import INITS

        if init not in INITS:
            raise AblateError(f"model.init={init!r}: must be one of {', '.join(INITS)}"
                              f"{did_you_mean(str(init), INITS)}")
    _check_model_options(cfg)
    sched = cfg.get("schedule") or {}
    for key in ("milestones", "factor"):
        value = _plain(sched.get(key))
        if value is None:
            continue
        if key == "milestones" and not isinstance(value, list):
            raise AblateError(f"schedule.milestones={value!r}: must be a list of epochs")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise AblateError(f"schedule.{key}={value!r}: must be non-negative numbers")


def _check_model_options(cfg: Any) -> None:
    """A model whose builder has ``check_options`` checks its own options (Faster R-CNN's
    RPN and RCNN head options, its box loss) without being built."""
    import ablate.models  # noqa: F401  (registers the models)
    from ablate.registry import MODELS

    model = _plain(cfg.get("model"))
    if not isinstance(model, dict) or model.get("name") not in MODELS:
        return
    check = getattr(MODELS.get(model["name"]), "check_options", None)
    if check is not None:
        check(**{k: v for k, v in model.items() if k != "name"})


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def check_schedule(cfg: Any, num_train: int | None) -> None:
    """With the training set's size known, the run has at least one optimizer step per epoch,
    and the tricks' schedule (warmup, cosine, …) builds over the run's real iteration count."""
    from ablate.solver import build_lr
    from ablate.tricks import BuildContext, build_tricks

    if num_train is None:
        return
    tcfg = cfg.train
    subset = cfg.data.get("train_subset")
    n = min(num_train, subset) if subset else num_train
    steps = n // tcfg.batch_size  # optimizer steps an epoch: loaders drop the partial batch
    if steps == 0:
        raise AblateError(f"no training step: {n} training images are fewer than one global "
                          f"batch (train.batch_size={tcfg.batch_size})")
    tricks_cfg = cfg.get("tricks") or {}
    tricks = build_tricks(_plain(tricks_cfg) if tricks_cfg else {}, cfg.model.task)
    ctx = BuildContext(task=cfg.model.task, epochs=tcfg.epochs, iters_per_epoch=steps,
                       total_batch=tcfg.batch_size)
    build_lr(cfg.optim.lr, _plain(cfg.schedule), tricks, ctx)  # raises what the worker would
