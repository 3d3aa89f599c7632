"""User extensions: optimizers, transforms and schedules registered from Python.

A spec is data: it can *name* a registered factory, never define one. Python code (a
training script, or a plugin module that ``pspec`` imports because ``--plugin`` or
``[tool.partspec]`` in ``pyproject.toml`` names it) registers a factory under a name with
:func:`register`; specs then call it like an allow-listed optax function, its arguments
checked against the factory's signature.

>>> import math
>>> def rsqrt(timescale: float = 10_000.0, shift: float = 0.0):
...     return lambda count: 1.0 / math.sqrt((count + shift) / timescale)
>>> register("rsqrt_doc", rsqrt, kind="schedule")
>>> [p["name"] for p in SIGNATURES["rsqrt_doc"]["params"]]
['timescale', 'shift']
>>> unregister("rsqrt_doc")
"""

from __future__ import annotations

import inspect
import threading
from collections import ChainMap
from collections.abc import Callable
from typing import Any

from partspec.language._optax_table import TABLE
from partspec.language.functions import FUNCTIONS
from partspec.language.vocabulary import KEYWORDS, LEAF_PROPERTIES

__all__ = ["KINDS", "SIGNATURES", "factory", "is_registered", "register", "unregister"]

#: What a registered factory returns: an ``optax.GradientTransformation`` (``optimizer``,
#: ``transform``) or a schedule, a function of the step count (``schedule``).
KINDS = ("optimizer", "transform", "schedule")

_REGISTERED: dict[str, dict[str, Any]] = {}
_FACTORIES: dict[str, Callable[..., Any]] = {}
_LOCK = threading.Lock()

#: Every callable name a spec may use with its signature: the registered factories,
#: then the allow-listed optax functions (the table generated from optax).
SIGNATURES: ChainMap[str, dict[str, Any]] = ChainMap(_REGISTERED, TABLE)

#: What an argument of a registered factory may be when its annotation and default do
#: not tell: any plain value a spec can write.
_ANY = ("number", "bool", "str", "none", "schedule", "transform", "list[number]")

_KINDS: dict[Any, str] = {
    inspect.Parameter.POSITIONAL_ONLY: "pos",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "pos",
    inspect.Parameter.KEYWORD_ONLY: "kw",
    inspect.Parameter.VAR_POSITIONAL: "varargs",
}


def _types(p: inspect.Parameter) -> tuple[str, ...]:
    from partspec.language._tablegen import classify

    if p.annotation is not inspect.Parameter.empty:
        found = classify("", p.name, p.annotation)
        if found is not None:
            return found
    d = p.default
    if isinstance(d, bool):
        return ("bool",)
    if isinstance(d, int):
        return ("int", "number")
    if isinstance(d, float):
        return ("number", "schedule") if p.name == "learning_rate" else ("number",)
    if isinstance(d, str):
        return ("str",)
    return _ANY


def _signature(fn: Callable[..., Any]) -> list[dict[str, Any]]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise TypeError(f"partspec.register: cannot read the signature of {fn!r}") from err
    params = []
    for p in sig.parameters.values():
        kind = _KINDS.get(p.kind)
        if kind is None:  # **kwargs: a spec names each argument it passes
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        if not isinstance(default, (int, float, str, bool, type(None))):
            default = repr(default)
        params.append(
            {
                "name": p.name,
                "kind": kind,
                "required": p.default is inspect.Parameter.empty and kind != "varargs",
                "types": _types(p),
                "default": default,
            }
        )
    return params


def register(
    name: str, factory_fn: Callable[..., Any], kind: str = "optimizer", *, replace: bool = False
) -> None:
    """Let specs call ``factory_fn`` by ``name``.

    Args:
      name: the name specs use: an identifier, not an optax function's name, a keyword or
        a function of the language.
      factory_fn: returns an ``optax.GradientTransformation`` (``kind`` ``"optimizer"``
        or ``"transform"``) or a schedule (``"schedule"``: a function of the step count).
        Its parameters are read from its signature and checked like optax's: a spec
        may pass them positionally or by keyword; their types come from annotations
        (``float``, ``int``, ``bool``, ``str``, a ``Callable`` for a schedule) or
        defaults.
      kind: ``"optimizer"``, ``"transform"`` or ``"schedule"``.
      replace: allow registering a name that is registered already.

    Raises:
      ValueError: a name a spec could not call, an optax name, or one registered
        already (without ``replace``); an unknown kind.
      TypeError: ``factory_fn`` is not callable or has no signature.
    """
    if kind not in KINDS:
        raise ValueError(f"partspec.register: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not callable(factory_fn):
        raise TypeError(f"partspec.register: {factory_fn!r} is not callable")
    if not name.isidentifier() or name.startswith("_") or not name.isascii():
        raise ValueError(
            f"partspec.register: {name!r} is not a name a spec can call (an ASCII "
            "identifier that does not start with `_`)"
        )
    if name in TABLE:
        raise ValueError(
            f"partspec.register: `{name}` is an optax function; register yours under another name"
        )
    if name in KEYWORDS or name in FUNCTIONS or name in LEAF_PROPERTIES or name == "count":
        raise ValueError(f"partspec.register: `{name}` is a word of the language")
    entry = {"kind": kind, "params": _signature(factory_fn), "registered": True}
    with _LOCK:
        if name in _REGISTERED and not replace and _FACTORIES[name] is not factory_fn:
            raise ValueError(
                f"partspec.register: `{name}` is registered already; pass replace=True to "
                "replace it"
            )
        _REGISTERED[name] = entry
        _FACTORIES[name] = factory_fn


def unregister(name: str) -> None:
    """Forget a registered name (no error if it is not registered)."""
    with _LOCK:
        _REGISTERED.pop(name, None)
        _FACTORIES.pop(name, None)


def is_registered(name: str) -> bool:
    """Whether ``name`` was registered with :func:`register`."""
    return name in _REGISTERED


def factory(name: str) -> Callable[..., Any] | None:
    """The factory registered under ``name``, or ``None``."""
    return _FACTORIES.get(name)
