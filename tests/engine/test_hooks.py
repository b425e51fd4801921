"""The trainer's events: their order, what a hook sees at each, and a trick that adds a hook
(a weight average) with no edit in the engine."""

from __future__ import annotations

import csv
import sys

import torch
from omegaconf import open_dict

import ablate.tricks
from ablate.config import compose
from ablate.engine import run_io
from ablate.engine.dist import DistInfo
from ablate.engine.setup import build
from ablate.engine.trainer import Trainer
from ablate.engine.types import Hook
from ablate.registry import TRICKS
from tests.engine._plain_model import PLAIN


def _cfg(root, *more):
    # 64 images at batch 16: 4 optimizer steps an epoch
    return compose([f"data.root={root}", *PLAIN, "data.train_subset=64", "data.test_subset=20",
                    "train.batch_size=16", "train.threads=1", *more])


class Recorder(Hook):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def _note(self, event: str) -> None:
        st = self.trainer.state
        self.events.append((event, st.epoch, st.iteration, "top1" in self.trainer.row))

    def before_train(self) -> None:
        self._note("before_train")

    def before_epoch(self) -> None:
        self._note("before_epoch")

    def after_step(self) -> None:
        self._note("after_step")

    def after_epoch(self) -> None:
        self._note("after_epoch")

    def after_train(self) -> None:
        self._note("after_train")


def test_events_in_order_and_the_engine_hooks_after_a_tricks(tmp_path, fmnist_root):
    built = build(_cfg(fmnist_root, "train.epochs=2"), DistInfo())
    rec = Recorder()
    built.hooks.append(rec)  # where setup puts the tricks' hooks
    trainer = Trainer(built, DistInfo(), tmp_path, seed=0, eval_every=2, log_every=50)
    assert [type(h).__name__ for h in trainer.hooks] == [
        "Recorder", "StepProgress", "Evaluate", "Checkpoint", "EpochLog"]
    assert all(h.trainer is trainer for h in trainer.hooks)
    metrics = trainer.fit()

    steps = [("after_step", e, e * 4 + i, False) for e in range(2) for i in range(1, 5)]
    assert rec.events == [
        ("before_train", 0, 0, False),
        ("before_epoch", 0, 0, False), *steps[:4],
        # the record is closed (epochs done: 1); a trick's hook runs before evaluation
        ("after_epoch", 1, 4, False),
        ("before_epoch", 1, 4, False), *steps[4:],
        ("after_epoch", 2, 8, False),
        ("after_train", 2, 8, True),  # evaluated after the last epoch only (eval_every=2)
    ]
    assert [sorted(set(r) & {"top1", "iteration"}) for r in trainer.history] == [
        ["iteration"], ["iteration", "top1"]]
    assert metrics == trainer.last_metrics and "top1" in metrics
    with open(tmp_path / "log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    ckpt = run_io.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["iteration"], ckpt["last_metrics"]) == (2, 8, metrics)


def test_before_train_and_after_train_run_on_a_resume_too(tmp_path, fmnist_root):
    cfg = _cfg(fmnist_root, "train.epochs=2")
    first = Trainer(build(cfg, DistInfo()), DistInfo(), tmp_path, seed=0)
    first.fit()
    built = build(cfg, DistInfo())
    rec = Recorder()
    built.hooks.append(rec)
    again = Trainer(built, DistInfo(), tmp_path, seed=0)
    again.load_state_dict(run_io.load_checkpoint(again.ckpt_path))
    again.fit()  # nothing left to train
    assert rec.events == [("before_train", 2, 8, False), ("after_train", 2, 8, False)]


AVERAGE_TRICK = '''
import torch
from ablate.registry import TRICKS
from ablate.tricks.base import Hook, Trick


class Average(Hook):
    def __init__(self, decay):
        self.decay, self.avg, self.steps = decay, None, 0

    def after_step(self):
        p = torch.nn.utils.parameters_to_vector(self.trainer.model.parameters()).detach()
        self.avg = p.clone() if self.avg is None else self.decay * self.avg + (1 - self.decay) * p
        self.steps += 1


@TRICKS.register("probe_average")
class ProbeAverage(Trick):
    name = "probe_average"

    def __init__(self, decay: float = 0.5) -> None:
        self.decay = decay
        self.hook = Average(decay)

    def hooks(self):
        return [self.hook]
'''


def test_a_trick_adds_a_hook_with_no_engine_edit(tmp_path, fmnist_root, monkeypatch):
    """A weight average as a trick module dropped into the package: its hook sees every step."""
    (tmp_path / "probe_average.py").write_text(AVERAGE_TRICK)
    monkeypatch.setattr(TRICKS, "_items", dict(TRICKS._items))
    monkeypatch.setattr(ablate.tricks, "__path__", [*ablate.tricks.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "ablate.tricks.probe_average", raising=False)
    ablate.tricks.discover()
    cfg = _cfg(fmnist_root, "train.epochs=1")
    with open_dict(cfg):
        cfg.tricks = {"probe_average": {"decay": 0.25}}
    built = build(cfg, DistInfo())
    (hook,) = built.hooks

    snapshots = []

    class Snap(Hook):
        def after_step(self):
            snapshots.append(torch.nn.utils.parameters_to_vector(
                self.trainer.model.parameters()).detach().clone())

    built.hooks.append(Snap())
    Trainer(built, DistInfo(), tmp_path / "run", seed=0).fit()
    assert hook.steps == len(snapshots) == 4
    want = snapshots[0]
    for p in snapshots[1:]:
        want = 0.25 * want + 0.75 * p
    assert torch.equal(hook.avg, want)
    assert not torch.equal(hook.avg, snapshots[-1])
    sys.modules.pop("ablate.tricks.probe_average")
