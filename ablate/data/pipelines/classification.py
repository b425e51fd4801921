"""The classification pipeline over an ImageFolder tree (ImageNet), as in
"Bag of Tricks for Image Classification" (He et al., CVPR 2019, Sec. 2.1) as released in
GluonCV's ``train_imagenet.py`` (and fb.resnet.torch before it).

The tree's layout, classes and file lists: ``ablate.data.datasets.imagenet``.

* Train: RandomResizedCrop(``train_size``, area 0.08–1, aspect 3/4–4/3) → horizontal flip →
  ColorJitter(brightness, contrast, saturation 0.4, random order) → PCA lighting noise
  (AlexNet's eigen-decomposition of ImageNet RGB, α ~ N(0, 0.1²)) → normalise. The jitter is
  the released code's; the paper's text names hue, saturation and brightness.
* Val: resize the shorter side to ``eval_resize`` (256), centre crop ``eval_size`` (224);
  Inception-V3 uses 342 / 299.

Where the work happens: DataLoader workers read the file bytes, decode them (torchvision.io;
PIL only for what it cannot decode), crop, flip and jitter them into uint8 tensors, and draw
the lighting α, returning its per-channel offset. On the device the uint8 batch becomes float,
gets the offset and the normalisation in one step (``normalize``) and optionally channels-last:
uint8 crosses the worker queue and the host→device copy, 4× less than float. The jitter works on
floats and rounds once to uint8; the lighting offset is added in float without clamping, as
fb.resnet adds it to float images.

``decode: device`` moves the decoding and the augmentation to the training device, for GPUs that
train faster than the host's cores decode: the workers only read the file bytes, parse the JPEG
header for the image size and draw the item's crop, flip, jitter and lighting parameters (the
same draws, in the same order, as the worker path); the training process decodes the batch's
JPEGs in one call (``torchvision.io.decode_jpeg`` on the device: nvJPEG on CUDA), crops, resizes
and flips each image there and jitters the batch at once (``jitter_batch``). Files the device
decoder may not take — PNG, progressive, grey or CMYK JPEGs — are decoded in the worker as
before and join the batch as pixels. On CPU the same path runs in the training process (slower
there: it is for accelerators). Pixels agree with the worker path to a level (float rounding
order; nvJPEG's inverse DCT differs from libjpeg's by a level or two).

Randomness: item i of epoch e draws from a generator seeded by (seed, e, i) (``item_generator``),
so batches do not depend on the number of workers and a resumed run replays the same crops.
Sharding follows ``DistributedSampler``: training shuffles with seed + epoch, pads by wrapping
and drops the last partial batch; evaluation gives rank r every world-th image, without padding,
so each val image is counted exactly once when the task sums its top-k counts over ranks.

``train_subset`` / ``test_subset`` (smoke tests, proxies) keep the first N files in
class-interleaved order (the first file of every class, then the second, …), so that even a
small subset covers many classes; the choice does not depend on the seed.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from ablate.data.datasets.imagenet import interleaved_first, list_images
from ablate.data.loading import (DeviceLoader, SharedEpoch, global_rng_from,
                                 item_generator)
from ablate.data.encoded import decode_batch, decode_mode, pack, read_encoded, unpack
from ablate.errors import AblateError

# AlexNet's PCA of ImageNet RGB pixels (0–1 scale), as in fb.resnet.torch and GluonCV:
# eigenvalues, and eigenvectors as the columns of EIGVEC (rows are R, G, B).
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = ((-0.5675, 0.7192, 0.4009),
          (-0.5808, -0.0045, -0.8140),
          (-0.5836, -0.6948, 0.4203))




# --- pixels ----------------------------------------------------------------------------------

def decode_rgb(path: str) -> torch.Tensor:
    """Read and decode an image as RGB uint8 ``[3, H, W]`` (grey and CMYK JPEGs converted).

    torchvision.io decodes JPEG (incl. CMYK and grey) and PNG by content, not by extension
    (one ImageNet ``.JPEG`` is a PNG); PIL is the fallback for anything else.
    """
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec (not installed here)
        warnings.filterwarnings("ignore", message=".*image decoding and encoding",
                                category=DeprecationWarning)
        data = read_file(path)
        try:
            return decode_image(data, mode=ImageReadMode.RGB)
        except RuntimeError:
            pass
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise AblateError(f"cannot decode image {path}: {e}") from e
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def _size_only(height: int, width: int) -> torch.Tensor:
    """A tensor of shape ``[3, height, width]`` without memory, for v2's ``make_params``."""
    return torch.empty((), dtype=torch.uint8).expand(3, height, width)


