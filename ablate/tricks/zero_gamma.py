"""Zero γ (Goyal et al., 2017; Bag of Tricks Sec. 3.1): γ = 0 in the last BN of every residual
block (not the shortcut's BN), so each block starts as the identity. Uses the model's
``zero_init_last()`` capability (timm's convention) rather than type checks."""

from __future__ import annotations

from torch import nn

from ablate.errors import AblateError
from ablate.registry import TRICKS
from ablate.tricks.base import BuildContext, Trick


@TRICKS.register("zero_gamma")
class ZeroGamma(Trick):
    name = "zero_gamma"
    tasks = ("classification",)

    def edit_model(self, model: nn.Module, ctx: BuildContext) -> nn.Module:
        if not callable(getattr(model, "zero_init_last", None)):
            raise AblateError(f"zero_gamma: model {type(model).__name__} has no residual "
                              "blocks to zero-initialise (no zero_init_last())")
        model.zero_init_last()
        return model
