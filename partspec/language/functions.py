"""The language's number functions: ``min``, ``max``, ``round``, ``int``, ``floor``,
``ceil`` and ``abs``.

They compute what Python's functions of the same names compute (``round`` rounds
halves to even, ``int`` truncates toward zero), so a recipe written in Python, such as
big_vision's ``warmup = max(int(0.03 * total), 100)``, gives the same number in a spec.
``min`` and ``max`` also take one list (``max(shape)``). They take numbers only; a value
known only by its type while a condition is checked
(:class:`~partspec.language.values.Abstract`) gives a result known by type, and an
unset ``param`` gives an unset result.

>>> apply("max", [apply("int", [0.03 * 10_000]), 100])
300
>>> apply("round", [2.5]), apply("round", [0.125, 2]), apply("floor", [-0.5])
(2, 0.12, -1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from partspec.language.values import (
    _INT,
    _NUMBER,
    Abstract,
    Unset,
    Value,
    _is_number,
    _SampleShape,
)

__all__ = ["FUNCTIONS", "ArityError", "FunctionTypeError", "apply", "signature"]


class ArityError(ValueError):
    """A function was called with the wrong number of arguments."""


class FunctionTypeError(ValueError):
    """An argument is not a number; ``index`` is which one."""

    def __init__(self, index: int, value: Value):
        super().__init__(index, value)
        self.index = index
        self.value = value


def _round(x: float, ndigits: int | None = None) -> int | float:
    return round(x) if ndigits is None else round(x, ndigits)


#: name -> (python function, fewest arguments, most arguments (None: any), what it returns
#: when an argument is known by type only: "int", "number" or "same").
_TABLE: dict[str, tuple[Callable[..., Any], int, int | None, str]] = {
    "min": (min, 1, None, "number"),
    "max": (max, 1, None, "number"),
    "round": (_round, 1, 2, "int"),
    "int": (int, 1, 1, "int"),
    "floor": (math.floor, 1, 1, "int"),
    "ceil": (math.ceil, 1, 1, "int"),
    "abs": (abs, 1, 1, "same"),
}

#: The names of the language's number functions.
FUNCTIONS = frozenset(_TABLE)

_SIGNATURES = {
    "min": "min(a, b, ...)` or `min(list)",
    "max": "max(a, b, ...)` or `max(list)",
    "round": "round(x) or round(x, digits)",
    "int": "int(x)",
    "floor": "floor(x)",
    "ceil": "ceil(x)",
    "abs": "abs(x)",
}


def signature(name: str) -> str:
    """How a function is called, for messages: ``signature("round")``."""
    return _SIGNATURES[name]


def apply(name: str, args: Sequence[Value]) -> Value:
    """``name(*args)`` on language values.

    Raises:
      ArityError: too few or too many arguments.
      FunctionTypeError: an argument that is not a number (a list, a string, a schedule).
    """
    fn, lo, hi, kind = _TABLE[name]
    if name in ("min", "max") and len(args) == 1:
        (only,) = args
        if isinstance(only, _SampleShape):  # a leaf's shape, known by type only
            return _INT
        if not isinstance(only, tuple) or not only:
            raise ArityError(name)
        args = only
    if len(args) < lo or (hi is not None and len(args) > hi):
        raise ArityError(name)
    for i, a in enumerate(args):
        if isinstance(a, Unset):
            return a
        if not (_is_number(a) or (isinstance(a, Abstract) and a.kind != "bool")):
            raise FunctionTypeError(i, a)
        if name == "round" and i == 1 and not (isinstance(a, int) or a == _INT):
            raise FunctionTypeError(i, a)
    if any(isinstance(a, Abstract) for a in args):
        if kind == "int" and not (name == "round" and len(args) == 2):
            return _INT
        if kind == "same" or name in ("min", "max"):
            return _INT if all(a == _INT or isinstance(a, int) for a in args) else _NUMBER
        return _NUMBER
    try:
        out: Value = fn(*args)
    except OverflowError:  # int(1e308) is fine; int(inf) cannot happen (no inf values)
        raise FunctionTypeError(0, args[0]) from None
    return out
