"""Weight initialisation schemes of the classification networks (Bag of Tricks, Sec. 2.1).

* ``code``: what GluonCV's ``train_imagenet.py`` ran for the published numbers,
  ``net.initialize(mx.init.MSRAPrelu())``: every convolution and fully-connected weight drawn
  from N(0, σ²), σ² = magnitude / ((fan_in + fan_out) / 2), magnitude = 2 / (1 + 0.25²) (MXNet's
  ``Xavier("gaussian", "avg", magnitude)``); biases 0.
* ``paper``: the text of Sec. 2.1, Xavier: uniform in [−a, a], a = √(6 / (fan_in + fan_out));
  biases 0.
* ``torchvision``: the builder's own (Kaiming normal, fan_out, for convolutions; PyTorch's
  default for the classifier; torchvision's truncated normal for Inception-V3).

In every scheme BatchNorm starts at γ = 1, β = 0. Fans follow the weight's shape
``[out, in / groups, k, k]``, as MXNet and PyTorch both count them.
"""

from __future__ import annotations

import math

from torch import nn

from ablate.errors import AblateError

INITS = ("code", "paper", "torchvision")
MSRA_PRELU_MAGNITUDE = 2.0 / (1 + 0.25 ** 2)


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise ``model``'s convolutions and linear layers by ``scheme`` (``INITS``)."""
    if scheme not in INITS:
        raise AblateError(f"model.init {scheme!r} is not one of {', '.join(INITS)}")
    if scheme == "torchvision":
        return model
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "paper":
                nn.init.xavier_uniform_(m.weight)
            else:
                fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
                std = math.sqrt(MSRA_PRELU_MAGNITUDE / ((fan_in + fan_out) / 2))
                nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
