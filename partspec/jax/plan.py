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
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import optax

from partspec.diagnostics import Diagnostic, SpecError, SpecWarning
from partspec.jax.optimizers import (
    GateState,
    OptaxMismatch,
    UntilState,
    apply_updates,
    build,
    build_action,
    frozen,
    frozen_until,
    gate,
)
from partspec.jax.partition import (
    PartitionState,
    init_label,
    label_states,
    partition,
    upgrade_per_label,
    with_label_states,
)
from partspec.jax.rates import label_hyperparams
from partspec.jax.tree import label_tree, leaf_info, leaf_segments
from partspec.language import ast
from partspec.language._optax_table import OPTAX_VERSION
from partspec.language.checker import CheckedSpec, check_spec
from partspec.language.load import parse
from partspec.language.values import Action, LeafInfo
from partspec.resolution.counting import CountingPass
from partspec.resolution.resolver import Resolver, matcher_for
from partspec.resolution.result import Resolution, finish

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


@dataclass(frozen=True)
class Plan:
    """A spec compiled against one parameter structure.

    Attributes:
      spec: the spec.
      checked: the checked spec (names, labels, evaluated actions).
      labels: the label tree: same structure and container types as the params.
      transforms: label -> ``optax.GradientTransformation``, for every label in use.
      tx: :func:`partspec.jax.partition.partition` of ``transforms`` by ``labels``
        (``optax.partition``'s updates, with each leaf's state held once and labels
        of one optimizer shape sharing state), ready for ``init``/``update``.
      diagnostics: warnings (rules that match nothing or are shadowed).
      frozen_labels: labels whose action is ``frozen``.
      unfreeze_steps: label -> the first update that trains it, for ``frozen until``.
      resolution: the framework-neutral :class:`~partspec.resolution.Resolution` the
        plan was built from: every label's evaluated action, the diagnostics.

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
    resolution: Resolution | None = field(default=None, repr=False)

    def partition_state(self, state: Any) -> PartitionState:
        """The :class:`~partspec.jax.partition.PartitionState` inside a state of ``tx``.

        That is the state itself, or, with ``global`` transforms, the last part of
        the chain's state.
        """
        if isinstance(state, PartitionState):
            return state
        last = state[-1] if isinstance(state, tuple) and state else None
        if isinstance(last, PartitionState):
            return last
        if isinstance(state, optax.PartitionState) or isinstance(last, optax.PartitionState):
            raise TypeError(
                "an optax.PartitionState: a state of partspec 0.1's layout, every label's "
                "state over the whole tree; restore it under plan.legacy_tx() and convert it "
                "with plan.upgrade_state(old_state, params), or start afresh with "
                "plan.init(params) (docs/checkpoints.md)"
            )
        raise TypeError(f"not a state made by this plan's tx.init: {type(state).__name__}")

    def hyperparams(self, state: Any) -> dict[str, dict[str, Any]]:
        """Each label's current learning rate, and whether it trains yet, read off a real
        optimizer state: ``{label: {"learning_rate": ..., "trains": ...}}``, as arrays, so
        that a jitted training step can return them for logging (TensorBoard, W&B).

        The rate is the one the next update uses: the label's compiled schedule at the
        count its optimizer has reached (``0`` while ``frozen``, or before a ``frozen
        until N`` has waited ``N`` updates).

        >>> import jax, jax.numpy as jnp, partspec
        >>> params = {"body": jnp.ones(2), "head": jnp.ones(2)}
        >>> plan = partspec.compile(
        ...     "body -> frozen until 4 then sgd(0.1) as body; "
        ...     "head -> sgd(linear_schedule(1.0, 0.0, 4)) as head",
        ...     params,
        ... )
        >>> state = plan.tx.init(params)
        >>> for _ in range(3):
        ...     _, state = plan.tx.update(jax.tree.map(jnp.ones_like, params), state)
        >>> hp = plan.hyperparams(state)
        >>> float(hp["head"]["learning_rate"]), bool(hp["body"]["trains"])
        (0.25, False)
        """
        actions = {lab: self.actions.get(lab) for lab in self.transforms}
        return label_hyperparams(actions, self.label_states(state))

    def label_states(self, state: Any) -> dict[str, Any]:
        """Each label's own optimizer state, over that label's leaves only.

        What ``optax.partition`` kept for the label, without the placeholders for
        other labels' leaves: its transformation's state, with every parameter mirror
        holding just the label's leaves (paths as in the parameters).

        >>> import jax.numpy as jnp, partspec
        >>> params = {"a": jnp.ones(2), "b": jnp.ones(3)}
        >>> plan = partspec.compile("a -> adam(0.1); b -> adam(0.2)", params)
        >>> states = plan.label_states(plan.tx.init(params))
        >>> sorted(states), states["adam(0.2)"][0].mu
        (['adam(0.1)', 'adam(0.2)'], Leaves({'b': Array([0., 0., 0.], dtype=float32)}))
        """
        return label_states(self.partition_state(state), self.labels, self.labels_for)

    def with_label_states(self, state: Any, new: Mapping[str, Any]) -> Any:
        """``state`` with the states of the labels in ``new`` replaced (each shaped as
        :meth:`label_states` gives it)."""
        part = self.partition_state(state)
        replaced = with_label_states(part, new)
        if state is part:
            return replaced
        return (*state[:-1], replaced)

    def legacy_tx(self, version: str = "0.1") -> optax.GradientTransformation:
        """The optimizer an earlier partspec built for this plan, to restore a checkpoint
        saved then; convert its state with :meth:`upgrade_state`.

        Args:
          version: ``"0.1"``: ``optax.partition`` (every label's state over the whole
            tree, with placeholders). ``"0.2"``: partspec's partition with a step count
            per label (``groups/GROUP/inner/0/count/LABEL``).
        """
        if self.label_fn is None:  # pragma: no cover - every compiled plan has one
            raise TypeError("this plan was not made by partspec.compile")
        if version == "0.1":
            part: optax.GradientTransformation = optax.partition(self.transforms, self.label_fn)
        elif version == "0.2":
            part = partition(self.transforms, self.label_fn, per_label=True)
        else:
            raise ValueError(f"partspec: no legacy layout {version!r}; expected '0.1' or '0.2'")
        return _with_globals(
            self.checked,
            part,
            self.label_fn,
            self.unfreeze_steps,
            frozenset(self.frozen_labels),
        )

    def upgrade_state(self, old_state: Any, params: Any) -> Any:
        """A state of :meth:`legacy_tx` (``"0.1"``: an ``optax.PartitionState``;
        ``"0.2"``: a count per label), as a state of ``tx``.

        Every array keeps its value: each label's state is read by path (``0/mu/head/w``)
        from the old layout. Labels whose step counts are equal share one again; a label
        whose count differs (one reset alone) keeps its own, in a group of its own.

        Raises:
          TypeError: ``old_state`` is not a state of :meth:`legacy_tx`.
          ValueError: the old state lacks an array the new layout needs (made by another
            spec or for other parameters).
        """
        old_part = (
            old_state if isinstance(old_state, (optax.PartitionState, PartitionState)) else None
        )
        if old_part is None and isinstance(old_state, tuple) and old_state:
            last = old_state[-1]
            old_part = last if isinstance(last, (optax.PartitionState, PartitionState)) else None
        fresh = self.partition_state(self.tx.init(params))
        if isinstance(old_part, PartitionState):
            if {lab for g in old_part.groups.values() for lab in g.labels} != set(self.transforms):
                raise TypeError("not a state of this plan's legacy_tx('0.2'): other labels")
            upgraded = upgrade_per_label(old_part, fresh, params, self.labels_for)
            return upgraded if old_state is old_part else (*old_state[:-1], upgraded)
        if old_part is None or set(old_part.inner_states) != set(self.transforms):
            raise TypeError("not a state of this plan's legacy_tx() (an optax.PartitionState)")
        states = {}
        for label, tx in self.transforms.items():
            new = init_label(tx, params, self.labels_for, label)
            inner = old_part.inner_states[label]
            old = dict(leaf_segments(getattr(inner, "inner_state", inner)))
            values = []
            for segs, _ in leaf_segments(new):
                if segs not in old:
                    raise ValueError(
                        f"partspec: the old state of `{label}` has no array at "
                        f"{'/'.join(segs)!r}; was it saved for this spec and these parameters?"
                    )
                values.append(old[segs])
            states[label] = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(new), values)
        upgraded = with_label_states(fresh, states)
        if old_state is old_part:
            return upgraded
        return (*old_state[:-1], upgraded)

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
            partition(used, labels_for),
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
        part = partition(used, lambda _: trainable_labels)
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

    A state leaf mirrors a parameter when its path ends with the parameter's path (the
    longest such parameter) and it has the parameter's shape: partspec's partition keys
    its mirrors by parameter path (``.../mu/head/kernel``), and so do the ``global``
    transforms' masked mirrors. A mirror gets its parameter's sharding; everything else
    (step counts, noise keys, mirrors of unsharded parameters, and mirrors shaped unlike
    their parameter, such as Adafactor's factored moments) is replicated.
    """
    shardings = [_sharding_of(x) for x in jax.tree_util.tree_leaves(params)]
    if all(s is None for s in shardings):
        return None
    named = [s for s in shardings if isinstance(s, jax.sharding.NamedSharding)]
    # ``None`` in ``out_shardings`` replicates over the computation's devices.
    replicated = (
        jax.sharding.NamedSharding(named[0].mesh, jax.sharding.PartitionSpec()) if named else None
    )
    by_path = {
        segs: (sharding, tuple(getattr(leaf, "shape", ())))
        for (segs, leaf), sharding in zip(leaf_segments(params), shardings)
    }
    longest = max((len(s) for s in by_path), default=0)
    abstract = jax.eval_shape(tx.init, params)
    out: list[jax.sharding.Sharding | None] = []
    for segs, leaf in leaf_segments(abstract):
        found = None
        for k in range(min(len(segs), longest), 0, -1):
            found = by_path.get(segs[-k:])
            if found is not None:
                break
        if found is not None and found[0] is not None and tuple(leaf.shape) == found[1]:
            out.append(found[0])
        else:
            out.append(replicated)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract), out)


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
    inner = optax.chain(*(build(g) for g in checked.globals))

    def trainable(tree: Any) -> Any:
        return jax.tree.map(lambda lab: lab not in frozen_labels, labels_for(tree))

    steps: list[Any] = []
    if unfreeze:
        steps.append(gate(unfreeze, labels_for))
    steps += [optax.masked(inner, trainable), part]
    return optax.chain(*steps)


