"""What every pipeline shares, classification and detection alike: the device loader base
(sharding, epochs, memory format, normalisation constants, closing the workers), per-item random
streams, an epoch counter the DataLoader workers see, and the points tricks plug into
(``DataPlugins``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from ablate.errors import AblateError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# random streams of an item: the same (seed, epoch, index) gives independent draws per stream
MIX_STREAM, AUGMENT_STREAM, SHAPES_STREAM = 1, 2, 3


def item_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded by hashing (seed, epoch, index, stream) (numpy SeedSequence)."""
    words = [int(x) % 2**32 for x in (seed, epoch, index, stream)]
    hi, lo = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(hi) << 31) ^ int(lo))


@contextlib.contextmanager
def global_rng_from(generator: torch.Generator | None) -> Iterator[None]:
    """Run under the global RNG, or under a forked CPU one seeded from ``generator``.

    Only the CPU generator is seeded: ``torch.manual_seed`` would also queue the seeding of
    every lazily initialised accelerator with a captured stack (0.7 ms an item, 14 % of the YOLO
    pipeline on CPU), and reseed CUDA's generator, which ``fork_rng(devices=[])`` does not
    restore."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class SharedEpoch:
    """An epoch counter in shared memory: set in the main process, read by DataLoader workers
    (fork: inherited mapping; spawn: torch shares the storage when pickling the dataset)."""

    def __init__(self, epoch: int = 0) -> None:
        self._t = torch.full((), int(epoch), dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._t.fill_(int(epoch))

    def get(self) -> int:
        return int(self._t)


@dataclass(frozen=True)
class DataPlugins:
    """What tricks plug into a training pipeline. The data layer calls these in order and never
    knows which trick gave them (or reads a trick's options):

    * ``wrap_dataset``: ``f(dataset) -> dataset`` on the raw training set (``(uint8 image,
      target)`` items), e.g. detection mixup's pairing. A wrapper that combines items also
      states the combination without pixels for ``data.decode=device``
      (``CombiningDataset`` below).
    * ``sample_transform``: ``f(transform) -> transform`` on the pipeline's default per-sample
      training transform, e.g. the detection augmentation.
    * ``batch_side``: ``f(side, iteration) -> side``, the square side training batch
      ``iteration`` (the global batch index) is built at, given the pipeline's training side:
      every sample of the batch is transformed to it once, in the workers, e.g. random
      training shapes.
    * ``batch_transform``: ``f(batch, iteration) -> batch`` on each training batch on the
      device, normalised, before the task builds its targets.
    """

    wrap_dataset: Sequence[Callable[[Any], Any]] = ()
    sample_transform: Sequence[Callable[[Any], Any]] = ()
    batch_side: Sequence[Callable[[int, int], int]] = ()
    batch_transform: Sequence[Callable[[dict, int], dict]] = ()

    def __bool__(self) -> bool:
        return bool(self.wrap_dataset or self.sample_transform or self.batch_side
                    or self.batch_transform)

    def wrap(self, dataset: Any) -> Any:
        for f in self.wrap_dataset:
            dataset = f(dataset)
        return dataset

    def transform(self, transform: Any) -> Any:
        for f in self.sample_transform:
            transform = f(transform)
        return transform

    def side_fn(self, side: int) -> Callable[[int], int] | None:
        """Batch ``iteration`` → its square side, from the training ``side`` (None: fixed)."""
        fns = tuple(self.batch_side)

        def side_at(iteration: int) -> int:
            out = side
            for f in fns:
                out = f(out, iteration)
            return out
        return side_at if fns else None

    def batch_fn(self) -> Callable[[dict, int], dict] | None:
        """The batch transforms as one function (None: there are none)."""
        fns = tuple(self.batch_transform)

        def chained(batch: dict, iteration: int) -> dict:
            for f in fns:
                batch = f(batch, iteration)
            return batch
        return chained if fns else None

    def refuse(self, pipeline: str) -> None:
        """Raise when a pipeline that takes no plug-ins (classification) is given some."""
        if self:
            raise AblateError(f"the {pipeline} pipeline takes no dataset wrapper, sample "
                              f"transform, batch side or batch transform from a trick")


class CombiningDataset(Dataset):
    """A training-set wrapper (a ``DataPlugins.wrap_dataset`` result) whose item i may combine
    several items of ``base``, e.g. detection mixup's pairs. Indexing it gives the combined
    ``(uint8 image, target)``; for ``data.decode=device`` it also states the combination
    without pixels, so that the workers read files and draw while the device decodes and
    combines.

    Subclasses set ``base`` and implement ``plan`` and ``combine``.
    """

    base: Any

    def set_epoch(self, epoch: int) -> None:
        """The epoch (shared with the DataLoader workers) for the per-epoch draws."""

    def plan(self, i: int, epoch: int, read: Callable[[int], tuple[Any, tuple[int, int], dict]]
             ) -> tuple[list[Any], tuple[int, int], dict[str, Any], Any]:
        """Item ``i`` in ``epoch`` without pixels: ``(files, (h, w), target, params)``, where
        ``read(k)`` gives base item k's ``(file data, (h, w), target)``, ``files`` are the file
        data to decode, in order, ``(h, w)`` is the combined image's size and ``params`` is
        what ``combine`` needs."""
        raise NotImplementedError

    def combine(self, images: list[torch.Tensor], params: Any) -> torch.Tensor:
        """The combined uint8 image from ``plan``'s files decoded (on any device)."""
        raise NotImplementedError


class KeyedBatches(Sampler):
    """``batches``' index lists as ``[(index, key(b)), …]`` for global batch ``b``
    (``loader.epoch · len + i``); iterated in the main process, so ``key`` sees the loader's
    epoch as ``set_epoch`` left it."""

    def __init__(self, batches: BatchSampler, key: Callable[[int], Any], loader: Any) -> None:
        self.batches, self.key, self.loader = batches, key, loader

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, Any]]]:
        start = self.loader.epoch * len(self.batches)
        for b, indices in enumerate(self.batches, start):
            k = self.key(b)
            yield [(i, k) for i in indices]


