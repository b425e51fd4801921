"""RoIAlign (He et al., Mask R-CNN, 2017) as two small matrix products, for small feature maps.

torchvision's ``roi_align`` (``aligned=False``, a fixed ``sampling_ratio``) averages s × s
bilinear samples per output bin. Bilinear weights factor into a row weight times a column
weight, and so does their average over a grid of samples, so one RoI's output is

    out[c] = Wy · F[c] · Wxᵀ,   Wy [P, H], Wx [P, W]

with Wy[p, y] the mean over the bin's s sample rows of each row's bilinear weight (torchvision's
rules: a sample beyond −1 or the map's size is 0, else clamped into the map). That is one GEMM
over all RoIs of an image and one batched product, with the same numbers as torchvision's kernel
(to float rounding), forward and backward. Its cost grows with the whole map (H · W per output
row) where torchvision's grows with the samples, so it pays on small maps — the CPU proxy's
C4 map of 14 × 12 trains 20× faster with it (benchmarks/RESULTS.md) — and is an option
(``rcnn.roi_align: separable``), not the default.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import MultiScaleRoIAlign

from ablate.errors import AblateError


def _axis_weights(start: torch.Tensor, length: torch.Tensor, size: int, out: int,
                  sampling: int) -> torch.Tensor:
    """[R, out, size]: each bin's mean bilinear weight of every row (or column)."""
    n = out * sampling
    steps = (torch.arange(n, device=start.device, dtype=start.dtype) + 0.5) / sampling
    pos = start[:, None] + steps[None] * (length / out)[:, None]  # [R, n] sample coordinates
    valid = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    edge = low >= size - 1
    low = torch.where(edge, size - 1, low)
    high = torch.where(edge, low, low + 1)
    pos = torch.where(edge, low.to(pos.dtype), pos)
    frac = (pos - low) * valid
    rest = (1 - (pos - low)) * valid
    w = pos.new_zeros(len(pos), n, size)
    w.scatter_add_(2, low[..., None], rest[..., None])
    w.scatter_add_(2, high[..., None], frac[..., None])
    return w.view(len(pos), out, sampling, size).mean(2)


def roi_align_separable(features: torch.Tensor, boxes: list[torch.Tensor], output_size: int,
                        spatial_scale: float, sampling_ratio: int) -> torch.Tensor:
    """torchvision's ``roi_align(features, boxes, output_size, spatial_scale, sampling_ratio,
    aligned=False)`` for a list of per-image boxes.

    Args:
        features: [B, C, H, W].
        boxes: B tensors [R_b, 4] of (x1, y1, x2, y2) in input pixels.
        output_size: P (square bins).
        spatial_scale: feature pixels per input pixel (1/16 for C4).
        sampling_ratio: samples per bin along each axis (> 0).
    Returns:
        [Σ R_b, C, P, P], RoIs in image order.
    """
    if sampling_ratio <= 0:
        raise AblateError("separable RoIAlign needs a fixed sampling_ratio > 0 (got "
                          f"{sampling_ratio}); use rcnn.roi_align: torchvision")
    _, c, h, w = features.shape
    p = output_size
    outs = []
    for fmap, bx in zip(features, boxes):
        if len(bx) == 0:
            outs.append(fmap.new_zeros(0, c, p, p))
            continue
        b = bx.to(fmap.dtype) * spatial_scale
        wy = _axis_weights(b[:, 1], (b[:, 3] - b[:, 1]).clamp(min=1), h, p, sampling_ratio)
        wx = _axis_weights(b[:, 0], (b[:, 2] - b[:, 0]).clamp(min=1), w, p, sampling_ratio)
        r = len(bx)
        # rows: one GEMM [R·P, H] @ [H, C·W] → [R, P, C, W]
        rows = (wy.reshape(r * p, h) @ fmap.permute(1, 0, 2).reshape(h, c * w)).view(r, p, c, w)
        # columns: per RoI [P·C, W] @ [W, P] → [R, P, C, P] → [R, C, P, P]
        out = torch.bmm(rows.view(r, p * c, w), wx.transpose(1, 2)).view(r, p, c, p)
        outs.append(out.permute(0, 2, 1, 3))
    return torch.cat(outs).contiguous()


class SeparableRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` over one feature map (the C4 layout), computed by
    ``roi_align_separable``; several maps (FPN) need the level mapping: use torchvision's."""

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        if len(self.featmap_names) != 1:
            raise AblateError("separable RoIAlign pools one feature map (C4); FPN levels use "
                              "torchvision's MultiScaleRoIAlign")
        feat = x[self.featmap_names[0]]
        return roi_align_separable(feat, boxes, self.output_size[0],
                                   self._scale(feat, image_shapes), self.sampling_ratio)

    @staticmethod
    def _scale(feat: torch.Tensor, image_shapes: list[tuple[int, int]]) -> float:
        """torchvision's ``_infer_scale``: 2^round(log2(feature side / image side)), against
        the largest height and width of the batch's images."""
        h = max(s[0] for s in image_shapes)
        w = max(s[1] for s in image_shapes)
        scales = [2.0 ** round(math.log2(float(f) / float(s)))
                  for f, s in zip(feat.shape[-2:], (h, w))]
        if scales[0] != scales[1]:
            raise AblateError(f"feature map {tuple(feat.shape[-2:])} and images {h}×{w} give "
                              "different scales per axis")
        return scales[0]
