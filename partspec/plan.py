"""The compile stage: a checked spec plus a parameter tree give labels and optax.

This is the only module that imports JAX and optax.

>>> import jax, jax.numpy as jnp, optax, partspec
>>> params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
>>> plan = partspec.compile("backbone/** -> frozen\\nhead/* -> sgd(0.5)", params)
>>> plan.labels
{'backbone': {'w': 'frozen'}, 'head': {'w': 'sgd(0.5)'}}
>>> grads = jax.tree.map(jnp.ones_like, params)
>>> updates, _ = plan.tx.update(grads, plan.tx.init(params), params)
>>> optax.apply_updates(params, updates)["head"]["w"]
Array([0.5, 0.5], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from partspec.coverage import Resolver, _resolve_paths, matcher_for, rule_diagnostics
from partspec.diagnostics import Diagnostic, SpecError, SpecWarning
from partspec.language import ast
from partspec.language._optax_table import OPTAX_VERSION, TABLE
from partspec.language.checker import CheckedSpec, check_spec
from partspec.language.load import parse
from partspec.language.values import Action, OptaxCall, ScaledSchedule, Unset, Until, Value
from partspec.tree import label_tree, leaf_info, leaf_segments

__all__ = [
    "GateState",
    "Plan",
    "UntilState",
    "apply_updates",
    "compile",
    "frozen",
    "frozen_until",
    "optimizer",
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


def _gate(
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


@dataclass(frozen=True)
class Plan:
    """A spec compiled against one parameter structure.

    Attributes:
      spec: the spec.
      checked: the checked spec (names, labels, evaluated actions).
      labels: the label tree: same structure and container types as the params.
      transforms: label -> ``optax.GradientTransformation``, for every label in use.
      tx: ``optax.partition(transforms, labels)``, ready for ``init``/``update``.
      diagnostics: warnings (rules that match nothing or are shadowed).
      frozen_labels: labels whose action is ``frozen``.
      unfreeze_steps: label -> the first update that trains it, for ``frozen until``.

    With ``global`` transforms, ``tx`` is ``optax.chain(masked(globals), partition)``:
    the global transforms see the gradients of the trainable leaves only.
    """

    spec: ast.Spec
    checked: CheckedSpec
    labels: Any
    transforms: dict[str, optax.GradientTransformation]
    tx: optax.GradientTransformationExtraArgs
    diagnostics: tuple[Diagnostic, ...] = ()
    frozen_labels: frozenset[str] = field(default_factory=frozenset)
    unfreeze_steps: Mapping[str, int] = field(default_factory=dict)
    label_fn: Callable[[Any], Any] | None = field(default=None, repr=False)
    actions: Mapping[str, Action] = field(default_factory=dict, repr=False)

    def partition_state(self, state: Any) -> optax.PartitionState:
        """The ``optax.PartitionState`` inside a state made by ``tx.init``.

        That is the state itself, or, with ``global`` transforms, the last part of
        the chain's state.
        """
        if isinstance(state, optax.PartitionState):
            return state
        last = state[-1] if isinstance(state, tuple) and state else None
        if isinstance(last, optax.PartitionState):
            return last
        raise TypeError(f"not a state made by this plan's tx.init: {type(state).__name__}")

    def labels_for(self, tree: Any) -> Any:
        """The label tree of another tree with these parameters' paths (NNX state, grads)."""
        return self.label_fn(tree) if self.label_fn is not None else self.labels

    def init(self, params: Any) -> optax.OptState:
        """``tx.init(params)``, with the state sharded like the parameters.

        When ``params`` carry shardings (a leaf is a ``jax.Array`` or a
        ``jax.ShapeDtypeStruct`` with a ``NamedSharding``, or with any sharding over
        several devices), the state is made by ``jax.jit(tx.init, out_shardings=...)``:
        every state leaf that mirrors a parameter (Adam's ``mu`` and ``nu``, momentum)
        gets that parameter's sharding, and the others (step counts, noise keys, mirrors
        of unsharded parameters, and mirrors shaped unlike their parameter, such as
        Adafactor's factored moments) are replicated over the mesh of the first
        ``NamedSharding``; see docs/sharding.md. ``jax.jit(tx.init)``
        alone puts all of it on one device. ``ShapeDtypeStruct`` leaves are never
        materialised: the state is made from their shapes, as ``tx.init`` does.

        Otherwise (single-device arrays, NumPy arrays, numbers, or tracers: inside
        ``jax.jit`` or ``jax.eval_shape``) this is exactly ``tx.init(params)``.
        Frozen leaves own no state either way.
        """
        out_shardings = _state_shardings(self.tx, params)
        if out_shardings is None:
            return self.tx.init(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        abstract = {i: x for i, x in enumerate(leaves) if isinstance(x, jax.ShapeDtypeStruct)}
        if not abstract:
            return jax.jit(self.tx.init, out_shardings=out_shardings)(params)
        concrete = [None if i in abstract else x for i, x in enumerate(leaves)]

        def init_from(concrete: list[Any]) -> optax.OptState:
            merged = [abstract.get(i, x) for i, x in enumerate(concrete)]
            return self.tx.init(jax.tree_util.tree_unflatten(treedef, merged))

        return jax.jit(init_from, out_shardings=out_shardings)(concrete)

    def trainable_mask(self) -> Any:
        """A tree of booleans: ``True`` where a leaf is trained."""
        return jax.tree.map(lambda lab: lab not in self.frozen_labels, self.labels)

    def split(self, params: Any) -> tuple[Any, Any]:
        """``(trainable, frozen)``: two trees shaped like ``params``, ``None`` for the other part.

        As Haiku's ``partition``: take gradients with respect to ``trainable`` only and
        put the parameters back together with :meth:`merge`.

        >>> import jax.numpy as jnp, partspec
        >>> params = {"a": jnp.zeros(1), "b": jnp.ones(1)}
        >>> plan = partspec.compile("a -> frozen; b -> sgd(0.1)", params)
        >>> plan.split(params)
        ({'a': None, 'b': Array([1.], dtype=float32)}, {'a': Array([0.], dtype=float32), 'b': None})
        """
        fl = self.frozen_labels
        trainable = jax.tree.map(lambda lab, p: None if lab in fl else p, self.labels, params)
        frozen_part = jax.tree.map(lambda lab, p: p if lab in fl else None, self.labels, params)
        return trainable, frozen_part

    def merge(self, trainable: Any, frozen: Any) -> Any:
        """The inverse of :meth:`split`."""
        return jax.tree.map(
            lambda a, b: b if a is None else a, trainable, frozen, is_leaf=lambda x: x is None
        )

    def wrap(self, wrapper: Callable[[Any], Any]) -> optax.GradientTransformation:
        """``plan.tx`` with ``wrapper`` around its trainable part only; frozen leaves stay out.

        Wrappers that see every leaf break the guarantees of frozen leaves when put
        around ``plan.tx`` itself: ``optax.MultiSteps(plan.tx, k)`` keeps a gradient
        accumulator for frozen leaves and emits ``+0.0`` updates between steps (which
        flip a ``-0.0`` weight), and ``optax.apply_if_finite(plan.tx, n)`` skips every
        update when a *frozen* leaf's gradient is NaN. Here the wrapper gets the
        trainable leaves' optimizer (the rules' labels and the ``global`` transforms)
        and frozen leaves keep their ``-0.0`` updates and no state.

        ``frozen until`` groups are trainable here: they count the wrapped optimizer's
        updates (for ``MultiSteps``, the updates it applies, every ``k`` calls; for
        ``apply_if_finite``, the finite ones), and the wrapper sees their gradients while
        they wait (so a NaN there counts as non-finite for ``apply_if_finite``).

        >>> import jax.numpy as jnp, optax, partspec
        >>> params = {"body": jnp.ones(2), "head": jnp.ones(2)}
        >>> plan = partspec.compile("body -> frozen; head -> sgd(1.0)", params)
        >>> tx = plan.wrap(lambda inner: optax.apply_if_finite(inner, 3))
        >>> grads = {"body": jnp.full(2, jnp.nan), "head": jnp.ones(2)}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["head"], updates["body"]
        (Array([-1., -1.], dtype=float32), Array([-0., -0.], dtype=float32))
        """
        fl = self.frozen_labels
        if self.label_fn is None:  # pragma: no cover - every compiled plan has one
            raise TypeError("this plan was not made by partspec.compile")
        labels_for = self.label_fn
        used = {k: v for k, v in self.transforms.items() if k not in fl}
        inner = _with_globals(
            self.checked,
            optax.partition(used, labels_for),
            labels_for,
            self.unfreeze_steps,
            frozenset(fl),
        )
        trained = wrapper(inner)

        def parts(tree: Any) -> Any:
            return jax.tree.map(lambda lab: "frozen" if lab in fl else "trained", labels_for(tree))

        return optax.partition({"trained": trained, "frozen": frozen()}, parts)

    @property
    def trainable_tx(self) -> optax.GradientTransformationExtraArgs:
        """The optimizer for the ``trainable`` half of :meth:`split` alone."""
        trainable_labels, _ = self.split(self.labels)
        used = {k: v for k, v in self.transforms.items() if k not in self.frozen_labels}
        part = optax.partition(used, lambda _: trainable_labels)
        return _with_globals(self.checked, part, lambda _: trainable_labels, self.unfreeze_steps)


def _sharding_of(leaf: Any) -> jax.sharding.Sharding | None:
    """The sharding a parameter leaf was placed with, or ``None`` for the default placement.

    ``None`` for single-device arrays (``SingleDeviceSharding``), NumPy arrays, numbers,
    tracers (their ``.sharding`` raises ``AttributeError``) and shardings over an
    abstract mesh, which ``jax.jit`` cannot place outputs on.
    """
    if not isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return None
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        return sharding if isinstance(sharding.mesh, jax.sharding.Mesh) else None
    if isinstance(sharding, jax.sharding.Sharding) and len(sharding.device_set) > 1:
        return sharding
    return None


def _state_shardings(tx: optax.GradientTransformation, params: Any) -> Any:
    """``out_shardings`` for ``jax.jit(tx.init)``, or ``None`` when no parameter is sharded.

    ``optax.tree_map_params`` finds the parts of the state that mirror the parameter tree
    (it runs ``tx.init`` on a placeholder; ``optax.partition`` and ``optax.masked`` pass
    it through). With ``is_leaf`` always true it hands each mirror over whole, so the
    mapping below walks the *parameters* and maps each one's part of the mirror: a
    ``MaskedNode`` (a leaf another group owns, no leaves), an array shaped like the
    parameter (its sharding) or anything else (replicated).
    """
    shardings = [_sharding_of(x) for x in jax.tree_util.tree_leaves(params)]
    if all(s is None for s in shardings):
        return None
    named = [s for s in shardings if isinstance(s, jax.sharding.NamedSharding)]
    # ``None`` in ``out_shardings`` replicates over the computation's devices.
    replicated = (
        jax.sharding.NamedSharding(named[0].mesh, jax.sharding.PartitionSpec()) if named else None
    )

    def for_param(param: Any, part: Any) -> Any:
        sharding = _sharding_of(param)

        def for_leaf(leaf: jax.ShapeDtypeStruct) -> Any:
            if sharding is not None and tuple(leaf.shape) == tuple(param.shape):
                return sharding
            return replicated

        return jax.tree_util.tree_map(for_leaf, part)

    def for_mirror(mirror: Any, params: Any) -> Any:
        return jax.tree_util.tree_map(for_param, params, mirror)

    return optax.tree_map_params(
        tx,
        for_mirror,
        jax.eval_shape(tx.init, params),
        params,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda _: True,
    )


def _labeler(resolver: Resolver, known_tree: Any, known: Any) -> Callable[[Any], Any]:
    """A labelling function for ``optax.partition``, cached per tree structure.

    A function rather than a label tree, for two reasons: optax treats any callable
    label argument as a function (an Equinox label tree is a callable module), and
    NNX passes ``Variable``-wrapped parameters to ``init`` but plain arrays to
    ``update``: both trees have the same paths, so both get the right labels.
    """
    cache: dict[Any, Any] = {jax.tree_util.tree_structure(known_tree): known}

    def labels_for(tree: Any) -> Any:
        treedef = jax.tree_util.tree_structure(tree)
        labels = cache.get(treedef)
        if labels is None:
            labels = label_tree(resolver, tree)
            # An uncovered leaf's label is None, which JAX counts as no leaf at all.
            if len(jax.tree_util.tree_leaves(labels)) != treedef.num_leaves:  # type: ignore[attr-defined]
                raise ValueError(
                    "partspec: the tree given to the optimizer has leaves that no rule covers; "
                    "was it compiled for a different parameter structure?"
                )
            cache[treedef] = labels
        return labels

    return labels_for


def _with_globals(
    checked: CheckedSpec,
    part: optax.GradientTransformation,
    labels_for: Callable[[Any], Any],
    unfreeze: Mapping[str, int],
    frozen_labels: frozenset[str] = frozenset(),
) -> Any:
    """``part``, preceded by the ``global`` transforms over the trainable leaves."""
    if not checked.globals:
        return part
    inner = optax.chain(*(_build(g) for g in checked.globals))

    def trainable(tree: Any) -> Any:
        return jax.tree.map(lambda lab: lab not in frozen_labels, labels_for(tree))

    steps: list[Any] = []
    if unfreeze:
        steps.append(_gate(unfreeze, labels_for))
    steps += [optax.masked(inner, trainable), part]
    return optax.chain(*steps)


def _uncovered(resolver: Resolver, params: Any) -> list[tuple[tuple[str, ...], Any]]:
    """The leaves of ``params`` that no rule owns."""
    return [
        (segs, leaf)
        for segs, leaf in leaf_segments(params)
        if resolver.locate(segs, functools.partial(leaf_info, leaf))[1] is None
    ]


def _is_array_like(leaf: Any) -> bool:
    """An array, NumPy scalar or ``jax.ShapeDtypeStruct``: something with a shape and a dtype."""
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


class OptaxMismatch(ValueError):
    """The installed optax lacks a function or keyword of partspec's allow-list table."""


def _optax_function(name: str, kwargs: Mapping[str, Any]) -> Callable[..., Any]:
    """``optax.<name>``, checked against the installed optax (the table may be newer)."""
    fn = getattr(optax, name, None)
    made = f"partspec's allow-list was generated from optax {OPTAX_VERSION}"
    if fn is None:
        raise OptaxMismatch(f"the installed optax {optax.__version__} has no `{name}` ({made})")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return fn
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for kw in kwargs:
            if kw not in params:
                raise OptaxMismatch(
                    f"`{name}` of the installed optax {optax.__version__} has no argument "
                    f"`{kw}` ({made})"
                )
    return fn


def _build(value: Value, param_types: tuple[str, ...] | None = None) -> Any:
    if isinstance(value, OptaxCall):
        entry = TABLE[value.name]
        types = {p["name"]: p["types"] for p in entry["params"]}
        positional = [p for p in entry["params"] if p["kind"] in ("pos", "varargs")]
        args = []
        for i, a in enumerate(value.args):
            p = positional[min(i, len(positional) - 1)]
            args.append(_build(a, p["types"]))
        kwargs = {k: _build(v, types.get(k)) for k, v in value.kwargs}
        return _optax_function(value.name, kwargs)(*args, **kwargs)
    if isinstance(value, ScaledSchedule):
        inner = _build(value.schedule)
        factor = value.factor
        return lambda count: factor * inner(count)
    if isinstance(value, tuple):
        inner_types = None
        if param_types:
            inner_types = tuple(t[5:-1] for t in param_types if t.startswith("list["))
        return [_build(v, inner_types) for v in value]
    if isinstance(value, str) and param_types and "dtype" in param_types:
        return jnp.dtype(value)
    return value


def compile(
    spec: ast.Spec | str,
    params: Any,
    /,
    *,
    strict: bool = False,
    values: Mapping[str, Any] | None = None,
    **kwvalues: Any,
) -> Plan:
    """Compile a spec against a parameter tree.

    Args:
      spec: a :class:`~partspec.language.ast.Spec` or rule text.
      params: any pytree; leaves may be arrays, NumPy arrays or
        ``jax.ShapeDtypeStruct`` (labels need only the structure).
      strict: make warnings (unused or shadowed rules) errors.
      values: values for the spec's ``param`` declarations, as a mapping (needed for
        params named ``strict`` or ``values``).
      **kwvalues: the same, as keyword arguments (``lr=1e-3``).

    Returns:
      A :class:`Plan` with ``labels``, ``transforms`` and ``tx``.

    Raises:
      SpecError: bad spec, an unknown or missing ``param``, or leaves no rule covers.
    """
    if isinstance(spec, str):
        spec = parse(spec)
    elif not isinstance(spec, ast.Spec):
        raise TypeError(f"spec must be a partspec.Spec or str, not {type(spec).__name__}")
    checked = _checked(spec, {**(values or {}), **kwvalues})
    try:
        leaves = None
        if checked.counted:
            # `count(i)`: the distinct values of capture i over the tree, then check again.
            leaves = leaf_segments(params)
            infos = [leaf_info(x) for _, x in leaves]
            paths = [segs for segs, _ in leaves]
            collected = _resolve_paths(checked, paths, infos, collect=True)
            checked = checked.with_counts(collected.counts())
        resolver = Resolver(checked, matcher_for(checked))
        labels = label_tree(resolver, params, leaves)
        uncovered: list[tuple[tuple[str, ...], Any]] = []

        def uncovered_paths() -> list[str]:
            uncovered.extend(_uncovered(resolver, params))
            return ["/".join(seg) for seg, _ in uncovered]

        errors, warns = rule_diagnostics(checked, resolver.match_sets, uncovered_paths)
        warns = list(checked.warnings) + warns  # deprecated optax functions first
    except SpecError as err:
        raise SpecError(err.diagnostics) from None
    # A whole Equinox module has leaves that are not parameters (activation functions,
    # Dropout's `p`): say so, rather than only suggest rules for them.
    kinds = sorted({type(leaf).__name__ for _, leaf in uncovered if not _is_array_like(leaf)})
    if kinds:
        errors[0] = dataclasses.replace(
            errors[0],
            hint=f"some uncovered leaves are not arrays ({', '.join(kinds)}): for an "
            "Equinox module, compile against `eqx.filter(model, eqx.is_array)`; otherwise "
            "add rules for them, or a catch-all as the last rule: `** -> frozen`",
        )
    if strict:
        errors += [dataclasses.replace(w, severity="error") for w in warns]
    if errors:
        raise SpecError(errors)
    for w in warns:
        warnings.warn(w.render(), SpecWarning, stacklevel=3)
    transforms: dict[str, optax.GradientTransformation] = {}
    frozen_labels = set()
    unfreeze: dict[str, int] = {}
    rule_of = {cr.label: cr for cr in checked.rules}
    for label, action in resolver.used_actions().items():
        if action is None:
            transforms[label] = frozen()
            frozen_labels.add(label)
            continue
        try:
            transforms[label] = _build_action(action)
        except (TypeError, ValueError) as exc:
            cr = rule_of.get(label.split("[", 1)[0]) or next(
                r for r in checked.rules if label.startswith(r.label)
            )
            mismatch = isinstance(exc, OptaxMismatch)
            raise SpecError(
                [
                    spec.attach(
                        Diagnostic.at(
                            "E410" if mismatch else "E408",
                            str(exc) if mismatch else f"optax rejected `{label}`: {exc}",
                            cr.rule.action.span,
                            hint=f"install optax {OPTAX_VERSION} or later"
                            if mismatch
                            else "check the arguments against optax's docs",
                        )
                    )
                ]
            ) from None
        if isinstance(action, Until):
            assert isinstance(action.at, int)
            unfreeze[label] = action.at
    for stmt, value in zip(spec.globals, checked.globals):
        try:
            _build(value)
        except OptaxMismatch as exc:
            raise SpecError(
                [
                    spec.attach(
                        Diagnostic.at(
                            "E410", str(exc), stmt.value.span, hint=f"install optax {OPTAX_VERSION}"
                        )
                    )
                ]
            ) from None
    labels_for = _labeler(resolver, params, labels)
    part = optax.partition(transforms, labels_for)
    frozen_set = frozenset(frozen_labels)
    tx = _with_globals(checked, part, labels_for, unfreeze, frozen_set)
    actions = {lab: a for lab, a in resolver.used_actions().items() if lab in transforms}
    return Plan(
        spec,
        checked,
        labels,
        transforms,
        tx,
        tuple(warns),
        frozen_set,
        unfreeze,
        labels_for,
        actions,
    )


def _checked(spec: ast.Spec, values: dict[str, Any]) -> CheckedSpec:
    """``check_spec(spec, values)``, remembered on the (immutable) spec per values.

    Training code compiles the same spec again for every new parameter structure (NNX
    state, gradients, abstract trees); checking 1,000 rules costs milliseconds.
    """
    try:
        key: Any = tuple(sorted((k, type(v), v) for k, v in values.items()))
        hash(key)
    except TypeError:  # an unhashable value (an array): check every time
        return check_spec(spec, values)
    memo: dict[Any, CheckedSpec] = spec.__dict__.setdefault("_checked", {})
    checked = memo.get(key)
    if checked is None:
        if len(memo) >= 16:
            memo.clear()
        checked = memo[key] = check_spec(spec, values)
    return checked


def _build_action(action: Action) -> optax.GradientTransformation:
    assert action is not None and not isinstance(action, Unset)
    if isinstance(action, Until):
        assert isinstance(action.at, int)
        return frozen_until(action.at, _build(action.then))
    built: optax.GradientTransformation = _build(action)
    return built


def optimizer(spec: ast.Spec | str, params: Any, /, **values: Any) -> optax.GradientTransformation:
    """``compile(spec, params, **values).tx``."""
    return compile(spec, params, **values).tx
