"""Applying ``with`` settings to an owner's action: the final action and its label.

A ``with`` rule's settings change the optimizer call of whatever ``->`` rule owns a
leaf: ``lr * f`` multiplies its learning rate (a number, or a schedule, which keeps its
shape), ``name = v`` sets its keyword ``name``. In a ``chain`` a setting goes to the one
call that takes it; none or several is an error. Frozen leaves take no settings; ``frozen
until N then OPT`` applies them to ``OPT``.

The final action's label is the owner's label followed by the settings, so that equal
final actions share a label and the label says what changed:

>>> from partspec.language.values import OptaxCall
>>> owner = OptaxCall("adamw", "optimizer", (0.001,), (("weight_decay", 0.05),))
>>> label, action = apply_settings("adamw(lr)", owner, (("lr", 0.5), ("weight_decay", 0)))
>>> label
'adamw(lr)[lr*0.5, weight_decay=0]'
>>> action.args, action.kwargs
((0.0005,), (('weight_decay', 0),))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from partspec.language.registry import SIGNATURES as TABLE
from partspec.language.values import (
    Action,
    OptaxCall,
    ScaledSchedule,
    Unset,
    Until,
    Value,
    _coerce,
    _is_number,
    _scale,
    type_name,
)

__all__ = ["SettingError", "apply_settings", "show_value"]

#: The keyword an optimizer takes its learning rate by.
LEARNING_RATE = "learning_rate"


class SettingError(ValueError):
    """A setting does not fit the owner's action; ``message`` and ``hint`` say why."""

    def __init__(self, name: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.name = name
        self.message = message
        self.hint = hint


def show_value(v: Value) -> str:
    """A value as labels write it: exact (``repr`` of floats), one line.

    >>> show_value(0.75 ** 3), show_value(True), show_value("x"), show_value(None)
    ('0.421875', 'true', '"x"', 'none')
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(show_value(x) for x in v) + "]"
    if isinstance(v, ScaledSchedule):
        return f"{show_value(v.factor)} * {show_value(v.schedule)}"
    if isinstance(v, OptaxCall):
        parts = [show_value(a) for a in v.args] + [f"{k}={show_value(x)}" for k, x in v.kwargs]
        return f"{v.name}({', '.join(parts)})"
    return str(v)


def _takes(call: OptaxCall, name: str) -> bool:
    entry = TABLE.get(call.name)
    return entry is not None and any(
        p["name"] == name and p["kind"] in ("pos", "kw") for p in entry["params"]
    )


def _calls(call: OptaxCall) -> list[OptaxCall]:
    """The call and the optimizer or transform calls nested in it (a chain's parts)."""
    out = [call]
    for v in (*call.args, *(v for _, v in call.kwargs)):
        if isinstance(v, OptaxCall) and v.kind != "schedule":
            out += _calls(v)
    return out


def _get(call: OptaxCall, name: str) -> tuple[bool, Value]:
    """Whether ``call`` gives argument ``name``, and its value."""
    params = [p for p in TABLE[call.name]["params"] if p["kind"] == "pos"]
    for p, v in zip(params, call.args):
        if p["name"] == name:
            return True, v
    for k, v in call.kwargs:
        if k == name:
            return True, v
    return False, None


def _set(call: OptaxCall, name: str, value: Value) -> OptaxCall:
    """``call`` with argument ``name`` set to ``value`` (in place if given positionally;
    keywords kept in signature order, as the checker writes them)."""
    params = TABLE[call.name]["params"]
    positional = [p["name"] for p in params if p["kind"] == "pos"]
    args = list(call.args)
    if name in positional[: len(args)]:
        args[positional.index(name)] = value
        return OptaxCall(call.name, call.kind, tuple(args), call.kwargs)
    kwargs = dict(call.kwargs)
    kwargs[name] = value
    order = [p["name"] for p in params]
    return OptaxCall(
        call.name, call.kind, tuple(args), tuple((k, kwargs[k]) for k in order if k in kwargs)
    )


def _replace(root: OptaxCall, old: OptaxCall, new: OptaxCall) -> OptaxCall:
    """``root`` with the nested call ``old`` (by identity) replaced by ``new``."""
    if root is old:
        return new

    def sub(v: Value) -> Value:
        return _replace(v, old, new) if isinstance(v, OptaxCall) and v.kind != "schedule" else v

    return OptaxCall(
        root.name,
        root.kind,
        tuple(sub(a) for a in root.args),
        tuple((k, sub(v)) for k, v in root.kwargs),
    )


def _target(call: OptaxCall, name: str) -> OptaxCall:
    calls = _calls(call)
    takers = [c for c in calls if _takes(c, name)]
    if len(takers) == 1:
        return takers[0]
    shown = ", ".join(f"`{c.name}`" for c in calls)
    if not takers:
        return _raise(
            name,
            f"`{call.name}` has no argument `{name}`"
            if len(calls) == 1
            else f"none of the calls in the owner's action ({shown}) takes `{name}`",
            "a `with` setting changes the optimizer of the `->` rule that owns the leaf: "
            "keep the rule from matching leaves whose optimizer has no such argument "
            "(`except`, a narrower pattern)",
        )
    many = ", ".join(f"`{c.name}`" for c in takers)
    return _raise(
        name,
        f"several calls in the owner's action take `{name}` ({many}): which one is meant "
        "is ambiguous",
        "give the value in the owner's action instead, or split the chain into rules",
    )


def _raise(name: str, message: str, hint: str | None = None) -> Any:
    raise SettingError(name, message, hint)


def _with_setting(call: OptaxCall, name: str, value: Value) -> OptaxCall:
    if name == "lr":
        target = _target(call, LEARNING_RATE)
        given, old = _get(target, LEARNING_RATE)
        if not given or old is None:
            return _raise(
                name,
                f"`{target.name}` is given no learning rate to multiply",
                f"give `{target.name}` a learning rate, or set it: `learning_rate = ...`",
            )
        if isinstance(value, Unset) or isinstance(old, Unset):
            return call
        assert _is_number(value)
        if _is_number(old):
            new: Value = old * value  # type: ignore[operator]
        else:
            new = _scale(float(value), old)  # type: ignore[arg-type]
        return _replace(call, target, _set(target, LEARNING_RATE, new))
    target = _target(call, name)
    param = next(p for p in TABLE[target.name]["params"] if p["name"] == name)
    types = param["types"]
    ok, fixed = (False, value) if types is None else _coerce(types, value)
    if not ok:
        return _raise(
            name,
            f"argument `{name}` of `{target.name}` cannot be set to {type_name(value)}"
            + (f" `{show_value(value)}`" if _is_number(value) else ""),
        )
    return _replace(call, target, _set(target, name, fixed))


def apply_settings(
    owner_label: str, action: Action, settings: Sequence[tuple[str, Value]]
) -> tuple[str, Action]:
    """The label and action of a leaf whose owner has ``owner_label`` and ``action``,
    with ``settings`` (``(name, value)``, one per setting name) applied.

    A frozen leaf (``action is None``) takes no settings.

    Raises:
      SettingError: a setting that no call of the action takes, or several do.
    """
    if action is None or not settings:
        return owner_label, action
    final: Action = action
    for name, value in settings:
        if isinstance(final, Until):
            if isinstance(final.then, OptaxCall):
                final = Until(final.at, _with_setting(final.then, name, value))
        elif isinstance(final, OptaxCall):
            final = _with_setting(final, name, value)
    shown = ", ".join(
        f"lr*{show_value(v)}" if n == "lr" else f"{n}={show_value(v)}" for n, v in settings
    )
    return f"{owner_label}[{shown}]", final
