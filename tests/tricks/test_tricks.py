import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablate.errors import AblateError
from ablate.models.resnet import Bottleneck, build_resnet
from ablate.registry import TRICKS
from ablate.solver.lr import CosineShape, StepShape, WarmupShape
from ablate.tricks import BuildContext, TrainState, Trick, build_tricks, check_tricks
from ablate.tricks.label_smoothing import smooth_one_hot
from ablate.data.loading import MIX_STREAM
from ablate.tricks.mixup import Mixup, mix_batch, step_lambda
from ablate.tricks.no_bias_decay import split_no_decay

CTX = BuildContext(task="classification", epochs=10, iters_per_epoch=100, total_batch=1024)


def test_label_smoothing_code_formula():
    t = smooth_one_hot(F.one_hot(torch.tensor([2]), 4).float(), 0.1, "code")
    assert t[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025], abs=1e-7)


def test_label_smoothing_paper_formula():
    t = smooth_one_hot(F.one_hot(torch.tensor([0]), 4).float(), 0.1, "paper")
    assert t[0].tolist() == pytest.approx([0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3], abs=1e-7)
    assert t.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_label_smoothing_code_equals_torch_cross_entropy_smoothing():
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    from ablate.tasks.classification import soft_cross_entropy

    soft = smooth_one_hot(F.one_hot(y, 10).float(), 0.1, "code")
    assert soft_cross_entropy(logits, soft).item() == pytest.approx(
        F.cross_entropy(logits, y, label_smoothing=0.1).item(), abs=1e-6)


def test_mixup_pairs_with_reversed_batch_and_mixes_targets():
    x = torch.arange(4.0).view(4, 1)
    y = F.one_hot(torch.tensor([0, 1, 2, 3]), 4).float()
    mx, my = mix_batch(x, y, 0.7)
    assert mx.flatten().tolist() == pytest.approx([0.9, 1.3, 1.7, 2.1])  # 0.7x + 0.3x[::-1]
    assert my[0].tolist() == pytest.approx([0.7, 0, 0, 0.3])
    assert my[1].tolist() == pytest.approx([0, 0.7, 0.3, 0])


def test_mixup_off_for_last_epochs_and_lambda_once_per_step():
    m = Mixup(alpha=0.2, off_last_epochs=2)
    batch = {"image": torch.randn(6, 1, 2, 2), "target": torch.eye(6)}
    assert m.batch_transform(batch, TrainState(epoch=8, epochs=10)) is batch

    def lam(**state):
        torch.manual_seed(len(state))  # the global RNG (per epoch and rank) plays no part
        return m.batch_transform(batch, TrainState(epochs=10, **state))["target"][0, 0].item()

    # one λ per (seed, optimizer step), whatever the epoch, rank or micro-batch
    assert lam(iteration=5, seed=1) == lam(iteration=5, seed=1, epoch=3)
    assert lam(iteration=5, seed=1) != lam(iteration=6, seed=1) != lam(iteration=6, seed=2)
    want = float(np.random.default_rng((1, 5, MIX_STREAM)).beta(0.2, 0.2))
    assert lam(iteration=5, seed=1) == pytest.approx(want, abs=1e-6)
    assert step_lambda(0.2, 0.2, 1, 5) == want
    out = m.batch_transform(batch, TrainState(iteration=5, seed=1, epochs=10))
    assert out["target"][0, 5].item() == pytest.approx(1 - want, abs=1e-6)
    # Beta(0.2, 0.2) puts most λ near 0 or 1
    draws = [step_lambda(0.2, 0.2, 0, i) for i in range(2000)]
    assert sum(d < 0.1 or d > 0.9 for d in draws) / 2000 == pytest.approx(0.673, abs=0.035)


def test_no_bias_decay_groups():
    model = build_resnet(depth=14, variant="d", width=0.25, num_classes=10)
    groups = split_no_decay([{"params": list(model.parameters())}])
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert "weight_decay" not in groups[0] and groups[1]["weight_decay"] == 0.0
    assert "fc.weight" in decay and "conv1.0.weight" in decay
    assert "layer1.0.downsample.1.weight" in decay  # 1×1 shortcut conv (after the avg pool)
    assert {"fc.bias", "bn1.weight", "bn1.bias", "layer1.0.bn3.weight"} <= no_decay
    modules = dict(model.named_modules())
    for n in no_decay:  # only BN affines and biases
        owner = modules[n.rpartition(".")[0]]
        assert isinstance(owner, torch.nn.BatchNorm2d) or n.endswith("bias"), n
    assert len(decay) + len(no_decay) == len(names)
    convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert len(decay) == convs + 1  # every conv weight + the fc weight


