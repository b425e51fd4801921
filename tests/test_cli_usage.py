"""A new user's first commands, run as the installed ``ablate`` entry point in a subprocess:
help, version, and every usage error as usage plus one line, exit code 2, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate import __version__

ABLATE = Path(sys.executable).parent / "ablate"


def ablate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    assert ABLATE.is_file(), f"{ABLATE} missing: install the package (make setup)"
    return subprocess.run([str(ABLATE), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "100", **(env or {})})


def usage_error(usage: str, error: str, sub: str = "") -> str:
    """What click prints: the usage of ``ablate{sub}``, where to get help, then the error line
    (which starts with ``error``: its wording after that varies with the typer release)."""
    return f"Usage: ablate{sub} {usage}\nTry 'ablate{sub} -h' for help.\n\nError: {error}"


@pytest.mark.parametrize("args,stderr", [
    (("bogus",), usage_error("[OPTIONS] COMMAND [ARGS]...", "No such command 'bogus'.")),
    (("run",), usage_error("[OPTIONS] {STUDY}", "Missing argument 'STUDY'.", " run")),
    (("run", "--bogus"), usage_error("[OPTIONS] {STUDY}", "No such option: --bogus",
                                     " run")),
    (("run", "fmnist_refinements", "--seeds", "two"),
     usage_error("[OPTIONS] {STUDY}",
                 "Invalid value for '--seeds': ", " run")),
    (("run", "fmnist_refinements", "-j", "0"),
     usage_error("[OPTIONS] {STUDY}",
                 "Invalid value for '--parallel' / '-j': ", " run")),
    (("report",), usage_error("[OPTIONS] {PATH}", "Missing argument 'PATH'.",
                              " report")),
    (("report", "studies/fmnist_refinements.yaml", "--formt", "csv"),
     usage_error("[OPTIONS] {PATH}",
                 "No such option: --formt", " report")),
    (("data", "prepre"), usage_error("[OPTIONS] COMMAND [ARGS]...",
                                     "No such command 'prepre'.", " data")),
])
def test_usage_errors_print_usage_and_one_line(args, stderr):
    r = ablate(*args)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith(stderr) and r.stderr.count("\n") == 4, r.stderr


def test_no_arguments_prints_the_help_and_exits_2():
    r = ablate()
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("Usage: ablate [OPTIONS] COMMAND [ARGS]...\n")
    for command in ("run", "train", "report", "evaluate", "list", "data"):
        assert f"\n  {command} " in r.stderr


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_names_commands_and_environment(flag):
    r = ablate(flag)
    assert (r.returncode, r.stderr) == (0, "")
    assert "--version" in r.stdout and "ABLATE_RESULTS" in r.stdout and "ABLATE_DATA" in r.stdout


@pytest.mark.parametrize("command", ["run", "train", "report"])
def test_command_help_shows_the_results_default_and_its_variable(command):
    r = ablate(command, "-h")
    assert (r.returncode, r.stderr) == (0, "")
    flat = " ".join(r.stdout.split())
    assert "--results <path> Results root. [env var: ABLATE_RESULTS; default: results]" in flat


def test_version():
    from importlib.metadata import version

    r = ablate("--version")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith(f"ablate {__version__} (torch {version('torch')}, "
                               f"torchvision {version('torchvision')}, ")


def test_user_error_is_one_line_exit_2():
    r = ablate("run", "no_such_study")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("error: study 'no_such_study' not found") and \
        r.stderr.count("\n") == 1


def test_train_results_flag_and_variable(cli, tmp_path, fmnist_root, monkeypatch):
    args = ("launcher=inprocess", f"data.root={fmnist_root}", "data.train_subset=64",
            "data.test_subset=50", "train.batch_size=32", "train.epochs=1")
    r = cli("train", "--results", tmp_path / "flag", *args)
    assert r.code == 0, r.out + r.err
    (run,) = (tmp_path / "flag" / "train").glob("*/metrics.json")
    assert json.loads(run.read_text())["status"] == "completed"
    monkeypatch.setenv("ABLATE_RESULTS", str(tmp_path / "env"))
    r = cli("train", *args, "seed=1")
    assert r.code == 0, r.out + r.err
    assert len(list((tmp_path / "env" / "train").glob("*/metrics.json"))) == 1


def test_a_failed_train_run_says_why_without_a_traceback(cli, tmp_path, fmnist_root):
    r = cli("train", "--results", tmp_path, "launcher=inprocess", f"data.root={fmnist_root}",
            "data.train_subset=64", "data.test_subset=50", "train.batch_size=32",
            "train.epochs=1", "model.in_chans=3")  # a model that cannot take 1-channel images
    (run,) = (tmp_path / "train").iterdir()
    reason = json.loads((run / "metrics.json").read_text())["reason"]
    assert r.code == 1 and reason.startswith("RuntimeError: Given groups=1")
    assert f"FAILED: {reason}" in r.out.replace("\n", " ")
    assert r.err == f"error: 1 run failed:\n  {run}: {reason}\n"
    assert "Traceback" in (run / "stdout.log").read_text()  # the details stay in the log


def test_train_runs_started_in_the_same_second_get_their_own_folders(cli, tmp_path, fmnist_root,
                                                                     monkeypatch):
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "2026-01-02_03-04-05")  # one second
    args = ("train", "--results", tmp_path, "launcher=inprocess", f"data.root={fmnist_root}",
            "data.train_subset=64", "data.test_subset=50", "train.batch_size=32",
            "train.epochs=1")
    for _ in range(3):
        assert cli(*args).code == 0
    runs = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert runs == ["2026-01-02_03-04-05", "2026-01-02_03-04-05_1", "2026-01-02_03-04-05_2"]
    assert all((tmp_path / "train" / p / "metrics.json").is_file() for p in runs)
