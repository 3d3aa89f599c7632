"""Each label's learning rate at given updates, from the compiled optax schedules.

The values come from the very schedule objects the optimizer is built with
(:func:`partspec.jax.optimizers.build`), never from a second implementation: a label's
rate at update ``s`` is its schedule at the count its optimizer has then (``s``, or
``s - N`` for ``frozen until N``; ``0`` while it waits, and always for ``frozen``).

>>> import partspec
>>> from partspec.resolution import resolve_paths
>>> spec = "a -> sgd(linear_schedule(1.0, 0.0, 4)) as a; b -> frozen until 2 then sgd(0.5) as b"
>>> res = resolve_paths(partspec.check(spec), [("a",), ("b",)])
>>> rates_at(res, [0, 1, 2, 3])
{'a': [1.0, 0.75, 0.5, 0.25], 'b': [0.0, 0.0, 0.5, 0.5]}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from partspec.jax.optimizers import UntilState, build
from partspec.language.values import Action, OptaxCall, ScaledSchedule, Until, Value
from partspec.resolution.hyper import find_arg
from partspec.resolution.result import Resolution

__all__ = ["label_hyperparams", "rates_at", "schedule_of"]


def schedule_of(value: Value | None) -> Callable[[int], float] | None:
    """The learning rate as a function of the optimizer's count; ``None`` if there is
    none (a transform without one)."""
    if value is None:
        return None
    if isinstance(value, (OptaxCall, ScaledSchedule)):
        fn = build(value)
        return lambda count: float(np.asarray(fn(np.int32(count))))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return lambda count: float(value)
    return None


def rates_at(res: Resolution, steps: Sequence[int]) -> dict[str, list[float | None]]:
    """Each label's learning rate at each of ``steps`` (0-based update numbers).

    ``None`` for a label whose optimizer has no learning rate (a bare transform).
    """
    out: dict[str, list[float | None]] = {}
    for label, la in res.actions.items():
        if la.frozen:
            out[label] = [0.0 for _ in steps]
            continue
        fn = schedule_of(find_arg(la.action, "learning_rate"))
        if fn is None:
            out[label] = [None for _ in steps]
            continue
        at = la.unfreeze_at or 0
        out[label] = [0.0 if s < at else fn(s - at) for s in steps]
    return out


def _schedule_count(state: Any) -> Any | None:
    """The count of the first ``ScaleByScheduleState`` in a label's state (the count its
    learning-rate schedule is evaluated at), or ``None``."""
    found = jax.tree_util.tree_leaves(
        state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState)
    )
    for x in found:
        if isinstance(x, optax.ScaleByScheduleState):
            return x.count
    return None


def _until_step(state: Any) -> Any | None:
    found = jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, UntilState))
    for x in found:
        if isinstance(x, UntilState):
            return x.step
    return None


def label_hyperparams(
    actions: Mapping[str, Action], states: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each label's current ``learning_rate`` and whether it ``trains`` yet, from its own
    optimizer state (as :meth:`Plan.label_states` gives it); arrays, so this runs inside
    ``jit``. A label without a learning rate (a bare transform) has none."""
    out: dict[str, dict[str, Any]] = {}
    for label, action in actions.items():
        if action is None:
            out[label] = {"learning_rate": jnp.zeros((), jnp.float32), "trains": jnp.bool_(False)}
            continue
        state = states.get(label)
        step = _until_step(state)
        trains = (
            jnp.bool_(True)
            if step is None or not isinstance(action, Until)
            else step >= jnp.asarray(action.at)
        )
        entry: dict[str, Any] = {"trains": trains}
        lr = find_arg(action, "learning_rate")
        if isinstance(lr, (OptaxCall, ScaledSchedule)):
            count = _schedule_count(state)
            value = build(lr)(count if count is not None else 0)
        elif isinstance(lr, (int, float)) and not isinstance(lr, bool):
            value = jnp.asarray(lr, jnp.float32)
        else:
            value = None
        if value is not None:
            entry["learning_rate"] = jnp.where(trains, value, 0.0)
        out[label] = entry
    return out
