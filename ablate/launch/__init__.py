"""Launchers start one run (a resolved ``config.yaml`` in its run folder) and wait for it.

| ``launcher.name`` | how the worker starts | module |
| --- | --- | --- |
| ``local`` | ``torchrun --standalone``, or one process forked from the driver | ``local`` |
| ``inprocess`` | the worker runs inside this process (tests, one run at a time) | ``local`` |
| ``multinode`` | one torchrun agent per node, c10d rendezvous through node 0 | ``multinode`` |
| ``slurm`` | one SLURM job per run, through submitit (or its local executor) | ``slurm`` |

What the driver and ``ablate train`` use: :func:`nproc_for` (processes per run and node),
:func:`check` (refuse bad settings before anything runs), :func:`describe` (the dry run),
:func:`device_slots` (disjoint GPU sets for ``--parallel``) and :func:`launch_run` (blocking,
and safe to call from several threads at once). Every launcher writes the run's output to its
``stdout.log`` and hands each line to ``on_line``; the worker's ``@ablate {json}`` lines drive
the progress display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ablate.errors import AblateError, did_you_mean
from ablate.launch._proc import OnLine, cancel_all
from ablate.launch.local import prestart, torchrun_command

LAUNCHERS = ("local", "inprocess", "multinode", "slurm")

__all__ = ["LAUNCHERS", "cancel_all", "check", "describe", "device_slots", "launch_run",
           "nproc_for", "prestart", "resolve_nproc", "torchrun_command"]


def _plain(launcher_cfg: Mapping[str, Any]) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(launcher_cfg, DictConfig):
        return OmegaConf.to_container(launcher_cfg, resolve=True)  # type: ignore[return-value]
    return dict(launcher_cfg)


def _name(cfg: Mapping[str, Any]) -> str:
    name = str(cfg.get("name"))
    if name not in LAUNCHERS:
        raise AblateError(f"unknown launcher '{name}'{did_you_mean(name, LAUNCHERS)} (known: "
                          f"{', '.join(LAUNCHERS)})")
    return name


def resolve_nproc(nproc: str | int) -> int:
    """``auto`` = the visible GPUs, else 1."""
    if str(nproc) == "auto":
        import torch

        return max(torch.cuda.device_count(), 1)
    try:
        n = int(nproc)
    except ValueError:
        raise AblateError(f"nproc must be a positive integer or 'auto', got '{nproc}'") from None
    if n < 1:
        raise AblateError(f"nproc must be a positive integer or 'auto', got '{nproc}'")
    return n


def nproc_for(launcher_cfg: Mapping[str, Any], override: str | int | None = None) -> int:
    """Processes per run (per node): ``--nproc`` if given, else ``launcher.nproc``. ``auto``
    counts this machine's GPUs, except with SLURM, where it is the job's GPUs per node."""
    cfg = _plain(launcher_cfg)
    if _name(cfg) == "slurm":
        from ablate.launch import slurm

        return slurm.tasks_per_node(cfg, override)
    return resolve_nproc(override if override is not None else cfg.get("nproc", 1))


def check_layout(cfg: Any, nproc: int) -> None:
    """A run's batch and BN layout over the processes its launch starts, checked before it
    starts: ``train.batch_size`` splits over processes × ``train.accum_steps``, and
    ``train.bn_group_size`` (after tricks such as ``sync_bn``) is plain, ghost or synchronised
    BN — the last only where the run is on CUDA (``ablate.engine.bn.bn_layout``); and the
    engine's options (``train.compile``, ``train.precision``, ``optim``) name known values."""
    import torch

    from ablate.engine.bn import bn_layout
    from ablate.engine.options import check_options
    from ablate.engine.dist import per_rank_batch
    from ablate.tricks import BuildContext, build_tricks

    check_options(cfg)
    lcfg = _plain(cfg.launcher)
    name = _name(lcfg)
    nodes = int(lcfg.get("nnodes" if name == "multinode" else "nodes", 1)) \
        if name in ("multinode", "slurm") else 1
    world = nproc * nodes
    tcfg = cfg.train
    per_rank = per_rank_batch(tcfg.batch_size, world, tcfg.get("accum_steps", 1))
    device = str(lcfg.get("device", "auto"))
    if device == "auto":
        cuda = (int(lcfg.get("gpus_per_node") or 0) > 0 if name == "slurm"
                else torch.cuda.is_available())
    else:
        cuda = device.startswith("cuda")
    tricks_cfg = cfg.get("tricks") or {}
    tricks = build_tricks(_plain(tricks_cfg) if tricks_cfg else {}, cfg.model.task)
    group = tcfg.get("bn_group_size")
    ctx = BuildContext(task=cfg.model.task, epochs=tcfg.epochs, iters_per_epoch=1,
                       total_batch=tcfg.batch_size, world_size=world)
    for t in tricks:
        group = t.bn_group_size(group, ctx)
    where = f"{world} process{'es' if world > 1 else ''} on {'CUDA' if cuda else 'CPU'}: "
    try:
        bn_layout(group, per_rank, world, "cuda" if cuda else "cpu")
    except AblateError as e:
        raise AblateError(where + str(e)) from None


