"""What the console says of a failed run: the reason its worker recorded, or what its exit code
means when it recorded none (a kill), and whether the next `ablate run` resumes it."""

from __future__ import annotations

import json

import pytest

from ablate.study.runner import exit_reason, failure_reason


@pytest.mark.parametrize("code, text", [
    (1, "worker exited with code 1 before writing metrics.json"),
    (-9, "worker killed by SIGKILL (out of memory? or killed by hand)"),
    (137, "worker killed by SIGKILL (out of memory? or killed by hand)"),
    (-15, "worker killed by SIGTERM"),
    (143, "worker killed by SIGTERM"),
    (255, "worker exited with code 255 before writing metrics.json"),
])
def test_exit_codes(code, text):
    assert exit_reason(code) == text


def test_reason_prefers_the_recorded_one_then_says_whether_it_resumes(tmp_path):
    assert failure_reason(tmp_path, 1, {"reason": "non-finite loss in epoch 2"}) == \
        "non-finite loss in epoch 2"
    assert failure_reason(tmp_path, -9, {}) == (
        f"worker killed by SIGKILL (out of memory? or killed by hand); see "
        f"{tmp_path / 'stdout.log'}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    assert failure_reason(tmp_path, -9, {}).endswith(
        "; `ablate run` again resumes from its last checkpoint")


def test_a_failing_setup_is_a_result_shown_on_the_console_and_in_the_report(
        cli, results, tmp_path, monkeypatch):
    """The data passes the plan-time check, then breaks before the worker reads it."""
    import dataclasses

    import ablate.engine.setup as setup
    from tests.conftest import ROOT, make_fmnist

    root = make_fmnist(tmp_path / "fm", n_train=600, n_test=200)
    study = ROOT / "studies" / "fmnist_refinements.yaml"
    args = ("run", study, "--scale", "smoke", "--results", results, "--only", "efficient",
            "--set", f"data.root={root}", "--set", "launcher=inprocess")
    source = setup.DATASETS.get("fashion_mnist")

    class Broken(type(source)):
        def build(self, **kw):
            (root / "train-labels-idx1-ubyte.gz").write_bytes(b"gone")
            return super().build(**kw)

    monkeypatch.setitem(setup.DATASETS._items, "fashion_mnist",
                        Broken(*dataclasses.astuple(source)))
    r = cli(*args)
    reason = f"{root / 'train-labels-idx1-ubyte.gz'}: not a readable gzip file"
    assert r.code == 1
    assert f"FAILED: {reason}" in r.out.replace("\n", " ")
    assert f"error: step 'efficient' (seed 0) failed: {reason}" in r.err.replace("\n", " ")
    saved = json.loads((results / "fmnist_refinements" / "smoke" / "efficient" / "seed0" /
                        "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["reason"].startswith(reason)
    assert f"seed 0 failed: {reason}" in r.out.replace("\n", " ")  # the report under the table


# --- damaged or foreign state in a run folder ---------------------------------------------------

def _args(results, root, *more, step="efficient"):
    from tests.conftest import ROOT

    return ("run", ROOT / "studies" / "fmnist_refinements.yaml", "--scale", "smoke", "--results",
            results, "--only", step, "--set", f"data.root={root}", "--set",
            "launcher=inprocess", *more)


def _replaced(results):
    return sorted(p.name for p in (results / "fmnist_refinements" / "smoke" / ".replaced")
                  .glob("*")) if (results / "fmnist_refinements" / "smoke" / ".replaced").is_dir() \
        else []


@pytest.mark.parametrize("damage, message", [
    ("config", "its config.yaml is unreadable"),
    ("metrics", "its metrics.json is unreadable or not a result"),
    ("checkpoint", "its checkpoint last.pt is unreadable"),
    ("foreign checkpoint", "its checkpoint belongs to another config"),
])
def test_damaged_run_folder_exits_2_then_force_moves_it_aside(cli, results, fmnist_root, damage,
                                                              message):
    from tests.conftest import tree_snapshot

    run = results / "fmnist_refinements" / "smoke" / "efficient" / "seed0"
    assert cli(*_args(results, fmnist_root)).code == 0
    ckpt = run / "checkpoints" / "last.pt"
    if damage == "config":
        (run / "config.yaml").write_text("train: {epochs: [\n")
    elif damage == "metrics":
        (run / "metrics.json").write_text('{"status": "compl')
    elif damage == "checkpoint":
        (run / "metrics.json").unlink()  # interrupted, with a truncated checkpoint
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    else:  # the checkpoint of another config in an interrupted run of this one
        import torch

        state = torch.load(ckpt, weights_only=True)
        state["config_hash"] = "0123456789ab"
        torch.save(state, ckpt)
        (run / "metrics.json").unlink()
    before = tree_snapshot(results)
    for dry in ((), ("--dry-run",)):
        r = cli(*_args(results, fmnist_root, *dry))
        if dry:
            assert r.code == 0 and f"efficient seed 0: refuse ({message}" in r.out
        else:
            assert r.code == 2 and f"{run}: {message}" in r.err and "--force" in r.err
    assert tree_snapshot(results) == before
    r = cli(*_args(results, fmnist_root, "--force"))
    assert r.code == 0, r.err
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert len(_replaced(results)) == 1  # the damaged run, kept


def test_force_restarts_an_interrupted_run_and_keeps_it(cli, results, fmnist_root):
    run = results / "fmnist_refinements" / "smoke" / "efficient" / "seed0"
    assert cli(*_args(results, fmnist_root)).code == 0
    (run / "metrics.json").unlink()
    r = cli(*_args(results, fmnist_root, "--dry-run"))
    assert "efficient seed 0: resume (interrupted)" in r.out
    r = cli(*_args(results, fmnist_root, "--force"))
    assert r.code == 0 and json.loads((run / "metrics.json").read_text())["resumed_from_epoch"] \
        is None
    assert len(_replaced(results)) == 1


def test_a_folder_with_neither_result_nor_checkpoint_just_runs(cli, results, fmnist_root):
    """Stopped before its first checkpoint, under another config: nothing to keep or resume."""
    run = results / "fmnist_refinements" / "smoke" / "efficient" / "seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 5\n")
    (run / "stdout.log").write_text("started\n")
    r = cli(*_args(results, fmnist_root))
    assert r.code == 0, r.err
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert len(_replaced(results)) == 1


# --- writes that cannot be redirected --------------------------------------------------------

def test_files_follow_the_umask(cli, results, fmnist_root):
    import os

    old = os.umask(0o022)
    try:
        assert cli(*_args(results, fmnist_root)).code == 0
    finally:
        os.umask(old)
    run = results / "fmnist_refinements" / "smoke" / "efficient" / "seed0"
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in
             (run / "metrics.json", run / "log.csv", run / "config.yaml",
              run / "checkpoints" / "last.pt", run / "stdout.log")}
    assert modes == dict.fromkeys(modes, "0o644")


