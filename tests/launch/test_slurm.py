"""``launcher=slurm`` through submitit: the sbatch settings of the dry run, settings refused
before anything runs, SLURM's environment mapped onto the worker's, and real jobs through
submitit's local executor (no SLURM): a smoke step end to end, and a second `ablate run` that
re-attaches to the job still running instead of submitting another. Last, the SLURM executor
itself against stand-ins for sbatch/srun/sacct/squeue that run the job on this machine."""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from ablate.config import compose, config_hash
from ablate.launch import slurm
from ablate.study.spec import load_study
from tests.conftest import ROOT

STUDY = ROOT / "studies" / "fmnist_refinements.yaml"
STEP = load_study(STUDY).steps[0].id
LOCAL = ("launcher=slurm", "launcher.executor=local", "launcher.gpus_per_node=0",
         "launcher.timeout_min=10", "train.threads=1")


def _run_args(results, fmnist_root, *overrides):
    args = ["run", STUDY, "--scale", "smoke", "--only", STEP, "--results", results,
            "--set", f"data.root={fmnist_root}"]
    for o in overrides:
        args += ["--set", o]
    return args


def test_dry_run_prints_the_sbatch_settings(cli, results, fmnist_root):
    r = cli(*_run_args(results, fmnist_root, "launcher=slurm", "launcher.partition=gpu",
                       "launcher.nodes=2", "launcher.gpus_per_node=4", "launcher.cpus_per_task=8",
                       "launcher.mem_gb=64", "launcher.timeout_min=120", "launcher.account=proj",
                       "launcher.qos=high", "launcher.constraint=a100",
                       "launcher.additional_parameters={mail-type:END}"), "--dry-run")
    assert r.code == 0, r.err
    run = results / f"fmnist_refinements/smoke/{STEP}/seed0"
    lines = [line.strip() for line in r.out.splitlines()]
    i = lines.index("launch: one SLURM job (submitit), sbatch settings:")
    assert lines[i + 1:i + 16] == [
        "#SBATCH --account=proj", "#SBATCH --constraint=a100", "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-node=4", f"#SBATCH --job-name=ablate-{STEP}-seed0",
        "#SBATCH --mail-type=END", "#SBATCH --mem=64GB", "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4", "#SBATCH --open-mode=append",
        f"#SBATCH --output={run}/slurm/%j_0_log.out", "#SBATCH --partition=gpu",
        "#SBATCH --qos=high", "#SBATCH --signal=USR2@90", "#SBATCH --time=120"]
    assert not results.exists()


@pytest.mark.parametrize("overrides,message", [
    (("launcher=slurm", "launcher.gpus_per_node=4", "launcher.nproc=2"),
     "one process per GPU: nproc 2 ≠ launcher.gpus_per_node 4"),
    (("launcher=slurm", "launcher.executor=cloud"), "launcher.executor must be one of"),
    (("launcher=slurm", "launcher.executor=local", "launcher.nodes=2"),
     "launcher.nodes must be 1"),
    (("launcher=slurm", "+launcher.partiton=gpu"), "did you mean 'partition'"),
])
def test_bad_settings_exit_2(cli, results, fmnist_root, overrides, message):
    r = cli(*_run_args(results, fmnist_root, *overrides), "--dry-run")
    assert r.code == 2 and message in r.err, r.out + r.err
    assert not results.exists()


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has SLURM")
def test_no_sbatch_exits_2_before_anything_runs(cli, results, fmnist_root):
    r = cli(*_run_args(results, fmnist_root, "launcher=slurm"))
    assert r.code == 2 and "no `sbatch` here" in r.err, r.err
    assert not results.exists()


def test_worker_environment_from_slurm():
    job = SimpleNamespace(cluster="slurm", job_id="4242", global_rank=5, local_rank=1,
                          num_tasks=8, num_nodes=2, node=1, hostnames=["gpu-a01", "gpu-a02"])
    env = slurm.dist_env(job)
    port = int(env.pop("MASTER_PORT"))
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                   "MASTER_ADDR": "gpu-a01", "ABLATE_NODE_RANK": "1"}
    assert 20000 <= port < 60000 and int(slurm.dist_env(job)["MASTER_PORT"]) == port
    assert slurm.dist_env(job, master_port=29500)["MASTER_PORT"] == "29500"
    local = SimpleNamespace(**{**vars(job), "cluster": "local"})
    assert slurm.dist_env(local)["MASTER_ADDR"] == "127.0.0.1"


