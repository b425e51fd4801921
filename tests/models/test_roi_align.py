"""The separable RoIAlign gives torchvision's roi_align numbers, forward and backward, for boxes
inside, across and beyond the feature map; a hand-checked bin; the C4 model's option."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from ablate.errors import AblateError
from ablate.models.faster_rcnn import build_faster_rcnn
from ablate.models.roi_align import SeparableRoIAlign, roi_align_separable


def _boxes(n_images: int, per_image: int, w: float, h: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_images):
        xy = torch.rand(per_image, 2, generator=g) * torch.tensor([w, h]) * 1.1 - 8
        wh = torch.rand(per_image, 2, generator=g) * 90 + 0.5
        out.append(torch.cat([xy, xy + wh], 1))
    return out


@pytest.mark.parametrize("size, sampling", [(7, 2), (14, 2), (3, 1), (4, 3)])
def test_equals_torchvision_forward_and_backward(size, sampling):
    torch.manual_seed(0)
    feat = torch.randn(3, 5, 9, 13, dtype=torch.float64, requires_grad=True)
    boxes = [b.double() for b in _boxes(3, 11, 13 * 16, 9 * 16)]
    boxes[1] = boxes[1][:0]  # an image without RoIs
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], 1)
                      for i, b in enumerate(boxes)])
    ref = roi_align(feat, rois, size, 1 / 16, sampling)
    ours = roi_align_separable(feat, boxes, size, 1 / 16, sampling)
    assert ours.shape == ref.shape == (22, 5, size, size)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, feat, grad)
    (g_ours,) = torch.autograd.grad(ours, feat, grad)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-12)


def test_one_bin_by_hand():
    # a 2×2 box on a linear ramp F[y, x] = 10y + x: one bin, one sample at its centre (1.5, 2.5)
    feat = (10 * torch.arange(4.0)[:, None] + torch.arange(5.0)[None]).view(1, 1, 4, 5)
    out = roi_align_separable(feat, [torch.tensor([[1.5, 0.5, 3.5, 2.5]])], 1, 1.0, 1)
    assert out.item() == pytest.approx(10 * 1.5 + 2.5)
    # a sample beyond the map (x > W) contributes 0, as torchvision's
    out = roi_align_separable(feat, [torch.tensor([[5.5, 0.0, 6.5, 1.0]])], 1, 1.0, 1)
    assert out.item() == 0.0


def test_pooler_matches_torchvisions_and_refuses_several_levels():
    torch.manual_seed(1)
    feats = {"0": torch.randn(2, 4, 8, 10)}
    shapes = [(128, 150), (100, 160)]
    boxes = _boxes(2, 6, 160, 128, seed=3)
    ref = MultiScaleRoIAlign(["0"], 7, 2)(feats, boxes, shapes)
    ours = SeparableRoIAlign(["0"], 7, 2)(feats, boxes, shapes)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    with pytest.raises(AblateError, match="one feature map"):
        SeparableRoIAlign(["0", "1"], 7, 2)({**feats, "1": feats["0"]}, boxes, shapes)
    with pytest.raises(AblateError, match="sampling_ratio > 0"):
        roi_align_separable(feats["0"], boxes, 7, 1 / 16, 0)


def test_model_option():
    kw = dict(num_classes=3, depth=14, width=0.125, norm="bn", trainable_layers=5)
    assert type(build_faster_rcnn(**kw).roi_heads.box_roi_pool) is MultiScaleRoIAlign
    m = build_faster_rcnn(**kw, rcnn={"roi_align": "separable"})
    assert type(m.roi_heads.box_roi_pool) is SeparableRoIAlign
    with pytest.raises(AblateError, match="'seperable' is not one of torchvision, separable"):
        build_faster_rcnn(**kw, rcnn={"roi_align": "seperable"})
    with pytest.raises(AblateError, match="fpn pools four levels"):
        build_faster_rcnn(**{**kw, "arch": "fpn"}, rcnn={"roi_align": "separable"})