@pytest.mark.parametrize("name", ["metrics.json", "stdout.log", "checkpoints"])
def test_a_symlink_planted_in_a_run_folder_is_refused(cli, results, fmnist_root, tmp_path, name):
    from tests.conftest import tree_snapshot

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("keep me\n")
    run = results / "fmnist_refinements" / "smoke" / "efficient" / "seed0"
    run.mkdir(parents=True)
    (run / name).symlink_to(victim / "file" if name != "checkpoints" else victim)
    r = cli(*_args(results, fmnist_root))
    assert r.code == 2 and f"{run / name} is a symbolic link" in r.err.replace("\n", " ")
    assert tree_snapshot(victim) == {"file": (victim / "file").stat().st_mtime_ns}
    assert (victim / "file").read_text() == "keep me\n"


def test_atomic_write_creates_exclusively_and_leaves_no_temp_on_failure(tmp_path):
    import errno

    from ablate.engine import run_io

    target = tmp_path / "metrics.json"
    outside = tmp_path / "outside"
    outside.write_text("x")
    target.symlink_to(outside)
    run_io.atomic_write_text(target, "{}\n")  # replaces the link, never writes through it
    assert not target.is_symlink() and target.read_text() == "{}\n" and outside.read_text() == "x"

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        run_io.atomic_write(target, full)
    assert target.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "outside"]


