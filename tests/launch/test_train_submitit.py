"""``ablate train -m`` with hydra-submitit-launcher: its ``hydra/launcher`` options compose with
our config tree, and a 2-job sweep really runs as two submitit (local) jobs."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ablate.config import CONF_DIR


@pytest.mark.parametrize("option,target", [("submitit_local", "LocalLauncher"),
                                           ("submitit_slurm", "SlurmLauncher")])
def test_hydra_launcher_options_compose(option, target):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra/launcher={option}",
                                               "hydra.launcher.gpus_per_node=8"],
                          return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith(f"submitit_launcher.{target}")
    assert cfg.hydra.launcher.gpus_per_node == 8 and cfg.hydra.launcher.tasks_per_node == 1
    assert cfg.launcher.name == "local"  # the run inside each job: our own launcher


def test_sweep_runs_as_submitit_jobs(cli, tmp_path, fmnist_root):
    r = cli("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
            "launcher=inprocess", f"data.root={fmnist_root}", "data.train_subset=128",
            "data.test_subset=100", "train.batch_size=64", "train.epochs=1", "train.threads=1",
            "tricks=[mixup]", "tricks.mixup.alpha=0.1,0.4", f"paths.results={tmp_path}")
    assert r.code == 0, r.out + r.err
    runs = sorted((tmp_path / "multirun").glob("*/*/metrics.json"))
    assert len(runs) == 2
    assert sorted(json.loads(p.read_text())["tricks"]["mixup"]["alpha"] for p in runs) == \
        [0.1, 0.4]
    assert len(list((tmp_path / "multirun").glob("*/.submitit/*/*_0_log.out"))) == 2
