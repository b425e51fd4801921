"""Launchers start one run (a resolved ``config.yaml`` in its run folder) and wait for it.

| ``launcher.name`` | how the worker starts | module |
| --- | --- | --- |
| ``local`` | ``torchrun --standalone``, or one process forked from the driver | ``local`` |
| ``inprocess`` | the worker runs inside this process (tests, one run at a time) | ``local`` |
| ``multinode`` | one torchrun agent per node, c10d rendezvous through node 0 | ``multinode`` |
| ``slurm`` | one SLURM job per run, through submitit (or its local executor) | ``slurm`` |

Each is a :class:`Launcher` registered in ``LAUNCHERS`` under its name: the protocol is
processes and nodes per run, whether it trains on CUDA, its checks, its dry-run description,
whether ``--parallel`` runs need GPUs of this machine, and ``launch``. A new launcher is one
class here (importing its module lazily) and one ``conf/launcher/<name>.yaml``.

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

from ablate.errors import AblateError
from ablate.launch._proc import OnLine, cancel_all
from ablate.launch.local import prestart, torchrun_command
from ablate.registry import Registry

LAUNCHERS: Registry[type["Launcher"]] = Registry("launcher")

__all__ = ["LAUNCHERS", "Launcher", "cancel_all", "check", "describe", "device_slots",
           "launch_run", "nproc_for", "prestart", "resolve_nproc", "torchrun_command"]


def _plain(launcher_cfg: Mapping[str, Any]) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(launcher_cfg, DictConfig):
        return OmegaConf.to_container(launcher_cfg, resolve=True)  # type: ignore[return-value]
    return dict(launcher_cfg)


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


class Launcher:
    """One way of starting a run: the protocol every launcher implements (the defaults suit
    one machine). Launchers import their modules only when used, so that registering them
    costs nothing (``slurm`` needs submitit, ``multinode`` torch.distributed)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg  # the ``launcher`` section, plain

    def nproc(self, override: str | int | None) -> int:
        """Processes per run and node: ``--nproc`` if given, else ``launcher.nproc``."""
        return resolve_nproc(override if override is not None else self.cfg.get("nproc", 1))

    def nodes(self) -> int:
        return 1

    def on_cuda(self) -> bool:
        """Whether the run's processes train on CUDA (``launcher.device``)."""
        device = str(self.cfg.get("device", "auto"))
        if device == "auto":
            import torch

            return torch.cuda.is_available()
        return device.startswith("cuda")

    def check(self, nproc: int, parallel: int, strict: bool) -> None:
        """Raise ``AblateError`` for settings that cannot work."""

    def describe(self, nproc: int, config: Path, config_hash: str) -> str:
        raise NotImplementedError

    def takes_local_gpus(self) -> bool:
        """Whether ``--parallel`` runs need disjoint GPUs of this machine."""
        return self.cfg.get("device") != "cpu"

    def launch(self, config: Path, nproc: int, on_line: OnLine | None,
               devices: Sequence[int | str] | None, env: dict[str, str]) -> int:
        raise NotImplementedError


@LAUNCHERS.register("local")
class Local(Launcher):
    """``torchrun --standalone``, or one process forked from the driver (``local``)."""

    def forked(self, nproc: int) -> bool:
        return nproc == 1 and self.cfg.get("mode", "auto") == "auto"

    def check(self, nproc: int, parallel: int, strict: bool) -> None:
        if self.cfg.get("mode", "auto") not in ("auto", "torchrun"):
            raise AblateError(f"launcher.mode must be 'auto' or 'torchrun', got "
                              f"'{self.cfg.get('mode')}'")

    def describe(self, nproc: int, config: Path, config_hash: str) -> str:
        if self.forked(nproc):
            return "1 worker process forked from the driver"
        return "torchrun " + " ".join(torchrun_command(config, nproc)[3:])

    def launch(self, config: Path, nproc: int, on_line: OnLine | None,
               devices: Sequence[int | str] | None, env: dict[str, str]) -> int:
        from ablate.launch import local

        self.check(nproc, 1, True)
        # a run with GPUs of its own starts afresh: whether the preloaded server touched CUDA
        # or not, CUDA_VISIBLE_DEVICES must be read by a process that has not
        if self.forked(nproc) and devices is None:
            return local.run_forked(config, on_line, env)
        return local.run_local(config, nproc, on_line, env)


@LAUNCHERS.register("inprocess")
class InProcess(Launcher):
    """The worker inside the driver's process (``local``; tests, one run at a time)."""

    def check(self, nproc: int, parallel: int, strict: bool) -> None:
        if nproc != 1:
            raise AblateError("the inprocess launcher runs one process; use launcher=local")
        if parallel > 1:
            raise AblateError("the inprocess launcher runs one run at a time; use "
                              "launcher=local with --parallel")

    def describe(self, nproc: int, config: Path, config_hash: str) -> str:
        return "the worker inside the driver's process"

    def takes_local_gpus(self) -> bool:
        return False

    def launch(self, config: Path, nproc: int, on_line: OnLine | None,
               devices: Sequence[int | str] | None, env: dict[str, str]) -> int:
        from ablate.launch import local

        self.check(nproc, 1, True)
        return local.run_inprocess(config, on_line)


