"""The fixed build order: data → model (+ its ``weights``) → tricks' model surgery → device →
param groups → optimizer → schedule → precision → DDP → task. Tricks act only through their
extension points; what each returns is collected here once, so the step loop has no trick
branches."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import ablate.data  # noqa: F401  (registers datasets)
import ablate.models  # noqa: F401  (registers models)
import ablate.tasks  # noqa: F401  (registers tasks)
from ablate.data.loading import DataPlugins
from ablate.engine.bn import convert_bn_groups
from ablate.engine.dist import DistInfo, per_rank_batch
from ablate.engine.options import compile_mode, cudnn_autotune
from ablate.engine.precision import Precision
from ablate.errors import AblateError
from ablate.models.weights import load_weights
from ablate.registry import DATASETS, MODELS, TASKS
from ablate.solver import build_lr, build_optimizer
from ablate.solver.lr import LRShape
from ablate.engine.types import BuildContext, DataContext, Hook, TrainState
from ablate.tricks import Trick, build_tricks


@dataclass
class Built:
    model: nn.Module  # the bare model (checkpoints, evaluation)
    task: Any  # owns the loss; wraps the (DDP) training model
    optimizer: torch.optim.Optimizer
    shape: LRShape
    precision: Precision
    train_loader: Any
    eval_loader: Any
    ctx: BuildContext
    tricks: list[Trick]
    batch_fns: list[Callable[[dict, TrainState], dict]] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)
    accum_steps: int = 1  # micro-batches per optimizer step
    no_sync: Callable[[], ContextManager] = contextlib.nullcontext  # DDP's, between them


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def data_plugins(tricks: list[Trick], ctx: DataContext) -> DataPlugins:
    """The tricks' data points, bound to ``ctx``, for the training pipeline."""
    def bound(point: str) -> list[Callable]:
        return [functools.partial(getattr(t, point), ctx=ctx) for t in tricks if t.uses(point)]
    return DataPlugins(wrap_dataset=bound("wrap_dataset"),
                       sample_transform=bound("sample_transform"),
                       batch_side=bound("batch_side"), batch_transform=bound("loader_batch"))


def build(cfg: DictConfig, dist: DistInfo) -> Built:
    """Build everything a run needs from a resolved config."""
    task_name = cfg.model.task
    tricks = build_tricks(_plain(cfg.get("tricks") or {}), task_name)
    tcfg = cfg.train
    # train.batch_size is the global batch of one optimizer step: world × accum_steps ×
    # per_rank images. Each process loads per_rank images per micro-step; the linear-scaling
    # and warmup tricks see the global batch (ctx.total_batch), the LR schedule counts
    # optimizer steps, and BatchNorm normalises each micro-batch on its own.
    accum = tcfg.get("accum_steps", 1)
    per_rank = per_rank_batch(tcfg.batch_size, dist.world_size, accum)
    data_cfg = _plain(cfg.data)
    data_metric = data_cfg.pop("metric", None)  # the dataset's metric (e.g. voc07, coco)
    train_loader, eval_loader = DATASETS.get(data_cfg.pop("name")).build(
        **data_cfg, batch_size=per_rank, eval_batch_size=tcfg.get("eval_batch_size", per_rank),
        rank=dist.rank, world_size=dist.world_size, seed=cfg.seed, device=dist.device,
        channels_last=tcfg.channels_last,
        plugins=data_plugins(tricks, DataContext(task_name, tcfg.epochs, cfg.seed)))
    # the sampler pads the data to a multiple of the world size and each rank drops its last
    # partial batch; leftover micro-batches that do not fill an optimizer step are skipped
    steps = len(train_loader) // accum
    if steps == 0:
        raise AblateError(f"no training batch: fewer images than train.batch_size="
                          f"{tcfg.batch_size}")
    ctx = BuildContext(task=task_name, epochs=tcfg.epochs, iters_per_epoch=steps,
                       total_batch=tcfg.batch_size, world_size=dist.world_size,
                       num_classes=cfg.data.num_classes, device=dist.device)
    task_cls = TASKS.get(task_name)
    model = build_model(cfg, dist, tricks, ctx, per_rank, task_cls)

    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for t in tricks:
        groups = t.param_groups(model, groups)
    base_lr, shape = build_lr(cfg.optim.lr, _plain(cfg.schedule), tricks, ctx)
    optimizer = build_optimizer(_plain(cfg.optim), groups, base_lr)

    precision_name = tcfg.get("precision", "fp32")
    for t in tricks:
        precision_name = t.precision(precision_name)
    precision = Precision(precision_name, dist.device)

    train_model: nn.Module = model
    no_sync: Callable[[], ContextManager] = contextlib.nullcontext
    if dist.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        no_sync = train_model.no_sync
    task_kwargs = _plain(cfg.model.get("task_kwargs") or {})
    if data_metric is not None:
        task_kwargs = {"metric": data_metric, **task_kwargs}
    task = task_cls(model=train_model, num_classes=ctx.num_classes,
                    target_fns=[t.targets for t in tricks if t.uses("targets")], **task_kwargs)
    for t in tricks:
        task = t.wrap_task(task)
    return Built(model=model, task=task, optimizer=optimizer, shape=shape, precision=precision,
                 train_loader=train_loader, eval_loader=eval_loader, ctx=ctx, tricks=tricks,
                 batch_fns=[t.batch_transform for t in tricks if t.uses("batch_transform")],
                 hooks=[h for t in tricks for h in t.hooks()], accum_steps=accum,
                 no_sync=no_sync)


def build_model(cfg: DictConfig, dist: DistInfo, tricks: list[Trick], ctx: BuildContext,
                per_rank: int, task_cls: Any) -> nn.Module:
    """The model on its device: built, its ``weights`` loaded, the tricks' surgery, BN groups,
    memory format, cuDNN autotuning and compilation as configured."""
    tcfg = cfg.train
    model_cfg = _plain(cfg.model)
    for key in ("task", "task_kwargs"):
        model_cfg.pop(key, None)
    weights = model_cfg.pop("weights", None)  # a local checkpoint to start from
    model = MODELS.build(model_cfg.pop("name"), **model_cfg)
    if weights:
        report = load_weights(model, weights, what="model.weights")
        if dist.is_main:
            print(report.summary("model.weights"), flush=True)
        ctx = dataclasses.replace(ctx, weights=str(weights))
    for t in tricks:
        model = t.edit_model(model, ctx)
    bn_group = tcfg.get("bn_group_size")
    for t in tricks:
        bn_group = t.bn_group_size(bn_group, ctx)
    model = convert_bn_groups(model, bn_group, per_rank, dist.world_size, dist.device)
    fmt = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    model = model.to(dist.device, memory_format=fmt)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_autotune(tcfg.get("cudnn_benchmark"), task_cls)
    mode = compile_mode(tcfg.get("compile", False))
    if mode is not None:
        model.compile(mode=mode)  # in place: state_dict keys and the DDP wrapper unchanged
    return model