def test_a_results_root_that_cannot_be_written_is_one_clear_error(cli, fmnist_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    r = cli(*_args(blocker / "results", fmnist_root))
    assert r.code == 2 and r.out == "" and "Traceback" not in r.err
    assert r.err.startswith(f"error: {blocker / 'results'}")


def test_a_finished_study_reports_without_writing(cli, results, fmnist_root, monkeypatch):
    from tests.conftest import tree_snapshot

    assert cli(*_args(results, fmnist_root)).code == 0
    before = tree_snapshot(results)
    import ablate.study.driver as driver

    def no_lock(*a, **k):
        raise AssertionError("a finished study took the lock")

    monkeypatch.setattr(driver, "study_lock", no_lock)
    r = cli(*_args(results, fmnist_root))
    assert r.code == 0 and "skip efficient seed 0 (completed)" in r.out and "| Efficient |" in r.out
    assert tree_snapshot(results) == before


# --- the report never hides broken results -------------------------------------------------------

@pytest.mark.parametrize("text, fault", [
    ('{"status": "compl', "unreadable (Unterminated string"),
    ('[1, 2]', "not a JSON object"),
    ('{"schema_version": 2, "status": "completed", "seed": 0, "metrics": {}}',
     "schema_version 2, expected 1"),
    ('{"schema_version": 1, "status": "done", "seed": 0, "metrics": {}}',
     "status 'done', expected completed or failed"),
    ('{"schema_version": 1, "status": "completed", "seed": 0, "metrics": {"top1": "high"}}',
     "'metrics' is not a mapping of numbers"),
])
def test_a_broken_result_is_shown_and_the_exit_code_says_so(cli, results, fmnist_root, text,
                                                             fault):
    assert cli(*_args(results, fmnist_root)).code == 0
    folder = results / "fmnist_refinements" / "smoke"
    path = folder / "efficient" / "seed0" / "metrics.json"
    path.write_text(text)
    r = cli("report", folder)
    assert r.code == 1
    assert "| Efficient | broken |" in r.out
    assert f"- Efficient: broken result {path}: {fault}" in r.out
    assert r.err.startswith(f"error: 1 result cannot be used:\n  {path}: {fault}")


def test_report_checks_its_scale(cli, results):
    from tests.conftest import ROOT

    r = cli("report", ROOT / "studies" / "fmnist_refinements.yaml", "--scale", "huge",
            "--results", results)
    assert r.code == 2 and "unknown scale 'huge'" in r.err


# --- the config hash means "same experiment" ------------------------------------------------------

def test_a_moved_dataset_or_other_thread_count_is_the_same_result(cli, results, fmnist_root,
                                                                  tmp_path):
    import shutil

    assert cli(*_args(results, fmnist_root)).code == 0
    moved = tmp_path / "moved"
    shutil.copytree(fmnist_root, moved)
    r = cli(*_args(results, moved, "--set", "train.threads=1"))
    assert r.code == 0 and "skip efficient seed 0 (completed)" in r.out


def test_a_retrained_teacher_invalidates_its_students(cli, results, fmnist_root):
    import torch

    args = _args(results, fmnist_root, step="distill")
    assert cli(*args).code == 0
    run = results / "fmnist_refinements" / "smoke" / "distill" / "seed0"
    teacher = results / "fmnist_teacher" / "smoke" / "teacher" / "seed0" / "checkpoints" / "last.pt"
    recorded = json.loads((run / "inputs.json").read_text())["tricks.distill.weights"]
    assert recorded["path"] == str(teacher) and len(recorded["sha256"]) == 64
    assert "skip distill seed 0 (completed)" in cli(*args).out
    state = torch.load(teacher, weights_only=True)  # as if the teacher were trained again
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = state["model"][key] + 0.01
    torch.save(state, teacher)
    r = cli(*args)
    assert r.code == 2 and f"{run}: its input tricks.distill.weights ({teacher}) changed since " \
                           "it ran" in r.err.replace("\n", " ")
    r = cli(*args, "--force")
    assert r.code == 0, r.err
    assert json.loads((run / "inputs.json").read_text())["tricks.distill.weights"]["sha256"] != \
        recorded["sha256"]


# --- smaller holes ----------------------------------------------------------------------------------

def test_alias_bombs_and_self_references_are_refused_quickly(cli, results, tmp_path):
    import time

    levels = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: bomb\nmetric: top1\nnotes:\n" +
                    "".join(f"  {line}\n" for line in levels) + "steps: [{id: x}]\n")
    start = time.perf_counter()
    r = cli("run", bomb, "--dry-run", "--results", results)
    assert r.code == 2 and r.err == (f"error: {bomb}: expands to more than 100,000 values "
                                     "through YAML aliases; refusing to read it\n")
    assert time.perf_counter() - start < 5
    loop = tmp_path / "loop.yaml"
    loop.write_text("name: loop\nmetric: top1\nnotes: &n [*n]\nsteps: [{id: x}]\n")
    r = cli("run", loop, "--dry-run", "--results", results)
    assert r.code == 2 and "a YAML alias refers to its own parent" in r.err


def test_two_studies_with_one_name_do_not_share_a_folder(cli, results, fmnist_root, tmp_path):
    from tests.conftest import ROOT, tree_snapshot

    assert cli(*_args(results, fmnist_root)).code == 0
    twin = tmp_path / "twin.yaml"
    twin.write_text((ROOT / "studies" / "fmnist_refinements.yaml").read_text()
                    .replace("label: Efficient", "label: Efficient twin"))
    before = tree_snapshot(results)
    r = cli("run", twin, "--scale", "smoke", "--results", results, "--set",
            f"data.root={fmnist_root}", "--dry-run")
    assert r.code == 2 and r.err.replace("\n", " ").startswith(
        f"error: {twin}: its results folder {results / 'fmnist_refinements' / 'smoke'} holds the "
        f"results of {ROOT / 'studies' / 'fmnist_refinements.yaml'}, another study named "
        "'fmnist_refinements'")
    assert tree_snapshot(results) == before


