"""Data-parallel correctness on CPU (gloo) through a real ``torchrun`` with 2 processes.

One 2-process run of a tiny ResNet-D on Fashion-MNIST is started through
``tests/engine/_dist_probe.py``, which runs the real worker and records, per rank, the files it
wrote and the model it ends with. The tests then check that the ranks agree, that evaluation
counts every test image once, that only one process writes, and that a 1-process run resumes
the 2-process checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from ablate.config import compose
from ablate.engine import run_io
from ablate.engine.dist import DistInfo
from ablate.engine.setup import build
from ablate.launch import torchrun_command
from ablate.worker import run
from tests.conftest import ROOT
from tests.engine._plain_model import PLAIN

OVERRIDES = ("data.train_subset=256", "data.test_subset=100", "train.batch_size=32",
             "train.eval_batch_size=20", "train.epochs=2", "train.threads=1",
             "train.log_every=1000", "launcher.mode=torchrun", "schedule.milestones=[1]")


def _torchrun_probe(base, overrides):
    """Run the worker in 2 processes through torchrun and the probe; returns (run folder,
    probe folder, config)."""
    results, probe = base / "results", base / "probe"
    run_dir = results / "two"
    run_dir.mkdir(parents=True)
    probe.mkdir()
    cfg = compose([f"paths.results={results}", *overrides])
    OmegaConf.save(cfg, run_dir / "config.yaml")
    env = {**os.environ, "ABLATE_PROBE_DIR": str(probe), "ABLATE_PROBE_WATCH": str(results),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = torchrun_command(run_dir / "config.yaml", 2, module="tests.engine._dist_probe")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run_dir / "stdout.log").write_text(out.stdout + out.stderr)
    return run_dir, probe, cfg


@pytest.fixture(scope="module")
def two_proc(tmp_path_factory, fmnist_root):
    """A finished 2-process run of the tiny ResNet-D (with BatchNorm)."""
    return _torchrun_probe(tmp_path_factory.mktemp("dist"),
                           [f"data.root={fmnist_root}", *OVERRIDES])


def test_ranks_end_with_identical_weights_and_buffers(two_proc):
    run_dir, probe, _ = two_proc
    r0 = torch.load(probe / "state-rank0.pt", weights_only=True)
    r1 = torch.load(probe / "state-rank1.pt", weights_only=True)
    saved = run_io.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert set(r0) == set(r1) == set(saved)
    assert any("running_mean" in k for k in r0)  # BN statistics are compared too
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.equal(r0[k], saved[k]), k


def test_eval_metrics_are_reduced_over_ranks(two_proc):
    """The 2-process top-1/top-5 (each rank scores half of the test set) equals one process
    scoring the whole test set with the saved checkpoint, exactly."""
    run_dir, _, cfg = two_proc
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["world_size"] == 2
    torch.manual_seed(0)
    built = build(cfg, DistInfo())
    built.model.load_state_dict(run_io.load_checkpoint(run_dir / "checkpoints/last.pt")["model"])
    assert sum(len(b["label"]) for b in built.eval_loader) == 100
    one = built.task.evaluate(built.model, built.eval_loader, built.precision.autocast)
    assert one["top1"] == metrics["metrics"]["top1"] and one["top5"] == metrics["metrics"]["top5"]
    assert 0 < one["top1"] < 100  # neither trivial case: the sums really are over both halves


def test_only_the_main_rank_writes(two_proc):
    run_dir, probe, _ = two_proc
    assert json.loads((probe / "writes-rank1.json").read_text()) == []
    written = {os.path.relpath(p, run_dir) for p in
               json.loads((probe / "writes-rank0.json").read_text())}
    final = {"log.csv", "metrics.json", "checkpoints/last.pt", ".run.lock"}
    assert final <= written
    assert all(p in final or p in (".", "checkpoints")  # and the temporary files renamed over them
               or os.path.basename(p).startswith((".log.csv.", ".metrics.json.", ".last.pt."))
               for p in written), written
    files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert files == final | {"config.yaml", "stdout.log"}
    assert json.loads((run_dir / "metrics.json").read_text())["iterations"] == 16  # 256/32 × 2


def test_one_process_resumes_a_two_process_checkpoint(two_proc, tmp_path):
    """Same config (the hash leaves out the launcher), 1 process instead of 2: the global batch
    (train.batch_size) stays 32, so each step sees the same images in the same order and the LR
    schedule continues at the same iteration; what changes is the per-process batch (16 → 32)
    and the random augmentation draws (seeded per rank)."""
    run_dir, probe, cfg = two_proc
    ckpt = torch.load(probe / "epoch1.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 8
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(probe / "epoch1.pt", tmp_path / "checkpoints" / "last.pt")
    result = run(tmp_path / "config.yaml")
    two = json.loads((run_dir / "metrics.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 1
    assert result["resumed_from_epoch"] == 1 and result["epochs"] == 2
    assert result["iterations"] == two["iterations"] == 16
    assert result["config_hash"] == two["config_hash"]
    rows_two = (run_dir / "log.csv").read_text().splitlines()
    rows_one = (tmp_path / "log.csv").read_text().splitlines()
    assert rows_one[:2] == rows_two[:2]  # epoch 1 as the 2-process run logged it
    lr = rows_two[0].split(",").index("lr")
    assert rows_one[2].split(",")[lr] == rows_two[2].split(",")[lr]  # same schedule position
    assert 0 < result["metrics"]["top1"] <= 100


def test_two_processes_with_accumulation_equal_one_process(tmp_path, fmnist_root):
    """2 processes × batch 4 × accum_steps 2 = 1 process × batch 16 (a model without BN, no
    random augmentation): DDP averages the ranks' accumulated gradients into the mean over the
    same 16 images. Gradients are all-reduced once per optimizer step (``no_sync`` on the
    first micro-batch): 8 steps, one bucket."""
    common = [f"data.root={fmnist_root}", *PLAIN, "data.train_subset=64", "data.test_subset=50",
              "train.epochs=2", "train.threads=1", "train.batch_size=16", "optim.lr=0.05"]
    run_dir, probe, _ = _torchrun_probe(tmp_path / "two", [*common, "train.accum_steps=2"])
    for r in (0, 1):
        assert json.loads((probe / f"comm-rank{r}.json").read_text()) == {"allreduce": 8}
    cfg = compose(common)
    (tmp_path / "one").mkdir()
    OmegaConf.save(cfg, tmp_path / "one" / "config.yaml")
    one = run(tmp_path / "one" / "config.yaml")
    two = json.loads((run_dir / "metrics.json").read_text())
    assert one["iterations"] == two["iterations"] == 8
    a = run_io.load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    b = run_io.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-6, atol=1e-6), (k, (a[k] - b[k]).abs().max())


def test_mixup_draws_one_lambda_per_step_on_every_rank_and_micro_batch(tmp_path, fmnist_root,
                                                                      monkeypatch):
    """As GluonCV draws λ once before splitting the batch over its devices: 2 processes ×
    accum_steps 2 apply the λ sequence of 1 process, each λ to all four micro-batches."""
    import ablate.tricks.mixup as mixup

    common = [f"data.root={fmnist_root}", *PLAIN, "data.train_subset=64", "data.test_subset=20",
              "train.epochs=2", "train.threads=1", "train.batch_size=16", "tricks=[mixup]"]
    _, probe, _ = _torchrun_probe(tmp_path / "two", [*common, "train.accum_steps=2"])
    seen: list[float] = []
    real = mixup.mix_batch

    def record(images, targets, lam):
        seen.append(lam)
        return real(images, targets, lam)

    monkeypatch.setattr(mixup, "mix_batch", record)
    cfg = compose(common)
    (tmp_path / "one").mkdir()
    OmegaConf.save(cfg, tmp_path / "one" / "config.yaml")
    run(tmp_path / "one" / "config.yaml")
    assert len(seen) == 8 and len(set(seen)) == 8  # 4 steps an epoch, 2 epochs
    assert seen == [mixup.step_lambda(0.2, 0.2, 0, i) for i in range(8)]
    for r in (0, 1):
        lams = json.loads((probe / f"lambdas-rank{r}.json").read_text())
        assert lams == [lam for lam in seen for _ in range(2)]  # both micro-batches of a step