def _uncovered(resolver: Resolver, params: Any) -> list[tuple[tuple[str, ...], Any]]:
    """The leaves of ``params`` that no rule owns."""
    return [
        (segs, leaf)
        for segs, leaf in leaf_segments(params)
        if resolver.locate(segs, functools.partial(leaf_info, leaf))[1] is None
    ]


def _integer_leaves(params: Any, dtypes: set[Any]) -> list[tuple[tuple[str, ...], LeafInfo]]:
    """The array leaves of integer or boolean dtype, with their paths; ``dtypes`` (every
    leaf's, as the labelling walk saw them) tells whether there are any: most trees have
    none."""
    if not any(_is_integer(d) for d in dtypes):
        return []
    return [
        (segs, leaf_info(x))
        for segs, x in leaf_segments(params)
        if _is_array_like(x) and _is_integer(x.dtype)
    ]


def _is_integer(dtype: Any) -> bool:
    try:
        return dtype is not None and np.dtype(dtype).kind in "iub"
    except TypeError:  # an extended dtype, such as a PRNG key's
        return False


def _is_array_like(leaf: Any) -> bool:
    """An array, NumPy scalar or ``jax.ShapeDtypeStruct``: something with a shape and a dtype."""
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


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
    resolution, labels, resolver = resolve_tree(checked, params)
    resolution.raise_for_errors(strict=strict)
    for w in resolution.warnings:
        warnings.warn(w.render(), SpecWarning, stacklevel=3)
    transforms, frozen_set, unfreeze = _transforms(spec, resolution)
    labels_for = _labeler(resolver, params, labels)
    part = partition(transforms, labels_for)
    tx = _with_globals(resolution.checked, part, labels_for, unfreeze, frozen_set)
    return Plan(
        spec,
        resolution.checked,
        labels,
        transforms,
        tx,
        resolution.warnings,
        frozen_set,
        unfreeze,
        labels_for,
        {lab: a.action for lab, a in resolution.actions.items()},
        resolution,
    )


