"""Optax transformations from evaluated actions, and the ones partspec adds.

:func:`build` turns a value (:mod:`partspec.language.values`: an ``OptaxCall`` with
evaluated arguments, a scaled schedule) into the optax object; :func:`frozen`,
:func:`frozen_until` and the gate before ``global`` transforms are partspec's own;
:func:`apply_updates` is ``optax.apply_updates`` that keeps every frozen bit.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from partspec.language._optax_table import OPTAX_VERSION
from partspec.language.registry import SIGNATURES, factory
from partspec.language.values import Action, OptaxCall, ScaledSchedule, Unset, Until, Value

__all__ = [
    "GateState",
    "OptaxMismatch",
    "UntilState",
    "apply_updates",
    "build",
    "build_action",
    "frozen",
    "frozen_until",
    "gate",
]


def frozen() -> optax.GradientTransformation:
    """The ``frozen`` action: updates of ``-0.0`` and no state.

    ``p + (-0.0)`` is ``p`` bit for bit for every float ``p`` (including ``-0.0``,
    which ``+0.0`` would flip, and a complex ``p``, whose update is ``-0.0 - 0.0j``), so
    frozen leaves stay bit-identical through ``optax.apply_updates`` whatever their
    gradients are (NaN and inf included). The one exception is a subnormal ``p`` where
    the addition runs on a backend that flushes subnormals to zero (XLA on CPU and
    GPU); :func:`apply_updates` keeps even those.
    """

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return jax.tree.map(_neg_zero, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def _neg_zero(u: Any) -> Any:
    """An update that leaves ``p`` as it is: ``-0.0`` (``-0.0 - 0.0j`` for complex)."""
    if jnp.issubdtype(u.dtype, jnp.complexfloating):
        return jnp.full(u.shape, complex(-0.0, -0.0), u.dtype)
    if jnp.issubdtype(u.dtype, jnp.inexact):
        return jnp.full(u.shape, -0.0, u.dtype)
    return jnp.zeros(u.shape, u.dtype)


def _is_neg_zero(u: jax.Array) -> jax.Array:
    """Where ``u`` is exactly ``-0.0`` (both parts, for complex), bit for bit."""
    if jnp.issubdtype(u.dtype, jnp.complexfloating):
        return _is_neg_zero(jnp.real(u)) & _is_neg_zero(jnp.imag(u))
    if not jnp.issubdtype(u.dtype, jnp.floating):
        return jnp.zeros(u.shape, bool)
    bits = jnp.dtype(u.dtype).itemsize * 8
    if jnp.finfo(u.dtype).bits != bits:  # sub-byte floats (float4, float6): no bitcast
        return (u == 0) & jnp.signbit(u.astype(jnp.float32))
    uint = jnp.dtype(f"uint{bits}")
    sign = jax.lax.bitcast_convert_type(jnp.asarray(-0.0, u.dtype), uint)
    return jax.lax.bitcast_convert_type(u, uint) == sign


def apply_updates(params: Any, updates: Any) -> Any:
    """``optax.apply_updates``, exact for frozen leaves on every backend.

    Where an update is ``-0.0`` (what ``frozen`` and a waiting ``frozen until`` give),
    the parameter is kept as it is instead of added to: the same value, but without an
    addition that XLA on CPU and GPU runs with subnormals flushed to zero. Every other
    leaf is ``p + u``, cast to ``p``'s dtype, exactly as ``optax.apply_updates`` does.

    >>> import jax.numpy as jnp, numpy as np
    >>> p = jnp.asarray(np.array([1e-40, 2.0], np.float32))  # 1e-40 is subnormal
    >>> apply_updates(p, jnp.asarray([-0.0, 1.0]))[0] == p[0]
    Array(True, dtype=bool)
    """

    def one(p: Any, u: Any) -> Any:
        if p is None:
            return None
        p, u = jnp.asarray(p), jnp.asarray(u)
        return jnp.where(_is_neg_zero(u), p, jnp.asarray(p + u).astype(p.dtype))

    return jax.tree.map(one, params, updates, is_leaf=lambda x: x is None)


class UntilState(NamedTuple):
    """State of :func:`frozen_until`: updates seen so far, and the inner optimizer's state."""

    step: jax.Array
    inner: Any