def check(launcher_cfg: Mapping[str, Any], nproc: int, parallel: int = 1,
          strict: bool = True) -> None:
    """Raise ``AblateError`` for settings that cannot work (``strict``: also for what this
    machine lacks, e.g. ``sbatch``; the dry run is not strict)."""
    cfg = _plain(launcher_cfg)
    name = _name(cfg)
    if parallel < 1:
        raise AblateError(f"--parallel must be at least 1, got {parallel}")
    if name == "local" and cfg.get("mode", "auto") not in ("auto", "torchrun"):
        raise AblateError(f"launcher.mode must be 'auto' or 'torchrun', got '{cfg.get('mode')}'")
    if name == "inprocess":
        if nproc != 1:
            raise AblateError("the inprocess launcher runs one process; use launcher=local")
        if parallel > 1:
            raise AblateError("the inprocess launcher runs one run at a time; use "
                              "launcher=local with --parallel")
    if name == "multinode":
        from ablate.launch import multinode

        multinode.check(cfg, nproc)
    if name == "slurm":
        from ablate.launch import slurm

        slurm.check(cfg, nproc, strict=strict)


def describe(launcher_cfg: Mapping[str, Any], nproc: int, config: Path | None = None,
             config_hash: str = "<hash>") -> str:
    """What :func:`launch_run` would start, for the dry run (several lines for SLURM: the
    ``#SBATCH`` settings submitit would use)."""
    cfg = _plain(launcher_cfg)
    name = _name(cfg)
    config = config or Path("config.yaml")
    if name == "local":
        if nproc == 1 and cfg.get("mode", "auto") == "auto":
            return "1 worker process forked from the driver"
        return "torchrun " + " ".join(torchrun_command(config, nproc)[3:])
    if name == "inprocess":
        return "the worker inside the driver's process"
    if name == "multinode":
        from ablate.launch import multinode

        return multinode.describe(cfg, nproc, config, config_hash)
    from ablate.launch import slurm

    return slurm.describe(cfg, nproc, config)


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` entries."""
    import torch

    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def device_slots(launcher_cfg: Mapping[str, Any], nproc: int,
                 parallel: int) -> list[list[str]] | None:
    """``parallel`` disjoint sets of ``nproc`` GPUs, one per concurrent run; None where runs
    need no devices of their own (one run at a time, CPU, SLURM jobs)."""
    cfg = _plain(launcher_cfg)
    name = _name(cfg)
    if parallel <= 1 or name == "inprocess" or cfg.get("device") == "cpu" or (
            name == "slurm" and cfg.get("executor", "slurm") != "local"):
        return None  # (SLURM gives each job its own GPUs; its local executor needs them here)
    gpus = visible_gpus()
    if not gpus:
        return None
    if nproc * parallel > len(gpus):
        raise AblateError(f"--parallel {parallel} × {nproc} processes per run needs "
                          f"{nproc * parallel} GPUs, {len(gpus)} visible "
                          f"({','.join(gpus)}): lower --parallel or --nproc")
    return [gpus[i * nproc:(i + 1) * nproc] for i in range(parallel)]


def launch_run(config: Path, launcher_cfg: Mapping[str, Any], nproc: int,
               on_line: OnLine | None = None, devices: Sequence[int | str] | None = None,
               env: Mapping[str, str] | None = None) -> int:
    """Start the run in ``config``'s folder and wait for it; returns the worker's exit code.

    Args:
        config: the run's resolved ``config.yaml`` (its folder is the run folder).
        launcher_cfg: the ``launcher`` section of the config.
        nproc: processes per run (per node), from :func:`nproc_for`.
        on_line: gets every output line of the run (main rank).
        devices: the GPUs this run may use (``CUDA_VISIBLE_DEVICES``); None = all visible.
        env: more environment variables for the worker (e.g. ``OMP_NUM_THREADS``).
    """
    cfg = _plain(launcher_cfg)
    name = _name(cfg)
    extra = dict(env or {})
    if devices is not None:
        extra["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    if name == "local":
        from ablate.launch import local

        check(cfg, nproc)
        # a run with GPUs of its own starts afresh: whether the preloaded server touched CUDA
        # or not, CUDA_VISIBLE_DEVICES must be read by a process that has not
        if nproc == 1 and cfg.get("mode", "auto") == "auto" and devices is None:
            return local.run_forked(config, on_line, extra)
        return local.run_local(config, nproc, on_line, extra)
    if name == "inprocess":
        from ablate.launch import local

        check(cfg, nproc)
        return local.run_inprocess(config, on_line)
    if name == "multinode":
        from ablate.launch import multinode

        return multinode.run(config, cfg, nproc, on_line, extra)
    from ablate.launch import slurm

    return slurm.run(config, cfg, nproc, on_line, devices)
