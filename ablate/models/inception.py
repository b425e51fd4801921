"""Inception-V3 (Szegedy et al., 2016), one of the three networks of Bag of Tricks (He et al.,
CVPR 2019, Tables 1 and 6); torchvision's implementation, built without pretrained weights.

The auxiliary classifier is off by default: the GluonCV ``inceptionv3`` behind the paper's
numbers never attaches one (its ``make_aux`` is unused), and the paper does not mention one.
With ``aux_logits: true`` the model returns ``(logits, aux_logits)`` in training and the
classification task adds ``aux_weight`` × the auxiliary cross-entropy (0.4, TF-slim's weight;
``model.task_kwargs``).

Inputs are 299×299 (the ImageNet data config's Inception sizes); the network needs at least
75×75, and the auxiliary head 299×299-sized maps.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ablate.errors import AblateError
from ablate.models.init import INITS, init_weights
from ablate.registry import MODELS


@MODELS.register("inception_v3")
def build_inception_v3(*, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                       dropout: float = 0.5, init: str = "torchvision") -> nn.Module:
    """Build torchvision's Inception-V3 (random initialisation, torchvision's truncated normal).

    Args:
        num_classes: classifier outputs (also of the auxiliary classifier).
        in_chans: input channels; other than 3 replaces the first conv (same initialisation).
        aux_logits: add the auxiliary classifier on ``Mixed_6e`` (training output becomes
            ``(logits, aux_logits)``).
        dropout: dropout before the classifier.
        init: ``ablate.models.init.INITS`` (the classification configs choose ``code``).
    """
    if init not in INITS:
        raise AblateError(f"inception_v3 init {init!r} is not one of {', '.join(INITS)}")
    if in_chans < 1:
        raise AblateError(f"inception_v3 in_chans must be >= 1, got {in_chans}")
    model = torchvision.models.inception_v3(weights=None, aux_logits=aux_logits,
                                            init_weights=True, num_classes=num_classes,
                                            dropout=dropout)
    if in_chans != 3:
        old = model.Conv2d_1a_3x3.conv
        conv = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, bias=False)
        torch.nn.init.trunc_normal_(conv.weight, mean=0.0, std=0.1, a=-2, b=2)
        model.Conv2d_1a_3x3.conv = conv
    return init_weights(model, init)