def frozen_until(at: int, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """The ``frozen until at then inner`` action.

    The first ``at`` updates are ``-0.0`` (the leaves stay bit-identical) and leave
    ``inner``'s state exactly as ``inner.init`` made it; update number ``at`` (counting
    from 0) is ``inner``'s first: its step count is 0 and its moments are zero then.
    The state's structure never changes, so a training step jits once and a
    checkpoint restores at any step.

    >>> import jax.numpy as jnp, optax
    >>> tx = frozen_until(2, optax.sgd(1.0))
    >>> p = jnp.ones(1); state = tx.init(p)
    >>> for _ in range(3):
    ...     u, state = tx.update(jnp.ones(1), state)
    ...     print(float(u[0]))
    -0.0
    -0.0
    -1.0
    """

    def init_fn(params: Any) -> UntilState:
        return UntilState(jnp.zeros([], jnp.int32), inner.init(params))

    def update_fn(updates: Any, state: UntilState, params: Any = None) -> tuple[Any, Any]:
        def train(_: Any) -> Any:
            return inner.update(updates, state.inner, params)

        shapes = jax.eval_shape(train, None)

        def wait(_: Any) -> Any:
            return jax.tree.map(_neg_zero, shapes[0]), state.inner

        new_updates, new_inner = jax.lax.cond(state.step >= at, train, wait, None)
        return new_updates, UntilState(optax.safe_increment(state.step), new_inner)

    return optax.GradientTransformation(init_fn, update_fn)


class GateState(NamedTuple):
    """State of the gate before ``global`` transforms: updates seen, per ``frozen until`` label.

    One counter per label, like each label's own :class:`UntilState` step, so that
    re-freezing one label (``reset_state(..., label=...)``) resets its gate as well.
    """

    counts: dict[str, jax.Array]


def gate(
    unfreeze: Mapping[str, int], labels_for: Callable[[Any], Any]
) -> optax.GradientTransformation:
    """Zero the gradients of leaves still in a ``frozen until`` phase.

    ``unfreeze`` gives each ``frozen until`` label's first training update. Placed before
    the ``global`` transforms, so that a global norm counts only the leaves being
    trained at that update.
    """

    def init_fn(params: Any) -> GateState:
        del params
        return GateState({label: jnp.zeros([], jnp.int32) for label in unfreeze})

    def update_fn(updates: Any, state: GateState, params: Any = None) -> tuple[Any, Any]:
        del params

        def gate(label: str, u: Any) -> Any:
            at = unfreeze.get(label)
            if at is None:
                return u
            return jnp.where(state.counts[label] >= at, u, jnp.zeros_like(u))

        gated = jax.tree.map(gate, labels_for(updates), updates)
        counts = {k: optax.safe_increment(v) for k, v in state.counts.items()}
        return gated, GateState(counts)

    return optax.GradientTransformation(init_fn, update_fn)


class OptaxMismatch(ValueError):
    """The installed optax lacks a function or keyword of partspec's allow-list table."""


@functools.lru_cache(maxsize=512)
def _keywords(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword arguments ``fn`` accepts; ``None`` for any (``**kwargs``, or no
    signature). Cached: a spec with a label per layer builds the same function often."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(params)


def _optax_function(name: str, kwargs: Mapping[str, Any]) -> Callable[..., Any]:
    """``optax.<name>``, checked against the installed optax (the table may be newer),
    or the factory registered under ``name``."""
    registered = factory(name)
    if registered is not None:
        return registered
    fn = getattr(optax, name, None)
    made = f"partspec's allow-list was generated from optax {OPTAX_VERSION}"
    if fn is None:
        raise OptaxMismatch(f"the installed optax {optax.__version__} has no `{name}` ({made})")
    params = _keywords(fn)
    if params is not None:
        for kw in kwargs:
            if kw not in params:
                raise OptaxMismatch(
                    f"`{name}` of the installed optax {optax.__version__} has no argument "
                    f"`{kw}` ({made})"
                )
    return fn


def build(value: Value, param_types: tuple[str, ...] | None = None) -> Any:
    if isinstance(value, OptaxCall):
        entry = SIGNATURES[value.name]
        types = {p["name"]: p["types"] for p in entry["params"]}
        positional = [p for p in entry["params"] if p["kind"] in ("pos", "varargs")]
        args = []
        for i, a in enumerate(value.args):
            p = positional[min(i, len(positional) - 1)]
            args.append(build(a, p["types"]))
        kwargs = {k: build(v, types.get(k)) for k, v in value.kwargs}
        return _optax_function(value.name, kwargs)(*args, **kwargs)
    if isinstance(value, ScaledSchedule):
        inner = build(value.schedule)
        factor = value.factor
        return lambda count: factor * inner(count)
    if isinstance(value, tuple):
        inner_types = None
        if param_types:
            inner_types = tuple(t[5:-1] for t in param_types if t.startswith("list["))
        return [build(v, inner_types) for v in value]
    if isinstance(value, str) and param_types and "dtype" in param_types:
        return jnp.dtype(value)
    return value


def build_action(action: Action) -> optax.GradientTransformation:
    assert action is not None and not isinstance(action, Unset)
    if isinstance(action, Until):
        assert isinstance(action.at, int)
        return frozen_until(action.at, build(action.then))
    built: optax.GradientTransformation = build(action)
    return built
