"""A study that uses another study's step output: the used step runs first (once), its file is
substituted for ``${uses.<name>}``, and mistakes stop everything before any training."""

from __future__ import annotations

import json
import textwrap

import pytest
from omegaconf import OmegaConf

from tests.conftest import tree_snapshot


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def studies(tmp_path, fmnist_root):
    base = f"""
      model: resnet_tiny_d
      data: fashion_mnist
      data.root: {fmnist_root}
      data.train_subset: 256
      data.test_subset: 128
      train.batch_size: 64
      train.epochs: 1
      train.threads: 1
    """
    _write(tmp_path / "pre.yaml", f"""
        name: t_pre
        metric: top1
        base: {{{", ".join(x.strip() for x in base.strip().splitlines())}}}
        steps:
          - id: pre
    """.replace("{{", "{").replace("}}", "}"))
    _write(tmp_path / "use.yaml", f"""
        name: t_use
        metric: top1
        uses:
          init: {{study: pre.yaml, step: pre}}
        base: {{{", ".join(x.strip() for x in base.strip().splitlines())},
                model.weights: "${{uses.init}}"}}
        steps:
          - id: finetune
    """.replace("{{", "{").replace("}}", "}"))
    return tmp_path


def test_used_step_runs_first_once_and_its_file_is_read(cli, results, studies):
    dry = cli("run", studies / "use.yaml", "--dry-run", "--results", results)
    assert dry.code == 0, dry.err
    assert "uses t_pre full pre seed 0: run" in dry.out and not results.exists()

    r = cli("run", studies / "use.yaml", "--results", results, "--set", "launcher=inprocess")
    assert r.code == 0, r.out + r.err
    pre = results / "t_pre" / "full" / "pre" / "seed0"
    assert json.loads((pre / "metrics.json").read_text())["status"] == "completed"
    run = results / "t_use" / "full" / "finetune" / "seed0"
    cfg = OmegaConf.load(run / "config.yaml")
    assert cfg.model.weights == str(pre / "checkpoints" / "last.pt")
    assert "model.weights: loaded 116 tensors" in (run / "stdout.log").read_text()

    before = tree_snapshot(results)
    again = cli("run", studies / "use.yaml", "--results", results, "--set", "launcher=inprocess")
    assert again.code == 0 and "skip finetune" in again.out
    assert {k: v for k, v in tree_snapshot(results).items() if not k.endswith(".lock")} == \
        {k: v for k, v in before.items() if not k.endswith(".lock")}


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("step: pre", "step: pree"), "uses.init: .*no step 'pree'"),
    (lambda s: s.replace("${uses.init}", "${uses.int}"), "'\\$\\{uses.int\\}' is not declared"),
    (lambda s: s.replace("study: pre.yaml", "study: nothere"), "uses.init: study 'nothere'"),
    (lambda s: s.replace("step: pre}", "step: pre, sed: 1}"), "uses.init: unknown key 'sed'"),
    (lambda s: s.replace("step: pre}", "step: pre, file: ../../x.pt}"), "inside the run"),
])
def test_bad_uses_exit_2_before_anything(cli, results, studies, edit, message):
    p = studies / "use.yaml"
    p.write_text(edit(p.read_text()))
    r = cli("run", p, "--results", results, "--set", "launcher=inprocess")
    assert r.code == 2
    import re
    assert re.search(message, r.err), r.err
    assert not results.exists()
