"""Encoded images for ``decode: device``: the workers read a file's bytes and the training
process decodes a batch of them at once on its device (``torchvision.io.decode_jpeg``: nvJPEG on
CUDA, libjpeg on CPU).

* ``read_encoded``: a file's bytes and (height, width) from its JPEG header; a file the device
  decoder may not take (PNG, progressive, grey, CMYK JPEG) comes decoded as pixels instead;
* ``pack`` / ``unpack``: the items of a batch as one flat uint8 buffer (one shared-memory block
  through the worker queue and one pinned host→device copy) and back;
* ``decode_batch``: the buffer's JPEGs decoded in one call on the device, pixels copied there;
* ``decode_mode``: the ``data.decode`` option, checked.

Used by the ImageNet loader (``ablate.data.pipelines.classification``) and the detection loaders
(``ablate.data.pipelines.detection``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from ablate.errors import AblateError

DECODE_MODES = ("worker", "device")

_SOF_SEQUENTIAL = (0xC0, 0xC1)  # baseline and extended sequential Huffman JPEGs
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7 carry no length field


def jpeg_size(data: torch.Tensor | bytes) -> tuple[int, int] | None:
    """``(height, width)`` of a sequential three-component (colour) JPEG from its header, or None
    for anything else (PNG, progressive, grey, CMYK, truncated), without decoding.

    Args:
        data: the file's bytes (a uint8 tensor as ``read_file`` returns, or bytes).
    """
    buf = memoryview(data.numpy() if isinstance(data, torch.Tensor) else data).cast("B")
    if len(buf) < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = (buf[i + 2] << 8) | buf[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if (marker not in _SOF_SEQUENTIAL or i + 10 > len(buf) or buf[i + 4] != 8
                    or buf[i + 9] != 3):  # 8-bit samples, three components
                return None
            h, w = (buf[i + 5] << 8) | buf[i + 6], (buf[i + 7] << 8) | buf[i + 8]
            return (h, w) if h and w else None
        i += 2 + length
    return None


def read_encoded(path: str | os.PathLike, decode: Callable[[str], torch.Tensor]
                 ) -> tuple[torch.Tensor, tuple[int, int]]:
    """A file's bytes (uint8 ``[N]``) and its (height, width), or, for a file ``jpeg_size``
    rejects, its pixels (``decode(path)``: uint8 ``[3, H, W]``) and their size."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*image decoding and encoding",
                                category=DeprecationWarning)
        data = read_file(os.fspath(path))
    size = jpeg_size(data)
    if size is None:
        data = decode(os.fspath(path))
        size = (int(data.shape[-2]), int(data.shape[-1]))
    return data, size


def pack(data: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """One flat uint8 buffer of ``data``'s tensors, and their shapes (``unpack`` inverts)."""
    return torch.cat([d.reshape(-1) for d in data]), [tuple(d.shape) for d in data]


def unpack(data: torch.Tensor, shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    """Split ``pack``'s buffer back into the items' tensors (views)."""
    parts = torch.split(data, [int(np.prod(s)) for s in shapes])
    return [p.view(s) for p, s in zip(parts, shapes)]


def decode_batch(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Decode the encoded JPEGs (uint8 ``[N]``) of ``data`` on ``device`` in one call; pixels
    (uint8 ``[3, H, W]``, decoded by a worker) are copied there. Returns RGB uint8 images."""
    out: list[torch.Tensor | None] = [None] * len(data)
    jpegs = [k for k, d in enumerate(data) if d.dim() == 1]
    if jpegs:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*image decoding and encoding",
                                    category=DeprecationWarning)
            images = decode_jpeg([data[k] for k in jpegs], mode=ImageReadMode.RGB,
                                 device=device)
        for k, image in zip(jpegs, images):
            out[k] = image
    for k, d in enumerate(data):
        if out[k] is None:
            out[k] = d.to(device, non_blocking=True)
    return out  # type: ignore[return-value]


def decode_mode(decode: Any, what: str) -> str:
    """``decode`` if it is one of ``DECODE_MODES``, else an ``AblateError`` naming ``what``."""
    if decode not in DECODE_MODES:
        raise AblateError(f"{what}: data.decode must be one of {', '.join(DECODE_MODES)}; "
                          f"got {decode!r}")
    return decode