def test_local_executor_runs_a_smoke_step(cli, results, fmnist_root):
    r = cli(*_run_args(results, fmnist_root, *LOCAL))
    assert r.code == 0, r.out + r.err
    run = results / f"fmnist_refinements/smoke/{STEP}/seed0"
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "completed" and m["world_size"] == 1
    record = json.loads((run / "slurm_job.json").read_text())
    assert record["executor"] == "local" and record["config_hash"] == m["config_hash"]
    log = (run / "stdout.log").read_text()
    assert log.count('"event": "done"') == 1 and record["offset"] == \
        (run / "slurm" / f"{record['job_id']}_0_log.out").stat().st_size
    assert "epoch 2/2" in r.out and f"submitted job {record['job_id']}" in r.err
    again = cli(*_run_args(results, fmnist_root, *LOCAL))
    assert again.code == 0 and f"skip {STEP} seed 0" in again.out


def test_a_second_run_reattaches_to_the_running_job(tmp_path, fmnist_root, capsys):
    """An `ablate run` that stopped left its job running: the next one follows that job."""
    cfg = compose([f"data.root={fmnist_root}", "data.train_subset=512", "data.test_subset=256",
                   "train.batch_size=128", "train.epochs=2", *LOCAL])
    run = tmp_path / "study" / "smoke" / "step" / "seed0"
    run.mkdir(parents=True)
    config = run / "config.yaml"
    OmegaConf.save(cfg, config)
    launcher = OmegaConf.to_container(cfg.launcher, resolve=True)
    job, _ = slurm.submit(config, launcher, 1)
    slurm._LOCAL_PROCS.pop(job.job_id)  # as if another process had submitted it
    assert slurm.active_job(run) == job.job_id

    lines: list[str] = []
    assert slurm.run(config, launcher, 1, lines.append) == 0
    assert f"re-attached to job {job.job_id}" in capsys.readouterr().err
    record = json.loads((run / "slurm_job.json").read_text())
    assert record["job_id"] == job.job_id
    assert len(list((run / "slurm").glob("*_submitted.pkl"))) == 1  # nothing submitted again
    assert any('"event": "done"' in line for line in lines)
    assert (run / "stdout.log").read_text().count('"event": "done"') == 1
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    # a finished job, or a job of another config, is not attached to
    assert slurm.active_job(run) is None
    assert slurm.attach(run, config_hash(cfg)) is None
    assert slurm.attach(Path(run), "0" * 12) is None


FAKE = {  # just enough of SLURM's commands, on this machine, to submit and follow one job
    "sbatch": """
        id=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 700) + 1 ))
        echo $id > "$FAKE_SLURM/counter"
        cp "$1" "$FAKE_SLURM/$id.sh"
        SLURM_JOB_ID=$id setsid bash "$1" > /dev/null 2>&1 < /dev/null &
        echo $! > "$FAKE_SLURM/$id.pid"
        echo "Submitted batch job $id"
    """,
    "srun": """
        while [ "${1#--}" != "$1" ]; do
            case "$1" in --output) out=$2; shift 2;; --error) shift 2;; *) shift;; esac
        done
        out=${out//%j/$SLURM_JOB_ID}; out=${out//%t/0}
        SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 \\
            SLURM_JOB_NODELIST=localhost "$@" >> "$out" 2>&1
    """,
    "sacct": """
        echo "JobID|State|NodeList"
        while [ $# -gt 0 ]; do
            if [ "$1" = -j ]; then
                if kill -0 "$(cat "$FAKE_SLURM/$2.pid")" 2>/dev/null; then s=RUNNING
                else s=COMPLETED; fi
                echo "$2|$s|localhost"; shift
            fi
            shift
        done
    """,
    "squeue": "exit 0",
}


def test_a_fake_slurm_cluster_runs_a_step(cli, results, fmnist_root, tmp_path, monkeypatch):
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in FAKE.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + textwrap.dedent(body))
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    r = cli(*_run_args(results, fmnist_root, "launcher=slurm", "launcher.gpus_per_node=0",
                       "launcher.partition=debug", "launcher.poll_s=1", "train.threads=1"))
    assert r.code == 0, r.out + r.err
    run = results / f"fmnist_refinements/smoke/{STEP}/seed0"
    record = json.loads((run / "slurm_job.json").read_text())
    assert record["executor"] == "slurm" and record["job_id"] == "701"
    assert "#SBATCH --partition=debug" in (state / "701.sh").read_text()
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert "epoch 2/2" in r.out and (run / "stdout.log").read_text().count('"event": "done"') == 1
