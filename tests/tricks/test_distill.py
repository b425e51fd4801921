"""Knowledge distillation: both loss formulas on a hand-sized case, the frozen teacher, the
composition with label smoothing and mixup, and a tiny run with a teacher from a checkpoint."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ablate.errors import AblateError
from ablate.models.resnet import build_resnet
from ablate.tasks.classification import ClassificationTask
from ablate.tricks import build_tricks
from ablate.tricks.distill import DistillationTask, FrozenTeacher, distillation_term, weigh
from ablate.tricks.label_smoothing import smooth_one_hot
from ablate.tricks.mixup import mix_batch

Z = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # student logits, 2 samples × 3 classes
R = [[4.0, 0.0, 0.0], [0.0, 0.0, 2.0]]  # teacher logits
P = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # targets


def softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def ce(p, q):
    return -sum(a * math.log(b) for a, b in zip(p, q))


def kd_by_hand(z, r, t):
    return t * t * sum(ce(softmax([x / t for x in ri]), softmax([x / t for x in zi]))
                       for zi, ri in zip(z, r)) / len(z)


def hard_by_hand(z, p):
    return sum(ce(pi, softmax(zi)) for zi, pi in zip(z, p)) / len(z)


def test_distillation_term_and_both_formulas_on_a_tiny_case():
    z, r, p = torch.tensor(Z), torch.tensor(R), torch.tensor(P)
    kd = distillation_term(z, r, 2.0)
    assert kd_by_hand(Z, R, 2.0) == pytest.approx(3.9057293247591067, abs=1e-12)
    assert kd.item() == pytest.approx(3.9057293247591067, abs=1e-6)
    hard = F.cross_entropy(z, p.argmax(1))
    assert hard.item() == pytest.approx(hard_by_hand(Z, P), abs=1e-6)
    assert hard_by_hand(Z, P) == pytest.approx(0.3954947400769678, abs=1e-12)
    paper = weigh(hard, kd, "paper")  # eq. 6: CE + T²·KD
    assert sum(paper.values()).item() == pytest.approx(4.301224064836075, abs=1e-6)
    code = weigh(hard, kd, "code", 0.5)  # GluonCV: h·CE + (1 − h)·T²·KD, half of eq. 6
    assert sum(code.values()).item() == pytest.approx(2.1506120324180373, abs=1e-6)
    assert code["loss"].item() == pytest.approx(0.5 * hard.item())
    code3 = weigh(hard, kd, "code", 0.25)
    assert sum(code3.values()).item() == pytest.approx(
        0.25 * hard_by_hand(Z, P) + 0.75 * kd_by_hand(Z, R, 2.0), abs=1e-6)
    # T = 1, identical logits: the KD term is the teacher's entropy
    assert distillation_term(z, z, 1.0).item() == pytest.approx(
        sum(ce(softmax(v), softmax(v)) for v in Z) / 2, abs=1e-6)


class Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.drop = nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.fc(x)))


def test_teacher_is_frozen_and_stays_in_eval_mode():
    torch.manual_seed(0)
    inner = Teacher()
    teacher = FrozenTeacher(inner)
    student = nn.Linear(4, 3)
    task = DistillationTask(ClassificationTask(student, 3), teacher, 20.0, "code", 0.5)
    student.train()
    teacher.train()  # as if a caller switched every module to training
    assert not teacher.training and not inner.training and not inner.bn.training
    stats = inner.bn.running_mean.clone()
    batch = task.prepare({"image": torch.randn(6, 4), "label": torch.tensor([0, 1, 2, 0, 1, 2])})
    out = task(batch)
    assert set(out) == {"loss", "distill"}
    sum(out.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert torch.equal(inner.bn.running_mean, stats)  # eval: running statistics untouched
    with torch.no_grad():  # dropout off: the teacher's output is deterministic
        assert torch.equal(teacher(batch["image"]), teacher(batch["image"]))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # runs in the student's precision
        assert teacher(batch["image"]).dtype == torch.bfloat16


def test_composes_with_label_smoothing_and_mixup():
    """The hard term uses the smoothed, mixed target; the teacher sees the mixed images."""
    torch.manual_seed(0)
    student, inner = nn.Linear(4, 3), nn.Linear(4, 3)
    smooth = lambda t: smooth_one_hot(t, 0.1, "code")  # noqa: E731
    base = ClassificationTask(student, 3, target_fns=[smooth])
    task = DistillationTask(base, FrozenTeacher(inner), 2.0, "paper", 0.5)
    batch = task.prepare({"image": torch.randn(4, 4), "label": torch.tensor([0, 1, 2, 1])})
    image, target = mix_batch(batch["image"], batch["target"], 0.7)
    loss = sum(task({**batch, "image": image, "target": target}).values())
    p = 0.7 * smooth(F.one_hot(batch["label"], 3).float()) \
        + 0.3 * smooth(F.one_hot(batch["label"].flip(0), 3).float())
    assert torch.allclose(target, p)
    with torch.no_grad():
        z, r = student(image).tolist(), inner(image).tolist()
    assert loss.item() == pytest.approx(hard_by_hand(z, p.tolist()) + kd_by_hand(z, r, 2.0),
                                        abs=1e-5)


def tiny_teacher_cfg():
    return {"name": "resnet", "depth": 14, "variant": "d", "width": 0.25, "small_input": True,
            "num_classes": 10, "in_chans": 1}


def test_trick_options_and_errors(tmp_path):
    cfg = tiny_teacher_cfg()
    (t,) = build_tricks({"distill": {"teacher": cfg}}, "classification")
    assert t.describe() == {"teacher": cfg, "weights": None, "temperature": 20.0,
                            "formula": "code", "hard_weight": 0.5}
    task = ClassificationTask(nn.Linear(4, 10), 10)
    with pytest.raises(AblateError, match="distill.weights is required"):
        t.wrap_task(task)
    (t,) = build_tricks({"distill": {"teacher": cfg, "formula": "paper",
                                     "weights": str(tmp_path / "none.pt")}}, "classification")
    assert "hard_weight" not in t.describe()
    with pytest.raises(AblateError, match="distill.weights: no file at"):
        t.wrap_task(task)
    wrong = build_resnet(depth=14, variant="d", width=0.25, small_input=True, in_chans=1,
                         num_classes=7)
    torch.save({"model": wrong.state_dict()}, tmp_path / "wrong.pt")
    (t,) = build_tricks({"distill": {"teacher": cfg, "weights": str(tmp_path / "wrong.pt")}},
                        "classification")
    with pytest.raises(AblateError, match="(?s)does not fit.*fc.weight \\(file \\[7, 512\\]"):
        t.wrap_task(task)
    for bad, message in [({"teacher": {"depth": 14}}, "model config with a 'name'"),
                         ({"teacher": cfg, "formula": "kl"}, "distill.formula"),
                         ({"teacher": cfg, "temperature": 0}, "distill.temperature"),
                         ({"teacher": cfg, "hard_weight": 2}, "distill.hard_weight")]:
        with pytest.raises(AblateError, match=message):
            build_tricks({"distill": bad}, "classification")


def test_tiny_run_with_distillation(tmp_path, fmnist_root):
    from ablate.config import compose
    from ablate.engine import run_io
    from ablate.worker import run

    torch.manual_seed(0)
    teacher = build_resnet(**{k: v for k, v in tiny_teacher_cfg().items() if k != "name"})
    torch.save({"model": {"module." + k: v for k, v in teacher.state_dict().items()},
                "epoch": 5}, tmp_path / "teacher.pt")
    cfg = compose([f"data.root={fmnist_root}", "data.train_subset=64", "data.test_subset=32",
                   "train.batch_size=32", "train.epochs=1", "train.log_every=1",
                   "tricks=[distill,mixup,label_smoothing]",
                   f"tricks.distill.weights={tmp_path / 'teacher.pt'}",
                   "tricks.distill.teacher.depth=14", "tricks.distill.teacher.width=0.25",
                   "tricks.distill.teacher.small_input=true"])
    assert cfg.tricks.distill.teacher.num_classes == 10 and cfg.tricks.distill.teacher.in_chans == 1
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    OmegaConf.save(cfg, run_dir / "config.yaml")
    result = run(run_dir / "config.yaml")
    assert result["status"] == "completed" and result["iterations"] == 2
    assert result["tricks"]["distill"]["formula"] == "code"
    assert result["tricks"]["distill"]["temperature"] == 20.0
    ckpt = run_io.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    student_keys = set(build_resnet(depth=14, variant="d", width=0.25, small_input=True,
                                    in_chans=1, num_classes=10).state_dict())
    assert set(ckpt["model"]) == student_keys  # the teacher is not saved with the student
