"""``ablate run --parallel K``: independent steps run at the same time (their run intervals
overlap), a failure stops new launches unless --keep-going, GPUs are split into disjoint sets;
and steps with an identical config are trained once and shared, within a study and across
studies under one results root."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from ablate.errors import AblateError
from ablate.launch import device_slots
from ablate.study.spec import load_study
from tests.conftest import ROOT

STUDY = ROOT / "studies" / "fmnist_refinements.yaml"
FIRST = [s.id for s in load_study(STUDY).steps[:3]]


def _args(results, fmnist_root, *more):
    return ("run", STUDY, "--scale", "smoke", "--results", str(results), "--set",
            f"data.root={fmnist_root}", *more)


def _interval(run: Path) -> tuple[int, int]:
    """When a run started (its config was written just before the launch) and ended (its
    metrics were written last)."""
    return (run / "config.yaml").stat().st_mtime_ns, (run / "metrics.json").stat().st_mtime_ns


def test_two_steps_run_at_the_same_time(cli, results, fmnist_root):
    a, b = FIRST[:2]
    r = cli(*_args(results, fmnist_root, "--only", f"{a},{b}", "--parallel", "2"))
    assert r.code == 0, r.out + r.err
    out = results / "fmnist_refinements" / "smoke"
    (a0, a1), (b0, b1) = _interval(out / a / "seed0"), _interval(out / b / "seed0")
    assert a0 < b1 and b0 < a1, "the runs did not overlap"
    for step in (a, b):
        m = json.loads((out / step / "seed0" / "metrics.json").read_text())
        assert m["status"] == "completed"
    # every progress line says which run it belongs to
    lines = [line for line in r.out.splitlines() if "epoch " in line]
    assert {line.split(":")[0] for line in lines} == {f"[1/2] {a} seed 0", f"[2/2] {b} seed 0"}
    assert len(lines) == 4


def test_a_failure_stops_new_launches_unless_keep_going(cli, results, fmnist_root):
    bad = ("--only", ",".join(FIRST), "--set", "optim.lr=1e30", "--parallel", "2")
    r = cli(*_args(results, fmnist_root, *bad))
    out = results / "fmnist_refinements" / "smoke"
    assert r.code == 1 and f"step '{FIRST[0]}' (seed 0) failed: non-finite loss" in r.err
    for step in FIRST[:2]:  # both started together, both finished
        assert json.loads((out / step / "seed0" / "metrics.json").read_text())["status"] == \
            "failed"
    assert not (out / FIRST[2]).exists()
    r = cli(*_args(results, fmnist_root, *bad, "--keep-going"))
    assert r.code == 1
    assert json.loads((out / FIRST[2] / "seed0" / "metrics.json").read_text())["status"] == \
        "failed"


def test_gpus_are_split_into_disjoint_sets(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    local = {"name": "local", "nproc": "auto", "device": "auto", "mode": "auto"}
    assert device_slots(local, 2, 2) == [["0", "1"], ["2", "3"]]
    assert device_slots(local, 1, 4) == [["0"], ["1"], ["2"], ["3"]]
    assert device_slots(local, 2, 1) is None  # one run at a time: all GPUs
    assert device_slots({**local, "device": "cpu"}, 2, 2) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert device_slots(local, 2, 2) == [["4", "5"], ["6", "7"]]
    with pytest.raises(AblateError, match=r"--parallel 3 × 2 processes per run needs 6 GPUs, "
                                          r"4 visible \(4,5,6,7\)"):
        device_slots(local, 2, 3)


def test_too_few_gpus_or_inprocess_exit_2_before_anything_runs(cli, results, fmnist_root,
                                                               monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    r = cli(*_args(results, fmnist_root, "--parallel", "3", "--nproc", "2"))
    assert r.code == 2 and "needs 6 GPUs, 4 visible" in r.err
    r = cli(*_args(results, fmnist_root, "--parallel", "2", "--set", "launcher=inprocess"))
    assert r.code == 2 and "the inprocess launcher runs one run at a time" in r.err
    assert not results.exists()


TWINS = """
    name: {name}
    metric: top1
    base:
      model: resnet_tiny_d
      data: fashion_mnist
      data.train_subset: 256
      data.test_subset: 100
      train.batch_size: 128
      train.epochs: 1
      train.threads: 1
      schedule.milestones: [1]
    steps:
"""


def _study(folder: Path, name: str, steps: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(TWINS.format(name=name)) + textwrap.dedent(steps))
    return path


def test_identical_configs_are_trained_once(cli, results, fmnist_root, tmp_path):
    twins = _study(tmp_path, "twins", """
      - id: a
        add: [cosine]
      - id: b
        label: the same config as a
    """)
    args = ("--results", str(results), "--set", f"data.root={fmnist_root}")
    r = cli("run", twins, *args, "--parallel", "2")
    assert r.code == 0, r.out + r.err
    a, b = results / "twins/full/a/seed0", results / "twins/full/b/seed0"
    assert f"[2/2] b seed 0: shared: same config as {a}" in r.out
    mb = json.loads((b / "metrics.json").read_text())
    ma = json.loads((a / "metrics.json").read_text())
    assert mb["shared_from"] == str(a) and mb["metrics"] == ma["metrics"]
    for f in ("checkpoints/last.pt", "log.csv", "stdout.log"):  # hard links: trained once
        assert os.stat(a / f).st_ino == os.stat(b / f).st_ino, f
    assert "step: b" in (b / "overrides.yaml").read_text()
    assert cli("run", twins, *args).out.count("skip ") == 2

    # the same config in another study under the same results root is not trained again
    again = _study(tmp_path, "twins_again", """
      - id: c
        add: [cosine]
    """)
    c = results / "twins_again/full/c/seed0"
    dry = cli("run", again, *args, "--dry-run")
    assert dry.code == 0 and f"c seed 0: share {a}  {c}" in dry.out
    r = cli("run", again, *args)
    assert r.code == 0, r.out + r.err
    assert json.loads((c / "metrics.json").read_text())["shared_from"] == str(a)
    assert os.stat(a / "checkpoints/last.pt").st_ino == os.stat(c / "checkpoints/last.pt").st_ino


def test_launchers_are_registered_classes_with_one_protocol():
    from ablate.launch import LAUNCHERS, Launcher, launcher

    assert list(LAUNCHERS) == ["inprocess", "local", "multinode", "slurm"]
    assert all(issubclass(LAUNCHERS.get(n), Launcher) for n in LAUNCHERS)
    slurm = launcher({"name": "slurm", "nodes": 2, "gpus_per_node": 4, "device": "auto"})
    assert (slurm.nodes(), slurm.on_cuda(), slurm.takes_local_gpus()) == (2, True, False)
    local = launcher({"name": "local", "device": "cpu", "nproc": 2})
    assert (local.nodes(), local.on_cuda(), local.takes_local_gpus(), local.nproc(None)) == \
        (1, False, False, 2)
    assert launcher({"name": "multinode", "nnodes": 3}).nodes() == 3
    with pytest.raises(AblateError, match="unknown launcher 'slrum' \\(did you mean 'slurm'\\?\\)"):
        launcher({"name": "slrum"})
