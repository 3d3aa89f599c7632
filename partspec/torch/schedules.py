"""The spec's schedules as Python functions of the step count, for ``torch.optim``.

PyTorch sets a param group's learning rate to a Python float before each step, so the
PyTorch backend needs each schedule of the allow-list as a plain function. Each one here is
optax's own formula (``optax.schedules`` of the optax version partspec's table was made
from), case for case, computed in double precision where optax computes in float32:
``tests/test_torch_schedules.py`` checks every one against optax at every step count
of random arguments, to float32 rounding. A schedule registered with
:func:`partspec.register` is called as registered.

>>> from partspec.language.values import OptaxCall, ScaledSchedule
>>> warm = OptaxCall("warmup_cosine_decay_schedule", "schedule", (0.0, 1.0, 2, 4), ())
>>> f = schedule_fn(ScaledSchedule(0.5, warm))
>>> [round(f(n), 4) for n in range(6)]
[0.0, 0.25, 0.5, 0.25, 0.0, 0.0]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from partspec.language.registry import factory
from partspec.language.values import OptaxCall, ScaledSchedule, Value
from partspec.resolution.hyper import named_args

__all__ = ["NoEquivalent", "schedule_fn"]

Schedule = Callable[[int], float]


class NoEquivalent(ValueError):
    """A value the PyTorch backend cannot reproduce exactly (the message says which)."""


def schedule_fn(value: Value) -> Schedule:
    """The learning rate at each step count: a number, a schedule call or a scaled one.

    Raises:
      NoEquivalent: a value that is not a number or a known or registered schedule.
      ValueError: arguments optax rejects too (``decay_steps <= 0`` of a cosine decay).
    """
    if isinstance(value, bool):
        raise NoEquivalent(f"a learning rate must be a number or a schedule, not {value!r}")
    if isinstance(value, (int, float)):
        v = float(value)
        return lambda count: v
    if isinstance(value, ScaledSchedule):
        inner = schedule_fn(value.schedule)
        f = float(value.factor)
        return lambda count: f * inner(count)
    if isinstance(value, OptaxCall) and value.kind == "schedule":
        args = named_args(value)
        registered = factory(value.name)
        if registered is not None:
            fn = registered(*value.args, **dict(value.kwargs))
            return lambda count: float(fn(count))
        make = _SCHEDULES.get(value.name)
        if make is None:  # pragma: no cover - every schedule of the table is here
            raise NoEquivalent(f"`{value.name}` has no implementation for PyTorch")
        return make(**args)
    raise NoEquivalent(f"a learning rate must be a number or a schedule, not {value!r}")


def _num(x: Any) -> float:
    if isinstance(x, (OptaxCall, ScaledSchedule)):
        raise NoEquivalent("a schedule argument that is itself a schedule")
    return float(x)


def constant_schedule(value: Any) -> Schedule:
    v = _num(value)
    return lambda count: v


def polynomial_schedule(
    init_value: Any,
    end_value: Any,
    power: Any,
    transition_steps: Any,
    transition_begin: Any = 0,
) -> Schedule:
    init, end, p = _num(init_value), _num(end_value), _num(power)
    steps, begin = int(transition_steps), int(transition_begin)
    if steps <= 0:
        return lambda count: init
    begin = max(begin, 0)

    def schedule(count: int) -> float:
        c = min(max(count - begin, 0), steps)
        frac = 1 - c / steps
        return float((init - end) * (frac**p) + end)

    return schedule


def linear_schedule(
    init_value: Any, end_value: Any, transition_steps: Any, transition_begin: Any = 0
) -> Schedule:
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def exponential_decay(
    init_value: Any,
    transition_steps: Any,
    decay_rate: Any,
    transition_begin: Any = 0,
    staircase: Any = False,
    end_value: Any = None,
) -> Schedule:
    init, rate = _num(init_value), _num(decay_rate)
    steps, begin = int(transition_steps), int(transition_begin)
    if steps <= 0 or rate == 0:
        return lambda count: init
    begin = max(begin, 0)
    end = None if end_value is None else _num(end_value)
    clip = max if rate < 1.0 else min

    def schedule(count: int) -> float:
        dec = count - begin
        p = dec / steps
        if staircase:
            p = math.floor(p)
        v = init if dec <= 0 else init * _float32_range(rate, p)
        return float(clip(v, end)) if end is not None else float(v)

    return schedule


def _float32_range(base: float, exponent: float) -> float:
    """``base ** exponent``, infinite where float32 (optax's precision) overflows."""
    try:
        x = base**exponent
    except OverflowError:
        return math.inf
    return x if abs(x) <= _FLOAT32_MAX else math.inf


_FLOAT32_MAX = 3.4028234663852886e38


def cosine_decay_schedule(
    init_value: Any, decay_steps: Any, alpha: Any = 0.0, exponent: Any = 1.0
) -> Schedule:
    init, a, e = _num(init_value), _num(alpha), _num(exponent)
    steps = _num(decay_steps)
    if not steps > 0:
        raise ValueError(
            f"The cosine_decay_schedule requires positive decay_steps, got decay_steps={steps:g}."
        )

    def schedule(count: int) -> float:
        c = min(count, steps)
        cosine = 0.5 * (1 + math.cos(math.pi * c / steps))
        return init * ((1 - a) * cosine**e + a)

    return schedule


def _piecewise_interpolate(
    kind: str, init_value: float, boundaries_and_scales: dict[int, float]
) -> Schedule:
    items = sorted(boundaries_and_scales.items())
    bounds = [0] + [b for b, _ in items]
    values = [init_value]
    for _, s in items:
        values.append(values[-1] * s)
    sizes = [max(b1 - b0, 1) for b0, b1 in itertools.pairwise(bounds)]

    def interp(start: float, end: float, pct: float) -> float:
        if kind == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def schedule(count: int) -> float:
        out = 0.0
        for i, size in enumerate(sizes):
            if bounds[i] <= count < bounds[i + 1]:
                out += interp(values[i], values[i + 1], (count - bounds[i]) / size)
        if bounds[-1] <= count:
            out += values[-1]
        return out

    return schedule


def linear_onecycle_schedule(
    transition_steps: Any,
    peak_value: Any,
    pct_start: Any = 0.3,
    pct_final: Any = 0.85,
    div_factor: Any = 25.0,
    final_div_factor: Any = 1e4,
) -> Schedule:
    steps, peak = int(transition_steps), _num(peak_value)
    div, final = _num(div_factor), _num(final_div_factor)
    if steps <= 0:
        raise ValueError(
            "A linear onecycle schedule was set with a non-positive `transition_steps`"
        )
    return _piecewise_interpolate(
        "linear",
        peak / div,
        {
            int(_num(pct_start) * steps): div,
            int(_num(pct_final) * steps): 1.0 / div,
            steps: 1.0 / final,
        },
    )


def cosine_onecycle_schedule(
    transition_steps: Any,
    peak_value: Any,
    pct_start: Any = 0.3,
    div_factor: Any = 25.0,
    final_div_factor: Any = 1e4,
) -> Schedule:
    steps, peak = int(transition_steps), _num(peak_value)
    div, final = _num(div_factor), _num(final_div_factor)
    if steps <= 0:
        raise ValueError(
            "A linear onecycle schedule was set with a non-positive `transition_steps`"
        )
    return _piecewise_interpolate(
        "cosine", peak / div, {int(_num(pct_start) * steps): div, steps: 1.0 / (div * final)}
    )


def join_schedules(schedules: Sequence[Any], boundaries: Sequence[Any]) -> Schedule:
    return _joined([schedule_fn(s) for s in schedules], [int(b) for b in boundaries])


def warmup_constant_schedule(init_value: Any, peak_value: Any, warmup_steps: Any) -> Schedule:
    return linear_schedule(init_value, peak_value, warmup_steps)


def warmup_cosine_decay_schedule(
    init_value: Any,
    peak_value: Any,
    warmup_steps: Any,
    decay_steps: Any,
    end_value: Any = 0.0,
    exponent: Any = 1.0,
) -> Schedule:
    peak, end = _num(peak_value), _num(end_value)
    alpha = 0.0 if peak == 0.0 else end / peak
    warm = linear_schedule(init_value, peak, warmup_steps)
    decay = cosine_decay_schedule(peak, int(decay_steps) - int(warmup_steps), alpha, exponent)
    return _joined([warm, decay], [int(warmup_steps)])


def warmup_exponential_decay_schedule(
    init_value: Any,
    peak_value: Any,
    warmup_steps: Any,
    transition_steps: Any,
    decay_rate: Any,
    transition_begin: Any = 0,
    staircase: Any = False,
    end_value: Any = None,
) -> Schedule:
    warm = linear_schedule(init_value, peak_value, warmup_steps)
    decay = exponential_decay(
        peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return _joined([warm, decay], [int(warmup_steps)])


def _joined(fns: list[Schedule], bounds: list[int]) -> Schedule:
    """optax's ``join_schedules``: after boundary ``b``, the next schedule from count 0."""

    def schedule(count: int) -> float:
        out = fns[0](count)
        for b, f in zip(bounds, fns[1:]):
            if count >= b:
                out = f(count - b)
        return out

    return schedule


_SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant_schedule": constant_schedule,
    "cosine_decay_schedule": cosine_decay_schedule,
    "cosine_onecycle_schedule": cosine_onecycle_schedule,
    "exponential_decay": exponential_decay,
    "join_schedules": join_schedules,
    "linear_onecycle_schedule": linear_onecycle_schedule,
    "linear_schedule": linear_schedule,
    "polynomial_schedule": polynomial_schedule,
    "warmup_constant_schedule": warmup_constant_schedule,
    "warmup_cosine_decay_schedule": warmup_cosine_decay_schedule,
    "warmup_exponential_decay_schedule": warmup_exponential_decay_schedule,
}
