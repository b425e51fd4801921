"""Files on disk: decoding an image file, the first missing path of a layout and its error
message, and a lock file (every dataset uses them; detection targets are in ``targets``)."""

from __future__ import annotations

import fcntl
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torchvision.io import ImageReadMode, decode_image

from ablate.errors import AblateError


def load_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file as RGB.

    Args:
        path: a JPEG or PNG file.
    Returns:
        uint8 tensor ``[3, H, W]``.
    """
    path = Path(path)
    if not path.is_file():
        raise AblateError(f"image not found: {path}")
    try:
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec (not installed here);
        # hide that one warning, which would otherwise fire for every image.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*image decoding and encoding",
                                    category=DeprecationWarning)
            return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as e:  # torchvision raises RuntimeError for corrupt files
        raise AblateError(f"cannot decode image {path}: {e}") from e


def missing_path_error(missing: Path, what: str, layout: str) -> AblateError:
    """An ``AblateError`` naming the first missing path and spelling out the expected layout.

    Args:
        missing: the first path that was expected but not found.
        what: the dataset's name, e.g. ``"Pascal VOC"``.
        layout: a small tree of the expected layout (multi-line string).
    """
    return AblateError(f"{what} not found: {missing} does not exist. Expected layout:\n"
                       f"{layout.rstrip()}")


def first_missing(paths: Iterable[Path]) -> Path | None:
    """Return the first of ``paths`` that does not exist, or None."""
    for p in paths:
        if not p.exists():
            return p
    return None


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed), e.g. so that concurrent
    ranks build a generated dataset only once."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
