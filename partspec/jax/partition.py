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
* labels whose states have the same structure (adamw at different learning rates, the
  same optimizer ``frozen until`` different steps) share one :class:`GroupState`: the
  parts that mirror parameters hold each leaf once (the union over the labels), and
  every other state leaf (a step count, an unfreeze counter) is kept per label, in a
  :class:`PerLabel` keyed by label.

So the state has about as many nodes as one optimizer's, whatever the number of labels.
:func:`label_states` gives each label's own state back (what ``optax.partition`` would
have held, without the placeholders), and :func:`with_label_states` puts edited ones in.

>>> import jax.numpy as jnp, optax
>>> params = {"a": jnp.ones(2), "b": jnp.ones(3)}
>>> tx = partition({"x": optax.adam(0.1), "y": optax.adam(0.2)}, lambda t: {"a": "x", "b": "y"})
>>> state = tx.init(params)
>>> [(g.labels, sorted(g.inner[0].count)) for g in state.groups.values()]
[(('x', 'y'), ['x', 'y'])]
>>> sorted(label_states(state, params, lambda t: {"a": "x", "b": "y"})["y"][0].mu)
['b']
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from partspec.jax.tree import leaf_segments

__all__ = [
    "GroupState",
    "Leaves",
    "PartitionState",
    "PerLabel",
    "group_name",
    "init_label",
    "label_states",
    "partition",
    "refresh_leaves",
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
    """One value per label of a group, for a state leaf that mirrors no parameter (a
    step count, a noise key): a pytree node keyed by label, ``.../count/head``.

    Each label's scalar stays its own array, as under ``optax.partition``, so XLA
    compiles each label's scalar work (its schedule, its bias correction) exactly as
    it would there: same updates to the bit.
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

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerLabel) and self.values == other.values

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, label: str) -> Any:
        return self.values[label]

    def __iter__(self) -> Any:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@jax.tree_util.register_pytree_with_keys_class
class GroupState:
    """The state of labels whose states have one structure.

    Attributes:
      labels: the labels, sorted. Static (part of the tree structure).
      inner: the labels' states merged: every :class:`Leaves` is the union of theirs,
        every other leaf a :class:`PerLabel` (or, for a group of one label, that
        label's own).
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


def _is_slot(x: Any) -> bool:
    return isinstance(x, (Leaves, PerLabel))


def _signature(state: Any) -> Any:
    """What labels must share to share a :class:`GroupState`: the structure, with each
    :class:`Leaves` as one slot, and the shape and dtype of every other leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(state, is_leaf=_is_leaves)
    return treedef, tuple(
        None if _is_leaves(x) else (tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves
    )


def _merge(labels: Sequence[str], states: Sequence[Any]) -> Any:
    """Several labels' states (one signature) as one: Leaves unioned, the rest per label."""
    if len(states) == 1:
        return states[0]

    def merge(*xs: Any) -> Any:
        if _is_leaves(xs[0]):
            tree: dict[str, Any] = {}
            for x in xs:
                tree = _union(tree, x.tree)
            return Leaves(tree)
        return PerLabel(dict(zip(labels, xs)))

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


def _split(inner: Any, label: str, segs: Sequence[Segments]) -> Any:
    """``label``'s state out of a group's merged state, over the leaves ``segs``."""

    def part(x: Any) -> Any:
        if _is_leaves(x):
            return Leaves.of([(s, x.get(s)) for s in segs])
        if isinstance(x, PerLabel):
            return x.values[label]
        return x

    return jax.tree.map(part, inner, is_leaf=_is_slot)


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
) -> optax.GradientTransformationExtraArgs:
    """``optax.partition(transforms, labels_for)``, with the state laid out as above.

    Args:
      transforms: label -> its transformation.
      labels_for: a function from a tree (parameters, updates) to its label tree.

    Returns:
      A transformation whose updates are those of ``optax.partition`` and whose state
      is a :class:`PartitionState`.
    """
    cache: dict[Any, _Layout] = {}

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
        # so a checkpoint restores after rules are reordered, counts in the right place.
        by_signature: dict[Any, list[str]] = {}
        for lab in sorted(states):
            by_signature.setdefault(_signature(states[lab]), []).append(lab)
        groups = {
            group_name(labs): GroupState(tuple(labs), _merge(labs, [states[lab] for lab in labs]))
            for labs in by_signature.values()
        }
        return PartitionState(groups)

    def update_fn(
        updates: Any, state: PartitionState, params: Any = None, **extra: Any
    ) -> tuple[Any, PartitionState]:
        layout = layout_of(updates)
        flat_updates, treedef = jax.tree_util.tree_flatten(updates)
        flat_params = None if params is None else jax.tree_util.tree_leaves(params)
        new_flat = list(flat_updates)
        groups: dict[str, GroupState] = {}
        for name, group in state.groups.items():
            new_states = []
            for lab in group.labels:
                idx = layout.by_label.get(lab, [])
                sub_state = _split(group.inner, lab, [layout.segs[j] for j in idx])
                tx = optax.with_extra_args_support(transforms[lab])
                sub_updates, sub_state = tx.update(
                    _sub(flat_updates, layout, lab),
                    sub_state,
                    _sub(flat_params, layout, lab),
                    **extra,
                )
                for j in idx:
                    new_flat[j] = sub_updates.get(layout.segs[j])
                new_states.append(sub_state)
            groups[name] = GroupState(group.labels, _merge(group.labels, new_states))
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
            out[lab] = _split(group.inner, lab, segs)
    return out


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

    Each new state must have the structure :func:`label_states` gave for its label.
    """
    groups: dict[str, GroupState] = {}
    for name, group in state.groups.items():
        touched = [lab for lab in group.labels if lab in new]
        if not touched:
            groups[name] = group
            continue
        inner = group.inner
        for lab in touched:
            inner = _put(inner, lab, new[lab])
        groups[name] = GroupState(group.labels, inner)
    return PartitionState(groups)


def _put(inner: Any, label: str, mine: Any) -> Any:
    def put(x: Any, y: Any) -> Any:
        if _is_leaves(x):
            return Leaves(_union(x.tree, y.tree))
        if isinstance(x, PerLabel):
            return PerLabel({**x.values, label: y})
        return y

    return jax.tree.map(put, inner, mine, is_leaf=_is_slot)