@LAUNCHERS.register("multinode")
class Multinode(Launcher):
    """One torchrun agent per node, c10d rendezvous through node 0 (``multinode``)."""

    def nodes(self) -> int:
        return int(self.cfg.get("nnodes", 1))

    def check(self, nproc: int, parallel: int, strict: bool) -> None:
        from ablate.launch import multinode

        multinode.check(self.cfg, nproc)

    def describe(self, nproc: int, config: Path, config_hash: str) -> str:
        from ablate.launch import multinode

        return multinode.describe(self.cfg, nproc, config, config_hash)

    def launch(self, config: Path, nproc: int, on_line: OnLine | None,
               devices: Sequence[int | str] | None, env: dict[str, str]) -> int:
        from ablate.launch import multinode

        return multinode.run(config, self.cfg, nproc, on_line, env)


@LAUNCHERS.register("slurm")
class Slurm(Launcher):
    """One SLURM job per run, through submitit or its local executor (``slurm``)."""

    def nproc(self, override: str | int | None) -> int:
        from ablate.launch import slurm  # ``auto``: the job's GPUs per node

        return slurm.tasks_per_node(self.cfg, override)

    def nodes(self) -> int:
        return int(self.cfg.get("nodes", 1))

    def on_cuda(self) -> bool:
        if str(self.cfg.get("device", "auto")) == "auto":
            return int(self.cfg.get("gpus_per_node") or 0) > 0
        return super().on_cuda()

    def check(self, nproc: int, parallel: int, strict: bool) -> None:
        from ablate.launch import slurm

        slurm.check(self.cfg, nproc, strict=strict)

    def describe(self, nproc: int, config: Path, config_hash: str) -> str:
        from ablate.launch import slurm

        return slurm.describe(self.cfg, nproc, config)

    def takes_local_gpus(self) -> bool:  # SLURM gives each job its own GPUs; its local
        return self.cfg.get("executor", "slurm") == "local" and super().takes_local_gpus()

    def launch(self, config: Path, nproc: int, on_line: OnLine | None,
               devices: Sequence[int | str] | None, env: dict[str, str]) -> int:
        from ablate.launch import slurm  # executor needs them from this machine

        return slurm.run(config, self.cfg, nproc, on_line, devices)


def launcher(launcher_cfg: Mapping[str, Any]) -> Launcher:
    """The registered launcher of a ``launcher`` config section."""
    cfg = _plain(launcher_cfg)
    return LAUNCHERS.get(str(cfg.get("name")))(cfg)


def nproc_for(launcher_cfg: Mapping[str, Any], override: str | int | None = None) -> int:
    """Processes per run (per node): ``--nproc`` if given, else ``launcher.nproc``. ``auto``
    counts this machine's GPUs, except with SLURM, where it is the job's GPUs per node."""
    return launcher(launcher_cfg).nproc(override)


def check_layout(cfg: Any, nproc: int) -> None:
    """A run's batch and BN layout over the processes its launch starts, checked before it
    starts: ``train.batch_size`` splits over processes × ``train.accum_steps``, and
    ``train.bn_group_size`` (after tricks such as ``sync_bn``) is plain, ghost or synchronised
    BN — the last only where the run is on CUDA (``ablate.engine.bn.bn_layout``); and the
    engine's options (``train.compile``, ``train.precision``, ``optim``) name known values."""
    from ablate.engine.bn import bn_layout
    from ablate.engine.dist import per_rank_batch
    from ablate.engine.options import check_options
    from ablate.tricks import BuildContext, build_tricks

    check_options(cfg)
    how = launcher(cfg.launcher)
    world = nproc * how.nodes()
    tcfg = cfg.train
    per_rank = per_rank_batch(tcfg.batch_size, world, tcfg.get("accum_steps", 1))
    cuda = how.on_cuda()
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
    how = launcher(launcher_cfg)
    if parallel < 1:
        raise AblateError(f"--parallel must be at least 1, got {parallel}")
    how.check(nproc, parallel, strict)


def describe(launcher_cfg: Mapping[str, Any], nproc: int, config: Path | None = None,
             config_hash: str = "<hash>") -> str:
    """What :func:`launch_run` would start, for the dry run (several lines for SLURM: the
    ``#SBATCH`` settings submitit would use)."""
    return launcher(launcher_cfg).describe(nproc, config or Path("config.yaml"), config_hash)


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
    if parallel <= 1 or not launcher(launcher_cfg).takes_local_gpus():
        return None
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
    how = launcher(launcher_cfg)
    extra = dict(env or {})
    if devices is not None:
        extra["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    return how.launch(config, nproc, on_line, devices, extra)
