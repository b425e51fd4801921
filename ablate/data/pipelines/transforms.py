"""Per-sample detection transforms for YOLOv3 ("Bag of Freebies", Zhang et al. 2019, Table 3).

* ``YoloAugment`` / ``yolo_augment``: the "data augmentation" freebie, GluonCV's
  ``YOLO3DefaultTrainTransform`` order: colour distortion → random expand (p 0.5, ratio
  U(1, 4), fill = mean pixel) → SSD min-IoU random crop → resize to the training size with a
  random interpolation → horizontal flip (p 0.5).
* ``plain_resize``: what the "- data augmentation" row keeps (resize only).
* ``eval_resize``: evaluation input (no letterbox); keeps ``orig_size`` and the original boxes
  (``orig_boxes``) so detections are scored in original image coordinates.

Each transform is a ``SampleTransform`` in two halves: ``draw`` makes every random draw and
moves the boxes from the image's size alone (a worker can run it without decoding), ``apply``
does the pixels on any device (``data.decode=device``, see ``pipelines.detection``).

Normalisation (ImageNet mean/std) is left to the loader, on the device batch. Images are uint8
``[3, H, W]`` in and out (float 0–255 input is rounded). Targets follow ``ablate.data.targets``;
every tensor entry with one row per box (``labels``, ``difficult``, ``weights``, ``iscrowd``…)
follows the boxes that survive the crop.

Building blocks: the expand makes ``v2.RandomZoomOut``'s draws (same RNG calls, same float32
arithmetic) and the box arithmetic is v2's pad/resize/flip kernels' own, so the output equals
the v2 composition bit for bit (tests/data/test_detection_transforms.py keeps that composition
as its reference); but the expanded canvas is never built: only the crop window of it is
(``canvas_window``), up to 16x less memory to fill. The crop keeps ``v2.RandomIoUCrop``'s rules
(boxes kept by centre, as ``SanitizeBoundingBoxes`` would after it) but draws its trials
vectorised in NumPy, ~30x faster than v2's loop (``sample_min_iou_crop``).

Randomness: torchvision.transforms.v2 draws from torch's *global* RNG (``torch.rand``,
``torch.randint``), and so do the colour, crop and interpolation draws here. Seed it
(``torch.manual_seed``) for reproducible output, or pass a ``torch.Generator``: the transform
then runs under a forked global RNG seeded from one draw of the generator and leaves the global
state untouched. The loader passes a generator seeded by (seed, epoch, index), so results do not
depend on the number of DataLoader workers.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ablate.data.loading import IMAGENET_MEAN, global_rng_from
from ablate.data.targets import per_box_keys
from ablate.errors import AblateError

MEAN_PIXEL = tuple(round(255 * m) for m in IMAGENET_MEAN)  # (124, 116, 104): the expand fill
# SSD's three choices, as v2.RandomIoUCrop's default options: 1.0 keeps the whole image, 0.1–0.9
# ask a patch of that minimum IoU with a box, 0.0 any patch holding a box centre (SSD's "randomly
# sample a patch", GluonCV's (None, 1) constraint)
CROP_MIN_IOUS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
# The random training interpolation, standing in for OpenCV's INTER_{NEAREST, LINEAR, CUBIC,
# AREA} (GluonCV draws one of 5; LANCZOS4 has no tensor kernel). All run on uint8 in
# torchvision's fast kernels; "area" is antialiased bilinear (a triangle filter that averages
# like INTER_AREA when shrinking; F.interpolate's true "area" is 5x slower). "nearest" samples
# pixel centres (NEAREST_EXACT), unlike PyTorch's legacy half-pixel-shifted "nearest".
INTERPOLATIONS = {"nearest": (InterpolationMode.NEAREST_EXACT, False),
                  "bilinear": (InterpolationMode.BILINEAR, False),
                  "bicubic": (InterpolationMode.BICUBIC, False),
                  "area": (InterpolationMode.BILINEAR, True)}
_GREY = torch.tensor([0.299, 0.587, 0.114])
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ_INV = torch.linalg.inv(_YIQ)
# GluonCV's hue matrices: RGB→YIQ as above and its printed (rounded) inverse, in float64
_GLUON_YIQ = _YIQ.double()
_GLUON_YIQ_INV = torch.tensor([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647],
                               [1.0, -1.107, 1.705]], dtype=torch.float64)
# how ``apply_color`` applies the draws: "gluoncv" as GluonCV released ``random_color_distort``
# (the default), "clamped" the variant this project used before (see ``color_distort``)
COLOR_MODES = ("gluoncv", "clamped")


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image
    return image.float().round().clamp(0, 255).to(torch.uint8)


def _size(out_size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    if h < 1 or w < 1:
        raise AblateError(f"out_size must be positive, got {out_size}")
    return int(h), int(w)


def resize_image(image: torch.Tensor, size: tuple[int, int], mode: str = "area"
                 ) -> torch.Tensor:
    """Resize a uint8 (or 0–255 float) image ``[3, H, W]`` to ``size`` = (h, w).

    Args:
        image: the image.
        size: output (height, width).
        mode: a key of ``INTERPOLATIONS``.
    Returns:
        uint8 ``[3, h, w]``.
    """
    image = _as_uint8(image)
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    interpolation, antialias = INTERPOLATIONS[mode]
    return TF.resize(image, list(size), interpolation=interpolation, antialias=antialias)


def _resize_target(target: dict[str, Any], old: tuple[int, int], new: tuple[int, int]
                   ) -> dict[str, Any]:
    num = torch.tensor([new[1], new[0]] * 2, dtype=torch.float32)
    den = torch.tensor([old[1], old[0]] * 2, dtype=torch.float32)
    return {**target, "boxes": target["boxes"].float() * num / den}


def draw_color(*, brightness_delta: float = 32.0, contrast: tuple[float, float] = (0.5, 1.5),
               saturation: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18.0,
               p: float = 0.5) -> list[tuple[str, float]]:
    """``color_distort``'s draws (global RNG): the steps it applies, in order, with their
    factors, e.g. ``[("brightness", 12.5), ("saturation", 1.2), ("hue", -3.0)]``."""

    def draw(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    ranges = {"contrast": contrast, "saturation": saturation,
              "hue": (-hue_delta, hue_delta)}
    ops = []
    if float(torch.rand(())) < p:
        ops.append(("brightness", draw(-brightness_delta, brightness_delta)))
    order = ["contrast", "saturation", "hue"]
    if float(torch.rand(())) >= 0.5:
        order = ["saturation", "hue", "contrast"]
    for name in order:
        if float(torch.rand(())) < p:
            ops.append((name, draw(*ranges[name])))
    return ops


def apply_color(image: torch.Tensor, ops: Sequence[tuple[str, float]],
                mode: str = "gluoncv") -> torch.Tensor:
    """Apply ``draw_color``'s steps to uint8 ``[3, H, W]`` on its device; uint8 out (rounded
    and clamped to 0–255 once, at the end). ``mode``: see ``color_distort``."""
    if mode not in COLOR_MODES:
        raise AblateError(f"colour mode {mode!r} is not one of {', '.join(COLOR_MODES)}")
    clamped = mode == "clamped"
    # contiguous float32 whatever the input layout (decoded images are HWC-strided): the grey
    # and hue contractions over channels run ~3x faster on planes than on interleaved pixels
    x = image.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    weights = _GREY.to(x.device, non_blocking=True)

    def grey(x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("c,chw->hw", weights, x)[None]

    def blend(x: torch.Tensor, other: torch.Tensor, a: float) -> torch.Tensor:
        # x·a + other·(1 − a), each product rounded to float32 before the sum; in place
        # (``other`` is a fresh grey image or its 0-d mean)
        return x.mul_(a).add_(other.mul_(1 - a))

    def hue(x: torch.Tensor, a: float) -> torch.Tensor:
        if clamped:  # a in degrees, the exact YIQ inverse, in float32
            c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
            rot = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])
            t = _YIQ_INV @ rot @ _YIQ
        else:  # GluonCV: a·π radians, its rounded inverse, the product in float64
            c, s = math.cos(a * math.pi), math.sin(a * math.pi)
            rot = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)
            t = (_GLUON_YIQ_INV @ rot @ _GLUON_YIQ).float()
        return torch.einsum("dc,chw->dhw", t.to(x.device, non_blocking=True), x)

    for name, a in ops:
        if name == "brightness":
            x.add_(a)
        elif name == "contrast":
            x = blend(x, grey(x).mean(), a) if clamped else x.mul_(a)
        elif name == "saturation":
            x = blend(x, grey(x), a)
        else:
            x = hue(x, a)
        if clamped:
            x.clamp_(0, 255)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def color_distort(image: torch.Tensor, *, mode: str = "gluoncv", **options: Any
                  ) -> torch.Tensor:
    """SSD/GluonCV photometric distortion (``random_color_distort``), global RNG.

    Each step is applied with probability ``p``: brightness + U(−δ, δ) (0–255 units), then
    either contrast → saturation → hue or saturation → hue → contrast (random order, p 0.5).
    ``draw_color`` then ``apply_color``.

    ``mode="gluoncv"`` (the default) is GluonCV's released code, the one behind Bag of
    Freebies' Table 3: contrast scales the image (``x·α``, α ~ U(0.5, 1.5)); saturation blends
    with the grey image (BT.601 weights) by α ~ U(0.5, 1.5); hue rotates the chroma plane of
    YIQ by α·π radians, α ~ U(−18, 18) (which makes the hue uniform in effect), with GluonCV's
    rounded YIQ inverse; nothing is clamped between steps. GluonCV carries the unclamped floats
    on through the expand and resize; here the result is rounded and clamped to uint8 once,
    after the last step.

    ``mode="clamped"`` is the variant used before: contrast blends with the mean grey level,
    hue rotates by α degrees with the exact YIQ inverse, and values are clamped to 0–255 after
    each step. It is neither the paper's text (which names no operations) nor the code's.
    (v2.RandomPhotometricDistort scales brightness and permutes channels: not used.)

    Args:
        image: uint8 ``[3, H, W]``.
        mode: ``COLOR_MODES``.
        options: ``draw_color``'s (brightness_delta, contrast, saturation, hue_delta, p).
    Returns:
        uint8 ``[3, H, W]``.
    """
    return apply_color(image, draw_color(**options), mode)


def sample_min_iou_crop(boxes: torch.Tensor, height: int, width: int, *, trials: int = 50,
                        min_ious: Sequence[float] = CROP_MIN_IOUS, min_scale: float = 0.3,
                        max_aspect: float = 2.0) -> tuple[int, int, int, int] | None:
    """Draw an SSD min-IoU crop (global RNG), with ``v2.RandomIoUCrop``'s rules, vectorised.

    Draw a minimum IoU from ``min_ious`` (1.0 = keep the image, 0.0 = any patch holding a box
    centre; ``CROP_MIN_IOUS``); try ``trials`` crops with sides
    ``int(side · U(min_scale, 1))``, aspect in [1/max_aspect, max_aspect] and a random position;
    a crop qualifies if some box has its centre strictly inside and, among those boxes, the
    best IoU with the crop reaches the minimum; the first qualifying one wins, else draw a new
    minimum. (v2 tests one trial at a time with several small tensor ops: ~10 ms per image.)
    The draws come from torch; the geometry runs in NumPy on the same dtypes torch would use
    (float64 sides, float32 boxes, IoU and aspect), a few µs per array op instead of torch's
    dispatch cost.

    Args:
        boxes: float ``[N, 4]`` xyxy, N ≥ 1 (used as float32).
        height, width: image size.
    Returns:
        ``(top, left, h, w)``, or None for "no crop".
    """
    f32 = np.float32
    b = boxes.detach().to(torch.float32).cpu().numpy()
    cx, cy = (b[:, 0] + b[:, 2]) / f32(2), (b[:, 1] + b[:, 3]) / f32(2)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lo_aspect, hi_aspect = f32(1 / max_aspect), f32(max_aspect)
    while True:
        min_iou = min_ious[int(torch.randint(len(min_ious), (1,)))]
        if min_iou >= 1.0:
            return None
        r = torch.rand(trials, 4, dtype=torch.float64).numpy()
        cw = (width * (min_scale + (1 - min_scale) * r[:, 0])).astype(np.int64)
        ch = (height * (min_scale + (1 - min_scale) * r[:, 1])).astype(np.int64)
        x0 = ((width - cw) * r[:, 2]).astype(np.int64)
        y0 = ((height - ch) * r[:, 3]).astype(np.int64)
        x1, y1 = x0 + cw, y0 + ch
        aspect = cw.astype(f32) / np.maximum(ch, 1).astype(f32)
        ok = (cw > 0) & (ch > 0) & (aspect >= lo_aspect) & (aspect <= hi_aspect)
        x0f, y0f, x1f, y1f = (v.astype(f32)[:, None] for v in (x0, y0, x1, y1))
        inside = (x0f < cx) & (cx < x1f) & (y0f < cy) & (cy < y1f)
        iw = np.minimum(x1f, b[:, 2]) - np.maximum(x0f, b[:, 0])
        ih = np.minimum(y1f, b[:, 3]) - np.maximum(y0f, b[:, 1])
        inter = np.maximum(iw, f32(0)) * np.maximum(ih, f32(0))
        iou = inter / ((cw * ch).astype(f32)[:, None] + area - inter)
        ok &= inside.any(1) & (np.where(inside, iou, f32(-1)).max(1) >= f32(min_iou))
        if ok.any():
            k = int(ok.argmax())
            return int(y0[k]), int(x0[k]), int(ch[k]), int(cw[k])


def crop_target(target: dict[str, Any], top: int, left: int, height: int, width: int
                ) -> dict[str, Any]:
    """Crop the boxes: keep those whose centre is strictly inside, shift, clip to the crop,
    drop any thinner than 1 px; every per-box column follows.

    Returns:
        the new target (float32 ``boxes`` in crop coordinates).
    """
    b = target["boxes"].float()
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    keep = (left < cx) & (cx < left + width) & (top < cy) & (cy < top + height)
    b = b - torch.tensor([left, top, left, top], dtype=torch.float32)
    b[:, 0::2] = b[:, 0::2].clamp(0, width)
    b[:, 1::2] = b[:, 1::2].clamp(0, height)
    keep &= ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
    out = {**target, **{k: target[k][keep] for k in per_box_keys(target)}}
    out["boxes"] = b[keep]
    return out


def zoom_out_params(height: int, width: int, *, p: float = 0.5,
                    side_range: tuple[float, float] = (1.0, 4.0)
                    ) -> tuple[int, int, int, int] | None:
    """``v2.RandomZoomOut``'s draws (global RNG, the same calls and float32 arithmetic).

    Returns:
        None (kept, probability 1 − p), or ``(top, left, canvas_h, canvas_w)``: the image goes at
        (top, left) of a canvas of side ratio U(side_range).
    """
    if torch.rand(1) >= p:
        return None
    r = side_range[0] + torch.rand(1) * (side_range[1] - side_range[0])
    canvas_w, canvas_h = int(width * r), int(height * r)
    r = torch.rand(2)
    return int((canvas_h - height) * r[1]), int((canvas_w - width) * r[0]), canvas_h, canvas_w


def canvas_window(image: torch.Tensor, fill: torch.Tensor, place: tuple[int, int],
                  window: tuple[int, int, int, int]) -> torch.Tensor:
    """The window ``(top, left, h, w)`` of a canvas filled with ``fill`` with ``image`` at
    ``place`` (top, left), building only the window (a view when it lies inside the image).

    Args:
        image: ``[C, H, W]``.
        fill: ``[C]`` of ``image``'s dtype.
    """
    top, left, h, w = window
    y0, x0 = top - place[0], left - place[1]  # the window in image coordinates
    ih, iw = image.shape[-2:]
    if y0 >= 0 and x0 >= 0 and y0 + h <= ih and x0 + w <= iw:
        return image[:, y0:y0 + h, x0:x0 + w]
    out = fill.view(-1, 1, 1).expand(len(fill), h, w).clone()
    a, c = max(y0, 0), max(x0, 0)  # the overlap, image coordinates
    b, d = min(y0 + h, ih), min(x0 + w, iw)
    if b > a and d > c:
        out[:, a - y0:b - y0, c - x0:d - x0] = image[:, a:b, c:d]
    return out


class SampleTransform:
    """A per-sample transform in two halves: ``draw`` (the random parameters and the new target,
    from the image size alone: a worker can run it without decoding) and ``apply`` (the pixels,
    on any device). Calling it runs both: ``f(image, target, out_size=…, generator=…)``."""

    def draw(self, height: int, width: int, target: dict[str, Any], *,
             out_size: Any, generator: torch.Generator | None = None
             ) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def apply(self, image: torch.Tensor, params: Any) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def output_size(params: Any) -> tuple[int, int]:
        """(h, w) of ``apply``'s output for ``params``."""
        return tuple(params["size"])

    def __call__(self, image: torch.Tensor, target: dict[str, Any], *, out_size: Any,
                 generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, dict[str, Any]]:
        image = _as_uint8(image)
        params, target = self.draw(*image.shape[-2:], target, out_size=out_size,
                                   generator=generator)
        return self.apply(image, params), target


