"""The step loop. It knows extension points and hooks, never a trick.

Per iteration (one optimizer step): set the LR from the shape → for each of ``accum_steps``
micro-batches: task.prepare (targets) → batch transforms → forward under autocast (the task
returns a dict of losses) → backward of the loss / ``accum_steps`` → optimizer step through the
precision object. The time spent blocked on the loader is the epoch's ``data_wait_s`` (on CUDA
the device may still be busy with queued work meanwhile, so it bounds the data stall from
above). Per epoch: the epoch's record is closed (BN statistics from the main rank), then the
hooks' ``after_epoch`` runs: the tricks' first, then the engine's own (``engine/hooks.py``):
evaluation when due, one checkpoint, one CSV row. Progress events are a hook on ``after_step``.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from ablate.engine.dist import DistInfo, all_reduce_sum, epoch_seed, sync_buffers
from ablate.engine.hooks import Checkpoint, EpochLog, Evaluate, StepProgress
from ablate.engine.setup import Built
from ablate.engine.types import Hook, TrainState
from ablate.errors import AblateError


class NonFiniteLoss(RuntimeError):
    """The loss is not finite (no divergence check configured): the run failed."""


class Diverged(RuntimeError):
    """The divergence check (``train.diverge_factor``) ended the run: a result, as the papers'
    "failed" rows are."""

    def __init__(self, iteration: int, why: str) -> None:
        super().__init__(f"diverged at iteration {iteration}: {why}")
        self.iteration = iteration


def _timed(loader: Any, waited: list[float]):
    """Iterate ``loader``, adding the seconds each ``next`` blocks to ``waited[0]``."""
    it = iter(loader)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - t
        yield batch


class Trainer:
    """Args:
        built: the parts from ``engine.setup.build``.
        run_dir: where rank 0 writes ``log.csv`` and ``checkpoints/last.pt``.
        seed: the run seed (epochs are seeded from it, per rank).
        eval_every: evaluate every N epochs (and always after the last).
        log_every: progress event and finiteness check every N iterations.
        diverge_factor: with a number f, the loss checks (every ``log_every`` iterations and
            at each epoch's end) end the run with ``Diverged`` when the epoch's mean loss so far
            is not finite or exceeds f × the run's first check (its ``start_loss``); None: a
            non-finite loss raises ``NonFiniteLoss``.

    Hooks (``built.hooks``, the tricks', then ``default_hooks``) see the trainer: ``state``,
    ``model``, ``row`` (the epoch's record), ``history``, ``last_metrics``; within an epoch
    ``epoch_steps``, ``loss_sum`` (summed step losses), ``lr`` and ``epoch_start``.
    """

    def __init__(self, built: Built, dist: DistInfo, run_dir: Path, *, seed: int,
                 eval_every: int = 1, log_every: int = 50, extra_state: dict | None = None,
                 diverge_factor: float | None = None) -> None:
        self.b, self.dist, self.run_dir = built, dist, run_dir
        self.seed, self.eval_every, self.log_every = seed, eval_every, log_every
        self.state = TrainState(epochs=built.ctx.epochs, iters_per_epoch=built.ctx.iters_per_epoch,
                                seed=seed)
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        self.eval_time = 0.0
        self.data_wait = 0.0  # seconds the step loop waited on the training loader
        self.images = 0
        self.extra_state = extra_state or {}
        self.last_metrics: dict[str, float] = {}
        self.diverge_factor = diverge_factor
        self.start_loss: float | None = None  # the mean loss at the run's first check
        self.row: dict[str, Any] = {}
        self.epoch_steps, self.lr, self.epoch_start = 0, 0.0, 0.0
        self.loss_sum = torch.zeros(())
        self.hooks: list[Hook] = []
        self.register_hooks([*built.hooks, *self.default_hooks(eval_every, log_every)])

    @staticmethod
    def default_hooks(eval_every: int, log_every: int) -> list[Hook]:
        return [StepProgress(log_every), Evaluate(eval_every), Checkpoint(), EpochLog()]

    def register_hooks(self, hooks: list[Hook]) -> None:
        for h in hooks:
            h.trainer = self
        self.hooks.extend(hooks)

    @property
    def model(self) -> torch.nn.Module:
        return self.b.model

    # --- checkpoints --------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.b.model.state_dict(), "optimizer": self.b.optimizer.state_dict(),
                "scaler": self.b.precision.state_dict(), "epoch": self.state.epoch,
                "iteration": self.state.iteration, "history": self.history,
                "train_time": self.train_time, "eval_time": self.eval_time,
                "data_wait": self.data_wait, "images": self.images,
                "iters_per_epoch": self.state.iters_per_epoch, "world_size": self.dist.world_size,
                "last_metrics": self.last_metrics, "start_loss": self.start_loss,
                **self.extra_state}

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Resume from ``ckpt``, possibly written by another number of processes: the global
        batch is the config's, so only the per-process batch and the per-rank random draws
        change — unless padding makes the steps per epoch differ, which would shift the
        schedule, so that is refused."""
        saved = ckpt.get("iters_per_epoch", self.state.iters_per_epoch)
        if saved != self.state.iters_per_epoch:
            raise AblateError(
                f"the checkpoint was written by {ckpt.get('world_size', '?')} processes with "
                f"{saved} steps per epoch; {self.dist.world_size} process(es) give "
                f"{self.state.iters_per_epoch} (the sampler pads the data to a multiple of the "
                "world size): resume with the original number of processes")
        self.b.model.load_state_dict(ckpt["model"])
        self.b.optimizer.load_state_dict(ckpt["optimizer"])
        self.b.precision.load_state_dict(ckpt["scaler"])
        self.state.epoch, self.state.iteration = ckpt["epoch"], ckpt["iteration"]
        self.history, self.train_time = list(ckpt["history"]), ckpt["train_time"]
        self.images, self.last_metrics = ckpt["images"], dict(ckpt["last_metrics"])
        self.eval_time = ckpt["eval_time"]
        self.data_wait = ckpt.get("data_wait", 0.0)
        self.start_loss = ckpt.get("start_loss")

    # --- loop -------------------------------------------------------------------------
    def set_lr(self) -> float:
        factor = self.b.shape(self.state.iteration)
        for g in self.b.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        return self.b.optimizer.param_groups[0]["lr"]

    def train_epoch(self) -> dict[str, float]:
        """``iters_per_epoch`` optimizer steps. Each sums the gradients of ``accum_steps``
        micro-batches, every loss divided by ``accum_steps`` so that the step sees the mean over
        the global batch; DDP all-reduces only in the last micro-batch's backward."""
        b, st, accum = self.b, self.state, self.b.accum_steps
        b.train_loader.set_epoch(st.epoch)
        b.model.train()
        self.loss_sum = torch.zeros((), device=self.dist.device)
        self.epoch_steps, self.lr, micro = 0, 0.0, 0
        self.epoch_start = t0 = time.perf_counter()
        waited = [0.0]
        for batch in _timed(b.train_loader, waited):
            if micro == 0:
                self.lr = self.set_lr()
                b.optimizer.zero_grad(set_to_none=True)
            micro += 1
            batch = b.task.prepare(batch)
            for fn in b.batch_fns:
                batch = fn(batch, st)
            with b.no_sync() if micro < accum else contextlib.nullcontext():
                with b.precision.autocast():
                    losses = b.task(batch)
                loss = sum(losses.values()) / accum
                b.precision.backward(loss)
            self.loss_sum += loss.detach().float()
            if micro < accum:
                continue
            micro = 0
            b.precision.step(b.optimizer)
            self.epoch_steps += 1
            st.iteration += 1
            for h in self.hooks:
                h.after_step()
            if self.epoch_steps == st.iters_per_epoch:  # leftover micro-batches cannot fill a step
                break
        self.check_finite()
        dt = time.perf_counter() - t0
        steps = self.epoch_steps
        total = float(all_reduce_sum(self.loss_sum.clone()))
        mean_loss = total / max(steps * self.dist.world_size, 1)
        n_img = steps * self.b.ctx.total_batch
        self.train_time += dt
        self.data_wait += waited[0]
        self.images += n_img
        return {"train_loss": mean_loss, "lr": self.lr, "epoch_time_s": dt,
                "images_per_s": n_img / dt if dt > 0 else 0.0, "data_wait_s": waited[0],
                "data_wait_share": waited[0] / dt if dt > 0 else 0.0}

    def check_finite(self) -> None:
        """The loss checks (see ``diverge_factor``) on the epoch's mean loss so far."""
        st, steps = self.state, self.epoch_steps
        loss = float(self.loss_sum) / max(steps, 1)
        if self.diverge_factor is not None and self.dist.world_size > 1:
            # every rank decides alike (a rank that stopped alone would leave the others
            # waiting in the next collective)
            total = float(all_reduce_sum(self.loss_sum.clone()))
            loss = total / max(steps * self.dist.world_size, 1)
        if not math.isfinite(loss):
            if self.diverge_factor is not None:
                raise Diverged(st.iteration, f"non-finite loss in epoch {st.epoch + 1}")
            raise NonFiniteLoss(f"non-finite loss in epoch {st.epoch + 1} by iteration "
                                f"{st.iteration}")
        if self.diverge_factor is None or not steps:
            return
        if self.start_loss is None:
            self.start_loss = loss
        elif loss > self.diverge_factor * self.start_loss:
            raise Diverged(st.iteration, f"mean loss {loss:.4g} in epoch {st.epoch + 1}, over "
                                         f"{self.diverge_factor:g} × its start "
                                         f"{self.start_loss:.4g}")

    def evaluate(self) -> dict[str, float]:
        """Evaluate on the eval loader; a dict of loaders (e.g. one per input size, Det-T5)
        gives ``metric@name`` for each and the first one's metrics unprefixed."""
        t0 = time.perf_counter()
        loaders = self.b.eval_loader
        if not isinstance(loaders, dict):
            loaders = {"": loaders}
        metrics: dict[str, float] = {}
        for i, (name, loader) in enumerate(loaders.items()):
            m = self.b.task.evaluate(self.b.model, loader, self.b.precision.autocast)
            if i == 0:
                metrics.update(m)
            if name:
                metrics.update({f"{k}@{name}": v for k, v in m.items()})
        self.eval_time += time.perf_counter() - t0
        return metrics

    def fit(self) -> dict[str, float]:
        """Train the remaining epochs; return the last evaluation's metrics."""
        st = self.state
        for h in self.hooks:
            h.before_train()
        while st.epoch < st.epochs:
            torch.manual_seed(epoch_seed(self.seed, st.epoch, self.dist.rank))
            self.row = {"epoch": st.epoch + 1}
            for h in self.hooks:
                h.before_epoch()
            self.row.update(self.train_epoch())
            sync_buffers(self.b.model, self.dist.main_rank)  # evaluate and save one model
            self.row["iteration"] = st.iteration
            st.epoch += 1
            self.history.append(self.row)
            for h in self.hooks:
                h.after_epoch()
        for h in self.hooks:
            h.after_train()
        return self.last_metrics
