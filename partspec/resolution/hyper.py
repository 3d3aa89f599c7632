"""A label's hyperparameters, read off its evaluated action: learning rate, weight decay.

Framework-neutral: what the spec says, as values (a number, or a schedule call with its
arguments). The values *over time* come from the compiled schedules, in the backend
(:mod:`partspec.jax.rates`), never from a second implementation here.

>>> from partspec.language.checker import check_spec
>>> from partspec.language.load import parse
>>> checked = check_spec(parse("** -> adamw(linear_schedule(1e-3, 0.0, 100), weight_decay=0.05)"))
>>> action = checked.rules[0].action
>>> find_arg(action, "weight_decay"), describe(find_arg(action, "learning_rate"))
(0.05, 'linear 0.001 -> 0 over 100 steps')
"""

from __future__ import annotations

from typing import Any

from partspec.language.registry import SIGNATURES as TABLE
from partspec.language.values import Action, OptaxCall, ScaledSchedule, Until, Value

__all__ = ["describe", "find_arg", "named_args", "number"]


def named_args(call: OptaxCall) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults included (from optax's table)."""
    params = TABLE[call.name]["params"]
    out: dict[str, Any] = {
        p["name"]: p["default"] for p in params if not p["required"] and p["kind"] == "pos"
    }
    positional = [p for p in params if p["kind"] == "pos"]
    for p, a in zip(positional, call.args):
        out[p["name"]] = a
    out.update(dict(call.kwargs))
    return out


def find_arg(action: Action | Value, name: str) -> Value | None:
    """The first argument called ``name`` in ``action`` (depth first, through ``chain``
    and ``frozen until ... then``), or ``None``."""
    if isinstance(action, Until):
        return find_arg(action.then, name)
    if not isinstance(action, OptaxCall) or TABLE[action.name]["kind"] == "schedule":
        return None
    args = named_args(action)
    if name in args and args[name] is not None:
        return args[name]
    for a in (*action.args, *(v for _, v in action.kwargs)):
        found = find_arg(a, name)
        if found is not None:
            return found
    return None


def number(x: Any) -> str:
    """A number as people read learning rates: ``0.001``, ``3.1e-05``, ``10``."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    x = float(f"{x:.3g}")  # three significant digits, decided before the notation
    if x and abs(x) < 1e-3:  # 0.000133 reads as 1.33e-4
        mantissa, exponent = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if abs(x) >= 1e4 and x == int(x):
        return str(int(x))
    return f"{x:.3g}"


def describe(value: Value | None) -> str:
    """A learning rate (or other scheduled value) in words.

    >>> from partspec.language.values import OptaxCall, ScaledSchedule
    >>> s = OptaxCall("warmup_cosine_decay_schedule", "schedule", (0.0, 1e-3, 10, 100), ())
    >>> describe(s)
    'warmup 10 steps 0 -> 0.001, cosine -> 0 at 100'
    >>> linear = OptaxCall("linear_schedule", "schedule", (1e-3, 0.0, 50), ())
    >>> describe(ScaledSchedule(10.0, linear))
    '10 x (linear 0.001 -> 0 over 50 steps)'
    >>> describe(3e-4)
    'constant 3e-4'
    """
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"constant {number(value)}"
    if isinstance(value, ScaledSchedule):
        return f"{number(value.factor)} x ({describe(value.schedule)})"
    if not isinstance(value, OptaxCall):
        return str(value)
    a = named_args(value)
    n = number
    if value.name == "constant_schedule":
        return f"constant {n(a['value'])}"
    if value.name == "linear_schedule":
        return (
            f"linear {n(a['init_value'])} -> {n(a['end_value'])} over "
            f"{n(a['transition_steps'])} steps"
        )
    if value.name == "warmup_cosine_decay_schedule":
        return (
            f"warmup {n(a['warmup_steps'])} steps {n(a['init_value'])} -> {n(a['peak_value'])}"
            f", cosine -> {n(a['end_value'])} at {n(a['decay_steps'])}"
        )
    if value.name == "cosine_decay_schedule":
        end = a["init_value"] * a["alpha"] if isinstance(a.get("alpha"), (int, float)) else 0
        return f"cosine {n(a['init_value'])} -> {n(end)} over {n(a['decay_steps'])} steps"
    if value.name == "exponential_decay":
        return (
            f"exponential {n(a['init_value'])} x {n(a['decay_rate'])} every "
            f"{n(a['transition_steps'])} steps"
        )
    args = ", ".join([n(x) for x in value.args] + [f"{k}={n(v)}" for k, v in value.kwargs])
    return f"{value.name}({args})"
