"""Paths of pytree leaves, and the labelling walk that carries matcher state down a tree.

A leaf's path is its keys as text joined with ``/``: dict keys as they are,
sequence indices in decimal, attribute names by name. NNX ``Variable`` wrappers
(and their ``.value``) never appear in a path.

>>> from partspec.jax.tree import leaf_paths
>>> [p for p, _ in leaf_paths({"mlp/~/linear_1": {"w": 1.0}, "layers": [2.0]})]
['layers/0', 'mlp/~/linear_1/w']
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from partspec._caches import register
from partspec.diagnostics import SpecError
from partspec.language.values import LeafInfo
from partspec.resolution.counting import CountingPass, Deferred
from partspec.resolution.resolver import DYNAMIC, Resolver

__all__ = ["is_variable", "key_text", "label_tree", "leaf_info", "leaf_paths", "leaf_segments"]


def key_text(entry: Any) -> str:
    """The text of one key-path entry (``DictKey``, ``SequenceKey``, ``GetAttrKey``...)."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)  # pragma: no cover - unknown key kinds


def is_variable(x: Any) -> bool:
    """Whether ``x`` is an NNX Variable (or VariableState), without importing flax."""
    return any(
        c.__name__ in ("Variable", "VariableState") and c.__module__.startswith("flax.")
        for c in type(x).__mro__
    )


_LEAF, _NODE, _VAR = 0, 1, 2
#: Types that are leaves for good: arrays, abstract arrays and numbers.
_ARRAY_TYPES: tuple[type, ...] = (np.ndarray, np.generic, jax.Array, jax.ShapeDtypeStruct)
#: type -> kind, for verdicts that cannot go stale: a pytree node stays one (JAX has no
#: unregistering), an array type stays a leaf. Any other leaf type is looked up again
#: each time, so a class registered as a pytree after partspec first saw it is a node
#: from then on. Bounded: cleared when it holds :data:`MAX_KIND_CACHE` types.
_kind_cache: dict[type, int] = {
    np.ndarray: _LEAF,
    jax.ShapeDtypeStruct: _LEAF,
    float: _LEAF,
    int: _LEAF,
    bool: _LEAF,
    complex: _LEAF,
}
_PERMANENT = dict(_kind_cache)
MAX_KIND_CACHE = 4096


def _kind(x: Any) -> int:
    t = type(x)
    k = _kind_cache.get(t)
    if k is None:
        if is_variable(x):
            k = _VAR
        else:
            treedef = jax.tree_util.tree_structure(x, is_leaf=lambda y: y is not x)
            is_leaf = jax.tree_util.treedef_is_leaf(treedef) and treedef.num_leaves == 1  # type: ignore[attr-defined]
            k = _LEAF if is_leaf else _NODE
        if k != _LEAF or issubclass(t, _ARRAY_TYPES):
            if len(_kind_cache) >= MAX_KIND_CACHE:
                _clear_kinds()
            _kind_cache[t] = k
    return k


def _children(x: Any) -> tuple[list[tuple[str | None, Any]], Any]:
    """One level of a node: ``[(key text, child)]`` and a rebuild function."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    return [(key_text(p[0]) if p else None, c) for p, c in pairs], treedef


def leaf_segments(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf with its path as a tuple of segments, in ``jax.tree_util`` order."""
    out: list[tuple[tuple[str, ...], Any]] = []

    def rec(node: Any, path: tuple[str, ...]) -> None:
        # Plain containers inline, in JAX's order (a dict's keys sorted), without a
        # flatten call per node: most of a model's nodes are dicts.
        t = type(node)
        if t is dict:
            try:
                keys = sorted(node)
            except TypeError:  # keys JAX cannot order either: its error, below
                keys = None
            if keys is not None:
                for k in keys:
                    rec(node[k], (*path, k if type(k) is str else str(k)))
                return
        elif t is list or t is tuple:
            for i, child in enumerate(node):
                rec(child, (*path, str(i)))
            return
        if node is None:
            return
        kind = _kind_cache.get(t)
        if kind is None:
            kind = _kind(node)
        if kind == _LEAF:
            out.append((path, node))
            return
        pairs, _ = _children(node)
        for key, child in pairs:
            rec(child, path if kind == _VAR or key is None else (*path, key))

    rec(tree, ())
    return out


