"""The key=value command-line contract."""

import pytest

from train.config import Config, ConfigError, parse


def test_recipe_seed_is_the_seed_recipe():
    cfg = parse(["recipe=seed"])
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
        (["gpu_lock=/tmp/l"], "unknown key 'gpu_lock'"),
    ],
)
def test_bad_values_are_one_line_errors(argv, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse(argv)
    assert "\n" not in str(e.value)


def test_fast_recipe_settings_per_model_and_explicit_keys_win():
    base = parse(["recipe=fast", "model=resnet50"])  # a family with no settings of its own
    assert (base.epochs, base.optimizer, base.lr, base.nesterov, base.batch_size) == (40, "sgd", 0.2, True, 512)
    assert (base.cutout, base.mix) == (8, "none")
    vit = parse(["recipe=fast", "model=vit"])
    assert (vit.epochs, vit.optimizer, vit.lr, vit.nesterov, vit.weight_decay) == (300, "adamw", 1e-3, False, 0.05)
    assert (vit.batch_size, vit.cutout, vit.schedule, vit.mix) == (512, 8, "onecycle", "cutmix")  # shared keys stay
    assert (vit.randaugment, vit.net) == (2, {"drop_path": 0.1})  # a net option from the recipe
    mixed = parse(["recipe=fast", "model=vit", "net.drop_path=0.2", "net.dropout=0.1"])  # net. words win by key
    assert mixed.net == {"drop_path": 0.2, "dropout": 0.1}
    assert parse(["recipe=fast", "model=vit", "net.dropout=0.1"]).net == {"drop_path": 0.1, "dropout": 0.1}
    assert parse(["model=vgg16", "recipe=fast"]).epochs == 250  # order of the words does not matter
    default = parse(["recipe=fast"])  # the default model, resnet18: cutmix in place of cutout
    assert (default.epochs, default.mix, default.cutout) == (200, "cutmix", 0)
    mine = parse(["recipe=fast", "model=vit", "lr=5e-4", "epochs=3", "optimizer=sgd", "nesterov=true", "mix=none"])
    assert (mine.lr, mine.epochs, mine.optimizer, mine.nesterov, mine.mix) == (5e-4, 3, "sgd", True, "none")
    speed = parse(["recipe=speedrun"])  # fast, cut to a fixed short run, with the EMA and translate TTA
    assert (speed.epochs, speed.lr, speed.mix, speed.cutout, speed.ema, speed.tta, speed.schedule) == \
        (38, 0.4, "none", 12, 0.99, "translate", "onecycle")
    assert (parse(["recipe=speedrun", "model=vit"]).optimizer, parse(["recipe=speedrun", "model=vit"]).lr) == \
        ("adamw", 1e-3)  # the ViTs keep AdamW: SGD at lr 0.4 diverges there
    seed = parse(["recipe=seed", "model=vit"])  # the seed recipe has no per-model settings: the design card's SGD
    assert (seed.optimizer, seed.lr, seed.epochs, seed.mix) == ("sgd", 0.1, 200, "none")


def test_recipe_settings_name_real_models_and_keys():
    import dataclasses

    import nets
    from train.config import RECIPE_BY_MODEL, RECIPES

    keys = {f.name for f in dataclasses.fields(Config)}
    for recipe, by_model in RECIPE_BY_MODEL.items():
        assert recipe in RECIPES
        for model, settings in by_model.items():
            assert model in nets.names(), model
            assert set(settings) <= keys, (model, set(settings) - keys)
            assert parse([f"recipe={recipe}", f"model={model}"]).model == model  # and passes check()


def test_a_saved_configuration_drops_retired_keys_and_refuses_unknown_ones():
    import json

    from train.config import RETIRED, from_json

    saved = json.loads(Config(epochs=7).to_json())
    assert from_json(json.dumps({**saved, **{k: "x" for k in RETIRED}}), "config.json") == Config(epochs=7)
    with pytest.raises(ConfigError, match=r"not a configuration of this version \(unknown keys: \['bogus'\]\)"):
        from_json(json.dumps({**saved, "bogus": 1}), "config.json")
