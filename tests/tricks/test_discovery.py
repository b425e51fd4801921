"""Tricks are discovered, not listed: a module in ``ablate/tricks/`` registers its trick with
no edit anywhere else, and every trick has its config group file."""

from __future__ import annotations

import sys
from pathlib import Path

import ablate.tricks
from ablate.config import compose
from ablate.registry import TRICKS
from ablate.tricks import build_tricks, discover

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_registers_its_trick_with_a_config_file():
    modules = set(discover())
    assert modules == set(TRICKS) == {p.stem for p in (ROOT / "conf" / "tricks").glob("*.yaml")}
    assert "mixup" in modules and "random_shapes" in modules


def test_a_new_module_is_a_new_trick(tmp_path, monkeypatch):
    (tmp_path / "probe_erasing.py").write_text(
        "from ablate.registry import TRICKS\n"
        "from ablate.tricks.base import Trick\n\n\n"
        "@TRICKS.register('probe_erasing')\n"
        "class ProbeErasing(Trick):\n"
        "    name = 'probe_erasing'\n\n"
        "    def __init__(self, p: float = 0.5) -> None:\n"
        "        self.p = p\n")
    monkeypatch.setattr(TRICKS, "_items", dict(TRICKS._items))
    monkeypatch.setattr(ablate.tricks, "__path__", [*ablate.tricks.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "ablate.tricks.probe_erasing", raising=False)
    assert "probe_erasing" in discover()
    (t,) = build_tricks({"probe_erasing": {"p": 0.25}}, "classification")
    assert t.describe() == {"p": 0.25}
    assert "probe_erasing" not in compose([]).get("tricks", {})
    sys.modules.pop("ablate.tricks.probe_erasing")
