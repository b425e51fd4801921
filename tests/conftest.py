"""Shared fixtures: a tiny Fashion-MNIST-format dataset (real idx.gz files, generated), a
results root, and an in-process CLI runner."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def write_idx(path: Path, t: torch.Tensor) -> None:
    """Write a uint8 tensor as an idx file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, t.ndim]) + struct.pack(f">{t.ndim}I", *t.shape)
    data = header + t.contiguous().numpy().tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(data)


def make_fmnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Class c = a bright horizontal bar at rows 2c..2c+3 plus noise: learnable in seconds."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        labels = labels[torch.randperm(n, generator=g)]
        images = torch.randint(0, 60, (n, 28, 28), generator=g)
        for i, c in enumerate(labels.tolist()):
            images[i, 2 * c + 4:2 * c + 7, 4:24] = 230
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images.to(torch.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels.to(torch.uint8))
    return root


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fmnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


class CLIResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Run ``ablate ARGS`` in this process; returns exit code and captured output."""
    from ablate.cli import main

    def run(*args: str) -> CLIResult:
        monkeypatch.setattr(sys, "argv", ["ablate", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = int(e.code or 0)
        cap = capsys.readouterr()
        return CLIResult(code, cap.out, cap.err)

    return run


def tree_snapshot(root: Path) -> dict[str, float]:
    """Every file under root with its modification time (to prove nothing was touched)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def trick_plugins(task: str, tricks: dict, epochs: int = 1, seed: int = 0):
    """The data plug-ins ``tricks`` (``{name: options}``) give a ``task`` pipeline, as a run
    builds them."""
    from ablate.engine.setup import data_plugins
    from ablate.engine.types import DataContext
    from ablate.tricks import build_tricks

    return data_plugins(build_tricks(tricks, task), DataContext(task, epochs, seed))


@pytest.fixture
def coco_root(tmp_path, monkeypatch):
    """A tiny COCO train2017/val2017 tree under ``$ABLATE_DATA/coco`` (studies plan on it)."""
    from tests.data.test_coco import make_coco_train_val

    root = tmp_path / "data"
    make_coco_train_val(root / "coco")
    monkeypatch.setenv("ABLATE_DATA", str(root))
    return root
