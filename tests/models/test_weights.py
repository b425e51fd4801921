"""Loading local checkpoints: torchvision/timm state dicts, ablate run checkpoints, the report,
and ``model.weights`` in the engine."""

import pytest
import torch
import torchvision

from ablate.errors import AblateError
from ablate.models.resnet import build_resnet
from ablate.models.weights import load_weights


def tiny(num_classes: int = 10):
    return build_resnet(depth=14, variant="d", width=0.25, small_input=True, in_chans=1,
                        num_classes=num_classes)


def test_torchvision_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=10)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = build_resnet(depth=18, variant="b", num_classes=10)
    report = load_weights(ours, tmp_path / "tv.pth", strict=True)
    assert report.loaded == len(ref.state_dict()) == 122
    assert report.missing == report.unexpected == report.mismatched == []
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(ours.eval()(x), ref.eval()(x))


def test_resnet_d_uses_timm_key_names():
    """timm's ``resnet50d`` (deep stem, avg-down shortcut) names its tensors like ours."""
    keys = set(build_resnet(depth=50, variant="d").state_dict())
    assert {"conv1.0.weight", "conv1.1.weight", "conv1.3.weight", "conv1.4.running_var",
            "conv1.6.weight", "bn1.weight", "layer1.0.downsample.1.weight",
            "layer2.0.downsample.2.running_mean", "layer4.2.bn3.weight", "fc.weight",
            "fc.bias"} <= keys
    assert not any(k.startswith(("conv1.2", "conv1.5")) for k in keys)


def test_ablate_checkpoint_with_missing_unexpected_and_mismatched_keys(tmp_path):
    torch.manual_seed(0)
    src = tiny(num_classes=10)
    state = {"module." + k: v for k, v in src.state_dict().items()}  # DDP prefixes
    del state["module.layer1.0.bn1.bias"]
    state["module.extra.weight"] = torch.zeros(2)
    torch.save({"model": state, "optimizer": {}, "epoch": 3}, tmp_path / "last.pt")
    dst = tiny(num_classes=5)
    report = load_weights(dst, tmp_path / "last.pt")
    assert report.missing == ["layer1.0.bn1.bias"]
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == ["fc.bias", "fc.weight"]
    assert report.loaded == len(src.state_dict()) - 3
    assert torch.equal(dst.layer3[0].conv2.weight, src.layer3[0].conv2.weight)
    assert report.summary().splitlines() == [
        (f"weights: loaded {report.loaded} tensors from {tmp_path / 'last.pt'}; 1 missing, "
         "1 unexpected, 2 shape-mismatched"),
        "  missing: layer1.0.bn1.bias",
        "  unexpected: extra.weight",
        ("  shape-mismatched: fc.bias (file [10], model [5]), fc.weight (file [10, 512], "
         "model [5, 512])")]
    with pytest.raises(AblateError, match="does not fit the ResNet model exactly"):
        load_weights(tiny(num_classes=5), tmp_path / "last.pt", strict=True)


def test_state_dict_container_and_prefix_map(tmp_path):
    src = tiny()
    torch.save({"state_dict": {"net." + k: v for k, v in src.state_dict().items()}},
               tmp_path / "timm.pth.tar")
    with pytest.raises(AblateError, match="nothing in .* matches the ResNet model"):
        load_weights(tiny(), tmp_path / "timm.pth.tar")
    report = load_weights(tiny(), tmp_path / "timm.pth.tar", prefix_map={"net.": ""},
                          strict=True)
    assert report.loaded == len(src.state_dict())


def test_unusable_files(tmp_path):
    with pytest.raises(AblateError, match="no file at"):
        load_weights(tiny(), tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(AblateError, match="cannot load"):
        load_weights(tiny(), tmp_path / "junk.pt")
    torch.save({"epoch": 3, "history": []}, tmp_path / "empty.pt")
    with pytest.raises(AblateError, match="holds no state dict"):
        load_weights(tiny(), tmp_path / "empty.pt", what="model.weights")


def test_model_weights_key_in_the_engine(tmp_path, fmnist_root):
    from ablate.config import compose
    from ablate.engine.dist import DistInfo
    from ablate.engine.setup import build

    torch.manual_seed(1)
    src = tiny()
    torch.save({"model": src.state_dict()}, tmp_path / "last.pt")
    overrides = [f"data.root={fmnist_root}", "data.train_subset=128", "train.batch_size=64"]
    assert compose(overrides).model.weights is None
    built = build(compose([*overrides, f"model.weights={tmp_path / 'last.pt'}"]), DistInfo())
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in built.model.state_dict().items())
