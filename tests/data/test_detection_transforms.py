"""YOLOv3 sample transforms: boxes follow every geometric step, exact resize/flip/crop/mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablate.data.pipelines.transforms import (CROP_MIN_IOUS, INTERPOLATIONS, MEAN_PIXEL,
                                              apply_color, canvas_window, color_distort,
                                              crop_target,
                                              eval_resize, global_rng_from, plain_resize,
                                              resize_image, sample_min_iou_crop, yolo_augment)
from ablate.data.targets import per_box_keys
from ablate.errors import AblateError
from ablate.tricks.mixup import mix_pair


def _target(boxes, labels, **extra):
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    t = {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64),
         "difficult": torch.zeros(n, dtype=torch.bool), "image_id": "img", "orig_size": (0, 0)}
    t.update(extra)
    return t


def _rect_image(h=100, w=120, box=(30, 20, 70, 60)):
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    t = _target([box], [3])
    t["orig_size"] = (h, w)
    return image, t


def test_plain_resize_scales_boxes_exactly():
    image = torch.zeros(3, 100, 50, dtype=torch.uint8)
    t = _target([[10, 20, 30, 40], [0, 0, 50, 100]], [1, 2])
    out, t2 = plain_resize(image, t, out_size=64)
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
    expected = torch.tensor([[10 * 64 / 50, 20 * 64 / 100, 30 * 64 / 50, 40 * 64 / 100],
                             [0, 0, 64, 64]])
    torch.testing.assert_close(t2["boxes"], expected, rtol=0, atol=1e-5)
    assert torch.equal(t2["labels"], t["labels"]) and t2["orig_size"] == t["orig_size"]


def test_eval_resize_keeps_original_boxes():
    image = torch.zeros(3, 30, 60, dtype=torch.uint8)
    t = _target([[6, 3, 60, 30]], [0])
    t["orig_size"] = (30, 60)
    out, t2 = eval_resize(image, t, out_size=90)
    assert out.shape == (3, 90, 90) and t2["orig_size"] == (30, 60)
    torch.testing.assert_close(t2["boxes"], torch.tensor([[9.0, 9, 90, 90]]), rtol=0, atol=1e-5)
    assert torch.equal(t2["orig_boxes"], t["boxes"])


@pytest.mark.parametrize("seed", range(25))
def test_augmented_box_encloses_the_rectangle(seed):
    image, t = _rect_image()
    torch.manual_seed(seed)
    out, t2 = yolo_augment(image, t, out_size=96, color=False, mean_pixel=(0, 0, 0))
    assert out.shape == (3, 96, 96) and out.dtype == torch.uint8
    mask = out[0] > 127
    # A crop always keeps the centre of some box: with a single box it always survives.
    assert t2["labels"].tolist() == [3]
    x1, y1, x2, y2 = t2["boxes"][0].tolist()
    # a box cut at the crop's edge scales to the output's edge up to float32 rounding (v2's
    # resize_bounding_boxes: w · (96 / w) can be 96.0000076)
    assert 0 <= x1 < x2 <= 96 + 1e-4 and 0 <= y1 < y2 <= 96 + 1e-4
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    assert len(rows) and len(cols)
    tol = 1.0  # interpolation moves the thresholded edge by up to about half a pixel
    assert abs(cols[0] - x1) <= tol and abs(cols[-1] + 1 - x2) <= tol
    assert abs(rows[0] - y1) <= tol and abs(rows[-1] + 1 - y2) <= tol


def test_flip_maps_x1_to_size_minus_x2_exactly():
    s = 64
    image = torch.arange(3 * s * s, dtype=torch.int64).reshape(3, s, s).remainder(251)
    image = image.to(torch.uint8)
    t = _target([[3.5, 7, 20, 30], [40, 1, 63, 50]], [0, 1])
    results = []
    for seed in range(12):
        torch.manual_seed(seed)
        results.append(yolo_augment(image, t, out_size=s, color=False, expand=False,
                                    crop=False))
    plain = [r for r in results if torch.equal(r[0], image)]
    flipped = [r for r in results if torch.equal(r[0], image.flip(-1))]
    assert plain and flipped and len(plain) + len(flipped) == len(results)
    assert all(torch.equal(r[1]["boxes"], t["boxes"]) for r in plain)
    b = t["boxes"]
    expected = torch.stack([s - b[:, 2], b[:, 1], s - b[:, 0], b[:, 3]], 1)
    assert all(torch.equal(r[1]["boxes"], expected) for r in flipped)


def test_per_box_columns_follow_the_surviving_boxes():
    image = torch.full((3, 80, 100), 90, dtype=torch.uint8)
    boxes = [[2, 2, 20, 20], [60, 40, 98, 78], [30, 10, 70, 50], [5, 55, 25, 75]]
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4])
    difficult = torch.tensor([False, True, False, True])
    crowd = torch.tensor([True, False, False, False])
    t = _target(boxes, [0, 1, 2, 3], weights=weights, iscrowd=crowd)
    t["difficult"] = difficult
    dropped = 0
    for seed in range(40):
        out, t2 = yolo_augment(image, t, out_size=64, generator=torch.Generator().manual_seed(seed))
        n = len(t2["boxes"])
        assert {k: len(t2[k]) for k in ("labels", "weights", "difficult", "iscrowd")} == \
            dict.fromkeys(("labels", "weights", "difficult", "iscrowd"), n)
        lab = t2["labels"]
        assert torch.equal(t2["weights"], weights[lab])
        assert torch.equal(t2["difficult"], difficult[lab])
        assert torch.equal(t2["iscrowd"], crowd[lab])
        assert (t2["boxes"] >= 0).all() and (t2["boxes"] <= 64).all()
        assert ((t2["boxes"][:, 2:] - t2["boxes"][:, :2]) > 0).all()
        dropped += n < 4
    assert dropped > 0  # the crop did remove boxes in some draws


def test_generator_is_reproducible_and_leaves_global_rng_alone():
    image, t = _rect_image()
    state = torch.get_rng_state()
    a = yolo_augment(image, t, out_size=64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    b = yolo_augment(image, t, out_size=64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    torch.manual_seed(9)
    c = yolo_augment(image, t, out_size=64)
    torch.manual_seed(9)
    d = yolo_augment(image, t, out_size=64)
    assert torch.equal(c[0], d[0]) and torch.equal(c[1]["boxes"], d[1]["boxes"])


def test_float_canvas_and_empty_targets_are_accepted():
    image = torch.full((3, 40, 50), 99.6)
    out, t2 = yolo_augment(image, _target([], []), out_size=32,
                           generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert t2["boxes"].shape == (0, 4) and t2["labels"].shape == (0,)


def test_color_distort_steps():
    image = torch.randint(40, 200, (3, 8, 9), dtype=torch.uint8)
    assert torch.equal(color_distort(image, p=0.0), image)
    torch.manual_seed(0)
    out = color_distort(image, p=1.0, contrast=(1, 1), saturation=(1, 1), hue_delta=0.0)
    shift = (out.int() - image.int()).unique()
    assert len(shift) == 1 and -32 <= int(shift) <= 32  # brightness only: one constant shift
    grey = torch.full((3, 5, 5), 120, dtype=torch.uint8)
    torch.manual_seed(1)  # clamped: grey stays grey under contrast, saturation and hue
    out = color_distort(grey, p=1.0, brightness_delta=0.0, mode="clamped")
    assert (out.int() - 120).abs().max() <= 1
    torch.manual_seed(1)  # GluonCV's contrast scales the level; the image stays grey (to a
    out = color_distort(grey, p=1.0, brightness_delta=0.0)  # level: its rounded YIQ inverse)
    assert all(c.unique().numel() == 1 for c in out)
    assert int(out.max() - out.min()) <= 1 and abs(int(out[0, 0, 0]) - 120) > 10


# pixels (100, 150, 200) and (10, 20, 30); GluonCV's random_color_distort on them, in float32
# NumPy (HWC, the statements of its released code), rounded once at the end
COLOR_IMAGE = torch.tensor([[[100, 10]], [[150, 20]], [[200, 30]]], dtype=torch.uint8)
COLOR_CASES = [
    # contrast first takes (110, 160, 210) to (165, 240, 315): past 255, not clamped
    ([("brightness", 10.0), ("contrast", 1.5), ("saturation", 0.5), ("hue", 0.5)],
     [[202, 37], [249, 47], [172, 31]]),
    ([("brightness", -20.0), ("saturation", 1.5), ("hue", -1.25), ("contrast", 0.75)],
     [[97, 0], [108, 2], [0, 0]]),
]


def _gluoncv_color(image: torch.Tensor, ops) -> np.ndarray:
    src = image.permute(1, 2, 0).numpy().astype(np.float32)
    for name, a in ops:
        if name == "brightness":
            src += np.float32(a)
        elif name == "contrast":
            src *= np.float32(a)
        elif name == "saturation":
            grey = (src * np.array([[[0.299, 0.587, 0.114]]], np.float32)).sum(2, keepdims=True)
            grey *= np.float32(1.0 - a)
            src *= np.float32(a)
            src += grey
        else:
            u, w = np.cos(a * np.pi), np.sin(a * np.pi)
            bt = np.array([[1.0, 0, 0], [0, u, -w], [0, w, u]])
            tyiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321],
                             [0.211, -0.523, 0.311]])
            ityiq = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647],
                              [1.0, -1.107, 1.705]])
            src = src @ (ityiq @ bt @ tyiq).T.astype(np.float32)
    return np.clip(np.round(src), 0, 255).transpose(2, 0, 1)


@pytest.mark.parametrize("ops, want", COLOR_CASES)
def test_color_as_gluoncv_released_it(ops, want):
    out = apply_color(COLOR_IMAGE, ops)
    assert out.squeeze(1).tolist() == want
    assert np.array_equal(out.numpy(), _gluoncv_color(COLOR_IMAGE, ops))
    clamped = apply_color(COLOR_IMAGE, ops, "clamped")  # the earlier variant differs
    assert not torch.equal(clamped, out)


def test_clamped_color_mode_clamps_each_step_and_rotates_hue_in_degrees():
    ops = [("brightness", 10.0), ("contrast", 1.5)]
    # after the brightness: (110, 160, 210) and (20, 30, 40), grey levels 150.75 and 28.15,
    # mean 89.45; contrast 1.5 around it: 1.5·x − 44.725, clamped to 0–255
    out = apply_color(COLOR_IMAGE, ops, "clamped")
    assert out.squeeze(1).tolist() == [[120, 0], [195, 0], [255, 15]]
    assert torch.equal(apply_color(COLOR_IMAGE, [("hue", 360.0)], "clamped"), COLOR_IMAGE)
    with pytest.raises(AblateError, match="colour mode 'hsv'"):
        apply_color(COLOR_IMAGE, ops, "hsv")


def test_min_iou_crop_respects_its_constraints():
    boxes = torch.tensor([[10.0, 10, 50, 40], [60, 50, 90, 95]])
    seen_none = seen_crop = False
    for seed in range(60):
        torch.manual_seed(seed)
        p = sample_min_iou_crop(boxes, 100, 120)
        if p is None:
            seen_none = True
            continue
        seen_crop = True
        top, left, h, w = p
        assert 30 <= h <= 100 and 36 <= w <= 120 and 0.5 <= w / h <= 2
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        assert ((left < cx) & (cx < left + w) & (top < cy) & (cy < top + h)).any()
    assert seen_none and seen_crop and CROP_MIN_IOUS == (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def test_the_unconstrained_patch_is_one_of_the_seven_choices():
    """SSD's third choice: a patch whose IoU with every box is below 0.1 qualifies when the
    drawn minimum is 0.0 (a box centre inside is all it needs), never with 0.1."""
    def iou(box, top, left, h, w):
        iw = max(0, min(box[2], left + w) - max(box[0], left))
        ih = max(0, min(box[3], top + h) - max(box[1], top))
        inter = iw * ih
        return inter / ((box[2] - box[0]) * (box[3] - box[1]) + h * w - inter)

    small = [45.0, 45, 55, 55]  # area 100: a patch of 30 × 30 or more has IoU ≤ 0.11 with it
    low = []
    for seed in range(40):
        torch.manual_seed(seed)
        top, left, h, w = sample_min_iou_crop(torch.tensor([small]), 100, 100,
                                              min_ious=(0.0,))
        assert top < 50 < top + h and left < 50 < left + w  # the centre is inside
        low.append(iou(small, top, left, h, w) < 0.1)
    assert sum(low) >= 35
    mid = [30.0, 30, 70, 70]
    for seed in range(40):
        torch.manual_seed(seed)
        assert iou(mid, *sample_min_iou_crop(torch.tensor([mid]), 100, 100,
                                             min_ious=(0.1,))) >= 0.1
    draws = []
    for seed in range(200):  # the choice is uniform over the seven options
        torch.manual_seed(seed)
        draws.append(int(torch.randint(len(CROP_MIN_IOUS), (1,))))
    assert set(draws) == set(range(7))


def test_crop_target_keeps_boxes_by_centre():
    t = _target([[10, 10, 30, 30], [0, 0, 8, 8], [20, 4, 40, 6.5]], [0, 1, 2],
                weights=torch.tensor([0.5, 0.6, 0.7]))
    t2 = crop_target(t, top=5, left=5, height=20, width=20)
    assert torch.equal(t2["boxes"], torch.tensor([[5.0, 5, 20, 20]]))
    assert t2["labels"].tolist() == [0] and t2["weights"].tolist() == [0.5]
    assert set(per_box_keys(t2)) == {"labels", "difficult", "weights"}


def test_mix_pair_canvas_pixels_weights_and_boxes():
    a = torch.full((3, 4, 6), 100, dtype=torch.uint8)
    b = torch.full((3, 5, 3), 200, dtype=torch.uint8)
    ta = _target([[0, 0, 6, 4]], [1], weights=torch.tensor([1.0]))
    tb = _target([[1, 1, 3, 5], [0, 0, 2, 2]], [2, 3])
    tb["image_id"] = "other"
    image, t = mix_pair(a, ta, b, tb, 0.25)
    assert image.shape == (3, 5, 6) and image.dtype == torch.uint8
    assert image[0, 0, 0] == 175  # 0.25·100 + 0.75·200
    assert image[1, 0, 5] == 25  # image 1 alone
    assert image[2, 4, 0] == 150  # image 2 alone
    assert image[0, 4, 5] == 0  # neither: zero canvas
    assert torch.equal(t["boxes"], torch.cat([ta["boxes"], tb["boxes"]]))
    assert t["labels"].tolist() == [1, 2, 3] and t["weights"].tolist() == [0.25, 0.75, 0.75]
    assert t["orig_size"] == (5, 6) and t["mixed_with"] == "other"
    _, even = mix_pair(a, ta, b, tb, 0.5, weighted=False)
    assert even["weights"].tolist() == [1.0, 1.0, 1.0]


def test_layout_of_the_decoded_image_does_not_change_a_value():
    # decoded images are HWC-strided [3, H, W] views; colour and mixup pick their own layout
    g = torch.Generator().manual_seed(3)
    hwc = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1)
           for h, w in ((21, 17), (15, 26))]
    chw = [x.contiguous() for x in hwc]
    assert hwc[0].stride() == (1, 51, 3) and chw[0].stride() == (357, 17, 1)
    for seed in range(5):
        outs = []
        for a, b in (hwc, chw):
            torch.manual_seed(seed)
            outs.append(color_distort(a, p=1.0))
        assert torch.equal(*outs)
        (m1, t1), (m2, t2) = (mix_pair(a, _target([[1, 1, 5, 5]], [0]), b,
                                       _target([[2, 2, 9, 9]], [1]), 0.3 + 0.1 * seed)
                              for a, b in (hwc, chw))
        assert m1.shape == (3, 21, 26) and m1.stride() == (1, 78, 3)  # image 1's layout
        assert torch.equal(m1, m2) and torch.equal(t1["weights"], t2["weights"])


# --- the v2 composition that yolo_augment reproduces without building the expanded canvas ---

def _reference_min_iou_crop(boxes, height, width, trials=50, min_scale=0.3, max_aspect=2.0):
    """The sampler's draws and rules in torch ops (its first, torch-only implementation)."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while True:
        min_iou = CROP_MIN_IOUS[int(torch.randint(len(CROP_MIN_IOUS), (1,)))]
        if min_iou >= 1.0:
            return None
        r = torch.rand(trials, 4, dtype=torch.float64)
        cw = (width * (min_scale + (1 - min_scale) * r[:, 0])).long()
        ch = (height * (min_scale + (1 - min_scale) * r[:, 1])).long()
        x0, y0 = ((width - cw) * r[:, 2]).long(), ((height - ch) * r[:, 3]).long()
        x1, y1 = x0 + cw, y0 + ch
        ok = (cw > 0) & (ch > 0)
        aspect = cw / ch.clamp(min=1)
        ok &= (aspect >= 1 / max_aspect) & (aspect <= max_aspect)
        inside = ((x0[:, None] < cx) & (cx < x1[:, None]) & (y0[:, None] < cy)
                  & (cy < y1[:, None]))
        iw = (torch.minimum(x1[:, None], boxes[:, 2]) - torch.maximum(x0[:, None], boxes[:, 0]))
        ih = (torch.minimum(y1[:, None], boxes[:, 3]) - torch.maximum(y0[:, None], boxes[:, 1]))
        inter = iw.clamp(min=0) * ih.clamp(min=0)
        iou = inter / ((cw * ch)[:, None] + area - inter)
        ok &= inside.any(1) & (iou.where(inside, -1.0).amax(1) >= min_iou)
        if ok.any():
            k = int(ok.nonzero()[0])
            return int(y0[k]), int(x0[k]), int(ch[k]), int(cw[k])


