"""fp32 / fp16 / bf16 as one object: an autocast context and a (possibly disabled) GradScaler,
built once so the step loop never branches on precision (nanoGPT's habit)."""

from __future__ import annotations

import contextlib

import torch

from ablate.errors import AblateError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Precision:
    """Autocast + loss scaling for one precision.

    Args:
        name: ``fp32``, ``fp16`` (autocast + dynamic loss scaling) or ``bf16`` (autocast).
        device: the training device.
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.check(name)
        self.name, self.dtype = name, _DTYPES[name]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")

    @staticmethod
    def check(name: str) -> None:
        if name not in _DTYPES:
            raise AblateError(f"unknown precision '{name}' (use one of {sorted(_DTYPES)})")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the (scaled) loss; gradients add up until :meth:`step`."""
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """(Unscale,) optimizer step and scaler update: once per optimizer step, after every
        micro-batch's backward (a non-finite fp16 gradient skips the whole step)."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)
