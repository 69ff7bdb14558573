"""Every option of every registered net is declared on its builder (nets/options.py) and checked by nets.build:
command-line text becomes the typed value, a bad value is a one-line NetError naming the option, and through
the real command line it is a user error (exit 2) before any data is read or any run directory written."""

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from runs import entry_point
from synthetic import write_cifar10_pickles

import nets
import nets.registry
from nets.options import KINDS, AtLeast, OneOf, Option, show
from train.config import from_json, parse

REPO = Path(__file__).resolve().parents[1]
CASES = [(name, option) for name in nets.names() for option in nets.options(name)]
# Values of the wrong type for each kind of option, from Python (nets.build: text is not parsed there, so "64"
# is not an integer) and as command-line text (nets.parse_options; any text is a string).
WRONG_PYTHON = {int: ["abc", "64", 4.0, True], float: ["abc", "0.5", True], bool: ["true", 1], str: [7]}
WRONG_TEXT = {int: ["abc", "4.0", ""], float: ["abc", "1/2"], bool: ["maybe", "1", "yes"], str: []}


def built(door: str, name: str, option: str, value):
    """nets.build with one option, given as a Python value or as command-line text."""
    opts = {option: value} if door == "python" else nets.parse_options(name, {option: value})
    return nets.build(name, 10, **opts)


def not_allowed(option: Option) -> list:
    """Values of the option's type that one of its constraints refuses."""
    bad = []
    for c in option.constraints:
        if isinstance(c, OneOf):
            bad.append("not-a-choice")
        elif isinstance(c, AtLeast):
            bad.append(c.low - 1 if option.kind is int else c.low - 0.5)
        else:  # Above(x) and Below(x) both refuse x itself
            bad.append(c.low if hasattr(c, "low") else c.high)
    return bad


def refused_in_one_line(door: str, name: str, option: str, value) -> str:
    with pytest.raises(nets.NetError) as e:
        built(door, name, option, value)
    message = str(e.value)
    assert "\n" not in message, message
    assert message.startswith(f"{name}: net.{option}="), message  # the net, the option, the value
    assert f"; net.{option} must be " in message and "(default " in message, message  # and what is allowed
    return message


@pytest.mark.parametrize("name,option", CASES)
def test_every_option_is_declared_and_its_default_builds(name, option):
    declared = nets.declarations(name)[option]
    assert declared.kind in KINDS and declared.default == nets.options(name)[option]
    assert nets.parse_options(name, {option: show(declared.default)}) == {option: declared.default}
    plain = nets.build(name, 10).param_count()
    assert built("python", name, option, declared.default).param_count() == plain
    assert built("text", name, option, show(declared.default)).param_count() == plain


@pytest.mark.parametrize("door", ["python", "text"])
@pytest.mark.parametrize("name,option", CASES)
def test_wrong_type_raises_one_line(name, option, door):
    declared = nets.declarations(name)[option]
    for value in (WRONG_PYTHON if door == "python" else WRONG_TEXT)[declared.kind]:
        assert " is not " in refused_in_one_line(door, name, option, value)
    nothing = None if door == "python" else "none"
    if declared.optional:  # None is a value only where the declaration allows it
        assert built(door, name, option, nothing).param_count() == nets.build(name, 10).param_count()
    else:
        refused_in_one_line(door, name, option, nothing)


@pytest.mark.parametrize("door", ["python", "text"])
@pytest.mark.parametrize("name,option", CASES)
def test_out_of_range_or_not_allowed_raises_one_line(name, option, door):
    declared = nets.declarations(name)[option]
    assert not_allowed(declared) or declared.kind is bool  # every other option has a range or choices
    for value in not_allowed(declared):
        message = refused_in_one_line(door, name, option, value if door == "python" else show(value))
        assert " is not allowed; " in message


def test_the_issue_examples_say_what_is_allowed():
    for door, values in (("text", ["abc", "0", "-4"]), ("python", [0, -4, "abc", 4.0, True])):
        for value in values:
            message = refused_in_one_line(door, "resnet18", "width", value)
            assert message.endswith("; net.width must be an integer >= 1 (default 64)")
    assert refused_in_one_line("text", "resnet18", "width", "abc") == (
        "resnet18: net.width=abc is not an integer; net.width must be an integer >= 1 (default 64)")


@pytest.mark.parametrize("door,name,option,value,message", [
    ("text", "resnet50", "stem", "tiny", "net.stem=tiny is not allowed; net.stem must be one of cifar, imagenet"),
    ("text", "mobilenetv1", "alpha", "0", "net.alpha must be a number > 0 (default 1.0)"),
    ("text", "mobilenetv1", "alpha", "inf", "net.alpha=inf is not a finite number"),
    ("text", "vgg16", "dropout", "1.0", "net.dropout must be none or a number >= 0 and < 1 (default none)"),
    ("python", "alexnet", "batchnorm", 1, "net.batchnorm=1 is not true or false"),
    ("text", "googlenet", "aux_logits", "maybe", "net.aux_logits must be true, false or none (default none)"),
    ("python", "googlenet", "torchvision_quirks", "true", "net.torchvision_quirks=true is not true or false"),
    ("text", "xception", "kernels", "triton", "net.kernels must be one of auto, reference (default auto)"),
    ("python", "vit", "drop_path", float("nan"), "net.drop_path=nan is not a finite number"),
    ("text", "vit", "pool", "", "net.pool='' is not allowed"),
    ("text", "vit", "pool", " mean", "net.pool=' mean' is not allowed"),
])
def test_bad_values(door, name, option, value, message):
    assert message in refused_in_one_line(door, name, option, value)


