"""The CLI end to end: a smoke study through torchrun, skip on re-run, resume after a kill,
refusals with exit code 2 that touch nothing, the lock, seeds, Hydra multirun."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ablate.study.driver import study_lock
from tests.conftest import ROOT, tree_snapshot

STUDY = str(ROOT / "studies" / "fmnist_refinements.yaml")
STEPS = ["efficient", "cosine", "label_smoothing", "distill", "mixup", "distill_mixup"]


def test_smoke_study_runs_reports_and_skips_on_rerun(cli, results, fmnist_root):
    r = cli("run", STUDY, "--scale", "smoke", "--results", results, "--set",
            f"data.root={fmnist_root}")
    assert r.code == 0, r.out + r.err
    out = results / "fmnist_refinements" / "smoke"
    for step in STEPS:
        d = out / step / "seed0"
        for f in ("config.yaml", "overrides.yaml", "log.csv", "stdout.log", "metrics.json",
                  "checkpoints/last.pt"):
            assert (d / f).is_file(), d / f
        m = json.loads((d / "metrics.json").read_text())
        assert m["status"] == "completed" and m["world_size"] == 1
    assert "| + mixup w/o distill |" in r.out and "| Efficient |" in r.out
    before = tree_snapshot(out)
    again = cli("run", STUDY, "--scale", "smoke", "--results", results, "--set",
                f"data.root={fmnist_root}")
    assert again.code == 0
    assert again.out.count("skip ") == len(STEPS)
    after = tree_snapshot(out)
    assert {k: v for k, v in after.items() if k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}
    rep = cli("report", results / "fmnist_refinements", "--format", "csv")
    assert rep.code == 0 and rep.out.splitlines()[0].startswith("id,label,column,parent")
    assert len(rep.out.splitlines()) == 1 + 2 * len(STEPS)


def _inproc(results, fmnist_root, *more):
    return ("run", STUDY, "--scale", "smoke", "--results", str(results), "--set",
            f"data.root={fmnist_root}", "--set", "launcher=inprocess", *more)


def test_changed_config_is_refused_then_force_keeps_old_run(cli, results, fmnist_root):
    assert cli(*_inproc(results, fmnist_root, "--only", "efficient")).code == 0
    out = results / "fmnist_refinements" / "smoke"
    before = tree_snapshot(out)
    r = cli(*_inproc(results, fmnist_root, "--only", "efficient", "--set", "optim.lr=0.05"))
    assert r.code == 2 and "refusing to touch runs" in r.err and "--force" in r.err
    assert tree_snapshot(out) == before
    r = cli(*_inproc(results, fmnist_root, "--only", "efficient", "--set", "optim.lr=0.05",
                     "--force"))
    assert r.code == 0
    kept = list((out / ".replaced").iterdir())
    assert len(kept) == 1 and (kept[0] / "metrics.json").is_file()


def test_seeds_give_mean_and_std(cli, results, fmnist_root):
    r = cli(*_inproc(results, fmnist_root, "--only", "efficient", "--seeds", "2"))
    assert r.code == 0
    row = next(line for line in r.out.splitlines() if line.startswith("| Efficient"))
    assert " ± " in row and row.rstrip().endswith("| 2 |")


def test_dry_run_writes_nothing(cli, results, fmnist_root):
    r = cli(*_inproc(results, fmnist_root, "--dry-run"))
    assert r.code == 0 and "efficient seed 0: run" in r.out and "tricks=[linear_scaling" in r.out
    assert not results.exists()


def test_lock_refuses_a_second_run(cli, results, fmnist_root):
    out = results / "fmnist_refinements" / "smoke"
    with study_lock(out):
        r = cli(*_inproc(results, fmnist_root))
    assert r.code == 2 and "in use by another `ablate run`" in r.err


@pytest.mark.parametrize("args,message", [
    (("run", "no_such_study"), "study 'no_such_study' not found"),
    (("run", STUDY, "--scale", "huge"), "unknown scale 'huge'"),
    (("run", STUDY, "--only", "cosin"), "--only 'cosin': no such step (did you mean 'cosine'?)"),
    (("run", STUDY, "--set", "optim.lrr=1"), "step 'efficient': unknown config key 'optim.lrr'"),
    (("run", STUDY, "--set", "data.root=/nonexistent"), "Fashion-MNIST not found"),
    (("report", "/nonexistent"), "neither a study file nor a results folder"),
    (("list", "trcks"), "did you mean 'tricks'"),
    (("train", "tricks=[mixpu]"), "unknown trick 'mixpu' (did you mean 'mixup'?)"),
    (("run", STUDY, "--set", "train.compile=fast"),
     "step 'efficient' (seed 0): train.compile='fast': use false, true or one of default,"),
    (("run", STUDY, "--set", "optim.impl=fuse"), "unknown optim.impl 'fuse'"),
    (("train", "train.precision=fp8"), "unknown precision 'fp8'"),
])
def test_bad_input_exits_2_and_touches_nothing(cli, results, fmnist_root, args, message):
    assert cli(*_inproc(results, fmnist_root, "--only", "efficient")).code == 0
    before = tree_snapshot(results)
    r = cli(*args, *(("--results", str(results)) if args[0] in ("run", "report") else ()))
    assert r.code == 2, r.out + r.err
    assert message in r.err.replace("\n", " ")
    assert tree_snapshot(results) == before


def test_bad_values_exit_2_before_any_run_naming_step_and_key(cli, results, fmnist_root):
    """Types, ranges and relations of the composed config, checked at plan time: smoke is
    512 of the 600 images, batch 128, 2 epochs: 8 optimizer steps."""
    assert cli(*_inproc(results, fmnist_root, "--only", "efficient")).code == 0
    before = tree_snapshot(results)
    for override, message in [
        ("train.epochs=two", "train.epochs='two': must be an integer"),
        ("train.epochs=0", "train.epochs=0: must be >= 1"),
        ("optim.lr=fast", "optim.lr='fast': must be a number"),
        ("optim.lr=0", "optim.lr=0: must be > 0"),
        ("optim.momentum=1.5", "optim.momentum=1.5: must be <= 1"),
        ("train.batch_size=0", "train.batch_size=0: must be >= 1"),
        ("train.eval_every=0", "train.eval_every=0: must be >= 1"),
        ("data.train_subset=-5", "data.train_subset=-5: must be >= 1 (or null)"),
        ("schedule.milestones=[1,x]", "schedule.milestones=[1, 'x']: must be non-negative"),
        ("data.train_subset=100", "no training step: 100 training images are fewer than one "
                                  "global batch (train.batch_size=128)"),
        ("tricks.warmup.epochs=3", "warmup of 3 epochs (12 iterations) is not shorter than "
                                   "training (8 iterations)"),
        ("tricks.warmup.epochs=five", "tricks.warmup.epochs='five': must be a number"),
        ("model.init=cod", "model.init='cod': must be one of code, paper, torchvision (did you "
                           "mean 'code'?)"),
        ("train.diverge_factor=0.5", "train.diverge_factor=0.5: must be >= 1 (or null)"),
    ]:
        for dry in ((), ("--dry-run",)):
            r = cli(*_inproc(results, fmnist_root, "--set", override, *dry))
            assert r.code == 2, (override, r.out + r.err)
            assert r.err.replace("\n", " ").startswith(
                f"error: {STUDY}: step 'efficient': {message}"), (override, r.err)
    assert tree_snapshot(results) == before


def test_a_metric_the_runs_do_not_report_exits_2(cli, results, tmp_path, fmnist_root):
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nmetric: map\nsteps:\n  - {id: a}\n")
    r = cli("run", study, "--dry-run", "--results", results, "--set", f"data.root={fmnist_root}")
    assert r.code == 2 and r.err == (f"error: {study}: step 'a': metric 'map' is not reported by "
                                     "a classification run on fashion_mnist (it reports: top1, "
                                     "top5, train_loss)\n")


def test_malformed_study_file_exits_2(cli, results, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        name: bad
        metric: top1
        steps:
          - id: a
            add: [linear_scaling, cosinee]
    """))
    r = cli("run", bad, "--results", results)
    assert r.code == 2 and f"{bad}: step 'a': unknown trick 'cosinee'" in r.err.replace("\n", " ")
    assert not results.exists()