def test_a_misspelt_or_mistyped_data_option_names_the_step(cli, results, fmnist_root):
    from tests.conftest import tree_snapshot

    cli(*_args(results, fmnist_root))  # a finished step that must stay as it is
    before = tree_snapshot(results)
    r = cli(*_args(results, fmnist_root, "--set", "+data.pad_size=4"))
    assert (r.code, r.out) == (2, "")
    assert r.err.endswith("step 'efficient': data.pad_size: unknown option\n")
    r = cli(*_args(results, fmnist_root, "--set", "data.flip=maybe"))
    assert r.code == 2 and r.err.endswith("step 'efficient': data.flip='maybe': must be true or "
                                          "false\n")
    assert tree_snapshot(results) == before


def test_set_of_a_trick_option_applies_to_the_steps_with_that_trick(cli, results, fmnist_root):
    r = cli(*_args(results, fmnist_root, "--set", "tricks.mixup.alpha=0.4", "--dry-run",
                   step="efficient,mixup"))
    assert r.code == 0, r.err
    efficient, mixup = [line for line in r.out.splitlines() if "overrides:" in line]
    assert "tricks.mixup.alpha=0.4" not in efficient and "tricks.mixup.alpha=0.4" in mixup
    r = cli(*_args(results, fmnist_root, "--set", "tricks.mixup.alpha=0.4", "--dry-run"))
    assert r.code == 2 and "--set tricks.mixup.alpha=0.4: no step here uses trick 'mixup'" in r.err
    r = cli(*_args(results, fmnist_root, "--set", "tricks.mixpu.alpha=0.4", "--dry-run"))
    assert r.code == 2 and "unknown trick 'mixpu' (did you mean 'mixup'?)" in r.err


def test_ctrl_c_says_how_to_resume(cli, results, fmnist_root, monkeypatch):
    import ablate.study.driver as driver

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "plan_study", interrupted)
    r = cli(*_args(results, fmnist_root))
    assert r.code == 130 and "interrupted: run `ablate run` again to resume" in r.err


# --- data is checked, not only found ----------------------------------------------------------------

@pytest.mark.parametrize("damage, message", [
    ("size", "VOC2007/Annotations/000005.xml: image has no valid <width> (got 'wide')"),
    ("xml", "VOC2007/Annotations/000007.xml: malformed VOC XML"),
    ("binary set", "VOC2012/ImageSets/Main/trainval.txt: not a text file"),
])
def test_data_prepare_reads_every_voc_annotation(cli, tmp_path, damage, message):
    from tests.data.test_voc import make_devkit

    root = tmp_path / "voc"
    make_devkit(root)
    voc = root / "VOCdevkit"
    assert cli("data", "prepare", "voc", f"data.root={root}").code == 0
    if damage == "size":
        p = voc / "VOC2007" / "Annotations" / "000005.xml"
        p.write_text(p.read_text().replace("<width>40</width>", "<width>wide</width>"))
    elif damage == "xml":
        (voc / "VOC2007" / "Annotations" / "000007.xml").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    else:
        (voc / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").write_bytes(b"\xff\xfe\x00\x01")
    r = cli("data", "prepare", "voc", f"data.root={root}")
    assert (r.code, r.out) == (2, "") and f"{voc}/{message}" in r.err, r.err


@pytest.mark.parametrize("data, message", [
    ({"images": [], "categories": [{"id": 1, "name": "a"}]},
     "no 'annotations' list (not COCO instances ground truth)"),
    ({"images": [{"id": 1, "file_name": "x.jpg", "width": 9, "height": 9}],
      "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, "two", 3, 4],
                       "iscrowd": 0}], "categories": [{"id": 1, "name": "a"}]},
     "annotation 3 has no bbox of four numbers (got [1, 'two', 3, 4])"),
])
def test_data_prepare_reads_every_coco_box(cli, tmp_path, data, message):
    from tests.data.test_coco import make_coco_train_val

    root = make_coco_train_val(tmp_path / "coco")
    assert cli("data", "prepare", "coco", f"data.root={root}").code == 0
    ann = root / "annotations" / "instances_val2017.json"
    ann.write_text(json.dumps(data))
    r = cli("data", "prepare", "coco", f"data.root={root}")
    assert (r.code, r.out) == (2, "") and r.err == f"error: {ann}: {message}\n"


def test_the_report_shows_an_interrupted_run(cli, results, fmnist_root):
    assert cli(*_args(results, fmnist_root)).code == 0
    folder = results / "fmnist_refinements" / "smoke"
    (folder / "efficient" / "seed0" / "metrics.json").unlink()  # killed after its checkpoint
    r = cli("report", folder)
    assert r.code == 0 and "| Efficient | interrupted |" in r.out
    assert "- Efficient: seed 0 interrupted (no result yet; `ablate run` resumes it)" in r.out
