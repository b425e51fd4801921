"""Load a local checkpoint into a model and report what matched.

Nothing is downloaded: ``path`` is a file, read with ``torch.load(weights_only=True)``. Accepted
layouts: a bare state dict (torchvision, timm), a training checkpoint holding one under
``"model"`` (an ablate run's ``last.pt``) or ``"state_dict"`` (timm's train script, Lightning).
Our ResNet keys are torchvision's for ``orig``/``b`` and timm's for ``c``/``d`` (deep stem
``conv1.0/1/3/4/6``, shortcut ``downsample.1/2``, classifier ``fc``), so those files load as
they are; ``prefix_map`` renames other layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ablate.errors import AblateError

CONTAINER_KEYS = ("model", "state_dict")  # where training checkpoints keep the weights
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


@dataclass
class WeightsReport:
    """What ``load_weights`` did. Keys are the model's names."""

    path: str
    loaded: int = 0  # tensors copied into the model
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # in both, different shapes (skipped)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "loaded": self.loaded, "missing": self.missing,
                "unexpected": self.unexpected, "mismatched": self.mismatched}

    def summary(self, what: str = "weights") -> str:
        """One readable paragraph: counts, then the first few keys of each problem."""
        lines = [(f"{what}: loaded {self.loaded} tensors from {self.path}; "
                  f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                  f"{len(self.mismatched)} shape-mismatched")]
        mism = [f"{k} (file {list(self.shapes[k][0])}, model {list(self.shapes[k][1])})"
                for k in self.mismatched]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape-mismatched", mism)):
            if keys:
                lines.append(f"  {label}: {_first(keys)}")
        return "\n".join(lines)


def _first(keys: list[str], n: int = 6) -> str:
    more = f", … (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def read_state_dict(path: str | Path, *, what: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint, unwrapped and with wrapper prefixes stripped.

    Raises:
        AblateError: no such file, unreadable, or no state dict inside.
    """
    p = Path(path)
    if not p.is_file():
        raise AblateError(f"{what}: no file at '{p}' (weights are local files; nothing is "
                          "downloaded)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything unreadable is the user's file
        raise AblateError(f"{what}: cannot load '{p}': {str(e).splitlines()[0]}") from None
    for key in CONTAINER_KEYS:
        if isinstance(ckpt, Mapping) and isinstance(ckpt.get(key), Mapping):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, Mapping) or not any(torch.is_tensor(v) for v in ckpt.values()):
        raise AblateError(f"{what}: '{p}' holds no state dict (expected tensors by name, or "
                          f"a checkpoint with one under {' or '.join(CONTAINER_KEYS)})")
    state = {}
    for k, v in ckpt.items():
        if not torch.is_tensor(v):
            continue
        k = str(k)
        while k.startswith(WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        state[k] = v
    return state


def _rename(key: str, prefix_map: Mapping[str, str]) -> str:
    for old, new in prefix_map.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = False,
                 prefix_map: Mapping[str, str] | None = None,
                 what: str = "weights") -> WeightsReport:
    """Copy the matching tensors of a local checkpoint into ``model``.

    Args:
        model: the model to fill (in place).
        path: a ``.pt``/``.pth`` file; see the module docstring for the layouts.
        strict: raise unless every model tensor is loaded and nothing is left over.
        prefix_map: key prefix renames applied after unwrapping, first match wins
            (e.g. ``{"backbone.": ""}`` to take a backbone out of a whole detector).
        what: how errors and the summary name the weights (e.g. ``distill.weights``).

    Returns:
        A ``WeightsReport``; ``report.summary()`` is a readable account.

    Raises:
        AblateError: file missing or unreadable, not a single tensor matched, or (``strict``)
            any missing, unexpected or shape-mismatched key.
    """
    state = read_state_dict(path, what=what)
    if prefix_map:
        state = {_rename(k, prefix_map): v for k, v in state.items()}
    own = model.state_dict()
    report = WeightsReport(path=str(path))
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            report.mismatched.append(k)
            report.shapes[k] = (tuple(v.shape), tuple(own[k].shape))
    loadable = {k: v for k, v in state.items() if k not in report.shapes}
    res = model.load_state_dict(loadable, strict=False)
    report.loaded = len(set(loadable) & set(own))
    report.missing = sorted(k for k in res.missing_keys if k not in report.shapes)
    report.unexpected = sorted(res.unexpected_keys)
    report.mismatched.sort()
    if report.loaded == 0:
        raise AblateError(f"{what}: nothing in '{path}' matches the {type(model).__name__} "
                          f"model\n{report.summary(what)}")
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise AblateError(f"{what}: '{path}' does not fit the {type(model).__name__} model "
                          f"exactly\n{report.summary(what)}")
    return report