def resolve_tree(checked: CheckedSpec, params: Any) -> tuple[Resolution, Any, Resolver]:
    """Resolve a spec over a pytree: the resolution, the label tree and the resolver.

    The label tree has the structure and container types of ``params`` (``None`` for
    uncovered leaves). The resolution's per-leaf owners and labels (in the order of
    the tree's leaves) are computed when first asked for.
    """
    try:
        dtypes: set[Any] = set()
        if checked.counted:
            # `count(i)`: one walk labels the tree and counts; the labels that depend
            # on a count are put in once the counts are known.
            counting = CountingPass(checked)
            labels = label_tree(counting.resolver, params, dtypes, counting)
            assert counting.final is not None
            checked = counting.final.checked
            resolver = counting.final
            if labels is None:  # the counts changed a label given during the walk
                resolver = Resolver(checked, matcher_for(checked))
                labels = label_tree(resolver, params, dtypes)
        else:
            resolver = Resolver(checked, matcher_for(checked))
            labels = label_tree(resolver, params, dtypes)
        uncovered: list[tuple[tuple[str, ...], Any]] = []

        def uncovered_paths() -> list[str]:
            uncovered.extend(_uncovered(resolver, params))
            return ["/".join(seg) for seg, _ in uncovered]

        def per_leaf() -> tuple[tuple[int, ...], tuple[str | None, ...]]:
            found = [
                resolver.locate(segs, functools.partial(leaf_info, leaf))
                for segs, leaf in leaf_segments(params)
            ]
            return tuple(o for o, _ in found), tuple(lab for _, lab in found)

        resolution = finish(
            checked,
            resolver,
            uncovered_paths,
            per_leaf,
            lambda: [segs for segs, _ in leaf_segments(params)],
            _integer_leaves(params, dtypes),
        )
    except SpecError as err:
        raise SpecError(err.diagnostics) from None
    # A whole Equinox module has leaves that are not parameters (activation functions,
    # Dropout's `p`): say so, rather than only suggest rules for them.
    kinds = sorted({type(leaf).__name__ for _, leaf in uncovered if not _is_array_like(leaf)})
    if kinds and resolution.errors:
        first = dataclasses.replace(
            resolution.errors[0],
            hint=f"some uncovered leaves are not arrays ({', '.join(kinds)}): for an "
            "Equinox module, compile against `eqx.filter(model, eqx.is_array)`; otherwise "
            "add rules for them, or a catch-all as the last rule: `** -> frozen`",
        )
        resolution = dataclasses.replace(resolution, errors=(first, *resolution.errors[1:]))
    return resolution, labels, resolver


def _transforms(
    spec: ast.Spec, resolution: Resolution
) -> tuple[dict[str, optax.GradientTransformation], frozenset[str], dict[str, int]]:
    """Every label's optax transformation, the frozen labels, the unfreeze steps."""
    checked = resolution.checked
    transforms: dict[str, optax.GradientTransformation] = {}
    for label, la in resolution.actions.items():
        if la.frozen:
            transforms[label] = frozen()
            continue
        try:
            transforms[label] = build_action(la.action)
        except (TypeError, ValueError) as exc:
            cr = checked.rules[la.rules[0]] if la.rules else checked.rules[0]
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
    for stmt, value in zip(spec.globals, checked.globals):
        try:
            build(value)
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
    return transforms, resolution.frozen_labels, resolution.unfreeze_steps


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


def optimizer(spec: ast.Spec | str, params: Any, /, **values: Any) -> optax.GradientTransformation:
    """``compile(spec, params, **values).tx``."""
    return compile(spec, params, **values).tx