def test_failed_step_is_recorded_and_stops_the_study(cli, results, fmnist_root):
    r = cli(*_inproc(results, fmnist_root, "--set", "optim.lr=1e30"))
    assert r.code == 1 and "step 'efficient' (seed 0) failed: non-finite loss" in r.err
    out = results / "fmnist_refinements" / "smoke"
    assert json.loads((out / "efficient/seed0/metrics.json").read_text())["status"] == "failed"
    assert not (out / "cosine").exists()
    assert "| Efficient | failed |" in r.out


def _kill_tree(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)


def test_killed_run_resumes(results, fmnist_root):
    args = [sys.executable, "-m", "ablate", "run", STUDY, "--scale", "smoke", "--only",
            "efficient", "--results", str(results), "--set", f"data.root={fmnist_root}",
            "--set", "train.epochs=8", "--set", "data.train_subset=600",
            "--set", "train.batch_size=32"]
    ckpt = results / "fmnist_refinements/smoke/efficient/seed0/checkpoints/last.pt"
    # the killed run goes through torchrun, the resumed one through the default fork launch
    proc = subprocess.Popen([*args, "--set", "launcher.mode=torchrun"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=ROOT)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    _kill_tree(proc.pid)
    proc.wait()
    metrics = ckpt.parent.parent / "metrics.json"
    assert ckpt.exists() and not metrics.exists(), "the run was not interrupted mid-way"
    # torchrun starts workers in their own session: the worker must die with its launcher
    # rather than keep writing into the run folder
    time.sleep(1.0)
    stamp = ckpt.stat().st_mtime_ns
    time.sleep(1.5)
    assert ckpt.stat().st_mtime_ns == stamp and not metrics.exists()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming after epoch" in done.stdout
    m = json.loads(metrics.read_text())
    assert m["status"] == "completed" and 1 <= m["resumed_from_epoch"] < 8 and m["epochs"] == 8


def test_forked_worker_dies_with_its_driver(results, fmnist_root):
    """The default single-process launch forks the worker from a forkserver, which outlives a
    killed driver; the worker must still stop (and free its run lock) within seconds."""
    import fcntl

    args = [sys.executable, "-m", "ablate", "run", STUDY, "--scale", "smoke", "--only",
            "efficient", "--results", str(results), "--set", f"data.root={fmnist_root}",
            "--set", "train.epochs=30", "--set", "data.train_subset=600",
            "--set", "train.batch_size=32"]
    run = results / "fmnist_refinements/smoke/efficient/seed0"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait()
        free = False
        for _ in range(100):
            with open(run / ".run.lock", "a") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    free = True
                    break
                except OSError:
                    time.sleep(0.05)
        assert free, "the worker kept running after its driver was killed"
        assert not (run / "metrics.json").exists()
    finally:
        _kill_tree(proc.pid)


def test_train_multirun_sweeps_one_folder_each(cli, tmp_path, fmnist_root):
    r = cli("train", "-m", "launcher=inprocess", f"data.root={fmnist_root}",
            "data.train_subset=128", "data.test_subset=100", "train.batch_size=64",
            "train.epochs=1", "tricks=[mixup]", "tricks.mixup.alpha=0.1,0.4",
            f"paths.results={tmp_path}")
    assert r.code == 0, r.out + r.err
    runs = sorted((tmp_path / "multirun").glob("*/*/metrics.json"))
    assert len(runs) == 2
    alphas = sorted(json.loads(p.read_text())["tricks"]["mixup"]["alpha"] for p in runs)
    assert alphas == [0.1, 0.4]


def test_list(cli):
    r = cli("list", "tricks")
    assert r.code == 0 and "label_smoothing" in r.out and "zero_gamma" in r.out
    assert "  sync_bn          [classification, yolo, rcnn] " in r.out  # not eaten as markup
    assert "fmnist_refinements" in cli("list", "studies").out


def test_evaluate_and_data_prepare(cli, tmp_path, fmnist_root):
    import numpy as np

    from ablate.data.datasets.fashion_scenes import CLASSES, build_fashion_scenes
    from ablate.data.datasets.voc import voc_ground_truth
    from ablate.eval.detections_io import write_voc_results

    root = build_fashion_scenes(tmp_path / "fs", num_train=4, num_test=12, fmnist_root=fmnist_root)
    ids, gts = voc_ground_truth(root, "2007", "test", CLASSES)
    dets = [dict(boxes=g["boxes"] - np.array([1, 1, 0, 0]), scores=np.ones(len(g["labels"])),
                 labels=g["labels"]) for g in gts]
    write_voc_results(tmp_path / "res", "test", CLASSES, ids, dets)
    r = cli("evaluate", "--data", "voc", "--root", root, "--split", "test", "--detections",
            tmp_path / "res", "--json")
    assert r.code == 0 and json.loads(r.out)["map"] == pytest.approx(100.0, abs=1e-9)
    r = cli("evaluate", "--data", "voc", "--root", root, "--split", "tset", "--detections",
            tmp_path / "res")
    assert r.code == 2 and "tset.txt" in r.err
    assert cli("data", "prepare", "fashion_mnist", f"data.root={fmnist_root}").code == 0
    r = cli("data", "prepare", "fashion_scene")
    assert r.code == 2 and "did you mean 'fashion_scenes'" in r.err


def _holders(path) -> list[int]:
    """Processes that have ``path`` open."""
    out = []
    for fd_dir in __import__("glob").glob("/proc/[0-9]*/fd"):
        try:
            for fd in os.listdir(fd_dir):
                if os.readlink(os.path.join(fd_dir, fd)) == str(path):
                    out.append(int(fd_dir.split("/")[2]))
                    break
        except OSError:
            continue
    return out


def test_killed_driver_leaves_no_dataloader_workers(results, tmp_path):
    """A detection run with DataLoader workers: killing the driver stops the forked worker and
    the DataLoader workers it started (they watch their own forkserver, not the run)."""
    study = ROOT / "studies" / "fscenes_yolov3.yaml"
    args = [sys.executable, "-m", "ablate", "run", str(study), "--scale", "smoke", "--only",
            "baseline", "--results", str(results), "--set", f"paths.data={tmp_path}",
            "--set", "train.epochs=40", "--set", "data.num_workers=2",
            "--set", "schedule.milestones=[39]"]
    run = results / "fscenes_yolov3/smoke/baseline/seed0"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=ROOT)
    try:
        deadline = time.time() + 180
        while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert len(_holders(run / "stdout.log")) >= 3  # the worker and its 2 loader workers
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait()
        for _ in range(100):
            if not _holders(run / "stdout.log"):
                break
            time.sleep(0.05)
        assert _holders(run / "stdout.log") == []
    finally:
        _kill_tree(proc.pid)


def test_a_diverged_run_is_a_result_and_the_study_goes_on(cli, results, fmnist_root):
    """With train.diverge_factor a diverging row ends as "diverged at iteration N": the
    next rows still run, the exit code is 0, the report prints it as failed, and the next
    ``ablate run`` keeps it."""
    args = _inproc(results, fmnist_root, "--only", "efficient,cosine", "--set",
                   "train.diverge_factor=10", "--set", "optim.lr=1e30")
    r = cli(*args)
    out = results / "fmnist_refinements" / "smoke"
    first = json.loads((out / "efficient/seed0/metrics.json").read_text())
    assert r.code == 0, r.err
    assert first["status"] == "failed" and first["reason"].startswith("diverged at iteration")
    assert (out / "cosine/seed0/metrics.json").exists()
    assert "DIVERGED (a result): diverged at iteration" in r.out + r.err
    assert "| Efficient | failed |" in r.out
    before = tree_snapshot(out / "efficient")
    again = cli(*args)
    assert again.code == 0 and tree_snapshot(out / "efficient") == before
