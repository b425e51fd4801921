"""Low-precision training (Micikevicius et al., 2018; Bag of Tricks Sec. 3.2).

``fp16``: autocast to float16 with an FP32 master copy and dynamic loss scaling (torch.amp), as
in the paper. ``bf16`` is the modern equivalent (no loss scaling needed); results record which
one ran.
"""

from __future__ import annotations

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import Trick

DTYPES = ("fp16", "bf16")


@TRICKS.register("amp")
class Amp(Trick):
    name = "amp"
    tasks = ("classification", "yolo", "rcnn")

    def __init__(self, dtype: str = "fp16") -> None:
        if dtype not in DTYPES:
            raise AblateError(f"amp.dtype must be one of {DTYPES}, got '{dtype}'")
        self.dtype = dtype

    def precision(self, name: str) -> str:
        return self.dtype
