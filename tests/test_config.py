"""The key=value command-line contract."""

import pytest

from train.config import Config, ConfigError, parse


def test_defaults_are_the_seed_recipe():
    cfg = parse([])
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (0.1, 0.9, 5e-4, 256, 200)
    assert cfg.schedule == "plateau" and cfg.val_fraction == 0.1 and cfg.recipe == "seed"


def test_overrides_and_types():
    cfg = parse(["epochs=3", "lr=0.05", "nesterov=true", "net.width=16", "net.stem=imagenet", "device=cpu"])
    assert cfg.epochs == 3 and cfg.lr == 0.05 and cfg.nesterov is True
    assert cfg.net == {"width": 16, "stem": "imagenet"}
    assert cfg.run_dir() == "runs/resnet18-cifar10"
    assert Config(out="x").run_dir() == "x"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["lr=-0.1"], "lr must be positive"),
        (["epochs=0"], "epochs must be positive"),
        (["epochs=ten"], "not a valid int"),
        (["momentum=-1"], "momentum must not be negative"),
        (["val_fraction=1.5"], r"val_fraction must be in \[0, 1\)"),
        (["dataset=mnist"], "dataset='mnist' is not one of: cifar10, cifar100"),
        (["device=tpu"], "device='tpu' is not one of"),
        (["compile=maybe"], "compile='maybe'"),
        (["recipe=magic"], "unknown recipe 'magic'"),
        (["bogus=1"], "unknown key 'bogus'"),
        (["epochs"], "expected key=value"),
        (["nesterov=perhaps"], "not a valid bool"),
        (["labels=coarse"], "only for dataset=cifar100"),
        (["cutout=-2"], "cutout must not be negative"),
        (["optimizer=adam"], "optimizer='adam' is not one of: sgd, adamw"),
        (["optimizer=adamw", "nesterov=true"], "optimizer=adamw takes no nesterov"),
        (["optimizer=adamw", "momentum=1"], "beta1"),
        (["beta2=1"], r"beta2 must be in \[0, 1\)"),
    ],
)
def test_bad_values_are_one_line_errors(argv, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse(argv)
    assert "\n" not in str(e.value)
