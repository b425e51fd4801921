"""The engine's own hooks: progress, evaluation, checkpoint and the per-epoch log.

The trainer runs the step loop and closes each epoch's record; everything it does around that
is one of these, registered after the tricks' hooks (``Trainer.default_hooks``). Each is a few
lines on top of ``ablate.engine.types.Hook``; a trick adds its own the same way
(``Trick.hooks``).
"""

from __future__ import annotations

import time

from ablate.engine import run_io
from ablate.engine.types import Hook


class StepProgress(Hook):
    """Every ``every`` optimizer steps and at the epoch's last: check that the summed loss is
    finite (a sync on CUDA, hence not every step) and emit a progress event (main rank)."""

    def __init__(self, every: int) -> None:
        self.every = every

    def after_step(self) -> None:
        t = self.trainer
        steps = t.epoch_steps
        if steps % self.every and steps != t.state.iters_per_epoch:
            return
        t.check_finite()
        if t.dist.is_main:
            st = t.state
            run_io.emit("step", epoch=st.epoch + 1, epochs=st.epochs, step=steps,
                        steps=st.iters_per_epoch, loss=float(t.loss_sum) / steps, lr=t.lr,
                        ips=steps * t.b.ctx.total_batch / (time.perf_counter() - t.epoch_start))


class Evaluate(Hook):
    """Evaluate every ``every`` epochs and after the last; the metrics join the epoch's record
    and become the run's ``last_metrics``."""

    def __init__(self, every: int) -> None:
        self.every = every

    def after_epoch(self) -> None:
        t = self.trainer
        done = t.state.epoch
        if done % self.every == 0 or done == t.state.epochs:
            t.last_metrics = t.evaluate()
            t.row.update(t.last_metrics)


class Checkpoint(Hook):
    """The main rank saves ``checkpoints/last.pt`` after every epoch (a resume starts there)."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.dist.is_main:
            run_io.save_checkpoint(t.ckpt_path, t.state_dict())


class EpochLog(Hook):
    """The main rank rewrites ``log.csv`` (one row an epoch) and emits the epoch's event."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.dist.is_main:
            run_io.write_log_csv(t.run_dir / "log.csv", t.history)
            run_io.emit("epoch", **t.row, epochs=t.state.epochs)
