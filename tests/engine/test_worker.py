"""The worker in-process: metrics.json schema, exact resume, non-finite loss recorded."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from ablate.config import compose, config_hash
from ablate.engine import run_io
from ablate.engine.trainer import Trainer
from ablate.worker import run


TRICKS = ("tricks=[mixup,label_smoothing,warmup,amp]", "tricks.amp.dtype=bf16",
          "tricks.warmup.epochs=0.5")


def make_run(tmp_path, fmnist_root, *extra, tricks=TRICKS):
    cfg = compose([f"data.root={fmnist_root}", "data.train_subset=256", "train.batch_size=64",
                   "train.epochs=3", "schedule.milestones=[2]", "train.log_every=2",
                   *tricks, *extra])
    tmp_path.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    return tmp_path / "config.yaml", cfg


def test_metrics_json_schema(tmp_path, fmnist_root):
    config, cfg = make_run(tmp_path, fmnist_root)
    result = run(config)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == result
    assert result["schema_version"] == 1 and result["status"] == "completed"
    assert result["config_hash"] == config_hash(cfg)
    assert result["epochs"] == 3 and result["iterations"] == 12  # 256 / 64 × 3
    assert result["precision"] == "bf16" and result["world_size"] == 1
    assert set(result["metrics"]) == {"top1", "top5", "train_loss"}
    assert result["tricks"]["mixup"] == {"alpha": 0.2, "beta": 0.2, "off_last_epochs": 0,
                                         "mode": "beta"}
    assert result["tricks"]["label_smoothing"] == {"epsilon": 0.1, "formula": "code"}
    for key in ("wall_time_s", "images_per_s", "data_wait_s", "data_wait_share",
                "torch_version", "device", "seed", "git_commit"):
        assert key in result
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "train_loss", "lr"] and len(rows) == 4
    ckpt = run_io.load_checkpoint(tmp_path / "checkpoints" / "last.pt")  # weights_only=True
    assert ckpt["epoch"] == 3 and ckpt["config_hash"] == config_hash(cfg)


def test_interrupted_run_resumes_to_identical_result(tmp_path, fmnist_root, monkeypatch):
    full_cfg, _ = make_run(tmp_path / "a", fmnist_root)
    full = run(full_cfg)
    part_cfg, _ = make_run(tmp_path / "b", fmnist_root)
    original = Trainer.train_epoch
    calls = {"n": 0}

    def dies_in_second_epoch(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(part_cfg)
    assert not (tmp_path / "b" / "metrics.json").exists()
    assert run_io.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = run(part_cfg)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["metrics"] == full["metrics"]
    a = run_io.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = run_io.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "b" / "log.csv").read_text().splitlines()) == 4  # no duplicate rows


def test_checkpoint_of_another_config_is_refused(tmp_path, fmnist_root):
    config, _ = make_run(tmp_path, fmnist_root, "train.epochs=1")
    run(config)
    make_run(tmp_path, fmnist_root, "train.epochs=2")
    (tmp_path / "metrics.json").unlink()  # as if interrupted
    result = run(config)
    assert result["status"] == "failed" and "belongs to another config" in result["reason"]
    assert json.loads((tmp_path / "metrics.json").read_text())["reason"] == result["reason"]


@pytest.mark.parametrize("override, reason", [
    # setup: the data vanished between the check and the launch
    ("data.root=/nonexistent", "Fashion-MNIST not found: /nonexistent does not exist"),
    # training: an exception of the code (a model that cannot take the input)
    ("model.in_chans=3", "RuntimeError: Given groups=1, weight of size"),
])
def test_any_exception_is_a_failed_result_with_its_reason(tmp_path, fmnist_root, override,
                                                          reason, capsys):
    config, _ = make_run(tmp_path, fmnist_root, override)
    result = run(config)
    assert result["status"] == "failed" and result["reason"].startswith(reason)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (saved["status"], saved["reason"], saved["epochs"]) == ("failed", result["reason"], 0)
    assert "Traceback" in capsys.readouterr().err  # the details, for the log


def test_non_finite_loss_is_recorded_as_failure(tmp_path, fmnist_root):
    config, _ = make_run(tmp_path, fmnist_root, "optim.lr=1e6", tricks=())
    result = run(config)
    assert result["status"] == "failed"
    assert result["reason"].startswith("non-finite loss in epoch 1 by iteration")


def test_divergence_check_ends_the_run_as_a_result(tmp_path, fmnist_root):
    config, cfg = make_run(tmp_path, fmnist_root, "optim.lr=1e6", "train.diverge_factor=10",
                           tricks=())
    result = run(config)
    assert result["status"] == "failed"
    assert result["reason"].startswith(f"diverged at iteration {result['diverged']}: ")
    assert 1 <= result["diverged"] <= 12 and result["iterations"] == result["diverged"]
    # without the key set, the hash is the one results written before it carry
    plain = compose([f"data.root={fmnist_root}"])
    assert config_hash(plain) != config_hash(cfg)
    assert "diverge_factor" not in json.dumps(
        {k: v for k, v in OmegaConf.to_container(plain)["train"].items() if v is not None})


def test_the_loss_ratio_check_by_hand(tmp_path, fmnist_root):
    from ablate.engine.dist import DistInfo
    from ablate.engine.setup import build
    from ablate.engine.trainer import Diverged, NonFiniteLoss

    config, cfg = make_run(tmp_path, fmnist_root, tricks=())
    trainer = Trainer(build(cfg, DistInfo()), DistInfo(), tmp_path, seed=0, diverge_factor=10)
    trainer.state.iteration, trainer.epoch_steps = 4, 4
    trainer.loss_sum = torch.tensor(8.0)  # mean 2.0: the run's first check sets the start
    trainer.check_finite()
    assert trainer.start_loss == 2.0 and trainer.state_dict()["start_loss"] == 2.0
    trainer.loss_sum = torch.tensor(80.0)  # mean 20.0 = 10 × the start: not over it
    trainer.check_finite()
    trainer.state.iteration, trainer.loss_sum = 9, torch.tensor(80.5)
    with pytest.raises(Diverged, match=r"^diverged at iteration 9: mean loss 20.12 in epoch 1, "
                                       r"over 10 × its start 2$") as e:
        trainer.check_finite()
    assert e.value.iteration == 9
    trainer.loss_sum = torch.tensor(float("nan"))
    with pytest.raises(Diverged, match="^diverged at iteration 9: non-finite loss in epoch 1$"):
        trainer.check_finite()
    trainer.diverge_factor = None  # off: a non-finite loss is a failure, ratios are not checked
    with pytest.raises(NonFiniteLoss, match="^non-finite loss in epoch 1 by iteration 9$"):
        trainer.check_finite()
    trainer.loss_sum = torch.tensor(1e9)
    trainer.check_finite()