def leaf_paths(tree: Any) -> list[tuple[str, Any]]:
    """Every leaf with its ``/``-joined path, in ``jax.tree_util`` order."""
    return [("/".join(segs), leaf) for segs, leaf in leaf_segments(tree)]


def leaf_info(leaf: Any) -> LeafInfo:
    """The shape and dtype name of a leaf, as ``where`` conditions see them.

    Python numbers get JAX's default dtypes (``1.0`` is ``float32``).
    """
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(leaf)
        shape, dtype = arr.shape, jax.dtypes.canonicalize_dtype(arr.dtype)
    try:
        key = (shape, dtype)
        info = _infos.get(key)
    except TypeError:  # an unhashable shape or dtype
        key, info = None, None
    if info is None:
        info = LeafInfo(tuple(int(d) for d in shape), np.dtype(dtype).name)
        if key is not None and len(_infos) < MAX_INFOS:
            _infos[key] = info
    return info


_infos: dict[tuple[Any, Any], LeafInfo] = {}
#: Shapes and dtypes whose LeafInfo is kept.
MAX_INFOS = 10_000


def _clear_kinds() -> None:
    _kind_cache.clear()
    _kind_cache.update(_PERMANENT)


register(
    "jax.leaf_kinds",
    owner=__name__,
    bound=MAX_KIND_CACHE,
    what="whether a type is a leaf, a node or an NNX Variable",
    size=lambda: len(_kind_cache),
    clear=_clear_kinds,
)
register(
    "jax.leaf_infos",
    owner=__name__,
    bound=MAX_INFOS,
    what="the LeafInfo of a shape and dtype",
    size=lambda: len(_infos),
    clear=_infos.clear,
)


_UNCOVERED: Any = type("_Uncovered", (), {"__repr__": lambda self: "UNCOVERED"})()
_MISS: Any = object()
#: ``lead_of`` for a state whose outcomes are not cached (captures after a ``**``).
_NO_KEY = -2
#: At most this many (conditions, shape, dtype) results are remembered per walk.
_MAX_HELD = 4096


