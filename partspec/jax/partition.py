"""Each label's optimizer over that label's leaves only, labels of one shape sharing state.

``optax.partition`` gives every label a state over the *whole* tree, with an
``optax.MaskedNode`` for each leaf of every other label: with many labels (one per layer,
as layer-wise decay makes) the state has labels x leaves pytree nodes, and every jitted
call spends its time rebuilding them on the host.

:func:`partition` keeps the same per-label semantics (each label's transformation is
updated with that label's leaves, exactly as under ``optax.partition``: same updates to
the bit) but lays the state out like a single optimizer's:

* a label's transformation is initialised and updated on a :class:`Leaves` tree holding
  only its own leaves (nested dicts of their path segments), never placeholders;
* labels whose states have the same structure and whose other state (step counts,
  noise keys: every state leaf that mirrors no parameter) provably moves in lockstep
  share one :class:`GroupState`, holding each of their leaves once (the parts that mirror
  parameters) and that other state once. Lockstep is decided by tracing each label's
  update once at ``init`` (:func:`lockstep_keys`): two labels share when the computation
  of their non-mirror state is the same, reads nothing but that state, and starts from
  the same values. Adam at a thousand learning rates is one group with one count; a
  ``frozen until`` at different steps, or ``apply_if_finite`` (whose counter reads the
  gradients), are not shared.

So the state has about as many nodes and bytes as one optimizer's, whatever the number
of labels, and each label is still updated by its own transformation with its own leaves
(the updates of ``optax.partition``, to the bit). :func:`label_states` gives each label's
own state back (what ``optax.partition`` would have held, without the placeholders), and
:func:`with_label_states` puts edited ones in: a label given a step count of its own
(reset alone) leaves the group for one of its own.

>>> import jax.numpy as jnp, optax
>>> params = {"a": jnp.ones(2), "b": jnp.ones(3)}
>>> tx = partition({"x": optax.adam(0.1), "y": optax.adam(0.2)}, lambda t: {"a": "x", "b": "y"})
>>> state = tx.init(params)
>>> [(g.labels, g.inner[0].count) for g in state.groups.values()]
[(('x', 'y'), Array(0, dtype=int32))]
>>> sorted(label_states(state, params, lambda t: {"a": "x", "b": "y"})["y"][0].mu)
['b']
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from partspec.jax.tree import leaf_segments

__all__ = [
    "GroupState",
    "Leaves",
    "PartitionState",
    "PerLabel",
    "group_name",
    "group_scalars",
    "init_label",
    "label_states",
    "lockstep_keys",
    "partition",
    "refresh_leaves",
    "upgrade_per_label",
    "with_label_states",
]

Segments = tuple[str, ...]


@jax.tree_util.register_pytree_with_keys_class
class Leaves:
    """Some leaves of a parameter tree, as nested dicts of their path segments.

    A pytree node whose keys are the segments, so paths into a state read as they do in
    the parameters (``.../mu/encoder/layer_0/kernel``).
    """

    __slots__ = ("tree",)

    def __init__(self, tree: dict[str, Any]) -> None:
        self.tree = tree

    def tree_flatten_with_keys(self) -> tuple[list[tuple[Any, Any]], tuple[str, ...]]:
        keys = tuple(sorted(self.tree))
        return [(jax.tree_util.DictKey(k), self.tree[k]) for k in keys], keys

    def tree_flatten(self) -> tuple[list[Any], tuple[str, ...]]:
        keys = tuple(sorted(self.tree))
        return [self.tree[k] for k in keys], keys

    @classmethod
    def tree_unflatten(cls, keys: tuple[str, ...], children: Sequence[Any]) -> Leaves:
        return cls(dict(zip(keys, children)))

    def __repr__(self) -> str:
        return f"Leaves({self.tree!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Leaves) and self.tree == other.tree

    __hash__ = None  # type: ignore[assignment]

    # Read like the dict it holds: ``state.mu["head"]["kernel"]``.
    def __getitem__(self, key: str) -> Any:
        return self.tree[key]

    def __iter__(self) -> Any:
        return iter(self.tree)

    def __len__(self) -> int:
        return len(self.tree)

    def __contains__(self, key: object) -> bool:
        return key in self.tree

    def keys(self) -> Any:
        return self.tree.keys()

    def items(self) -> Any:
        return self.tree.items()

    @classmethod
    def of(cls, pairs: Sequence[tuple[Segments, Any]]) -> Leaves:
        """The leaves ``(segments, value)``, nested by segment."""
        root: dict[str, Any] = {}
        for segs, value in pairs:
            segs = segs or ("",)
            node = root
            for s in segs[:-1]:
                node = node.setdefault(s, {})
                if not isinstance(node, dict):
                    raise ValueError(f"partspec: two leaves at the path {'/'.join(segs)!r}")
            if segs[-1] in node:
                raise ValueError(f"partspec: two leaves at the path {'/'.join(segs)!r}")
            node[segs[-1]] = value
        return cls(root)

    def get(self, segs: Segments) -> Any:
        """The entry at ``segs`` (a leaf, or what a state keeps for it)."""
        node: Any = self.tree
        for s in segs or ("",):
            node = node[s]
        return node


@jax.tree_util.register_pytree_with_keys_class
class PerLabel:
    """partspec 0.2's layout of a group's non-mirror state: one value per label, keyed by
    label (``.../count/head``). Made only by ``partition(..., per_label=True)``, the
    target a 0.2 checkpoint restores into before :func:`upgrade_per_label` converts it.
    """

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def tree_flatten_with_keys(self) -> tuple[list[tuple[Any, Any]], tuple[str, ...]]:
        keys = tuple(self.values)
        return [(jax.tree_util.DictKey(k), self.values[k]) for k in keys], keys

    def tree_flatten(self) -> tuple[list[Any], tuple[str, ...]]:
        return list(self.values.values()), tuple(self.values)

    @classmethod
    def tree_unflatten(cls, keys: tuple[str, ...], children: Sequence[Any]) -> PerLabel:
        return cls(dict(zip(keys, children)))

    def __repr__(self) -> str:
        return f"PerLabel({self.values!r})"


@jax.tree_util.register_pytree_with_keys_class
class GroupState:
    """The state of labels whose states have one structure.

    Attributes:
      labels: the labels, sorted. Static (part of the tree structure).
      inner: the labels' states merged: every :class:`Leaves` is the union of theirs;
        every other leaf (a step count) is held once, the labels' being equal.
    """

    __slots__ = ("inner", "labels")

    def __init__(self, labels: tuple[str, ...], inner: Any) -> None:
        self.labels = labels
        self.inner = inner

    def tree_flatten_with_keys(self) -> tuple[list[tuple[Any, Any]], tuple[str, ...]]:
        return [(jax.tree_util.GetAttrKey("inner"), self.inner)], self.labels

    def tree_flatten(self) -> tuple[list[Any], tuple[str, ...]]:
        return [self.inner], self.labels

    @classmethod
    def tree_unflatten(cls, labels: tuple[str, ...], children: Sequence[Any]) -> GroupState:
        return cls(labels, children[0])

    def __repr__(self) -> str:
        return f"GroupState(labels={self.labels!r}, inner={self.inner!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, GroupState)
            and self.labels == other.labels
            and bool(self.inner == other.inner)
        )

    __hash__ = None  # type: ignore[assignment]


class PartitionState(NamedTuple):
    """State of :func:`partition`: group name -> :class:`GroupState`.

    A group's labels are sorted; it is named by :func:`group_name`.
    """

    groups: dict[str, GroupState]


def group_name(labels: Sequence[str]) -> str:
    """The key of a group in :class:`PartitionState`: its label when alone, otherwise the
    first label, how many more, and a digest of them all.

    The digest makes any change of membership a change of key, so a checkpoint never
    restores a group's state into another set of labels (Orbax reports the mismatch
    instead).

    >>> group_name(["head"]), group_name(["layer[i=0]", "layer[i=1]"])
    ('head', 'layer[i=0] +1 #dd18c770')
    """
    if len(labels) == 1:
        return labels[0]
    digest = hashlib.sha256("\n".join(labels).encode()).hexdigest()[:8]
    return f"{labels[0]} +{len(labels) - 1} #{digest}"


def _is_leaves(x: Any) -> bool:
    return isinstance(x, Leaves)


def _signature(state: Any) -> Any:
    """What labels must share to share a :class:`GroupState`: the structure, with each
    :class:`Leaves` as one slot, and the shape and dtype of every other leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(state, is_leaf=_is_leaves)
    return treedef, tuple(
        None if _is_leaves(x) else (tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves
    )


def _scalars(state: Any) -> list[Any]:
    """The state leaves that mirror no parameter (step counts, keys), in tree order."""
    return [x for x in jax.tree_util.tree_leaves(state, is_leaf=_is_leaves) if not _is_leaves(x)]


def group_scalars(group: GroupState) -> list[Any]:
    """The state a group's labels share: its leaves that mirror no parameter (step
    counts, noise keys), held once for all of them.

    >>> import jax.numpy as jnp, optax
    >>> tx = partition({"x": optax.adam(0.1), "y": optax.adam(0.2)}, lambda t: {"a": "x", "b": "y"})
    >>> (group,) = tx.init({"a": jnp.ones(2), "b": jnp.ones(3)}).groups.values()
    >>> group.labels, group_scalars(group)
    (('x', 'y'), [Array(0, dtype=int32)])
    """
    return _scalars(group.inner)


# ------------------------------------------------------------------ lockstep


def lockstep_keys(
    transforms: Sequence[optax.GradientTransformation], dtypes: Sequence[Any] = ()
) -> list[Any]:
    """For each transformation, what decides how its non-mirror state moves, or ``None``.

    Each ``update`` is traced (all together, once) on a tree of one scalar leaf per
    dtype in ``dtypes`` (float32 if none); the key is the
    computation of the new non-mirror state leaves (step counts, keys) from the old ones,
    cut out of the trace: its operations, their literal constants and parameters. Two
    transformations with equal keys, started from equal values, keep equal non-mirror
    state for ever: at every update each computes the same function of the same values.
    The key is ``None`` (share with no other label) when that computation reads anything
    else (the updates, the parameters, an extra argument, a constant array) or the trace
    fails.

    >>> import optax
    >>> a, b, c = lockstep_keys([optax.adam(0.1), optax.adam(0.2), optax.adam(0.1, b1=0.5)])
    >>> a == b, a == c  # the rate is not in the count's computation; b1 is in no count
    (True, True)
    >>> lockstep_keys([optax.apply_if_finite(optax.adam(0.1), 3)])  # reads the gradients
    [None]
    """
    probe = _probe(dtypes)
    try:
        with jax.ensure_compile_time_eval():
            concrete = Leaves({k: jnp.zeros((), v.dtype) for k, v in probe.tree.items()})
            states = [tx.init(concrete) for tx in transforms]
        starts = [tuple(_value_text(x) for x in _scalars(state)) for state in states]

        shapes: list[Any] = []

        def run(states: list[Any], u: Leaves) -> list[list[Any]]:
            out = [tx.update(u, s, u)[1] for tx, s in zip(transforms, states)]
            shapes.extend(_signature(new) for new in out)
            return [_scalars(new) for new in out]

        closed = jax.make_jaxpr(run)(states, concrete)
    except Exception:  # a transformation that cannot be traced on its own: shares nothing
        return [None] * len(transforms)
    if shapes != [_signature(state) for state in states]:
        return [None] * len(transforms)  # an update that changes its state's structure
    jaxpr = closed.jaxpr
    consts = {id(v): c for v, c in zip(jaxpr.constvars, closed.consts)}
    producer = _producers(jaxpr.eqns)
    keys: list[Any] = []
    n_in = n_out = 0
    for state, start in zip(states, starts):
        inputs: dict[int, str] = {}
        for x in jax.tree_util.tree_leaves(state, is_leaf=_is_leaves):
            if _is_leaves(x):
                n_in += len(jax.tree_util.tree_leaves(x))
            else:
                inputs[id(jaxpr.invars[n_in])] = f"in{len(inputs)}"
                n_in += 1
        outs = jaxpr.outvars[n_out : n_out + len(inputs)]
        n_out += len(inputs)
        cut = _cut(jaxpr.eqns, producer, consts, inputs, outs)
        keys.append(None if cut is None else (cut[0], start))
    return keys


def _dtype_name(x: Any) -> str:
    dtype = getattr(x, "dtype", None)
    return dtype.name if isinstance(dtype, np.dtype) else jnp.result_type(x).name


def _probe(dtypes: Sequence[Any]) -> Leaves:
    """The tree a label's transformation is traced on: one scalar leaf per dtype."""
    kinds = sorted({jnp.dtype(d).name for d in dtypes} or {"float32"})
    return Leaves({k: jax.ShapeDtypeStruct((), jnp.dtype(k)) for k in kinds})


def _value_text(x: Any) -> tuple[str, tuple[int, ...], str]:
    """An array as its dtype, shape and a digest of its bytes (keys by their data)."""
    if jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    a = np.asarray(x)
    return a.dtype.name, a.shape, hashlib.sha256(a.tobytes()).hexdigest()


def _cut(
    eqns: Sequence[Any],
    producer: Mapping[int, tuple[int, int]],
    consts: Mapping[int, Any],
    inputs: Mapping[int, str],
    outs: Sequence[Any],
) -> tuple[tuple[Any, ...], frozenset[str]] | None:
    """The operations computing ``outs`` from ``inputs``, named canonically, and the
    inputs they read; ``None`` when they read anything else of the trace.

    A ``cond`` is cut too: only the branch operations computing its outputs that are
    needed count (``frozen until``'s step count is computed beside the moments).
    """
    wanted: dict[int, set[int]] = {}  # operation -> which of its outputs are needed
    conds: dict[int, tuple[Any, tuple[int, ...]]] = {}  # cond -> branch cuts, operands
    stack = list(outs)
    while stack:
        v = stack.pop()
        if _is_literal(v) or id(v) in inputs or id(v) in consts:
            continue
        hit = producer.get(id(v))
        if hit is None:
            return None  # the updates, the parameters, another label's state
        at, pos = hit
        got = wanted.setdefault(at, set())
        if pos in got:
            continue
        first = not got
        got.add(pos)
        eqn = eqns[at]
        if eqn.primitive.name == "cond":
            inner = _cut_cond(eqn, sorted(got))
            if inner is None:
                return None
            conds[at] = inner
            stack.append(eqn.invars[0])
            stack.extend(eqn.invars[1 + k] for k in inner[1])
        elif first:
            stack.extend(eqn.invars)
    names: dict[int, Any] = dict(inputs)
    used: set[str] = set()

    def name(v: Any) -> Any:
        if _is_literal(v):
            return ("literal", repr(v.val), str(v.aval))
        if id(v) in consts:
            return ("const", _value_text(consts[id(v)]))
        got = names[id(v)]
        if id(v) in inputs:
            used.add(got)
        return got

    rows = []
    for at in sorted(wanted):
        eqn = eqns[at]
        if at in conds:
            branches, operands = conds[at]
            ins = (name(eqn.invars[0]), *(name(eqn.invars[1 + k]) for k in operands))
            row: Any = ("cond", branches, operands, ins, tuple(sorted(wanted[at])))
        else:
            ins = tuple(name(v) for v in eqn.invars)
            row = (eqn.primitive.name, _text(eqn.params), ins)
        for v in eqn.outvars:
            names[id(v)] = f"v{len(names) - len(inputs)}"
        rows.append((*row, tuple(str(v.aval) for v in eqn.outvars)))
    return (tuple(rows), tuple(name(v) for v in outs)), frozenset(used)


def _cut_cond(eqn: Any, outputs: Sequence[int]) -> tuple[Any, tuple[int, ...]] | None:
    """Each branch of a ``cond`` cut to ``outputs``, and the operands they read."""
    cuts = []
    read: set[int] = set()
    for branch in eqn.params["branches"]:
        jaxpr = branch.jaxpr
        inputs = {id(v): f"op{k}" for k, v in enumerate(jaxpr.invars)}
        got = _cut(
            jaxpr.eqns,
            _producers(jaxpr.eqns),
            {id(v): c for v, c in zip(jaxpr.constvars, branch.consts)},
            inputs,
            [jaxpr.outvars[k] for k in outputs],
        )
        if got is None:
            return None
        cuts.append(got[0])
        read |= {int(n[2:]) for n in got[1]}
    return tuple(cuts), tuple(sorted(read))


def _producers(eqns: Sequence[Any]) -> dict[int, tuple[int, int]]:
    """Each variable an operation defines -> (that operation, which of its outputs)."""
    return {id(v): (i, k) for i, eqn in enumerate(eqns) for k, v in enumerate(eqn.outvars)}


def _is_literal(v: Any) -> bool:
    return hasattr(v, "val") and not hasattr(v, "suffix")


def _text(x: Any) -> Any:
    """Operation parameters as comparable text: sub-computations printed, with the
    values of their constants."""
    if hasattr(x, "jaxpr") and hasattr(x, "consts"):  # a closed jaxpr
        return ("closed", str(x.jaxpr), tuple(_value_text(c) for c in x.consts))
    if isinstance(x, dict):
        return tuple(sorted((str(k), _text(v)) for k, v in x.items()))
    if isinstance(x, (tuple, list)):
        return tuple(_text(v) for v in x)
    return repr(x)


def _merge(states: Sequence[Any], per_label: Sequence[str] = ()) -> Any:
    """Several labels' states (one signature, in lockstep) as one: Leaves unioned, every
    other leaf taken from the first (they are equal); with ``per_label`` (the labels,
    partspec 0.2's layout), every other leaf kept per label."""
    if len(states) == 1:
        return states[0]

    def merge(*xs: Any) -> Any:
        if _is_leaves(xs[0]):
            tree: dict[str, Any] = {}
            for x in xs:
                tree = _union(tree, x.tree)
            return Leaves(tree)
        return PerLabel(dict(zip(per_label, xs))) if per_label else xs[0]

    return jax.tree.map(merge, *states, is_leaf=_is_leaves)


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts ``a`` and ``b`` as one (``b`` wins at a leaf); neither is changed."""
    out = dict(a)
    for k, v in b.items():
        if k in out and isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = _union(out[k], v)
        else:
            out[k] = v
    return out


def _split(inner: Any, segs: Sequence[Segments], label: str = "") -> Any:
    """One label's state out of a group's merged state, over its leaves ``segs``."""

    def part(x: Any) -> Any:
        if _is_leaves(x):
            return Leaves.of([(s, x.get(s)) for s in segs])
        return x.values[label] if isinstance(x, PerLabel) else x

    return jax.tree.map(part, inner, is_leaf=_is_slot)


def _is_slot(x: Any) -> bool:
    return isinstance(x, (Leaves, PerLabel))


class _Layout(NamedTuple):
    """Where each label's leaves are in a tree's flat leaf list."""

    by_label: dict[str, list[int]]
    segs: list[Segments]
    n_leaves: int


def _layout(tree: Any, labels_for: Callable[[Any], Any]) -> _Layout:
    labels = jax.tree_util.tree_leaves(labels_for(tree))
    pairs = leaf_segments(tree)
    if len(labels) != len(pairs):
        raise ValueError(
            f"partspec: the tree has {len(pairs)} leaves but {len(labels)} labels; was the "
            "optimizer made for a different parameter structure?"
        )
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    return _Layout(by_label, [segs for segs, _ in pairs], len(pairs))


def _sub(flat: Sequence[Any] | None, layout: _Layout, label: str) -> Leaves | None:
    if flat is None:
        return None
    idx = layout.by_label.get(label, [])
    return Leaves.of([(layout.segs[i], flat[i]) for i in idx])


def partition(
    transforms: Mapping[str, optax.GradientTransformation],
    labels_for: Callable[[Any], Any],
    *,
    per_label: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """``optax.partition(transforms, labels_for)``, with the state laid out as above.

    Args:
      transforms: label -> its transformation.
      labels_for: a function from a tree (parameters, updates) to its label tree.
      per_label: lay the state out as partspec 0.2 did: labels grouped by structure
        alone, each label's non-mirror state kept apart in a :class:`PerLabel`. Only
        to restore a checkpoint saved by 0.2 (see :func:`upgrade_per_label`).

    Returns:
      A transformation whose updates are those of ``optax.partition`` and whose state
      is a :class:`PartitionState`.
    """
    cache: dict[Any, _Layout] = {}
    extended = {lab: optax.with_extra_args_support(tx) for lab, tx in transforms.items()}

    def layout_of(tree: Any) -> _Layout:
        key = jax.tree_util.tree_structure(tree)
        got = cache.get(key)
        if got is None:
            if len(cache) >= 8:
                cache.clear()
            got = cache[key] = _layout(tree, labels_for)
        return got

    def init_fn(params: Any) -> PartitionState:
        layout = layout_of(params)
        flat = jax.tree_util.tree_leaves(params)
        unknown = sorted(set(layout.by_label) - set(transforms), key=str)
        if unknown:
            raise ValueError(f"partspec: no transformation for the labels {unknown}")
        states = {lab: tx.init(_sub(flat, layout, lab)) for lab, tx in transforms.items()}
        # Labels in sorted order, not rule order: a group (its name, the order of its
        # stacked leaves) then depends only on which labels there are and their states,
        # so a checkpoint restores after rules are reordered.
        by_signature: dict[Any, list[str]] = {}
        for lab in sorted(states):
            by_signature.setdefault(_signature(states[lab]), []).append(lab)
        groups: dict[str, GroupState] = {}
        for labs in by_signature.values():
            for members in [labs] if per_label else lockstep(labs, layout, flat):
                merged = _merge([states[lab] for lab in members], members if per_label else ())
                groups[group_name(members)] = GroupState(tuple(members), merged)
        return PartitionState(groups)

    keys: dict[tuple[str, tuple[str, ...]], Any] = {}

    def lockstep(labs: list[str], layout: _Layout, flat: Sequence[Any]) -> list[list[str]]:
        """``labs`` (one signature) in classes whose non-mirror state moves in lockstep."""
        if len(labs) == 1:
            return [labs]
        kinds = {
            lab: tuple(sorted({_dtype_name(flat[j]) for j in layout.by_label.get(lab, [])}))
            for lab in labs
        }
        missing = [lab for lab in labs if (lab, kinds[lab]) not in keys]
        if missing:
            if len(keys) > 4 * len(transforms) + 64:
                keys.clear()
            by_kinds: dict[tuple[str, ...], list[str]] = {}
            for lab in missing:
                by_kinds.setdefault(kinds[lab], []).append(lab)
            for kind, some in by_kinds.items():
                found = lockstep_keys([transforms[lab] for lab in some], kind)
                keys.update({(lab, kind): key for lab, key in zip(some, found)})
        classes: dict[Any, list[str]] = {}
        for lab in labs:
            key = keys[lab, kinds[lab]]
            classes.setdefault(("alone", lab) if key is None else key, []).append(lab)
        return list(classes.values())

    def update_fn(
        updates: Any, state: PartitionState, params: Any = None, **extra: Any
    ) -> tuple[Any, PartitionState]:
        layout = layout_of(updates)
        flat_updates, treedef = jax.tree_util.tree_flatten(updates)
        flat_params = None if params is None else jax.tree_util.tree_leaves(params)
        new_flat = list(flat_updates)
        groups: dict[str, GroupState] = {}
        for name, group in state.groups.items():
            apart = _per_label(group)
            if apart and not per_label:
                raise TypeError(
                    "partspec: a state of partspec 0.2's layout (a step count per label); "
                    "convert it with plan.upgrade_state(old_state, params) "
                    "(docs/checkpoints.md)"
                )
            new_states = []
            for lab in group.labels:
                idx = layout.by_label.get(lab, [])
                sub_state = _split(group.inner, [layout.segs[j] for j in idx], lab)
                sub_updates, sub_state = extended[lab].update(
                    _sub(flat_updates, layout, lab),
                    sub_state,
                    _sub(flat_params, layout, lab),
                    **extra,
                )
                for j in idx:
                    new_flat[j] = sub_updates.get(layout.segs[j])
                new_states.append(sub_state)
            # In lockstep, so every label's new count is the first's; XLA computes it once.
            merged = _merge(new_states, group.labels if apart else ())
            groups[name] = GroupState(group.labels, merged)
        return jax.tree_util.tree_unflatten(treedef, new_flat), PartitionState(groups)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def label_states(
    state: PartitionState, tree: Any, labels_for: Callable[[Any], Any]
) -> dict[str, Any]:
    """Each label's own state: its transformation's state over its leaves of ``tree``.

    ``tree`` is the parameter tree (or any tree of its structure: only its structure
    and labels are used).
    """
    layout = _layout(tree, labels_for)
    out: dict[str, Any] = {}
    for group in state.groups.values():
        for lab in group.labels:
            segs = [layout.segs[j] for j in layout.by_label.get(lab, [])]
            out[lab] = _split(group.inner, segs, lab)
    return out


def _per_label(group: GroupState) -> bool:
    """Whether a group is laid out as partspec 0.2 did (a :class:`PerLabel` in it)."""
    if len(group.labels) < 2:
        return False
    slots = jax.tree_util.tree_leaves(group.inner, is_leaf=_is_slot)
    return any(isinstance(x, PerLabel) for x in slots)


def upgrade_per_label(
    old: PartitionState, fresh: PartitionState, tree: Any, labels_for: Callable[[Any], Any]
) -> PartitionState:
    """A state of partspec 0.2's layout (``partition(..., per_label=True)``) in today's:
    ``fresh`` (a new ``init``) with every label's state taken from ``old``.

    Labels whose counts are equal share one again; a label whose count differs (one
    reset alone) keeps its own, in a group of its own.
    """
    return with_label_states(fresh, label_states(old, tree, labels_for))


def init_label(
    tx: optax.GradientTransformation, tree: Any, labels_for: Callable[[Any], Any], label: str
) -> Any:
    """A fresh state of ``label``'s transformation over its leaves of ``tree``, shaped as
    :func:`label_states` gives it."""
    layout = _layout(tree, labels_for)
    return tx.init(_sub(jax.tree_util.tree_leaves(tree), layout, label))


def refresh_leaves(old: Any, fresh: Any, chosen: Callable[[Segments], bool]) -> Any:
    """``old`` (a label's state) with the entries of chosen parameters taken from
    ``fresh``, in every :class:`Leaves` mirror; the other state leaves kept.

    Raises:
      ValueError: some array of the state is not in a mirror (a transformation that
        ravels its parameters, say): which parameter it belongs to is unknown.
    """

    def one(o: Any, f: Any) -> Any:
        if not _is_leaves(o):
            if jnp.ndim(o) > 0:
                raise ValueError(f"a state array of shape {jnp.shape(o)} mirrors no parameter")
            return o
        pairs = []
        for segs in _entry_paths(o.tree, ()):
            pairs.append((segs, f.get(segs) if chosen(segs) else o.get(segs)))
        return Leaves.of(pairs)

    return jax.tree.map(one, old, fresh, is_leaf=_is_leaves)


def _entry_paths(tree: dict[str, Any], prefix: Segments) -> list[Segments]:
    out: list[Segments] = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out += _entry_paths(v, (*prefix, k))
        else:
            out.append((*prefix, k))
    return out


def with_label_states(state: PartitionState, new: Mapping[str, Any]) -> PartitionState:
    """``state`` with the states of the labels in ``new`` replaced.

    Each new state must have the structure :func:`label_states` gave for its label. A
    group's labels share their non-mirror state (step counts). A label given other
    count arrays than its group's (a label reset alone: not the very arrays
    :func:`label_states` gave) leaves the group for one of its own, with the other
    labels given the same arrays: the state's structure then changes (its group names),
    and each label's updates stay its own. When every label of a group is given a
    state, labels whose counts are equal in value stay together (what an upgrade from
    an older layout needs). Which groups result depends on which arrays are given, not
    on their values, except in that last case: so ``jax.eval_shape`` of a reset gives
    the structure of the reset itself (a restore target).
    """
    groups: dict[str, GroupState] = {}
    for name, group in state.groups.items():
        touched = [lab for lab in group.labels if lab in new]
        if not touched:
            groups[name] = group
            continue
        kept = [lab for lab in group.labels if lab not in new]
        classes: list[tuple[list[Any], list[str]]] = []
        if kept:
            classes.append((_scalars(group.inner), kept))
        for lab in touched:
            mine = _scalars(new[lab])
            for scalars, members in classes:
                if _same(scalars, mine, by_value=not kept):
                    members.append(lab)
                    break
            else:
                classes.append((mine, [lab]))
        if len(classes) == 1:
            inner = group.inner
            for lab in touched:
                inner = _put(inner, new[lab])
            groups[name] = GroupState(group.labels, inner)
            continue
        mirrors = _mirror_paths(group.inner)
        for lab in touched:  # what is left to the kept labels
            for segs in _mirror_paths(new[lab]):
                mirrors.discard(segs)
        for _, members in classes:
            parts = [new[lab] for lab in members if lab in new]
            if members is kept:
                parts.insert(0, _split(group.inner, sorted(mirrors)))
            members.sort()
            groups[group_name(members)] = GroupState(tuple(members), _merge(parts))
    return PartitionState(groups)


def _same(a: Sequence[Any], b: Sequence[Any], *, by_value: bool) -> bool:
    """Whether two lists of state leaves are the same arrays, or (``by_value``) equal
    in value (never, for traced ones)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x is y:
            continue
        if not by_value:
            return False
        if isinstance(x, jax.core.Tracer) or isinstance(y, jax.core.Tracer):
            return False
        if _value_text(x) != _value_text(y):
            return False
    return True


def _mirror_paths(state: Any) -> set[Segments]:
    """The parameter paths a state's mirrors hold (the first mirror's)."""
    for x in jax.tree_util.tree_leaves(state, is_leaf=_is_leaves):
        if _is_leaves(x):
            return set(_entry_paths(x.tree, ()))
    return set()


def _put(inner: Any, mine: Any) -> Any:
    def put(x: Any, y: Any) -> Any:
        return Leaves(_union(x.tree, y.tree)) if _is_leaves(x) else y

    return jax.tree.map(put, inner, mine, is_leaf=_is_leaves)