class TrainTransform:
    """The paper's training crop, flip and colour jitter on uint8 ``[3, H, W]`` (global RNG).

    RandomResizedCrop (antialiased bilinear) → horizontal flip (p 0.5) → ColorJitter of
    brightness, contrast and saturation in random order. The jitter runs on floats and rounds
    once at the end: v2's uint8 kernels truncate after every step and are slower.

    Args:
        size: output side.
        scale, ratio: RandomResizedCrop's area and aspect ranges.
        flip: random horizontal flip.
        jitter: brightness, contrast and saturation strength (0 = none).
    """

    def __init__(self, size: int, *, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), flip: bool = True,
                 jitter: float = 0.4) -> None:
        self.crop = v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio),
                                         antialias=True)
        self.flip = v2.RandomHorizontalFlip() if flip else None
        self.jitter = (v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)
                       if jitter else None)

    def draw(self, height: int, width: int) -> dict[str, Any]:
        """The random parameters for an image of this size, from the global RNG, drawn as
        ``__call__`` draws them: crop box, flip, then the jitter's order and factors."""
        params: dict[str, Any] = {"crop": self.crop.make_params([_size_only(height, width)])}
        params["flip"] = self.flip is not None and bool(torch.rand(1) < self.flip.p)
        if self.jitter is not None:
            j = self.jitter.make_params([])
            params["jitter"] = (tuple(int(k) for k in j["fn_idx"]), j["brightness_factor"],
                                j["contrast_factor"], j["saturation_factor"])
        return params

    def geometry(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Crop, resize and flip uint8 ``[3, H, W]`` (on any device) with ``draw``'s params."""
        image = self.crop.transform(image, params["crop"])
        return v2.functional.horizontal_flip(image) if params["flip"] else image

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = self.crop(image)
        if self.flip is not None:
            image = self.flip(image)
        if self.jitter is not None:
            x = self.jitter(image.float().div_(255))  # float images are 0–1, clamped per step
            image = x.mul_(255).round_().to(torch.uint8)
        return image


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float ``[B, 3, H, W]`` as ``[B, 1, H, W]`` (v2's weights)."""
    r, g, b = x.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _adjust(x: torch.Tensor, op: int, f: torch.Tensor) -> torch.Tensor:
    """One of v2's float colour adjustments with per-image factors ``f`` [B] (float64, on the
    host): 0 brightness, 1 contrast (blend with the mean luma), 2 saturation (with the luma)."""
    a = f.to(torch.float32).view(-1, 1, 1, 1).to(x.device, non_blocking=True)
    if op == 0:
        return x.mul_(a).clamp_(0, 1)
    rest = (1.0 - f).to(torch.float32).view(-1, 1, 1, 1).to(x.device, non_blocking=True)
    grey = _grey(x)
    if op == 1:
        grey = grey.mean((1, 2, 3), keepdim=True)
    return x.mul_(a).add_(grey.mul_(rest)).clamp_(0, 1)


def jitter_batch(images: torch.Tensor, params: Sequence[tuple | None]) -> torch.Tensor:
    """``ColorJitter`` (brightness, contrast, saturation, in each image's own random order) on a
    uint8 batch, rounding once to uint8 as ``TrainTransform`` does.

    Images that share an order are adjusted together (at most 24 groups, each three operations
    with per-image factors); on CPU one image at a time, which keeps it in cache (8× faster
    than the whole batch at 224 px).

    Args:
        images: uint8 ``[B, 3, H, W]`` on any device.
        params: per image, ``draw()["jitter"]``: ``(order, brightness, contrast, saturation)``
            with a factor None for an adjustment that is off; None for no jitter at all.
    Returns:
        uint8 ``[B, 3, H, W]``.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(params):
        if p is not None:
            groups.setdefault(p[0], []).append(i)
    if not groups:
        return images
    out = images.clone()
    step = 1 if images.device.type == "cpu" else len(params)
    for order, members in groups.items():
        for c in range(0, len(members), step):
            idx = members[c:c + step]
            x = images[idx].float().div_(255)  # a gathered copy
            for op in order:
                factors = [params[i][1 + op] for i in idx] if op < 3 else [None]
                if any(f is not None for f in factors):
                    f = torch.tensor([1.0 if f is None else f for f in factors],
                                     dtype=torch.float64)  # 1: an exact identity
                    x = _adjust(x, op, f)
            out[idx] = x.mul_(255).round_().to(torch.uint8)
    return out


class EvalTransform:
    """Resize the shorter side to ``resize`` (antialiased), then centre crop ``size`` × ``size``."""

    def __init__(self, size: int, resize: int) -> None:
        self.t = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size)])

    def draw(self, height: int, width: int) -> None:
        return None

    def geometry(self, image: torch.Tensor, params: None = None) -> torch.Tensor:
        return self.t(image)

    __call__ = geometry


def lighting_offset(alpha: torch.Tensor) -> torch.Tensor:
    """AlexNet PCA lighting noise: the RGB offset ``EIGVEC @ (alpha * EIGVAL)`` (0–1 scale).

    Args:
        alpha: float ``[..., 3]``, drawn from N(0, std²) (std 0.1 in the paper).
    Returns:
        float ``[..., 3]``, added to every pixel of the image (× 255 on the 0–255 scale).
    """
    eigval = torch.tensor(EIGVAL, dtype=alpha.dtype)
    return (alpha * eigval) @ torch.tensor(EIGVEC, dtype=alpha.dtype).T


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              offset: torch.Tensor | None = None) -> torch.Tensor:
    """``(images + 255·offset − mean) / std`` in float.

    Args:
        images: uint8 ``[B, 3, H, W]``.
        mean, std: ``[1, 3, 1, 1]`` on the 0–255 scale.
        offset: float ``[B, 3]`` lighting offsets on the 0–1 scale, or None.
    """
    shift = mean if offset is None else mean - 255 * offset[:, :, None, None]
    return (images.float() - shift) / std


# --- dataset and loader ----------------------------------------------------------------------

class ImageFolderSplit(Dataset):
    """One split of the tree: item i is ``(uint8 [3, S, S], label, offset float [3] or None)``.

    File names are kept as one fixed-width bytes array (no per-item Python objects, whose
    reference counts would copy the pages into every forked worker).

    Args:
        folder: the split folder (``<root>/train``).
        classes: class folder names, in label order.
        transform: applied to the decoded uint8 image.
        random: ``transform`` draws random numbers (run it under the item's generator).
        lighting: std of the lighting α; 0 = no offset (None in the items).
        subset: keep ``interleaved_first(labels, subset)``.
        seed: base seed of the per-item generators.
        decode: ``"worker"``, or ``"device"``: items are ``(bytes or pixels, label, offset,
            params)`` — the file's bytes (uint8 ``[N]``) where ``encoded.jpeg_size`` reads its
            size, else the decoded uint8 ``[3, H, W]``, and ``transform.draw``'s parameters —
            for the loader to decode and transform on its device.
    """

    def __init__(self, folder: str | os.PathLike, classes: Sequence[str], *,
                 transform: TrainTransform | EvalTransform, random: bool = False,
                 lighting: float = 0.0, subset: int | None = None, seed: int = 0,
                 decode: str = "worker") -> None:
        self.folder = str(folder)
        names: list[bytes] = []
        counts = []
        for c in classes:
            files = list_images(os.path.join(self.folder, c))
            names += [os.fsencode(f"{c}/{f}") for f in files]
            counts.append(len(files))
        self.counts = counts  # per class, before ``subset``
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
        keep = interleaved_first(labels, subset)
        self.names = np.array(names, dtype=bytes)[keep] if names else np.array([], dtype=bytes)
        self.labels = labels[keep]
        self.classes = tuple(classes)
        self.transform, self.random, self.lighting = transform, random, float(lighting)
        self.seed, self.decode = seed, decode_mode(decode, "ImageNet")
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the per-item generators (shared with the workers)."""
        self._epoch.set(epoch)

    def path(self, i: int) -> str:
        return os.path.join(self.folder, os.fsdecode(self.names[i]))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple:
        if self.decode == "device":
            return self._encoded_item(i)
        image, label = decode_rgb(self.path(i)), int(self.labels[i])
        if not (self.random or self.lighting):
            return self.transform(image), label, None
        g = item_generator(self.seed, self._epoch.get(), i)
        with global_rng_from(g):  # v2 draws from the global RNG
            image = self.transform(image)
        return image, label, self._offset(g)

    def _offset(self, g: torch.Generator) -> torch.Tensor | None:
        return lighting_offset(torch.randn(3, generator=g) * self.lighting) \
            if self.lighting else None

    def _encoded_item(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor | None, Any]:
        data, size = read_encoded(self.path(i), decode_rgb)
        label = int(self.labels[i])
        if not (self.random or self.lighting):
            return data, label, None, self.transform.draw(*size)
        g = item_generator(self.seed, self._epoch.get(), i)
        with global_rng_from(g):
            params = self.transform.draw(*size)
        return data, label, self._offset(g), params


def collate(samples: Sequence[tuple[torch.Tensor, int, torch.Tensor | None]]
            ) -> dict[str, torch.Tensor]:
    """``{'image': uint8 [B, 3, S, S], 'label': int64 [B]}`` plus ``lighting`` [B, 3] if any."""
    images, labels, offsets = zip(*samples)
    batch = {"image": torch.stack(images), "label": torch.tensor(labels, dtype=torch.int64)}
    if offsets[0] is not None:
        batch["lighting"] = torch.stack(offsets)
    return batch


def collate_encoded(samples: Sequence[tuple]) -> dict[str, Any]:
    """``decode: device`` items: ``{'data': uint8 [N], 'shapes': [...], 'params': [...],
    'label': int64 [B]}`` plus ``lighting`` [B, 3] if any.

    The items' bytes and pixels travel as one flat buffer (``unpack`` splits it), so a batch
    crosses the worker queue as one shared-memory block rather than one per image.
    """
    data, labels, offsets, params = zip(*samples)
    flat, shapes = pack(data)
    batch = {"data": flat, "shapes": shapes, "params": list(params),
             "label": torch.tensor(labels, dtype=torch.int64)}
    if offsets[0] is not None:
        batch["lighting"] = torch.stack(offsets)
    return batch


class ImageFolderLoader(DeviceLoader):
    """Batches ``{'image': float [B, 3, S, S] normalised, 'label': int64 [B]}`` for one rank
    (sharding, epochs and workers: ``DeviceLoader``)."""

    def __init__(self, dataset: ImageFolderSplit, batch_size: int, *, train: bool,
                 **kw: Any) -> None:
        super().__init__(dataset, batch_size, train=train,
                         collate_fn=collate_encoded if dataset.decode == "device" else collate,
                         **kw)

    def transform_on_device(self, batch: dict[str, Any]) -> torch.Tensor:
        """``decode: device``: decode, crop, flip and jitter a ``collate_encoded`` batch on the
        loader's device; uint8 ``[B, 3, S, S]``."""
        t = self.dataset.transform
        images = decode_batch(unpack(batch["data"], batch["shapes"]), self.device)
        images = torch.stack([t.geometry(im, p) for im, p in zip(images, batch["params"])])
        if isinstance(t, TrainTransform) and t.jitter is not None:
            images = jitter_batch(images, [p["jitter"] for p in batch["params"]])
        return images

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            if "data" in batch:
                images = self.transform_on_device(batch)
            else:
                images = batch["image"].to(self.device, non_blocking=True)
            lighting = batch.get("lighting")
            if lighting is not None:
                lighting = lighting.to(self.device, non_blocking=True)
            image = normalize(images, self.mean, self.std, lighting)
            yield {"image": image.contiguous(memory_format=self.memory_format),
                   "label": batch["label"].to(self.device, non_blocking=True)}
