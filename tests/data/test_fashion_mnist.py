"""The idx reader behind Fashion-MNIST: exact values, big-endian dtypes, both inflaters, errors."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch

from ablate.data import fashion_mnist as fm
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
    (gzip.compress(_idx(0x08, (10,), bytes(7))), "truncated idx file (7 of 10 values)"),
    (b"not gzip at all", "not a readable gzip file"),
    (gzip.compress(_idx(0x08, (10,), bytes(10)))[:-12], "not a readable gzip file"),
])
def test_errors_name_the_file(tmp_path, data, message):
    p = tmp_path / "bad-idx1-ubyte.gz"
    p.write_bytes(data)
    with pytest.raises(AblateError) as e:
        fm.read_idx(p)
    assert str(p) in str(e.value) and message in str(e.value)
