"""The Bag of Tricks classification networks besides ResNet-50: MobileNet v1, Inception-V3 and
the ResNet-D teachers; exact parameter counts."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ablate.errors import AblateError
from ablate.models.inception import build_inception_v3
from ablate.models.mobilenet import UNITS, DepthwiseSeparable, build_mobilenet_v1
from ablate.models.resnet import build_resnet, count_params
from ablate.registry import MODELS
from ablate.tasks.classification import ClassificationTask, soft_cross_entropy


def expected_mobilenet_v1(width: float = 1.0, classes: int = 1000) -> int:
    """Howard et al. Table 1: convs without bias + BN γ, β, then the classifier."""
    conv_bn = lambda cin, cout, k, groups=1: cin // groups * cout * k * k + 2 * cout  # noqa: E731
    ch = lambda c: int(c * width)  # noqa: E731
    total, cin = conv_bn(3, ch(32), 3), ch(32)
    for c, _ in UNITS:
        total += conv_bn(cin, cin, 3, groups=cin) + conv_bn(cin, ch(c), 1)
        cin = ch(c)
    return total + cin * classes + classes


def test_mobilenet_v1_parameter_counts():
    assert expected_mobilenet_v1() == 4_231_976  # the published count
    assert count_params(build_mobilenet_v1()) == 4_231_976
    assert count_params(build_mobilenet_v1(width=0.5)) == expected_mobilenet_v1(0.5) == 1_331_592
    assert count_params(build_mobilenet_v1(num_classes=10, in_chans=1, width=0.25)) == 215_498
    assert "mobilenet_v1" in MODELS and "inception_v3" in MODELS


def test_mobilenet_v1_structure_and_forward():
    m = build_mobilenet_v1()
    units = [u for u in m.features if isinstance(u, DepthwiseSeparable)]
    assert len(units) == 13
    dw, pw = units[1][0][0], units[1][1][0]
    assert (dw.groups, dw.in_channels, dw.kernel_size, dw.stride) == (64, 64, (3, 3), (2, 2))
    assert (pw.groups, pw.out_channels, pw.kernel_size) == (1, 128, (1, 1))
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d))
    assert m.features[0][0].stride == (2, 2)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    tiny = build_mobilenet_v1(num_classes=10, in_chans=1, width=0.25, small_input=True)
    assert tiny.features[0][0].stride == (1, 1) and tiny.num_features == 256
    assert tiny.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 256, 2, 2)
    assert tiny(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(AblateError, match="width"):
        build_mobilenet_v1(width=0)


@pytest.mark.parametrize("aux,params", [(True, 27_161_264), (False, 23_834_568)])
def test_inception_v3_parameter_counts(aux, params):
    ours = build_inception_v3(aux_logits=aux)
    ref = torchvision.models.inception_v3(weights=None, aux_logits=aux, init_weights=False)
    assert count_params(ours) == count_params(ref) == params
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
           {k: v.shape for k, v in ref.state_dict().items()}


def test_inception_v3_in_chans_and_eval_forward():
    m = build_inception_v3(num_classes=10, in_chans=1)
    assert m.Conv2d_1a_3x3.conv.weight.shape == (32, 1, 3, 3)
    assert count_params(m) == 23_834_568 - 2048 * 990 - 990 - 2 * 32 * 9
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 75, 75)).shape == (1, 10)  # the smallest input it takes


class _TwoHeads(nn.Module):
    """Returns ``(logits, aux_logits)`` in training, like Inception-V3 with its aux head."""

    def __init__(self) -> None:
        super().__init__()
        self.main, self.aux = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return (self.main(x), self.aux(x)) if self.training else self.main(x)


def test_classification_task_adds_weighted_aux_loss():
    torch.manual_seed(0)
    model = _TwoHeads()
    task = ClassificationTask(model, 3, aux_weight=0.4)
    batch = task.prepare({"image": torch.randn(5, 4), "label": torch.tensor([0, 1, 2, 0, 1])})
    losses = task(batch)
    target = F.one_hot(batch["label"], 3).float()
    x = batch["image"]
    assert set(losses) == {"loss", "aux_loss"}
    assert losses["loss"].item() == pytest.approx(
        F.cross_entropy(model.main(x), batch["label"]).item(), abs=1e-6)
    assert losses["aux_loss"].item() == pytest.approx(
        0.4 * soft_cross_entropy(model.aux(x), target).item(), abs=1e-6)
    sum(losses.values()).backward()
    assert model.aux.weight.grad is not None
    model.eval()
    assert set(task(batch)) == {"loss"}


@pytest.mark.slow
def test_inception_v3_trains_with_aux_logits():
    torch.manual_seed(0)
    m = build_inception_v3(num_classes=10, aux_logits=True)
    task = ClassificationTask(m, 10)
    batch = task.prepare({"image": torch.randn(2, 3, 299, 299), "label": torch.tensor([1, 2])})
    losses = task(batch)
    assert set(losses) == {"loss", "aux_loss"}
    sum(losses.values()).backward()
    assert m.AuxLogits.fc.weight.grad.abs().sum() > 0


def test_resnet_d_teachers_parameter_counts():
    # ResNet-D = torchvision's ResNet (B) with the deep stem (3×3 convs 32, 32, 64 + two BNs)
    # instead of the 7×7 conv; the average-pool shortcut adds no parameters.
    deep_stem = 3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 2 * (32 + 32) - 3 * 64 * 49
    assert deep_stem == 19_232
    assert count_params(build_resnet(depth=152, variant="d")) == 60_192_808 + deep_stem \
        == 60_212_040
    assert count_params(build_resnet(depth=101, variant="d")) == 44_549_160 + deep_stem \
        == 44_568_392


def test_init_schemes_draw_from_the_stated_distributions():
    """code: N(0, σ²), σ² = (2 / 1.0625) / ((fan_in + fan_out) / 2) (MXNet's MSRAPrelu);
    paper: U(−a, a), a = √(6 / (fan_in + fan_out)); biases 0, BN γ 1 and β 0 in both."""
    import math

    from ablate.models.init import init_weights

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(64, 128, 3), torch.nn.BatchNorm2d(128),
                              torch.nn.Linear(512, 256)).requires_grad_(False)
    fans = {0: (64 * 9, 128 * 9), 2: (512, 256)}
    init_weights(net, "code")
    for i, (fi, fo) in fans.items():
        std = math.sqrt(2 / 1.0625 / ((fi + fo) / 2))
        assert float(net[i].weight.std()) == pytest.approx(std, rel=0.02)
        assert float(net[i].weight.mean()) == pytest.approx(0.0, abs=0.05 * std)
        assert torch.all(net[i].bias == 0)
    assert torch.all(net[1].weight == 1) and torch.all(net[1].bias == 0)
    init_weights(net, "paper")
    for i, (fi, fo) in fans.items():
        a = math.sqrt(6 / (fi + fo))
        w = net[i].weight
        assert float(w.abs().max()) <= a and float(w.abs().max()) > 0.99 * a
        assert float(w.std()) == pytest.approx(a / math.sqrt(3), rel=0.02)
        assert torch.all(net[i].bias == 0)


def test_init_scheme_by_config_and_a_wrong_name():
    from ablate.models.init import MSRA_PRELU_MAGNITUDE

    assert MSRA_PRELU_MAGNITUDE == 2 / 1.0625
    torch.manual_seed(0)
    tv = build_resnet(depth=14, variant="d", width=0.25, num_classes=10)
    torch.manual_seed(0)
    same = build_resnet(depth=14, variant="d", width=0.25, num_classes=10, init="torchvision")
    assert all(torch.equal(a, b) for a, b in zip(tv.state_dict().values(),
                                                 same.state_dict().values()))
    torch.manual_seed(0)
    code = build_resnet(depth=14, variant="d", width=0.25, num_classes=10, init="code")
    assert torch.all(code.fc.bias == 0) and not torch.all(tv.fc.bias == 0)
    assert not torch.equal(code.fc.weight, tv.fc.weight)
    for builder in (build_resnet, build_mobilenet_v1, build_inception_v3):
        with pytest.raises(AblateError, match="init 'xavier' is not one of code, paper, "
                                              "torchvision"):
            builder(init="xavier")
