"""Every config group option composes, bad overrides give one readable error, and the hash
ignores where a run executes but not what it computes."""

import pytest

from ablate.config import CONF_DIR, compose, config_hash, format_value, to_overrides
from ablate.errors import AblateError
from ablate.registry import MODELS

GROUP_OPTIONS = [(d.name, p.stem) for d in sorted(CONF_DIR.iterdir()) if d.is_dir()
                 for p in sorted(d.glob("*.yaml")) if d.name != "tricks"]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg[group] is not None


@pytest.mark.parametrize("option", [p.stem for p in sorted((CONF_DIR / "model").glob("*.yaml"))])
def test_every_model_config_instantiates(option):
    import ablate.models  # noqa: F401
    from ablate.engine.setup import _plain

    m = _plain(compose([f"model={option}"]).model)
    m.pop("task")
    m.pop("task_kwargs", None)
    m.pop("weights", None)  # loaded by the engine after the build
    model = MODELS.build(m.pop("name"), **m)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_all_tricks_compose_together():
    names = sorted(p.stem for p in (CONF_DIR / "tricks").glob("*.yaml"))
    cfg = compose([f"tricks=[{','.join(names)}]"])
    assert sorted(cfg.tricks) == names


@pytest.mark.parametrize("override,message", [
    ("tricks=[cosin]", "unknown trick 'cosin' (did you mean 'cosine'?)"),
    ("model=resnet50_e", "unknown model option 'resnet50_e' (did you mean 'resnet50_d'?)"),
    ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
    ("trian.epochs=1", "unknown config key 'trian.epochs' (did you mean 'train'?)"),
])
def test_bad_overrides(override, message):
    with pytest.raises(AblateError) as e:
        compose([override])
    assert message in str(e.value)


def test_bad_trick_option_names_the_trick_key():
    with pytest.raises(AblateError, match=r"'tricks.mixup.alhpa' \(did you mean 'alpha'\?\)"):
        compose(["tricks=[mixup]", "tricks.mixup.alhpa=0.4"])


def test_hash_ignores_trick_order_launcher_and_paths_but_not_values():
    a = config_hash(compose(["tricks=[cosine,mixup]"]))
    assert a == config_hash(compose(["tricks=[mixup,cosine]"]))
    assert a == config_hash(compose(["tricks=[cosine,mixup]", "launcher=inprocess",
                                     "paths.results=/elsewhere"]))
    assert a != config_hash(compose(["tricks=[cosine,mixup]", "tricks.mixup.alpha=0.4"]))
    assert a != config_hash(compose(["tricks=[cosine,mixup]", "seed=1"]))
    # how the engine computes the same step: optimizer kernel, torch.compile, cuDNN autotuning
    assert a == config_hash(compose(["tricks=[cosine,mixup]", "optim.impl=loop",
                                     "train.compile=true", "train.cudnn_benchmark=false"]))
    assert a != config_hash(compose(["tricks=[cosine,mixup]", "train.channels_last=false"]))
    # where the data lies, and how many threads or loader workers read it
    assert a == config_hash(compose(["tricks=[cosine,mixup]", "data.root=/mnt/fmnist",
                                     "train.threads=3",
                                     "train.log_every=5"]))
    assert a != config_hash(compose(["tricks=[cosine,mixup]", "data.train_subset=100"]))


def test_hash_of_the_default_config_is_stable():
    """The default config's hash (it changed when the models' init became a config key); a
    checkpoint or result written under the legacy rule (which hashed data locations and thread
    counts) still matches its config."""
    from ablate.config import LEGACY_NON_SEMANTIC, matches

    cfg = compose([])
    assert config_hash(cfg) == "7b97dc737d33"
    assert config_hash(cfg, LEGACY_NON_SEMANTIC) == "598f0e11c4cf"
    assert matches("598f0e11c4cf", cfg) and matches("7b97dc737d33", cfg)
    # a key added later whose default leaves runs as they were is hashed only when set
    assert config_hash(compose(["train.diverge_factor=null"])) == "7b97dc737d33"
    assert config_hash(compose(["train.diverge_factor=10"])) != "7b97dc737d33"
    assert not matches("0123456789ab", cfg) and not matches(None, cfg)


def test_override_formatting():
    assert to_overrides({"a.b": [1.5, 3], "c": True, "d": None, "e": "x y", "f": "resnet50_d"}) \
        == ["a.b=[1.5,3]", "c=true", "d=null", "e='x y'", "f=resnet50_d"]
    assert format_value({"k": 1}) == "{k:1}"
