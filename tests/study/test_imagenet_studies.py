"""The shipped ImageNet studies (Cls-T3 … T6) plan against a tiny ImageFolder tree: every step of
every column composes and validates, the refinements study plans its teacher study first, and a
dry run writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from PIL import Image

from tests.conftest import ROOT, tree_snapshot

STUDIES = ROOT / "studies"


def make_imagenet_1000(root: Path) -> Path:
    """An ImageFolder tree with the 1000 class folders the studies expect, one tiny JPEG each
    (hard links to one file: enough for the layout checks of a dry run)."""
    jpeg = root / "x.JPEG"
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(jpeg, format="JPEG")
    for split in ("train", "val"):
        for c in range(1000):
            d = root / "imagenet" / split / f"n{c:08d}"
            d.mkdir(parents=True)
            (d / f"n{c:08d}_0.JPEG").hardlink_to(jpeg)
    return root


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = make_imagenet_1000(tmp_path / "data")
    monkeypatch.setenv("ABLATE_DATA", str(root))
    return root


@pytest.mark.parametrize("study, runs", [
    ("imagenet_efficient", [f"{s}.{c} seed 0" for c in ("bs256", "bs1024") for s in
                            ("linear_scaling", "warmup", "zero_gamma", "no_bias_decay", "fp16")]),
    ("imagenet_baseline_vs_efficient", [f"{s}.{c} seed 0" for c in ("efficient", "baseline")
                                        for s in ("resnet50", "inception_v3", "mobilenet")]),
    ("imagenet_tweaks", ["resnet50 seed 0", "resnet50_b seed 0", "resnet50_c seed 0",
                         "resnet50_d seed 0"]),
    ("imagenet_teacher", ["teacher seed 0", "teacher_mixup seed 0"]),
])
def test_imagenet_studies_plan(cli, results, data_root, study, runs):
    r = cli("run", STUDIES / f"{study}.yaml", "--dry-run", "--results", results)
    assert r.code == 0, r.err
    lines = [line.split(":")[0] for line in r.out.splitlines() if ": run" in line]
    assert lines == runs
    assert tree_snapshot(results) == {}


def test_refinements_plan_the_teachers_first_and_four_seeds_of_resnet50_d(cli, results,
                                                                          data_root):
    r = cli("run", STUDIES / "imagenet_refinements.yaml", "--dry-run", "--results", results)
    assert r.code == 0, r.err
    out = r.out.splitlines()
    uses = [line for line in out if line.startswith("uses ")]
    assert [u.split(":")[0] for u in uses] == ["uses imagenet_teacher full teacher seed 0",
                                               "uses imagenet_teacher full teacher_mixup seed 0"]
    runs = [line.split(":")[0] for line in out if ": run" in line and not line.startswith("uses")]
    steps = ["efficient", "cosine", "label_smoothing", "distill", "mixup", "distill_mixup"]
    assert runs == ([f"{s}.resnet50_d seed {k}" for s in steps for k in range(4)]
                    + [f"{s}.{c} seed 0" for c in ("inception_v3", "mobilenet") for s in steps])
    assert tree_snapshot(results) == {}

    r = cli("run", STUDIES / "imagenet_refinements.yaml", "--dry-run", "--results", results,
            "--only", "distill", "--seeds", "1")
    assert r.code == 0, r.err
    # only the teacher those steps read is planned (teacher_mixup serves distill_mixup)
    assert [line.split(":")[0] for line in r.out.splitlines() if line.startswith("uses ")] == [
        "uses imagenet_teacher full teacher seed 0"]
    runs = [line.split(":")[0] for line in r.out.splitlines()
            if ": run" in line and not line.startswith("uses")]
    assert runs == ["distill.resnet50_d seed 0", "distill.inception_v3 seed 0",
                    "distill.mobilenet seed 0"]


def test_transfer_study_plans_every_backbone_it_uses(cli, results, data_root):
    """Cls-T8: seven Faster R-CNN runs, each reading a classification step's checkpoint, which
    is planned first (with the teachers that the distillation steps read in turn)."""
    from tests.data.test_voc import list_full_trainval, make_devkit

    make_devkit(data_root / "voc")
    list_full_trainval(data_root / "voc")
    r = cli("run", STUDIES / "imagenet_transfer_frcnn.yaml", "--dry-run", "--results", results)
    assert r.code == 0, r.err
    uses = {line.split(":")[0] for line in r.out.splitlines() if line.startswith("uses ")}
    assert uses == {"uses imagenet_tweaks full resnet50_b seed 0",
                    "uses imagenet_teacher full teacher seed 0",
                    "uses imagenet_teacher full teacher_mixup seed 0",
                    *{f"uses imagenet_refinements full {s}.resnet50_d seed 0" for s in
                      ("efficient", "cosine", "label_smoothing", "distill", "mixup",
                       "distill_mixup")}}
    runs = [line.split(":")[0] for line in r.out.splitlines()
            if ": run" in line and not line.startswith("uses")]
    assert runs == [f"{s} seed 0" for s in ("b_standard", "d_efficient", "d_cosine", "d_smooth",
                                            "d_distill", "d_mixup", "d_distill_mixup")]
    assert tree_snapshot(results) == {}