class DeviceLoader:
    """One rank's batches of a map-style dataset, for the device: the base of the classification
    (``ImageFolderLoader``) and detection (``DetectionLoader``) loaders, which turn each
    collated batch into a device batch in ``__iter__``.

    Sharding follows ``DistributedSampler``: training shuffles with seed + epoch, pads by
    wrapping and drops the last partial batch; evaluation gives rank r every world-th item,
    without padding. ``persistent_workers`` defaults to True with workers: the epoch reaches
    them through the dataset's ``SharedEpoch``, so keeping them alive between epochs is safe.
    ``mean`` and ``std`` (0–1 RGB) become 0–255 tensors on the device for the normalisation.
    With ``batch_key`` (training), the dataset is indexed by ``(index, batch_key(b))`` for the
    items of global batch ``b = epoch · len + i``, e.g. the side that batch is built at.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool,
                 collate_fn: Callable[[list], dict], rank: int = 0, world_size: int = 1,
                 seed: int = 0, num_workers: int = 0, device: torch.device | str = "cpu",
                 channels_last: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, persistent_workers: bool | None = None,
                 multiprocessing_context: str | None = None,
                 batch_key: Callable[[int], Any] | None = None) -> None:
        self.dataset, self.train, self.epoch = dataset, train, 0
        self.device = torch.device(device)
        self.sampler: Sampler | list[int] = (
            DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                               seed=seed) if train else list(range(rank, len(dataset), world_size)))
        persistent = num_workers > 0 and (persistent_workers is None or persistent_workers)
        batching: dict[str, Any] = dict(batch_size=batch_size, sampler=self.sampler,
                                        drop_last=train)
        if batch_key is not None:
            batching = dict(batch_sampler=KeyedBatches(
                BatchSampler(self.sampler, batch_size, drop_last=train), batch_key, self))
        self.loader = DataLoader(
            dataset, num_workers=num_workers, collate_fn=collate_fn,
            pin_memory=self.device.type == "cuda", persistent_workers=persistent,
            multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
            **batching)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(std, device=self.device).view(shape) * 255
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle (training) and publish the epoch to the dataset and its workers."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        """Stop persistent workers now and release their queues (the forked run process
        leaves with ``os._exit``, which skips the finalizers that would do it)."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None
