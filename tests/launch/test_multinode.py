"""``launcher=multinode``: the exact torchrun command of a node, settings refused before anything
runs, and a real 2-node run on localhost (two `ablate run` processes, one torchrun agent and one
gloo worker each, c10d rendezvous through node 0) in which only node 0 writes results and node
1 follows node 0's decisions."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ablate.config import compose, config_hash
from ablate.launch import describe, multinode, nproc_for
from ablate.study.spec import load_study
from tests.conftest import ROOT

STUDY = ROOT / "studies" / "fmnist_refinements.yaml"
STEP = load_study(STUDY).steps[0].id
RUN = Path("/r/fmnist_refinements/smoke") / STEP / "seed0" / "config.yaml"


def _launcher(*overrides: str) -> tuple[dict, str]:
    cfg = compose(["launcher=multinode", *overrides])
    return OmegaConf.to_container(cfg.launcher, resolve=True), config_hash(cfg)


def test_torchrun_command_of_a_node():
    lc, h = _launcher("launcher.rdzv_endpoint=node0.cluster:29400", "launcher.nnodes=4",
                      "launcher.node_rank=2", "launcher.local_addr=10.0.0.3",
                      "launcher.join_timeout=120")
    assert nproc_for(lc, "8") == 8
    assert multinode.torchrun_command(RUN, lc, 8, h) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=4", "--nproc-per-node=8",
        "--rdzv-backend=c10d", "--rdzv-endpoint=node0.cluster:29400", f"--rdzv-id=ablate-{h}",
        "--rdzv-conf=is_host=false,join_timeout=120", "--local-addr=10.0.0.3",
        "-m", "ablate.worker", str(RUN)]
    assert multinode.worker_env(lc) == {"ABLATE_NODE_RANK": "2"}
    assert describe(lc, 8, RUN, h) == (
        f"ABLATE_NODE_RANK=2 torchrun --nnodes=4 --nproc-per-node=8 --rdzv-backend=c10d "
        f"--rdzv-endpoint=node0.cluster:29400 --rdzv-id=ablate-{h} "
        f"--rdzv-conf=is_host=false,join_timeout=120 --local-addr=10.0.0.3 -m ablate.worker {RUN}")
    # every node computes the same rendezvous id: the launcher is not part of the hash
    assert _launcher("launcher.rdzv_endpoint=node0.cluster:29400", "launcher.node_rank=0")[1] == h
    assert multinode.run_key(RUN.parent) == f"fmnist_refinements/smoke/{STEP}/seed0"


@pytest.mark.parametrize("overrides,message", [
    ((), "launcher.rdzv_endpoint: set it to host:port of node 0"),
    (("launcher.rdzv_endpoint=node0",), "launcher.rdzv_endpoint must be host:port"),
    (("launcher.rdzv_endpoint=node0:29400", "launcher.node_rank=2"),
     "launcher.node_rank must be 0 … 1"),
    (("launcher.rdzv_endpoint=node0:29400", "launcher.rdzv_backend=static"),
     "only c10d is supported"),
])
def test_bad_settings_exit_2(cli, results, fmnist_root, overrides, message):
    args = ["run", STUDY, "--scale", "smoke", "--only", STEP, "--results", results,
            "--set", f"data.root={fmnist_root}", "--set", "launcher=multinode", "--dry-run"]
    for o in overrides:
        args += ["--set", o]
    r = cli(*args)
    assert r.code == 2 and message in r.err, r.out + r.err
    assert not results.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(results: Path, fmnist_root: Path, spool: Path) -> tuple[subprocess.Popen, str]:
    """Start node 1 in the background, run node 0; returns node 1's process and node 0's
    output."""
    args = [sys.executable, "-m", "ablate", "run", str(STUDY), "--scale", "smoke", "--only",
            STEP, "--results", str(results), "--set", f"data.root={fmnist_root}",
            "--set", "train.threads=1", "--set", "launcher=multinode",
            "--set", f"launcher.rdzv_endpoint=127.0.0.1:{_free_port()}",
            "--set", "launcher.join_timeout=60", "--set", f"launcher.spool={spool}"]
    follower = subprocess.Popen([*args, "--set", "launcher.node_rank=1"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        leader = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=180)
        follower.wait(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert leader.returncode == 0, leader.stdout[-3000:] + leader.stderr[-3000:]
    return follower, leader.stdout


def test_two_nodes_on_localhost(results, fmnist_root, tmp_path):
    spool = tmp_path / "spool"
    follower, out0 = _two_nodes(results, fmnist_root, spool)
    out1 = follower.stdout.read()
    key = f"fmnist_refinements/smoke/{STEP}/seed0"
    assert follower.returncode == 0, out1
    assert f"node 1: {key}: done" in out1
    run = results / key
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "completed" and m["world_size"] == 2
    assert "epoch 2/2" in out0
    # only node 0 wrote into the results folder; node 1's files are in its spool
    written = {str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()}
    assert written == {"fmnist_refinements/smoke/.lock", "fmnist_refinements/smoke/study.yaml",
                       "fmnist_refinements/smoke/study.source",
                       *(f"{key}/{f}" for f in (".run.lock", "config.yaml", "overrides.yaml",
                                                "inputs.json", "log.csv", "stdout.log",
                                                "metrics.json", "checkpoints/last.pt"))}
    assert {str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file()} == \
        {f"{key}/config.yaml", f"{key}/stdout.log"}
    spooled = OmegaConf.load(spool / key / "config.yaml")
    assert spooled.launcher.node_rank == 1
    assert config_hash(spooled) == config_hash(OmegaConf.load(run / "config.yaml"))

    # again: node 0 skips the completed run, and node 1 follows (launches nothing) even though
    # it never looks at the results folder itself
    follower, out0 = _two_nodes(results, fmnist_root, spool)
    out1 = follower.stdout.read()
    assert follower.returncode == 0, out1
    assert f"skip {STEP} seed 0" in out0 and "started" not in out1
