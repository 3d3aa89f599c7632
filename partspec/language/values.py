"""Values of the language: what checking evaluates expressions and actions to.

Plain data, no JAX or optax: numbers, strings, booleans, ``none`` and lists, plus
:class:`OptaxCall` (an allow-listed optax call with evaluated arguments),
:class:`ScaledSchedule` (a number times a schedule), :class:`Until` (``frozen until N
then ...``), :class:`Unset` (a ``param`` without a value yet) and :class:`Abstract` (a
leaf property known only by its type, while a condition is checked without a leaf).
These are what backends build optimizers from.

>>> OptaxCall("adam", "optimizer", (0.001,), ())
OptaxCall(name='adam', kind='optimizer', args=(0.001,), kwargs=())
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

from partspec.language.vocabulary import OPTAX_DTYPES

__all__ = [
    "Abstract",
    "Action",
    "DTypeName",
    "LeafInfo",
    "OptaxCall",
    "ScaledSchedule",
    "Unset",
    "Until",
    "Value",
    "capture_value",
    "type_name",
]


class DTypeName(str):
    """A leaf's dtype name (``"float32"``): comparing it with an unknown name is an error."""

    __slots__ = ()


@dataclass(frozen=True)
class LeafInfo:
    """What a ``where`` condition may know about a leaf: its shape and dtype name."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Abstract:
    """A value known only by its type: a leaf property while a condition is checked
    without a leaf (``kind`` is ``"int"``, ``"number"`` or ``"bool"``).

    Checking evaluates with these, so that it finds type errors in every part of a
    condition without evaluating values that a guard would skip: ``size > 1 and
    1 / (size - 1) < 0.5`` has no division by zero to report.
    """

    kind: str


class _SampleShape(tuple):
    """The shape used to type-check a condition without a leaf: a list of integers."""

    __slots__ = ()


class _SampleDType(DTypeName):
    """The dtype used to type-check a condition without a leaf: a dtype name, unknown."""

    __slots__ = ()


def capture_value(text: str) -> int | str:
    """The value a capture binds: an integer where the text is all ASCII digits.

    >>> capture_value("11"), capture_value("ln_1")
    (11, 'ln_1')
    """
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return text


@dataclass(frozen=True)
class OptaxCall:
    """A checked call of an allow-listed optax function, with plain argument values."""

    name: str
    kind: str
    args: tuple[Value, ...]
    kwargs: tuple[tuple[str, Value], ...]


@dataclass(frozen=True)
class ScaledSchedule:
    """``factor * schedule``: a learning-rate multiplier that keeps the schedule."""

    factor: float
    schedule: Value


@dataclass(frozen=True)
class Unset:
    """A ``param`` with no value yet (only while checking without values)."""

    name: str


Value = Union[int, float, str, bool, None, tuple, OptaxCall, ScaledSchedule, Unset, "Abstract"]


@dataclass(frozen=True)
class Until:
    """``frozen until at then then``: frozen for the first ``at`` updates, then ``then``."""

    at: int | Unset
    then: OptaxCall | Unset


Action = Union[OptaxCall, Until, Unset, None]


def type_name(v: Value) -> str:
    """How a value's type is named in messages."""
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "none"
    if isinstance(v, tuple):
        return "a list"
    if isinstance(v, ScaledSchedule):
        return "a schedule"
    if isinstance(v, OptaxCall):
        return {"schedule": "a schedule", "optimizer": "an optimizer"}.get(v.kind, "a transform")
    if isinstance(v, Abstract):
        return {"int": "an integer", "number": "a number"}.get(v.kind, "a boolean")
    return "an unset param"


_TYPE_WORDS = {
    "number": "a number",
    "int": "an integer",
    "bool": "a boolean (`true`/`false`)",
    "str": "a string",
    "none": "`none`",
    "schedule": "a schedule",
    "transform": "an optimizer or transform",
    "dtype": 'a dtype name such as "bfloat16"',
    "list[int]": "a list of integers",
    "list[schedule]": "a list of schedules",
}


def _is_number(v: Value) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_schedule(v: Value) -> bool:
    return isinstance(v, ScaledSchedule) or (isinstance(v, OptaxCall) and v.kind == "schedule")


def _is_transform(v: Value) -> bool:
    return isinstance(v, OptaxCall) and v.kind != "schedule"


def _coerce(types: tuple[str, ...], v: Value) -> tuple[bool, Value]:
    """Whether ``v`` fits one of ``types``, and the value to pass (ints made exact)."""
    if isinstance(v, Unset):
        return True, v
    for t in types:
        if t == "number" and _is_number(v):
            return True, v
        if t == "int" and _is_number(v):
            if isinstance(v, int):
                return True, v
            assert isinstance(v, float)
            if v.is_integer():
                return True, int(v)
        if t == "bool" and isinstance(v, bool):
            return True, v
        if t == "str" and isinstance(v, str):
            return True, v
        if t == "none" and v is None:
            return True, v
        if t == "dtype" and isinstance(v, str) and v in OPTAX_DTYPES:
            return True, v
        if t == "schedule" and _is_schedule(v):
            return True, v
        if t == "transform" and _is_transform(v):
            return True, v
        if t.startswith("list[") and isinstance(v, tuple):
            inner = (t[5:-1],)
            fixed = [_coerce(inner, item) for item in v]
            if all(ok for ok, _ in fixed):
                return True, tuple(x for _, x in fixed)
    return False, v


_SAMPLE_LEAF = LeafInfo(_SampleShape(), _SampleDType("float32"))
_INT, _NUMBER, _BOOL = Abstract("int"), Abstract("number"), Abstract("bool")


def _numeric(v: Value) -> bool:
    """A number, or a value known to be one."""
    return _is_number(v) or (isinstance(v, Abstract) and v.kind != "bool")


def _abstract(*values: Value) -> bool:
    return any(isinstance(v, (Abstract, _SampleDType)) for v in values)


def _kind(v: Value) -> str:
    if isinstance(v, Abstract):
        return "bool" if v.kind == "bool" else "number"
    if _is_number(v):
        return "number"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, str):
        return "str"
    if isinstance(v, tuple):
        return "list"
    if v is None:
        return "none"
    return "other"


def _equal(a: Value, b: Value) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return _kind(a) == _kind(b) and a == b


def _from_python(raw: Any) -> Value:
    if raw is None or isinstance(raw, (bool, int, float, str)):
        if isinstance(raw, float) and not math.isfinite(raw):
            return _BAD
        return raw
    import numbers

    if isinstance(raw, numbers.Integral):  # NumPy integer scalars
        return int(raw)
    if isinstance(raw, numbers.Real):
        return _from_python(float(raw))
    if getattr(raw, "shape", None) == () and hasattr(raw, "item"):  # 0-d NumPy/JAX arrays
        item = raw.item()
        if isinstance(item, (bool, int, float)):
            return _from_python(item)
    return _BAD


def _scale(factor: float, sched: Value) -> Value:
    if isinstance(sched, ScaledSchedule):
        return ScaledSchedule(factor * sched.factor, sched.schedule)
    return ScaledSchedule(factor, sched)


_BAD: Any = object()