def test_constraints_between_options_are_the_builders():
    for opts in ({"patch": 5}, {"patch": 64}, {"patch": 16, "image_size": 200}):
        with pytest.raises(nets.NetError, match="must be a multiple of patch") as e:
            nets.build("vit_tiny", 10, **opts)
        assert "\n" not in str(e.value)
    assert nets.build("vit_tiny", 10, patch=16, image_size=224).module.grid == 14


@pytest.mark.parametrize("name,option,text,value", [
    ("resnet18", "width", "64", 64),
    ("resnet18", "zero_init_residual", "TRUE", True),
    ("mobilenetv1", "alpha", "1", 1.0),
    ("vgg16", "dropout", "none", None),
    ("vgg16", "dropout", "0.5", 0.5),
    ("googlenet", "aux_logits", "False", False),
    ("vit", "pool", "mean", "mean"),
    ("vit", "image_size", "224", 224),
])
def test_text_becomes_the_typed_value(name, option, text, value):
    typed = nets.parse_options(name, {option: text})[option]
    assert typed == value and type(typed) is type(value)


def test_an_int_is_taken_where_a_float_is_declared():
    assert nets.build("mobilenetv1", 10, alpha=1).param_count() == nets.build("mobilenetv1", 10).param_count()


# Builders that declare an option badly: no annotation; a default its own constraint refuses; a type outside KINDS.
def undeclared(num_classes=10, width=64): ...


def default_out_of_range(num_classes: int = 10, width: Annotated[int, AtLeast(1)] = 0): ...


def not_a_kind(num_classes: int = 10, widths: list = (64,)): ...


@pytest.mark.parametrize("builder,message", [
    (undeclared, "option width needs an annotation and a default"),
    (default_out_of_range, "its default breaks the declaration"),
    (not_a_kind, "is not one of"),
])
def test_a_builder_without_valid_declarations_is_refused_at_registration(builder, message, monkeypatch):
    monkeypatch.setattr(nets.registry, "_BUILDERS", {})
    with pytest.raises(TypeError, match=message):
        nets.registry.register("new")(builder)
    assert nets.registry._BUILDERS == {}


def test_config_holds_typed_values_and_round_trips():
    cfg = parse(["model=vgg16", "net.dropout=none", "net.config=imagenet"])
    assert cfg.net == {"dropout": None, "config": "imagenet"}
    mobilenet = parse(["model=mobilenetv1", "net.alpha=1", "net.imagenet=true"]).net
    assert mobilenet == {"alpha": 1.0, "imagenet": True} and type(mobilenet["alpha"]) is float
    assert from_json(cfg.to_json(), "test") == cfg
    with pytest.raises(nets.NetError, match="net.width=abc is not an integer"):
        parse(["net.width=abc"])
    # resume=true without the saved config: the model may not be the default, so options it lacks wait for build
    assert parse(["out=elsewhere", "resume=true", "net.drop_path=0.1"]).net == {"drop_path": "0.1"}
    saved = dataclasses.replace(parse(["model=vit"]), net={"drop_path": 0.1, "dropout": 0.1})
    assert parse(["net.drop_path=0.2"], base=saved).net == {"drop_path": 0.2, "dropout": 0.1}  # words win by key


@pytest.mark.parametrize("value", ["abc", "0", "-4"])
def test_bad_net_option_on_the_command_line_is_one_line_and_exit_2(value, tmp_path, capsys):
    """`python -m train model=resnet18 net.width=<bad>`: exit 2, one line on stderr, no run directory, and the
    data untouched (loading it would write its cache beside it). The first value in a fresh interpreter, the
    others through train.cli.main in this process (the same entry point, without another torch import)."""
    data = write_cifar10_pickles(tmp_path / "data", n_per_class_train=2, n_per_class_test=1)
    out = tmp_path / "run"
    words = ["model=resnet18", f"net.width={value}", f"data={data}", f"out={out}", "device=cpu", "compile=false",
             "download=false", "progress=false", "epochs=1", "batch_size=10", "val_fraction=0"]
    if value == "abc":
        proc = subprocess.run([sys.executable, "-m", "train", *words], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    else:
        proc = entry_point(capsys, "-m", "train", *words)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"net.width={value}" in proc.stderr and "integer >= 1" in proc.stderr, proc.stderr
    assert not out.exists()
    assert not (data / ".cifar-zoo-cache").exists()
