"""Study files: every shipped study validates; each malformed one gives a precise error."""

import textwrap
from pathlib import Path

import pytest

from ablate.config import STUDIES_DIR
from ablate.errors import AblateError
from ablate.study.driver import plan_study
from ablate.study.spec import load_study
from tests.data.test_coco import make_coco_train_val
from tests.conftest import make_fmnist
from tests.data.test_voc import list_full_trainval, make_devkit
from tests.study.test_imagenet_studies import make_imagenet_1000

STUDIES = sorted(STUDIES_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def fmnist_2k(tmp_path_factory):
    """Enough training images for one global batch of the full-scale recipes (1,024)."""
    return make_fmnist(tmp_path_factory.mktemp("fmnist2k"), n_train=2048, n_test=64)


@pytest.fixture(scope="module")
def scenes_cache(tmp_path_factory):
    """One FashionScenes cache for the module: 64 scenes fill the largest proxy batch."""
    return tmp_path_factory.mktemp("scenes")


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_validates_and_composes(path, fmnist_2k, scenes_cache, tmp_path):
    study = load_study(path)
    data = study.base.get("data", "fashion_mnist")
    extra = {"fashion_mnist": [f"data.root={fmnist_2k}"],
             "fashion_scenes": [f"data.fmnist_root={fmnist_2k}", f"paths.data={tmp_path}",
                                f"data.cache_dir={scenes_cache}", "data.num_train=64",
                                "data.num_test=4"],
             "voc": [f"paths.data={tmp_path}"], "coco": [f"paths.data={tmp_path}"],
             "imagenet": [f"paths.data={tmp_path}"]}[data]
    if data == "imagenet":
        make_imagenet_1000(tmp_path)
    if data in ("voc", "coco"):  # a tiny dataset and a stand-in pretrained file
        make_devkit(tmp_path / "voc")
        list_full_trainval(tmp_path / "voc")
        make_coco_train_val(tmp_path / "coco")
        (tmp_path / "pretrained").mkdir()
        for name in ("darknet53.pt", "resnet50.pt", "resnet101_d.pt"):
            (tmp_path / "pretrained" / name).write_bytes(b"")
    for scale in ["full", *study.scales]:
        plans = plan_study(study, scale=scale, seeds=[0], only=None, results_root=tmp_path,
                           extra=extra)
        assert [p.step.id for p in plans] == [s.id for s in study.steps]
        assert len({p.hash for p in plans}) == len(plans)  # every row is a different run


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(text))
    return p


BASE = """
name: t
metric: top1
steps:
  - id: base
    add: [warmup]
"""


def test_tree_and_removal_rows_resolve(tmp_path):
    s = load_study(write(tmp_path, """
        name: t
        metric: top1
        steps:
          - id: no_aug
            label: "- warmup"
            parent: base
            remove: [warmup]
          - id: base
            parent: null
            add: [warmup, linear_scaling]
          - id: ls
            add: [label_smoothing]
            set: {train.epochs: 7}
          - id: distill_like
            add: [cosine]
          - id: mix
            parent: ls
            add: [mixup]
            scales: {proxy: {train.epochs: 3}}
          - id: mix_more
            add: [cosine]
    """))
    steps = {x.id: x for x in s.steps}
    assert steps["no_aug"].tricks == ["linear_scaling"] and steps["no_aug"].root == "base"
    assert steps["distill_like"].tricks == ["warmup", "linear_scaling", "label_smoothing", "cosine"]
    assert steps["mix"].tricks == ["warmup", "linear_scaling", "label_smoothing", "mixup"]
    assert steps["mix_more"].overrides_at("proxy") == {"train.epochs": 3}
    assert steps["mix_more"].overrides_at("full") == {"train.epochs": 7}
    assert all(x.root == "base" for x in s.steps)


