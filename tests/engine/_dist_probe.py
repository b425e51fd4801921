"""Test-only torchrun entry point: ``torchrun … -m tests.engine._dist_probe config.yaml``.

Runs the real worker (``ablate.worker.main``) and records, per rank, into ``$ABLATE_PROBE_DIR``
(outside the results root):

- ``writes-rank<r>.json``: every path under ``$ABLATE_PROBE_WATCH`` that this rank opened for
  writing, created, renamed, removed or ``torch.save``-d (Python audit events; ``torch.save``
  opens its file in C++, so it is wrapped as well);
- ``state-rank<r>.pt``: the trained model's ``state_dict`` (parameters and buffers) as this rank
  holds it when the worker returns;
- ``epoch1.pt`` (main rank): a copy of the checkpoint written after the first epoch;
- ``comm-rank<r>.json``: how many gradient buckets DDP all-reduced (a counting comm hook);
- ``lambdas-rank<r>.json``: the λ of every classification mixup this rank applied, in order.

It also registers the test model ``plain_cnn`` (``tests/engine/_plain_model.py``).

Nothing in the engine knows about this module.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
WRITE_EVENTS = ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "os.link",
                "os.symlink", "shutil.move", "shutil.copyfile", "shutil.rmtree")


def main() -> int:
    probe = Path(os.environ["ABLATE_PROBE_DIR"])
    watch = os.path.realpath(os.environ["ABLATE_PROBE_WATCH"])
    rank = int(os.environ.get("RANK", 0))
    writes: list[str] = []

    def record(path: object) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            p = os.path.realpath(os.fsdecode(path))
            if p == watch or p.startswith(watch + os.sep):
                writes.append(p)

    def audit(event: str, args: tuple) -> None:
        if event == "open" and args[2] is not None and args[2] & WRITE_FLAGS:
            record(args[0])
        elif event in WRITE_EVENTS:
            for a in args[:2]:
                record(a)

    import torch
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    import tests.engine._plain_model  # noqa: F401  (registers plain_cnn)
    import ablate.tricks.mixup as mixup
    from ablate.engine import run_io
    from ablate.engine.trainer import Trainer

    lambdas: list[float] = []
    real_mix = mixup.mix_batch

    def mix_batch(images, targets, lam):
        lambdas.append(lam)
        return real_mix(images, targets, lam)

    mixup.mix_batch = mix_batch

    real_save, real_fit, real_ckpt = torch.save, Trainer.fit, run_io.save_checkpoint
    trainers: list[Trainer] = []
    reduced = [0]

    def counting_hook(state, bucket):
        reduced[0] += 1
        return allreduce_hook(state, bucket)

    def save(obj, f, *a, **kw):
        record(f)
        return real_save(obj, f, *a, **kw)

    def fit(self):
        trainers.append(self)
        if isinstance(self.b.task.model, torch.nn.parallel.DistributedDataParallel):
            self.b.task.model.register_comm_hook(None, counting_hook)
        return real_fit(self)

    def save_checkpoint(path, state):
        real_ckpt(path, state)
        if state["epoch"] == 1:
            real_save(state, probe / "epoch1.pt")

    torch.save, Trainer.fit, run_io.save_checkpoint = save, fit, save_checkpoint
    sys.addaudithook(audit)
    from ablate.worker import main as worker_main

    code = worker_main(sys.argv[1:])
    torch.save = real_save
    found = list(writes)  # the probe's own files below are outside the watched folder
    (probe / f"writes-rank{rank}.json").write_text(json.dumps(found))
    (probe / f"comm-rank{rank}.json").write_text(json.dumps({"allreduce": reduced[0]}))
    (probe / f"lambdas-rank{rank}.json").write_text(json.dumps(lambdas))
    if trainers:
        real_save(trainers[0].b.model.state_dict(), probe / f"state-rank{rank}.pt")
    return code


if __name__ == "__main__":
    sys.exit(main())
