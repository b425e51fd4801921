"""Gradient accumulation: ``train.accum_steps`` micro-batches per optimizer step give the same
step as one batch of the same global size (SGD, a model without BN, no random augmentation)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ablate.config import compose
from ablate.engine import run_io
from ablate.engine.dist import DistInfo
from ablate.engine.setup import build
from ablate.errors import AblateError
from ablate.worker import run
from tests.engine._plain_model import PLAIN, build_plain_cnn

COMMON = (*PLAIN, "data.train_subset=64", "data.test_subset=50", "train.epochs=2",
          "train.threads=1", "train.log_every=1", "tricks=[linear_scaling,warmup]",
          "tricks.linear_scaling.ref_batch=8", "tricks.warmup.epochs=1", "optim.lr=0.05")


def _run(tmp_path, fmnist_root, name, *extra):
    cfg = compose([f"data.root={fmnist_root}", *COMMON, *extra])
    (tmp_path / name).mkdir()
    OmegaConf.save(cfg, tmp_path / name / "config.yaml")
    result = run(tmp_path / name / "config.yaml")
    ckpt = run_io.load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")
    return result, ckpt, (tmp_path / name / "log.csv").read_text().splitlines()


def test_accumulated_micro_batches_equal_one_batch(tmp_path, fmnist_root):
    """1 process × batch 8 × accum 2 = batch 16 × accum 1: same weights, same LR schedule
    (warmup in optimizer steps, linear scaling by the global batch 16: lr 0.1)."""
    one, ckpt_one, log_one = _run(tmp_path, fmnist_root, "one", "train.batch_size=16")
    acc, ckpt_acc, log_acc = _run(tmp_path, fmnist_root, "acc", "train.batch_size=16",
                                  "train.accum_steps=2")
    assert one["iterations"] == acc["iterations"] == 8  # 64 / 16 × 2 optimizer steps
    lr = log_one[0].split(",").index("lr")
    assert [r.split(",")[lr] for r in log_one] == [r.split(",")[lr] for r in log_acc]
    assert float(log_one[2].split(",")[lr]) == pytest.approx(0.1)  # 0.05 × 16 / 8
    for k, v in ckpt_one["model"].items():
        assert torch.allclose(v, ckpt_acc["model"][k], rtol=1e-6, atol=1e-6), k
    torch.manual_seed(0)
    init = build_plain_cnn()  # the worker's initial weights (seed 0): training moved them
    assert (ckpt_one["model"]["3.weight"] - init[3].weight).abs().max() > 1e-2
    assert one["metrics"]["train_loss"] == pytest.approx(acc["metrics"]["train_loss"], rel=1e-5)


def test_micro_batch_and_steps(fmnist_root):
    cfg = compose([f"data.root={fmnist_root}", *COMMON, "train.batch_size=24",
                   "train.accum_steps=3"])
    built = build(cfg, DistInfo())
    assert built.accum_steps == 3 and built.ctx.total_batch == 24
    assert next(iter(built.train_loader))["image"].shape[0] == 8  # per micro-step
    assert len(built.train_loader) == 8 and built.ctx.iters_per_epoch == 2  # 64 // 8 // 3


@pytest.mark.parametrize("extra,message", [
    (("train.accum_steps=0",), "train.accum_steps must be a positive integer"),
    (("train.batch_size=16", "train.accum_steps=3"),
     "train.batch_size=16 is not divisible by the 1 processes × train.accum_steps=3"),
])
def test_bad_accumulation_is_refused(fmnist_root, extra, message):
    cfg = compose([f"data.root={fmnist_root}", *COMMON, *extra])
    with pytest.raises(AblateError, match=message.replace("×", ".")):
        build(cfg, DistInfo())