def label_tree(
    resolver: Resolver,
    tree: Any,
    dtypes: set[Any] | None = None,
    counting: CountingPass | None = None,
) -> Any:
    """Label every leaf of ``tree`` with the label of the rule that owns it.

    Returns the label tree: same structure and container types as ``tree``, ``None``
    for uncovered leaves. The resolver records the outcomes (coverage, labels in use).
    Given a set
    ``dtypes``, the walk adds every leaf's ``dtype`` to it (``None`` for a leaf without
    one), so that a caller needs no second pass over the leaves.

    A spec that uses ``count(...)`` is labelled through ``counting`` (whose resolver
    is ``resolver``): the walk counts, :meth:`CountingPass.finish` labels what waited
    for the counts, and the labels are put in place; the outcomes are then recorded in
    ``counting.final``. Returns ``None`` if the counts change a label given during the
    walk (the caller labels the tree again with ``counting.final``).
    """
    seen = dtypes.add if dtypes is not None else None
    matcher = resolver.matcher
    keys_of = matcher.key_transitions
    trans_of = matcher.transitions
    # The labels known from a final state alone (``str``): the fast path.
    label_of: dict[int, Any] = resolver.label_of if counting is None else counting.direct
    kind_cache = _kind_cache
    # A leaf's path is carried down only when some label may need it (captures).
    track = resolver.may_need_paths or counting is not None
    # Placeholders for labels that wait for the counts: where they sit in a dict
    # (patched in place), and whether one sits in another container (then the label
    # tree is flattened to put them in, and an uncovered leaf must not be ``None``,
    # which JAX takes for an empty subtree).
    holes: list[tuple[dict[Any, Any], Any]] = []
    boxed = False

    # Outcomes by (the rules whose patterns match, the leaf's shape and dtype where a
    # condition reads them, the leading keys of the path that captures read): a label,
    # ``None``, or a placeholder. Final states with the same matching rules decide
    # alike. ``lead_of``: per final state seen, how many leading keys (``_NO_KEY``: the
    # outcome is not cached); ``class_of``: its rules, and whether conditions need the
    # leaf.
    by_leaf: dict[Any, Any] = {}
    lead_of: dict[int, int] = {}
    class_of: dict[int, tuple[tuple[int, ...], bool]] = {}
    rules: tuple[Any, ...] = (*resolver.checked.rules, *resolver.checked.with_rules)
    # Per final state, the rules whose conditions read only the leaf (no captures):
    # leaves whose conditions all come out the same share an outcome too. ``held``:
    # what those conditions gave, per (rules, shape, dtype), so that a leaf of a shape
    # seen under another prefix finds its outcome without resolving.
    tested: dict[int, tuple[int, ...] | None] = {}
    held: dict[Any, tuple[bool, ...]] = {}

    def first_sight(f: int) -> int:
        if counting is not None:
            lead = counting.lead(f)
        else:
            lab = resolver.static(f)
            needs = lab is DYNAMIC and resolver.needs_path(f)
            lead = resolver.path_lead(f) if needs else 0
        cands = matcher.matches(f)
        conditions = tuple(r for r in cands if rules[r].rule.where is not None)
        class_of[f] = (cands, bool(conditions))
        plain = conditions and not any(rules[r].where_captures for r in conditions)
        tested[f] = conditions if plain else None
        got = lead_of[f] = _NO_KEY if lead is None else lead
        return got

    def leaf(f: int, v: Any, path: Any, key: Any) -> Any:
        # ``path``: the parent's segments (when tracked); ``key``: the leaf's own
        # segment, or ``None`` when ``path`` is the leaf's whole path.
        if seen is not None:
            seen(getattr(v, "dtype", None))
        lead = lead_of.get(f)
        if lead is None:
            lead = first_sight(f)
        shape, dtype = getattr(v, "shape", None), getattr(v, "dtype", None)
        ck: Any = None
        cands, reads_leaf = class_of[f]
        if lead >= 0 and (not reads_leaf or (shape is not None and dtype is not None)):
            if not lead:
                prefix = ()
            elif lead <= len(path) or key is None:
                prefix = path[:lead]
            else:
                prefix = (*path, key)[:lead]
            ck = (cands, shape, dtype, prefix) if reads_leaf else (cands, prefix)
            try:
                got = by_leaf.get(ck, _MISS)
            except TypeError:  # an unhashable shape or dtype
                ck, got = None, _MISS
            if got is not _MISS:
                return got
        ck2: Any = None
        conditions = tested.get(f)
        if ck is not None and conditions is not None:
            # The same rules hold for another shape: the same outcome.
            try:
                info = leaf_info(v)
                holds = tuple(resolver.holds(r, info) for r in conditions)
                ck2 = (cands, holds, prefix)
            except SpecError:  # resolving it below says where and why
                ck2 = None
            else:
                if len(held) < _MAX_HELD:  # shape and dtype hash: ``ck`` is a key
                    held[conditions, shape, dtype] = holds
            if ck2 is not None:
                got = by_leaf.get(ck2, _MISS)
                if got is not _MISS:
                    by_leaf[ck] = got
                    return got
        segs = None if path is None else path if key is None else (*path, key)
        if counting is not None:
            assert segs is not None
            got = counting.leaf(f, functools.partial(leaf_info, v), segs)
        else:
            got = resolver.static(f)
            if got is DYNAMIC:
                got = resolver.resolve(f, leaf_info(v), segs)[1]
        if ck is not None:
            by_leaf[ck] = got
        if ck2 is not None:
            by_leaf[ck2] = got
        return got

    def boxed_leaf(f: int, v: Any, segs: Any) -> Any:
        # A leaf that is not a dict's value.
        nonlocal boxed
        lab = leaf(f, v, segs, None)
        if lab is None and counting is not None:
            boxed = True
            return _UNCOVERED
        if lab.__class__ is Deferred:
            boxed = True
        return lab

    def visit(v: Any, f: int, segs: Any) -> Any:
        # ``f`` is the state after this value's own key; ``segs`` its path.
        t = type(v)
        k = kind_cache.get(t)
        if k is None:
            k = _NODE if t in (dict, list, tuple) or v is None else _kind(v)
        if k == _LEAF:
            return boxed_leaf(f, v, segs)
        if k == _VAR:
            pairs, treedef = _children(v)
            return treedef.unflatten([visit(c, f, segs) for _, c in pairs])
        s = trans_of[f].get(None, -1)
        if s < 0:
            s = matcher.sep(f)
        return walk(v, s, segs)

    def step(s: int, key: str) -> int:
        f = keys_of[s].get(key, -1)
        return f if f >= 0 else matcher.key(s, key)

    def walk(node: Any, s: int, path: Any) -> Any:
        t = type(node)
        if t is dict:
            out = {}
            keys = keys_of[s]
            plen = len(path) if path is not None else 0
            order: Any = node
            if track:
                # JAX's leaf order (a dict's keys sorted): labels that depend on the
                # path are handed out, and listed, in the order of their first leaf.
                try:  # noqa: SIM105 (a context manager per node costs more)
                    order = sorted(node)
                except TypeError:  # keys JAX cannot order either
                    pass
            for key in order:
                v = node[key]
                kt = key if type(key) is str else str(key)
                f = keys.get(kt, -1)
                if f < 0:
                    f = matcher.key(s, kt)
                tv = type(v)
                if tv is dict:
                    # The common case inline: a dict under a dict.
                    s2 = trans_of[f].get(None, -1)
                    out[key] = walk(
                        v, s2 if s2 >= 0 else matcher.sep(f), (*path, kt) if track else None
                    )
                elif kind_cache.get(tv) == _LEAF:
                    if seen is not None:
                        seen(getattr(v, "dtype", None))
                    lab = label_of.get(f)
                    if lab.__class__ is not str:
                        # The outcome cache inline (``leaf`` fills it).
                        lead = lead_of.get(f, -1)
                        if 0 <= lead <= plen:
                            cands, reads_leaf = class_of[f]
                            prefix = path[:lead] if lead else ()
                            try:
                                if not reads_leaf:
                                    lab = by_leaf.get((cands, prefix), _MISS)
                                else:
                                    shape, dtype = v.shape, v.dtype
                                    lab = by_leaf.get((cands, shape, dtype, prefix), _MISS)
                                    if lab is _MISS and (conds := tested[f]) is not None:
                                        h = held.get((conds, shape, dtype))
                                        if h is not None:
                                            lab = by_leaf.get((cands, h, prefix), _MISS)
                            except (AttributeError, TypeError):
                                lab = _MISS
                            if lab is _MISS:
                                lab = leaf(f, v, path, kt)
                        else:
                            lab = leaf(f, v, path, kt)
                        if lab.__class__ is Deferred:
                            holes.append((out, key))
                    out[key] = lab
                else:
                    out[key] = visit(v, f, (*path, kt) if track else None)
            return out
        if t is list or t is tuple:
            items = [
                visit(v, step(s, str(i)), (*path, str(i)) if track else None)
                for i, v in enumerate(node)
            ]
            return items if t is list else tuple(items)
        if node is None:
            return None
        pairs, treedef = _children(node)
        return treedef.unflatten(
            [
                visit(c, step(s, key), (*path, key) if track else None)
                if key is not None
                else visit(c, s, path)
                for key, c in pairs
            ]
        )

    def locate_all(r: Resolver) -> None:
        # A condition failed on some leaf: find it again with its path, for the message.
        for segs, x in leaf_segments(tree):
            r.locate(segs, functools.partial(leaf_info, x))

    try:
        start = matcher.start
        kind = _NODE if type(tree) in (dict, list, tuple) or tree is None else _kind(tree)
        if kind == _LEAF:
            result = boxed_leaf(start, tree, ())
        elif kind == _VAR:
            pairs, treedef = _children(tree)
            result = treedef.unflatten(
                [visit(c, start, ()) if _kind(c) != _NODE else walk(c, start, ()) for _, c in pairs]
            )
        else:
            result = walk(tree, start, ())
    except SpecError:
        locate_all(resolver)
        raise
    if counting is None:
        return result
    try:
        final = counting.finish()
    except SpecError:
        assert counting.final is not None
        locate_all(counting.final)
        raise
    if final is None:
        return None
    for out, key in holes:
        out[key] = out[key].label
    if boxed:
        flat, treedef = jax.tree_util.tree_flatten(result)
        flat = [
            None if lab is _UNCOVERED else lab.label if lab.__class__ is Deferred else lab
            for lab in flat
        ]
        result = jax.tree_util.tree_unflatten(treedef, flat)
    return result