@pytest.mark.parametrize("text,message", [
    ("name: t\nmetric: top1\nsteps: [\n", "malformed YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("name: t\nsteps: [{id: a}]\n", "missing required key 'metric'"),
    (BASE + "stpes: []\n", "unknown key 'stpes' (did you mean 'steps'?)"),
    (BASE + "  - id: b\n    ad: [cosine]\n", "step 'b': unknown key 'ad' (did you mean 'add'?)"),
    (BASE + "  - id: b\n    parent: bse\n", "step 'b': parent 'bse' does not exist (did you mean 'base'?)"),
    (BASE + "  - id: base\n", "step 'base': duplicate step id"),
    (BASE + "  - id: b\n    remove: [cosine]\n", "step 'b': cannot remove 'cosine'"),
    (BASE + "  - id: b\n    add: [warmup]\n", "step 'b': 'warmup' is already on"),
    (BASE + "  - id: ../x\n", "id must be letters"),
    ("name: t\nmetric: top1\nsteps:\n  - {id: a, parent: b}\n  - {id: b, parent: a}\n",
     "parent cycle"),
    (BASE + "  - id: b\n    set: {tricks: [cosine]}\n", "not 'tricks'"),
    (BASE + "  - id: b\n    ref: {top1: high}\n", "'ref.top1' must be a number"),
    (BASE + "seeds: 0\n", "'seeds' must be a positive integer"),
    (BASE + "default_scale: proxy\n", "default_scale 'proxy' is not a defined scale"),
])
def test_malformed_studies(tmp_path, text, message):
    with pytest.raises(AblateError) as e:
        load_study(write(tmp_path, text))
    assert message in str(e.value)
    assert str(tmp_path / "s.yaml") in str(e.value)


@pytest.mark.parametrize("extra_step,message", [
    ("  - id: b\n    add: [cosin]\n", "step 'b': unknown trick 'cosin' (did you mean 'cosine'?)"),
    ("  - id: b\n    set: {optim.lrr: 1}\n", "step 'b': unknown config key 'optim.lrr'"),
    ("  - id: b\n    set: {model: resnet50_e}\n", "step 'b': unknown model option"),
    ("  - id: b\n    set: {data.root: /nonexistent}\n", "step 'b': Fashion-MNIST not found"),
    ("  - id: b\n    set: {tricks.cosin.target_lr: 0}\n",
     "step 'b': 'tricks.cosin.target_lr': unknown trick 'cosin' (did you mean 'cosine'?)"),
])
def test_planning_errors_name_file_step_and_item(tmp_path, extra_step, message):
    s = load_study(write(tmp_path, BASE + extra_step))
    with pytest.raises(AblateError) as e:
        plan_study(s, scale="full", seeds=[0], only=None, results_root=tmp_path / "r")
    assert message in str(e.value) and str(tmp_path / "s.yaml") in str(e.value)


def test_trick_options_apply_only_where_the_trick_is_on(tmp_path):
    s = load_study(write(tmp_path, """
        name: t
        metric: top1
        base: {tricks.cosine.target_lr: 0.001}
        steps:
          - id: a
            add: [warmup]
          - id: b
            add: [cosine]
    """))
    a, b = plan_study(s, scale="full", seeds=[0], only=None, results_root=tmp_path / "r")
    assert "cosine" not in a.cfg.tricks
    assert b.cfg.tricks.cosine.target_lr == 0.001


def test_only_unknown_step(tmp_path):
    s = load_study(write(tmp_path, BASE))
    with pytest.raises(AblateError, match="--only 'bsae': no such step"):
        plan_study(s, scale="full", seeds=[0], only=["bsae"], results_root=tmp_path)


def test_a_paper_failed_cell(tmp_path):
    """``ref: {map: failed}``: the paper reports the run as failed; no number, no Δ."""
    p = tmp_path / "s.yaml"
    p.write_text(BASE + "  - id: b\n    ref: {top1: failed, top5: 91.5}\n")
    step = load_study(p).step("b")
    assert step.ref == {"top5": 91.5} and step.ref_failed == ("top1",)
    assert load_study(p).step("base").ref_failed == ()
