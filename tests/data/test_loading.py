"""The plug-in points tricks reach the pipelines through, and the pipelines that take none."""

from __future__ import annotations

import pytest

from ablate.data.loading import DataPlugins
from ablate.errors import AblateError
from ablate.registry import DATASETS
from tests.conftest import trick_plugins


def test_plugins_apply_in_order():
    p = DataPlugins(wrap_dataset=[lambda d: d + ["a"], lambda d: d + ["b"]],
                    sample_transform=[lambda t: t * 2, lambda t: t + 1],
                    batch_transform=[lambda b, i: {**b, "x": b["x"] * 10 + i},
                                     lambda b, i: {**b, "x": b["x"] + 1}])
    assert p.wrap([]) == ["a", "b"] and p.transform(3) == 7
    assert p.batch_fn()({"x": 2}, 5) == {"x": 26}
    assert not DataPlugins() and DataPlugins().batch_fn() is None and DataPlugins().wrap(1) == 1
    assert p and p.side_fn(10) is None and DataPlugins().side_fn(10) is None
    sides = DataPlugins(batch_side=[lambda s, i: s + i, lambda s, i: s * 2])
    assert sides and sides.side_fn(10)(3) == 26 and sides.side_fn(20)(0) == 40


def test_classification_pipelines_refuse_plugins(fmnist_root):
    plugins = trick_plugins("yolo", {"data_augmentation": {}})
    with pytest.raises(AblateError, match=r"^the fashion_mnist pipeline takes no dataset "
                                          r"wrapper, sample transform, batch side or batch "
                                          r"transform from a trick$"):
        DATASETS.get("fashion_mnist").build(root=str(fmnist_root), batch_size=8,
                                            eval_batch_size=8, plugins=plugins)
    # classification mixup acts on the batch, not through the data points
    assert not trick_plugins("classification", {"mixup": {}, "label_smoothing": {}})
