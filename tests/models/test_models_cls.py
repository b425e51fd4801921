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
