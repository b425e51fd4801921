"""A tiny classifier without BatchNorm, registered for tests only (``model.name=plain_cnn``):
without BN statistics, splitting a batch into micro-batches or across processes leaves the
gradient unchanged up to float rounding, which makes exact comparisons possible."""

from __future__ import annotations

from torch import nn

from ablate.registry import MODELS


def build_plain_cnn(*, num_classes: int = 10, in_chans: int = 1, **_: object) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chans, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 13 * 13, num_classes))


if "plain_cnn" not in MODELS:
    MODELS.register("plain_cnn")(build_plain_cnn)

# every key of conf/model/resnet_tiny_d.yaml is accepted and ignored, so a test composes the
# default config and only sets model.name
PLAIN = ("model.name=plain_cnn", "data.pad=0", "data.flip=false", "train.channels_last=false")