class YoloAugment(SampleTransform):
    """YOLOv3 training augmentation (Bag of Freebies Sec. 3.3; GluonCV's
    ``YOLO3DefaultTrainTransform``), boxes following each step.

    Steps: ``color_distort``; expand (``zoom_out_params``: p 0.5, side ratio U(1, 4), fill
    ``mean_pixel`` as uint8); ``sample_min_iou_crop`` + ``crop_target`` (none for an image
    without boxes); resize to ``out_size``² with an interpolation drawn from
    ``INTERPOLATIONS``; flip (p 0.5, x1' = S − x2). The result equals ``v2.RandomZoomOut`` →
    crop → ``TF.resize`` → ``TF.horizontal_flip`` on ``tv_tensors`` bit for bit, without
    building the expanded canvas.

    Args:
        color, expand, crop, flip: switch single steps off (tests, ablations).
        mean_pixel: expand fill, 0–255 RGB (the dataset mean pixel).
        color_mode: how the colour draws apply (``color_distort``'s ``mode``).
    """

    def __init__(self, *, color: bool = True, expand: bool = True, crop: bool = True,
                 flip: bool = True, mean_pixel: Sequence[float] = MEAN_PIXEL,
                 color_mode: str = "gluoncv") -> None:
        if color_mode not in COLOR_MODES:
            raise AblateError(f"colour mode {color_mode!r} is not one of "
                              f"{', '.join(COLOR_MODES)}")
        self.color, self.expand, self.crop, self.flip = color, expand, crop, flip
        self.color_mode = color_mode
        self.fill = tuple(int(torch.tensor(float(v)).to(torch.uint8)) for v in mean_pixel)

    def draw(self, height: int, width: int, target: dict[str, Any], *, out_size: int,
             generator: torch.Generator | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every draw, in the order the steps make them; the boxes follow.

        Returns:
            ``(params, target)``: ``params`` holds ``color`` (``draw_color``'s steps),
            ``place`` (the image's corner on the expanded canvas), ``window`` (top, left, h, w
            of the canvas kept), ``mode``, ``flip`` and ``size``; ``target`` has float32 xyxy
            ``boxes`` in output pixels.
        """
        size = _size(out_size)
        h, w = int(height), int(width)
        with global_rng_from(generator):
            ops = draw_color() if self.color else []
            boxes = target["boxes"].float().reshape(-1, 4).clone()  # clamped to the image
            boxes[:, 0::2].clamp_(min=0, max=w)
            boxes[:, 1::2].clamp_(min=0, max=h)
            place, canvas = (0, 0), (h, w)
            zoom = zoom_out_params(h, w) if self.expand else None
            if zoom is not None:  # inside the canvas by construction: v2's clamp is a no-op
                place, canvas = zoom[:2], zoom[2:]
                boxes = boxes + torch.tensor([zoom[1], zoom[0]] * 2, dtype=torch.float32)
            target = {**target, "boxes": boxes}
            window = (0, 0, *canvas)
            if self.crop and len(boxes):
                params = sample_min_iou_crop(boxes, *canvas)
                if params is not None:
                    window = params
                    target = crop_target(target, *params)
            mode = list(INTERPOLATIONS)[int(torch.randint(len(INTERPOLATIONS), (1,)))]
            boxes = target["boxes"]
            if window[2:] != size:  # v2's resize_bounding_boxes
                boxes = boxes.mul(torch.tensor([size[1] / window[3], size[0] / window[2]] * 2))
            flip = self.flip and float(torch.rand(())) < 0.5
            if flip:  # v2's horizontal_flip_bounding_boxes
                boxes = boxes.clone()
                boxes[:, [2, 0]] = boxes[:, [0, 2]].sub_(size[1]).neg_()
        boxes = boxes.float() + 0.0  # + 0.0: no -0.0 from the flip
        params = {"color": ops, "place": place, "window": window, "mode": mode, "flip": flip,
                  "size": size}
        return params, {**target, "boxes": boxes}

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """uint8 ``[3, H, W]`` → uint8 ``[3, S, S]`` (contiguous) on the image's device."""
        image = _as_uint8(image)
        if params["color"]:
            image = apply_color(image, params["color"], self.color_mode)
        fill = torch.tensor(self.fill, dtype=image.dtype).to(image.device, non_blocking=True)
        image = canvas_window(image, fill, params["place"], params["window"])
        out = resize_image(image, params["size"], params["mode"])
        if params["flip"]:
            out = out.flip(-1)
        return out.contiguous()


def yolo_augment(image: torch.Tensor, target: dict[str, Any], *, out_size: int,
                 generator: torch.Generator | None = None, color: bool = True,
                 expand: bool = True, crop: bool = True, flip: bool = True,
                 mean_pixel: Sequence[float] = MEAN_PIXEL
                 ) -> tuple[torch.Tensor, dict[str, Any]]:
    """``YoloAugment`` as a function.

    Args:
        image: uint8 ``[3, H, W]`` (a float 0–255 mixup canvas is rounded first).
        target: dataset target; per-box tensors (``per_box_keys``) follow the kept boxes.
        out_size: square output side.
        generator: optional; see the module docstring (else the global RNG is used).
        color, expand, crop, flip, mean_pixel: see ``YoloAugment``.
    Returns:
        ``(uint8 [3, S, S], target)`` with float32 xyxy ``boxes`` in output pixels.
    """
    return YoloAugment(color=color, expand=expand, crop=crop, flip=flip,
                       mean_pixel=mean_pixel)(image, target, out_size=out_size,
                                              generator=generator)


class PlainResize(SampleTransform):
    """The "- data augmentation" transform: resize to ``out_size``², boxes scaled by
    ``(S/W, S/H)`` exactly.

    The resize is bilinear, antialiased when shrinking (``INTERPOLATIONS["area"]``, like
    OpenCV's automatic choice of INTER_AREA for shrinking). No randomness: ``generator`` is
    ignored (the call signature of ``yolo_augment``).
    """

    def draw(self, height: int, width: int, target: dict[str, Any], *, out_size: int,
             generator: torch.Generator | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        size = _size(out_size)
        return {"size": size}, _resize_target(target, (int(height), int(width)), size)

    def apply(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return resize_image(image, params["size"])


class EvalResize(PlainResize):
    """Evaluation input: ``PlainResize`` (no letterbox), keeping the original boxes.

    The target has scaled ``boxes`` and ``orig_boxes`` (original image coordinates);
    ``orig_size`` (H, W) maps detections back (x·W/S, y·H/S).
    """

    def draw(self, height: int, width: int, target: dict[str, Any], *, out_size: int,
             generator: torch.Generator | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        params, out = super().draw(height, width, target, out_size=out_size)
        out["orig_boxes"] = target["boxes"].float().reshape(-1, 4).clone()
        return params, out


plain_resize = PlainResize()
eval_resize = EvalResize()
