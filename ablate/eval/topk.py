"""Top-k accuracy counts (summable across batches and processes)."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
                 ) -> torch.Tensor:
    """Number of samples whose label is among the top-k logits, for each k (int64 [len(ks)]).

    k larger than the number of classes counts every sample (as top-K of K classes would).
    """
    maxk = min(max(ks), logits.shape[-1])
    top = logits.topk(maxk, dim=-1).indices  # [B, maxk]
    hit = top.eq(labels[:, None])
    return torch.stack([hit[:, :min(k, maxk)].any(dim=-1).sum() for k in ks])
