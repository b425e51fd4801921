"""The engine's speed options: ``train.compile`` (torch.compile in place), cuDNN autotuning."""

from __future__ import annotations

import pytest
import torch

from ablate.config import compose
from ablate.engine.dist import DistInfo
from ablate.engine.options import compile_mode, cudnn_autotune
from ablate.engine.setup import build
from ablate.engine.trainer import Trainer
from ablate.errors import AblateError
from ablate.registry import TASKS
from tests.engine._plain_model import PLAIN

ARGS = (*PLAIN, "data.train_subset=64", "data.test_subset=20", "train.batch_size=16",
        "train.epochs=1", "train.threads=1")


@pytest.mark.parametrize("value,mode", [(False, None), (None, None), (True, "default"),
                                        ("max-autotune", "max-autotune")])
def test_compile_modes(value, mode):
    assert compile_mode(value) == mode


def test_unknown_compile_mode_is_refused():
    with pytest.raises(AblateError, match="train.compile='fast': use false, true or one of"):
        compile_mode("fast")


def test_compile_is_applied_in_place(fmnist_root, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append(kw))
    plain = build(compose([f"data.root={fmnist_root}", *ARGS]), DistInfo())
    assert calls == []
    built = build(compose([f"data.root={fmnist_root}", *ARGS, "train.compile=max-autotune"]),
                  DistInfo())
    assert calls == [{"mode": "max-autotune"}]
    assert list(built.model.state_dict()) == list(plain.model.state_dict())


def test_cudnn_autotuning_is_off_for_shape_changing_tasks():
    assert cudnn_autotune(None, TASKS.get("classification")) is True
    assert cudnn_autotune(None, TASKS.get("yolo")) is True
    assert cudnn_autotune(None, TASKS.get("rcnn")) is False
    assert cudnn_autotune(True, TASKS.get("rcnn")) is True
    assert cudnn_autotune(False, TASKS.get("classification")) is False


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, fmnist_root):
    """One epoch compiled (inductor) against eager, same seed: same loss to float rounding,
    and the checkpoint's keys are the bare model's."""
    rows = {}
    for mode in ("false", "true"):
        torch.manual_seed(0)
        built = build(compose([f"data.root={fmnist_root}", *ARGS, f"train.compile={mode}"]),
                      DistInfo())
        trainer = Trainer(built, DistInfo(), tmp_path, seed=0)
        torch.manual_seed(1)
        rows[mode] = trainer.train_epoch()
        keys = list(trainer.state_dict()["model"])
        assert keys == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert rows["true"]["train_loss"] == pytest.approx(rows["false"]["train_loss"], rel=1e-4)