def _reference_augment(image, target, out_size, generator, mean_pixel=MEAN_PIXEL):
    """tv_tensors through v2.RandomZoomOut (the full canvas), the crop, TF.resize, TF.flip."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    size = [out_size, out_size]
    with global_rng_from(generator):
        image = color_distort(image.float().round().clamp(0, 255).to(torch.uint8)
                              if image.dtype != torch.uint8 else image)
        h, w = image.shape[-2:]
        boxes = TF.clamp_bounding_boxes(tv_tensors.BoundingBoxes(
            target["boxes"].float().reshape(-1, 4), format="XYXY", canvas_size=(h, w)))
        img, boxes = v2.RandomZoomOut(fill=list(mean_pixel), side_range=(1.0, 4.0),
                                      p=0.5)(tv_tensors.Image(image), boxes)
        image = img.as_subclass(torch.Tensor)
        target = {**target, "boxes": boxes.as_subclass(torch.Tensor)}
        if len(boxes):
            params = _reference_min_iou_crop(target["boxes"], *image.shape[-2:])
            if params is not None:
                top, left, ch, cw = params
                image = image[:, top:top + ch, left:left + cw]
                target = crop_target(target, top, left, ch, cw)
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                         canvas_size=tuple(image.shape[-2:]))
        mode = list(INTERPOLATIONS)[int(torch.randint(len(INTERPOLATIONS), (1,)))]
        out = resize_image(image, tuple(size), mode)
        boxes = TF.resize(boxes, size)
        if float(torch.rand(())) < 0.5:
            out, boxes = out.flip(-1), TF.horizontal_flip(boxes)
    return out.contiguous(), {**target, "boxes": boxes.as_subclass(torch.Tensor).float() + 0.0}


def _random_boxes(g, n, h, w):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = 2 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
    return torch.cat([xy, xy + wh], 1).round()  # may reach past the image: clamped first


def test_yolo_augment_equals_the_v2_composition_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    cases = 0
    for k in range(120):
        h, w = int(torch.randint(40, 140, (1,), generator=g)), int(torch.randint(40, 140, (1,),
                                                                                generator=g))
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        if k % 5 == 0:  # a float mixup canvas
            image = image.float() * 0.6 + 30.3
        n = int(torch.randint(0, 5, (1,), generator=g))
        t = _target(_random_boxes(g, n, h, w), list(range(n)), weights=torch.rand(n, generator=g))
        size = (64, 96)[k % 2]
        a = yolo_augment(image, t, out_size=size, generator=torch.Generator().manual_seed(k))
        b = _reference_augment(image, t, size, torch.Generator().manual_seed(k))
        assert torch.equal(a[0], b[0]), k
        assert a[1].keys() == b[1].keys()
        for key in ("boxes", "labels", "weights", "difficult"):
            assert torch.equal(a[1][key], b[1][key]), (k, key)
        cases += 1
    assert cases == 120


def test_min_iou_crop_in_numpy_makes_the_torch_draws_and_choices():
    g = torch.Generator().manual_seed(1)
    crops = 0
    for seed in range(300):
        h, w = int(torch.randint(30, 900, (1,), generator=g)), int(torch.randint(30, 900, (1,),
                                                                                 generator=g))
        boxes = _random_boxes(g, int(torch.randint(1, 8, (1,), generator=g)), h, w)
        boxes = boxes + torch.rand(boxes.shape, generator=g) * 0.5  # fractional coordinates
        torch.manual_seed(seed)
        a = sample_min_iou_crop(boxes, h, w)
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        assert _reference_min_iou_crop(boxes, h, w) == a, seed
        assert torch.equal(torch.get_rng_state(), state)  # the same number of draws
        crops += a is not None
    assert 100 < crops < 300


def test_canvas_window_builds_only_the_window():
    image = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4) + 1
    fill = torch.tensor([200, 201], dtype=torch.uint8)
    canvas = torch.empty(2, 9, 10, dtype=torch.uint8)
    canvas[:] = fill.view(2, 1, 1)
    canvas[:, 5:8, 2:6] = image  # the image at (top 5, left 2) of a 9 x 10 canvas
    for window in [(0, 0, 9, 10), (4, 1, 5, 6), (6, 3, 2, 2), (0, 0, 3, 3), (5, 2, 3, 4),
                   (7, 5, 2, 5)]:
        top, left, h, w = window
        assert torch.equal(canvas_window(image, fill, (5, 2), window),
                           canvas[:, top:top + h, left:left + w]), window
    inside = canvas_window(image, fill, (0, 0), (1, 1, 2, 2))
    assert inside.data_ptr() == image[:, 1:, 1:].data_ptr()  # a view, nothing copied
