"""Fashion-MNIST from the idx(.gz) files of Debian's ``dataset-fashion-mnist`` package.

Xiao et al., "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms" (2017). The files are read directly (no torchvision download logic): the data root
is ``/usr/share/datasets/fashion-mnist`` unless the config points elsewhere.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

try:  # ISA-L's inflate: 2.5x zlib on the 26 MB train images (benchmarks/RESULTS.md)
    from isal.igzip import decompress as _gunzip
except ImportError:  # pragma: no cover - isal is a dependency; plain zlib gives the same bytes
    _gunzip = gzip.decompress

import torch

from ablate.errors import AblateError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32,
           0x0D: torch.float32, 0x0E: torch.float64}

SETUP_HINT = ("install it with `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or "
              "put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
              "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in a folder and "
              "set data.root=/that/folder")


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read one idx file (optionally gzipped) into a tensor of its stored dtype and shape."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = _gunzip(data)
        except (OSError, EOFError, ValueError) as e:
            raise AblateError(f"{path}: not a readable gzip file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise AblateError(f"{path}: not an idx file (bad magic number)")
    dtype, ndim = _DTYPES[data[2]], data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    t = torch.frombuffer(bytearray(memoryview(data)[offset:]), dtype=torch.uint8)  # one copy
    if dtype != torch.uint8:  # idx stores big-endian multi-byte values
        t = t.view(-1, dtype.itemsize).flip(-1).contiguous().view(dtype)
    expected = 1
    for s in shape:
        expected *= s
    if t.numel() != expected:
        raise AblateError(f"{path}: {t.numel()} values where the header says {expected}: "
                          "truncated or corrupt idx file")
    return t.view(*shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise AblateError(f"Fashion-MNIST not found: no {stem}[.gz] in {root}; {SETUP_HINT}")


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split as ``(images uint8 [N, 28, 28], labels int64 [N])``.

    Args:
        root: folder holding the idx(.gz) files; defaults to the Debian package's folder.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    """
    if split not in _FILES:
        raise AblateError(f"Fashion-MNIST has no split '{split}' (use 'train' or 'test')")
    root = Path(root or DEFAULT_ROOT)
    if not root.is_dir():
        raise AblateError(f"Fashion-MNIST not found: {root} does not exist; {SETUP_HINT}")
    img_stem, lbl_stem = _FILES[split]
    images = read_idx(_find(root, img_stem))
    labels = read_idx(_find(root, lbl_stem)).long()
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise AblateError(f"Fashion-MNIST in {root}: images {tuple(images.shape)} and labels "
                          f"{tuple(labels.shape)} do not match")
    return images, labels


MEAN, STD = (0.2860,), (0.3530,)


def idx_shape(path: Path) -> tuple[int, ...]:
    """The shape in an idx file's header, checked against the file's size (for .gz, the
    uncompressed size in its trailer) without reading the data."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                head = f.read(4)
                ndim = head[3] if len(head) == 4 else 0
                head += f.read(4 * ndim)
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                size = struct.unpack("<I", f.read(4))[0]  # ISIZE: length mod 2**32
        else:
            with open(path, "rb") as f:
                head = f.read(4)
                ndim = head[3] if len(head) == 4 else 0
                head += f.read(4 * ndim)
            size = path.stat().st_size
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise AblateError(f"{path}: not a readable idx file ({e})") from None
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES \
            or len(head) != 4 + 4 * ndim:
        raise AblateError(f"{path}: not an idx file (bad header)")
    shape = struct.unpack(f">{ndim}I", head[4:])
    count = 1
    for s in shape:
        count *= s
    expected = len(head) + count * _DTYPES[head[2]].itemsize
    if size != expected % 2**32:
        where = "its gzip trailer says" if path.suffix == ".gz" else "it holds"
        raise AblateError(f"{path}: {where} {size} bytes, but its header {tuple(shape)} needs "
                          f"{expected}: truncated or corrupt")
    return shape


def check_fashion_mnist(root: str | None = None) -> int:
    """Fail early (before any training) when a file is missing or malformed: idx headers,
    sizes, 28×28 images, as many labels as images, labels 0–9. Returns the training images'
    count."""
    root_path = Path(root or DEFAULT_ROOT)
    if not root_path.is_dir():
        raise AblateError(f"Fashion-MNIST not found: {root_path} does not exist; {SETUP_HINT}")
    counts = {}
    for split, (img_stem, lbl_stem) in _FILES.items():
        img_path, lbl_path = _find(root_path, img_stem), _find(root_path, lbl_stem)
        shape = idx_shape(img_path)
        if len(shape) != 3 or shape[1:] != (28, 28):
            raise AblateError(f"{img_path}: images of shape {shape}, expected (N, 28, 28)")
        labels = read_idx(lbl_path)
        if labels.ndim != 1 or labels.shape[0] != shape[0]:
            raise AblateError(f"{lbl_path}: {tuple(labels.shape)} labels for {shape[0]} images "
                              f"in {img_path.name}")
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASSES):
            raise AblateError(f"{lbl_path}: labels {int(labels.min())}..{int(labels.max())}, "
                              f"expected 0..{len(CLASSES) - 1}")
        counts[split] = shape[0]
    return counts["train"]
