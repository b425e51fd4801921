"""Batches from a dataset held in memory as uint8 tensors (Fashion-MNIST: 47 MB).

Augmentation runs on whole batches on the training device, which beats per-sample DataLoader
workers by far for small images. Sharding follows ``DistributedSampler``: one permutation per
epoch shared by all ranks, padded by wrapping around to a multiple of the world size, rank r
taking every world-th index; training drops the last partial batch so every rank steps the same
number of times. Evaluation shards without padding, so each image is counted exactly once.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor], torch.Tensor]


def random_crop_flip(images: torch.Tensor, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, on a batch [B, C, H, W].

    Offsets and flips come from the global RNG (seeded per epoch and rank by the trainer).
    """
    b, c, h, w = images.shape
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), device=images.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        bidx = torch.arange(b, device=images.device)[:, None, None, None]
        cidx = torch.arange(c, device=images.device)[None, :, None, None]
        images = padded[bidx, cidx, rows, cols]
    if flip:
        mask = torch.rand(b, device=images.device) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images


class InMemoryLoader:
    """Iterate ``{'image': float [B, C, H, W], 'label': int64 [B]}`` batches for one rank.

    Args:
        images: uint8 [N, C, H, W] (kept on ``device``).
        labels: int64 [N].
        batch_size: images per batch on this rank.
        train: shuffle + pad + drop the last partial batch (else sequential, every image once).
        mean, std: per-channel normalisation in the 0–1 range.
        augment: batch augmentation on uint8 images, training only.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 train: bool, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: Augment | None = None, rank: int = 0, world_size: int = 1,
                 seed: int = 0, device: torch.device = torch.device("cpu"),
                 channels_last: bool = False) -> None:
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.train, self.augment = batch_size, train, augment
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=device).view(shape) * 255
        self.std = torch.tensor(std, device=device).view(shape) * 255
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        perm = torch.randperm(n, generator=g)
        total = -(-n // self.world_size) * self.world_size
        perm = torch.cat([perm, perm[: total - n]])
        return perm[self.rank::self.world_size]

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        idx = self._indices().to(self.images.device)
        for i in range(len(self)):
            j = idx[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[j]
            if self.train and self.augment is not None:
                x = self.augment(x)
            x = ((x.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)
            yield {"image": x, "label": self.labels[j]}
