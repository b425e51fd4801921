"""Zero γ (Goyal et al., 2017; Bag of Tricks Sec. 3.1): γ = 0 in the last BN of every residual
block (not the shortcut's BN), so each block starts as the identity. Uses the model's
``zero_init_last()`` capability (timm's convention) rather than type checks.

A network without residual blocks (MobileNet v1, Inception-V3) has nothing to zero: the paper's
"efficient" recipe for those (Tables 3 and 6) is the same list of heuristics, and the reference
code simply has no last-γ option for them. The trick then leaves the model as it is and says so
in the run's log, so one recipe can be stacked over every network of a table.

Zero γ is an initialisation: a model that starts from a checkpoint (``model.weights``) keeps
the γ it loaded, and the run's log says so."""

from __future__ import annotations

from torch import nn

from ablate.registry import TRICKS
from ablate.tricks.base import BuildContext, Trick


@TRICKS.register("zero_gamma")
class ZeroGamma(Trick):
    name = "zero_gamma"
    tasks = ("classification",)

    def edit_model(self, model: nn.Module, ctx: BuildContext) -> nn.Module:
        if ctx.weights:
            print(f"zero_gamma: the weights come from {ctx.weights}; their γ are kept",
                  flush=True)
            return model
        if not callable(getattr(model, "zero_init_last", None)):
            print(f"zero_gamma: {type(model).__name__} has no residual blocks; nothing to "
                  "zero-initialise", flush=True)
            return model
        model.zero_init_last()
        return model