def test_zero_gamma_only_last_bn_of_each_block():
    model = build_tricks({"zero_gamma": {}}, "classification")[0].edit_model(
        build_resnet(depth=50, variant="d"), CTX)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    for b in blocks:
        assert torch.all(b.bn3.weight == 0)
        assert torch.all(b.bn1.weight == 1) and torch.all(b.bn2.weight == 1)
        if b.downsample is not None:
            assert torch.all(b.downsample[-1].weight == 1)  # shortcut BN untouched
    assert torch.all(model.bn1.weight == 1)


def test_zero_gamma_keeps_the_gamma_of_loaded_weights(tmp_path, fmnist_root):
    """Zero γ initialises; a run that starts from a checkpoint keeps the γ it loaded."""
    from ablate.config import compose
    from ablate.engine.dist import DistInfo
    from ablate.engine.setup import build

    common = [f"data.root={fmnist_root}", "data.train_subset=32", "data.test_subset=10",
              "train.batch_size=16", "tricks=[zero_gamma]"]
    fresh = build(compose(common), DistInfo()).model
    state = fresh.state_dict()
    zeroed = [k for k, v in state.items() if k.endswith(".weight") and ".bn" in k
              and torch.all(v == 0)]
    assert len(zeroed) >= 3  # the last BN of every block, without a checkpoint
    for k in state:
        if k.endswith(".weight") and ".bn" in k:
            state[k] = torch.full_like(state[k], 0.5)
    torch.save(state, tmp_path / "start.pt")
    loaded = build(compose([*common, f"model.weights={tmp_path / 'start.pt'}"]),
                   DistInfo()).model
    gammas = [v for k, v in loaded.state_dict().items() if k.endswith(".weight") and ".bn" in k]
    assert gammas and all(torch.all(g == 0.5) for g in gammas)


def test_linear_scaling_warmup_cosine_compose_in_fixed_order():
    tricks = build_tricks({"warmup": {"epochs": 1}, "cosine": {"target_lr": 0.0},
                           "linear_scaling": {"ref_batch": 256}}, "classification")
    assert [t.name for t in tricks] == ["cosine", "linear_scaling", "warmup"]
    lr = 0.1
    for t in tricks:
        lr = t.base_lr(lr, CTX)
    assert lr == pytest.approx(0.4)
    shape = StepShape(milestones=(300,))
    for t in tricks:
        shape = t.schedule(shape, CTX, lr)
    assert isinstance(shape, WarmupShape) and isinstance(shape.inner, CosineShape)
    assert shape(0) == pytest.approx(0.01) and shape(100) == 1.0 and shape(999) == 0.0


def test_amp_sets_precision():
    (t,) = build_tricks({"amp": {"dtype": "bf16"}}, "classification")
    assert t.precision("fp32") == "bf16"
    with pytest.raises(AblateError, match="amp.dtype"):
        build_tricks({"amp": {"dtype": "fp8"}}, "classification")


def test_unknown_trick_suggests_and_task_mismatch():
    with pytest.raises(AblateError, match="did you mean 'cosine'"):
        check_tricks(["cosin"], "classification")
    with pytest.raises(AblateError, match="does not apply to the yolo task"):
        check_tricks(["zero_gamma"], "yolo")


def test_augmentation_colour_mode_reaches_the_transform_and_is_checked():
    from ablate.data.pipelines.transforms import YoloAugment, plain_resize
    from ablate.engine.types import DataContext

    ctx = DataContext("yolo", 10)
    (default,) = build_tricks({"data_augmentation": {}}, "yolo")
    (clamped,) = build_tricks({"data_augmentation": {"color": "clamped"}}, "yolo")
    assert default.describe() == {"color": "gluoncv"}
    assert default.sample_transform(plain_resize, ctx).color_mode == "gluoncv"
    aug = clamped.sample_transform(plain_resize, ctx)
    assert type(aug) is YoloAugment and aug.color_mode == "clamped"
    with pytest.raises(AblateError, match=r"^tricks.data_augmentation.color='hsv': must be one "
                                          r"of gluoncv, clamped$"):
        build_tricks({"data_augmentation": {"color": "hsv"}}, "yolo")


