"""Net options: each builder declares its keyword options once, on its own signature.

    def build(num_classes: int = 10,
              width: Annotated[int, AtLeast(1)] = 64,                      # an integer >= 1
              stem: Annotated[str, OneOf("cifar", "imagenet")] = "cifar",  # one of two strings
              dropout: DropRate | None = None,                             # none, or a number >= 0 and < 1
              zero_init_residual: bool = False) -> Net:

The annotation's type (int, float, bool or str; `| None` where None is allowed) says how a command-line
string becomes a value ("64", "0.1", "true", "none"); the constraints inside `Annotated` say which values are
allowed; the signature's default is the default. Two doors read one declaration: `Option.check` takes a value
from Python (nets.build), `Option.parse` command-line text (nets.parse_options, for train/config.py); both
return the typed value or raise a one-line NetError naming the net, the option, the value and what is allowed.
Constraints between options (a ViT's patch dividing its image size) stay in the builder, which raises NetError
itself.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from nets.core import NetError

KINDS = (int, float, bool, str)  # the types an option may have; a command line spells each as text
NOUNS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
BOOLS = {"true": True, "false": False}  # a bool's spellings, in any case ("1" and "yes" are not booleans here)
NONE = "none"  # the spelling of None, for options that allow it


@dataclass(frozen=True)
class AtLeast:
    low: float

    def allows(self, value) -> bool:
        return value >= self.low

    def __str__(self) -> str:
        return f">= {self.low}"


@dataclass(frozen=True)
class Above:
    low: float

    def allows(self, value) -> bool:
        return value > self.low

    def __str__(self) -> str:
        return f"> {self.low}"


@dataclass(frozen=True)
class Below:
    high: float

    def allows(self, value) -> bool:
        return value < self.high

    def __str__(self) -> str:
        return f"< {self.high}"


class OneOf:
    def __init__(self, *choices):
        self.choices = choices

    def allows(self, value) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return f"one of {', '.join(map(show, self.choices))}"

    def __repr__(self) -> str:
        return f"OneOf{self.choices!r}"


Constraint = AtLeast | Above | Below | OneOf
# A rate of dropping (dropout, stochastic depth): 1 would drop everything.
DropRate = Annotated[float, AtLeast(0), Below(1)]


def show(value) -> str:
    """A value as the command line spells it: none, true, 64, cifar."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and not (value.isprintable() and value.strip() == value != ""):
        return repr(value)  # keeps the message one line, and shows blanks
    return str(value)


@dataclass(frozen=True)
class Option:
    """One keyword option of a builder: its type, whether None is allowed, its constraints and its default."""

    name: str
    kind: type  # one of KINDS
    optional: bool  # None is allowed (the builder then picks a value, e.g. its config's)
    constraints: tuple[Constraint, ...]
    default: Any

    def allowed(self) -> str:
        """What the option takes, in words: "an integer >= 1 (default 64)"."""
        text = " and ".join(str(c) for c in self.constraints)
        if not (self.kind is str and any(isinstance(c, OneOf) for c in self.constraints)):
            text = f"{NOUNS[self.kind]} {text}".rstrip()  # the choices of a string say all there is
        if self.optional:
            text = f"true, false or {NONE}" if self.kind is bool else f"{NONE} or {text}"
        return f"{text} (default {show(self.default)})"

    def check(self, net: str, value) -> Any:
        """A value from Python, of this option's type (an int is taken where a float is declared) and allowed;
        NetError if not. Text is not parsed here: "true" is not a bool (`parse` reads the command line's)."""
        if value is None and self.optional:
            return None
        return self._allowed(net, value, *self._typed(value))

    def parse(self, net: str, text: str) -> Any:
        """Command-line text ("64", "0.1", "true", "none", "cifar") as this option's value, checked as `check`
        checks a Python value; NetError if not."""
        if self.optional and text.strip().lower() == NONE:
            return None
        if self.kind is str:
            return self._allowed(net, text, text, None)
        if self.kind is bool:
            spelled = BOOLS.get(text.strip().lower())
            return self._allowed(net, text, spelled, None if spelled is not None else self._wrong())
        try:
            number = self.kind(text)
        except ValueError:
            return self._allowed(net, text, None, self._wrong())
        return self._allowed(net, text, *self._typed(number))

    def _typed(self, value) -> tuple[Any, str | None]:
        """(value as self.kind, None), or (None, what is wrong with it)."""
        if self.kind in (str, bool):
            return (value, None) if isinstance(value, self.kind) else (None, self._wrong())
        if isinstance(value, bool) or not isinstance(value, (int, float)):  # True is an int to Python, not here
            return None, self._wrong()
        if self.kind is int:
            return (value, None) if isinstance(value, int) else (None, self._wrong())
        return (float(value), None) if math.isfinite(value) else (None, "is not a finite number")

    def _wrong(self) -> str:
        return f"is not {NOUNS[self.kind]}"

    def _allowed(self, net: str, given, typed, problem: str | None) -> Any:
        """`typed` if it has no problem and every constraint allows it; else NetError about `given`."""
        if problem is None and not all(c.allows(typed) for c in self.constraints):
            problem = "is not allowed"
        if problem is not None:
            raise NetError(f"{net}: net.{self.name}={show(given)} {problem}; net.{self.name} must be {self.allowed()}")
        return typed


def declared_options(builder: Callable) -> dict[str, Option]:
    """The Option of each keyword parameter of `builder` but num_classes, read from its signature.
    TypeError where one is not a declaration: no annotation, a type outside KINDS, a default that breaks it."""
    hints = typing.get_type_hints(builder, include_extras=True)
    declared = {}
    for name, parameter in inspect.signature(builder).parameters.items():
        if name == "num_classes":
            continue
        if name not in hints or parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{builder.__qualname__}: option {name} needs an annotation and a default")
        option = _option(name, hints[name], parameter.default)
        try:
            option.check(builder.__qualname__, option.default)
        except NetError as e:
            raise TypeError(f"{builder.__qualname__}: its default breaks the declaration ({e})") from e
        declared[name] = option
    return declared


def _option(name: str, hint, default) -> Option:
    constraints, hint = _unwrap(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"option {name}: {hint} is not one type or None")
        more, hint = _unwrap(rest[0])
        constraints += more
    if hint not in KINDS or not all(isinstance(c, Constraint) for c in constraints):
        raise TypeError(f"option {name}: {hint} is not one of {KINDS} with constraints of nets.options")
    return Option(name, hint, optional, constraints, default)


def _unwrap(hint) -> tuple[tuple, Any]:
    """(the constraints of Annotated[T, *constraints], T); ((), hint) for a hint without them."""
    if typing.get_origin(hint) is Annotated:
        kind, *constraints = typing.get_args(hint)
        return tuple(constraints), kind
    return (), hint
