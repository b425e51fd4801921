"""Config composition (Hydra's Compose API, in the driver only) and the config hash.

Workers never run Hydra: the driver composes and resolves a step once and writes the result to
``config.yaml``; the worker reads that file with OmegaConf.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from ablate.errors import AblateError, did_you_mean

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(os.environ.get("ABLATE_CONF", ROOT / "conf"))
STUDIES_DIR = ROOT / "studies"
# Keys that say where or how a run executes, not what it computes: excluded from the hash, so
# the same step on 1 or 8 GPUs, under another results or data folder, with another optimizer
# kernel, thread or loader-worker count, decoding device or log interval, or compiled, is the
# same result (up to float rounding, as across process counts).
NON_SEMANTIC = ("launcher", "paths", "optim.impl", "train.compile", "train.cudnn_benchmark",
                "train.threads", "train.log_every", "data.root", "data.cache_dir",
                "data.fmnist_root", "data.num_workers", "data.decode")
# The excluded keys before locations and thread counts were: the hash a checkpoint or result
# written then carries (``matches``).
LEGACY_NON_SEMANTIC = ("launcher", "paths", "optim.impl", "train.compile",
                       "train.cudnn_benchmark")
# Keys added after results were written, whose default (null) leaves a run as it was: hashed
# only when set, so results written before them keep their hash.
HASHED_WHEN_SET = ("train.diverge_factor", "model.rpn.smoothl1_beta", "model.rpn.allowed_border",
                   "model.rpn.neg_pos_ub", "model.rcnn.box_loss", "data.train_scales",
                   "data.train_scale_mode")


def _drop_null(data: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """``data`` without the key at ``path`` when its value is null (copies along the path)."""
    head, rest = path[0], path[1:]
    if not rest:
        return {k: v for k, v in data.items() if k != head} if data.get(head, 0) is None else data
    if not isinstance(data.get(head), dict):
        return data
    return {**data, head: _drop_null(data[head], rest)}


def matches(stored_hash: str | None, cfg: DictConfig | Mapping[str, Any]) -> bool:
    """A hash stored in a checkpoint or result is ``cfg``'s, by today's rule or the legacy one."""
    return stored_hash is not None and stored_hash in (config_hash(cfg),
                                                      config_hash(cfg, LEGACY_NON_SEMANTIC))


def format_value(value: Any) -> str:
    """A Python/YAML value as Hydra override syntax."""
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    s = str(value)
    if re.fullmatch(r"[\w./\-+:${}]*", s) and s not in ("true", "false", "null"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(mapping: Mapping[str, Any]) -> list[str]:
    """``{"optim.lr": 0.4}`` → ``["optim.lr=0.4"]``."""
    return [f"{k}={format_value(v)}" for k, v in mapping.items()]


def _groups() -> dict[str, list[str]]:
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in CONF_DIR.iterdir() if d.is_dir()}


def _explain(err: Exception, overrides: list[str]) -> str:
    """Turn a Hydra composition error into one readable line with a suggestion."""
    msg = str(err).split("\n")[0]
    groups = _groups()
    m = re.search(r"Could not (?:load|find) '([^/']+)/([^']+)'", msg)
    if m and m.group(1) in groups:
        group, option = m.groups()
        what = "trick" if group == "tricks" else f"{group} option"
        return (f"unknown {what} '{option}'{did_you_mean(option, groups[group])}; "
                f"known: {', '.join(groups[group])}")
    m = re.search(r"Could not override '([^']+)'", msg)
    if m:
        key = m.group(1)
        try:
            node: Any = compose([o for o in overrides if o.split("=")[0].lstrip("+~") != key])
        except AblateError:
            return f"unknown config key '{key}'"
        parts = key.split(".")
        for i, part in enumerate(parts):  # walk down to the first component that is missing
            if not isinstance(node, DictConfig) or part not in node:
                break
            node = node[part]
        parent, leaf = ".".join(parts[:i]), parts[i]
        choices = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        where = f" in '{parent}'" if parent else " at the top level"
        return f"unknown config key '{key}'{did_you_mean(leaf, choices)}" + (
            f" (keys{where}: {', '.join(choices)})" if choices else "")
    return msg


def compose(overrides: Iterable[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides``; raise ``AblateError`` on bad input."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("config", overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise AblateError(_explain(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()
    return cfg


def config_hash(cfg: DictConfig | Mapping[str, Any],
                exclude: tuple[str, ...] = NON_SEMANTIC) -> str:
    """12 hex digits of SHA-256 over the semantic part of a resolved config (sorted keys, so
    the order in which tricks are listed does not matter)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    data = {k: v for k, v in data.items() if k not in exclude}
    for key in HASHED_WHEN_SET:
        data = _drop_null(data, key.split("."))
    for key in exclude:
        head, _, leaf = key.partition(".")
        if leaf and isinstance(data.get(head), dict) and leaf in data[head]:
            data[head] = {k: v for k, v in data[head].items() if k != leaf}
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
