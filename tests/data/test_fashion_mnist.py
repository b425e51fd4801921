"""The idx reader behind Fashion-MNIST: exact values, big-endian dtypes, both inflaters, errors."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch

from ablate.data.datasets import fashion_mnist as fm
from ablate.errors import AblateError


def _idx(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_uint8_gz_exact(tmp_path):
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx(0x08, (2, 2, 3), bytes(range(12)))))
    t = fm.read_idx(p)
    assert t.dtype == torch.uint8 and t.shape == (2, 2, 3)
    assert t[1, 0].tolist() == [6, 7, 8] and t.sum().item() == 66


def test_int32_big_endian_plain(tmp_path):
    p = tmp_path / "y-idx1-int"
    p.write_bytes(_idx(0x0C, (3,), struct.pack(">3i", 1, -2, 70000)))
    t = fm.read_idx(p)
    assert t.dtype == torch.int32 and t.tolist() == [1, -2, 70000]


def test_inflaters_agree(tmp_path, monkeypatch):
    """ISA-L (the default when installed) and zlib read the same tensor."""
    p = tmp_path / "z-idx3-ubyte.gz"
    payload = torch.randint(0, 256, (50, 28, 28), generator=torch.Generator().manual_seed(0),
                            dtype=torch.uint8)
    p.write_bytes(gzip.compress(_idx(0x08, (50, 28, 28), payload.numpy().tobytes())))
    fast = fm.read_idx(p)
    monkeypatch.setattr(fm, "_gunzip", gzip.decompress)
    assert torch.equal(fast, payload) and torch.equal(fm.read_idx(p), payload)


def test_isal_is_used():
    pytest.importorskip("isal")
    assert fm._gunzip is not gzip.decompress


@pytest.mark.parametrize("data, message", [
    (gzip.compress(b"\x01\x00\x08\x01" + b"\x00" * 8), "bad magic number"),
    (gzip.compress(_idx(0x08, (10,), bytes(7))), "7 values where the header says 10: truncated or corrupt"),
    (b"not gzip at all", "not a readable gzip file"),
    (gzip.compress(_idx(0x08, (10,), bytes(10)))[:-12], "not a readable gzip file"),
])
def test_errors_name_the_file(tmp_path, data, message):
    p = tmp_path / "bad-idx1-ubyte.gz"
    p.write_bytes(data)
    with pytest.raises(AblateError) as e:
        fm.read_idx(p)
    assert str(p) in str(e.value) and message in str(e.value)


def _corrupt(root, how):
    """Break one file of a valid tiny Fashion-MNIST folder."""
    from tests.conftest import write_idx

    if how == "truncated":
        p = root / "train-images-idx3-ubyte.gz"
        p.write_bytes(p.read_bytes()[:-100])
    elif how == "not gzip":
        (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain text, not gzip\n")
    elif how == "32x32":
        write_idx(root / "t10k-images-idx3-ubyte.gz", torch.zeros(20, 32, 32, dtype=torch.uint8))
    elif how == "labels 0..12":
        write_idx(root / "train-labels-idx1-ubyte.gz", (torch.arange(60) % 13).to(torch.uint8))
    elif how == "fewer labels":
        write_idx(root / "train-labels-idx1-ubyte.gz", torch.zeros(59, dtype=torch.uint8))
    elif how == "bad magic":
        (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))


@pytest.mark.parametrize("how, message", [
    ("truncated", "train-images-idx3-ubyte.gz: its gzip trailer says"),
    ("not gzip", "t10k-labels-idx1-ubyte.gz: not a readable gzip file"),
    ("32x32", "t10k-images-idx3-ubyte.gz: images of shape (20, 32, 32), expected (N, 28, 28)"),
    ("labels 0..12", "train-labels-idx1-ubyte.gz: labels 0..12, expected 0..9"),
    ("fewer labels", "train-labels-idx1-ubyte.gz: (59,) labels for 60 images in "
                     "train-images-idx3-ubyte.gz"),
    ("bad magic", "train-images-idx3-ubyte.gz: not an idx file (bad header)"),
])
def test_check_reads_headers_sizes_and_labels(cli, tmp_path, how, message):
    from tests.conftest import make_fmnist

    root = make_fmnist(tmp_path / "fm", n_train=60, n_test=20)
    assert fm.check_fashion_mnist(str(root)) == 60
    _corrupt(root, how)
    with pytest.raises(AblateError) as e:
        fm.check_fashion_mnist(str(root))
    assert str(e.value).startswith(str(root / message.split(":")[0])) and message in str(e.value)
    r = cli("data", "prepare", "fashion_mnist", f"data.root={root}")
    assert (r.code, r.out) == (2, "") and message in r.err
