"""The step loop reports how long it waited on the training loader (``data_wait_s``)."""

from __future__ import annotations

import time

import pytest

from ablate.config import compose
from ablate.engine.dist import DistInfo
from ablate.engine.setup import build
from ablate.engine.trainer import Trainer
from tests.engine._plain_model import PLAIN


class SlowLoader:
    """The real loader, with ``delay`` seconds before each batch."""

    def __init__(self, loader, delay: float) -> None:
        self.loader, self.delay = loader, delay

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


def test_data_wait_is_the_time_blocked_on_the_loader(tmp_path, fmnist_root):
    cfg = compose([f"data.root={fmnist_root}", *PLAIN, "data.train_subset=64",
                   "data.test_subset=20", "train.batch_size=16", "train.epochs=1",
                   "train.threads=1"])
    built = build(cfg, DistInfo())
    built.train_loader = SlowLoader(built.train_loader, 0.05)
    trainer = Trainer(built, DistInfo(), tmp_path, seed=0)
    row = trainer.train_epoch()
    # 4 batches × 50 ms of sleep, plus the loader's own work; the plain CNN's steps are ~ms
    assert 0.2 <= row["data_wait_s"] < 0.2 + 0.5 * row["epoch_time_s"]
    assert row["data_wait_share"] == pytest.approx(row["data_wait_s"] / row["epoch_time_s"])
    assert 0.0 < row["data_wait_share"] < 1.0
    assert trainer.data_wait == row["data_wait_s"]
    assert trainer.state_dict()["data_wait"] == row["data_wait_s"]  # survives a resume