def test_conflicting_tricks(monkeypatch):
    class A(Trick):
        name, conflicts = "_a", ("_b",)

    class B(Trick):
        name = "_b"

    monkeypatch.setitem(TRICKS._items, "_a", A)
    monkeypatch.setitem(TRICKS._items, "_b", B)
    with pytest.raises(AblateError, match="'_a' and '_b' conflict"):
        check_tricks(["_b", "_a"], "classification")


def test_every_registered_trick_builds_with_its_config_defaults():
    from ablate.config import CONF_DIR
    import yaml

    files = sorted((CONF_DIR / "tricks").glob("*.yaml"))
    assert {f.stem for f in files} == set(TRICKS)
    for f in files:
        cfg = yaml.safe_load(f.read_text())
        assert list(cfg) == [f.stem]
        cls = TRICKS.get(f.stem)
        build_tricks(cfg, cls.tasks[0])


def test_sync_bn_sets_group_to_global_batch():
    (t,) = build_tricks({"sync_bn": {"group_size": None}}, "yolo")
    assert t.bn_group_size(8, CTX) == 1024
    (t,) = build_tricks({"sync_bn": {"group_size": 16}}, "yolo")
    assert t.bn_group_size(8, CTX) == 16


def test_detection_tricks_plug_into_the_pipeline_with_task_defaults():
    from ablate.data.pipelines.transforms import PlainResize, YoloAugment, plain_resize
    from ablate.engine.types import DataContext
    from ablate.tricks.mixup import MixupDataset
    from ablate.tricks.random_shapes import RandomShapes

    tricks = {t.name: t for t in build_tricks(
        {"data_augmentation": {}, "random_shapes": {"sizes": None, "every": 10},
         "mixup": {"alpha": None, "beta": None, "off_last_epochs": None, "mode": "beta"}},
        "yolo")}
    ctx = DataContext("yolo", epochs=30, seed=5)
    aug = tricks["data_augmentation"].sample_transform(plain_resize, ctx)
    assert type(aug) is YoloAugment and aug.fill == (124, 116, 104)
    wrapped = tricks["mixup"].wrap_dataset([("image", {})] * 3, ctx)
    assert isinstance(wrapped, MixupDataset)
    assert (wrapped.alpha, wrapped.beta, wrapped.mode, wrapped.off_last_epochs, wrapped.epochs,
            wrapped.seed) == (1.5, 1.5, "beta", 20, 30, 5)
    shapes = tricks["random_shapes"]
    sizes = RandomShapes((128, 160, 192, 224), every=10, seed=5)  # scaled from the 160 side
    assert [shapes.batch_side(160, it, ctx) for it in range(40)] == [
        sizes.size_at(it) for it in range(40)]
    assert len({shapes.batch_side(160, it, ctx) for it in range(0, 400, 10)}) == 4
    for t in tricks.values():  # the identity where a trick has no use for a point
        assert t.sample_transform(plain_resize, ctx) is plain_resize or t.name == "data_augmentation"
    batch = {"image": torch.ones(2, 3, 4, 4)}
    assert tricks["mixup"].batch_transform(batch, TrainState(epochs=10)) is batch
    (cls_mixup,) = build_tricks({"mixup": {}}, "classification")
    data = [("image", {})] * 3
    assert (cls_mixup.alpha, cls_mixup.off_last_epochs) == (0.2, 0)
    assert cls_mixup.wrap_dataset(data, DataContext("classification", 10)) is data
    assert type(PlainResize()) is PlainResize


def test_label_smoothing_picks_the_sigmoid_form_for_yolo():
    (t,) = build_tricks({"label_smoothing": {"epsilon": 0.1, "formula": "code"}}, "yolo")
    out = t.targets(F.one_hot(torch.tensor([3]), 20).float())
    assert out[0, 3].item() == pytest.approx(0.975) and out[0, 0].item() == pytest.approx(0.025)
