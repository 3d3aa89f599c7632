"""Model surgery with partspec globs: select, replace, transfer, and reset optimizer state.

The Flax "Model surgery" guide flattens parameter dicts by hand to read or change some
leaves; PyTorch users filter and rename state-dict keys to load pretrained weights; optax
users who want to reset part of an ``optax.partition`` state rebuild it by hand
(optax#1371). These functions do each with the same glob patterns as specs (``*``, ``**``,
``{a,b}``, ``{0..11}``, several patterns with ``,`` and ``except``), over the same
``/``-joined paths (see :func:`partspec.jax.tree.leaf_paths`).

>>> import jax.numpy as jnp, partspec
>>> params = {"backbone": {"kernel": jnp.ones(2)}, "head": {"kernel": jnp.ones(3)}}
>>> sorted(partspec.select("**/kernel except backbone/**", params))
['head/kernel']
>>> new = partspec.replace("head/**", params, jnp.zeros_like)
>>> new["head"]["kernel"].tolist(), new["backbone"]["kernel"].tolist()
([0.0, 0.0, 0.0], [1.0, 1.0])

Optimizer states have paths too. A state of ``plan.tx`` is a
:class:`~partspec.jax.partition.PartitionState` of groups of labels; named tuples and
dataclasses contribute their field names, tuples (``optax.chain``) their indices, and
parameter mirrors the parameters' own paths. Adam's first moment of ``head/kernel`` under
the label ``head`` is at ``groups/head/inner/0/mu/head/kernel``, so ``**/mu/head/**``
selects the head's first moments whatever the labels and chains around them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from partspec.diagnostics import SpecError, did_you_mean
from partspec.jax.partition import (
    PartitionState,
    init_label,
    label_states,
    refresh_leaves,
    with_label_states,
)
from partspec.jax.plan import GateState, Plan
from partspec.jax.tree import leaf_info, leaf_segments
from partspec.language.values import LeafInfo
from partspec.resolution.selection import (
    Rename,
    Selector,
    TransferReport,
    compile_selector,
    duplicate,
    error,
    no_match,
    plan_transfer,
)

__all__ = ["TransferReport", "replace", "reset_state", "select", "transfer"]


def _info(leaf: Any) -> LeafInfo | None:
    """A leaf's shape and dtype for a ``where`` clause; ``None`` (error E409) if it has none."""
    if not hasattr(leaf, "shape") and not isinstance(leaf, (bool, int, float, complex)):
        return None
    try:
        return leaf_info(leaf)
    except (TypeError, ValueError):
        return None


def _flags(selector: Selector, items: Sequence[tuple[Sequence[str], Any]]) -> list[bool]:
    """Whether the selector selects each ``(segments, leaf)``."""
    return selector.flags([segs for segs, _ in items], lambda i: _info(items[i][1]))


def _flat(tree: Any) -> tuple[list[Any], Any, list[tuple[str, ...]]]:
    """``(leaves, treedef, segments)``, the segments in the order of the leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    segs = [s for s, _ in leaf_segments(tree)]
    if len(segs) != len(leaves):  # pragma: no cover - leaf_segments follows jax's leaves
        raise AssertionError("partspec: paths and leaves disagree")
    return leaves, treedef, segs


# ---------------------------------------------------------------- select and replace


def select(pattern: str, tree: Any) -> dict[str, Any]:
    """The leaves of ``tree`` whose path matches ``pattern``, as ``{path: leaf}``.

    Args:
      pattern: globs as on the left of a rule: ``head/**``, ``**/mu/{head,neck}/**``,
        ``a/**, b/** except **/bias``.
      tree: any pytree: parameters, an optimizer state (a ``plan.tx`` state has paths
        such as ``groups/GROUP/inner/0/mu/head/kernel``), a ``TrainState``.

    Returns:
      A dict from path to leaf, in ``jax.tree_util`` leaf order; empty if nothing
      matches. ``None`` subtrees and ``optax.MaskedNode`` placeholders have no leaves.

    Raises:
      SpecError: a bad pattern (``E1xx``/``E2xx``), or two matching leaves with the
        same path (``E704``: ``{"a/b": x}`` and ``{"a": {"b": y}}`` side by side).

    >>> import partspec
    >>> partspec.select("layers/{0..1}/w", {"layers": [{"w": 1.0}, {"w": 2.0}, {"w": 3.0}]})
    {'layers/0/w': 1.0, 'layers/1/w': 2.0}
    """
    selector = compile_selector(pattern)
    items = leaf_segments(tree)
    out: dict[str, Any] = {}
    for (segs, leaf), hit in zip(items, _flags(selector, items)):
        if hit:
            path = "/".join(segs)
            if path in out:
                raise duplicate("partspec.select", path)
            out[path] = leaf
    return out


def replace(pattern: str, tree: Any, fn: Callable[..., Any], *, with_path: bool = False) -> Any:
    """``tree`` with every leaf whose path matches ``pattern`` replaced by ``fn(leaf)``.

    Args:
      pattern: globs, as for :func:`select`.
      tree: any pytree; the result has the same structure and container types
        (``FrozenDict``, ``nnx.State`` and its ``Variable`` wrappers, named tuples...).
      fn: called once per matching leaf as ``fn(leaf)``, or ``fn(path, leaf)`` with
        ``with_path=True``.
      with_path: pass the leaf's path to ``fn`` as well.

    Returns:
      The new tree; leaves that do not match are the same objects as in ``tree``.

    Raises:
      SpecError: ``E701`` if the pattern matches no leaf (a typo would otherwise change
        nothing silently), or a bad pattern.

    >>> import partspec
    >>> partspec.replace("*/b", {"x": {"a": 1.0, "b": 2.0}}, lambda v: -v)
    {'x': {'a': 1.0, 'b': -2.0}}
    >>> partspec.replace("**", [1.0, 2.0], lambda p, v: f"{p}={v}", with_path=True)
    ['0=1.0', '1=2.0']
    """
    selector = compile_selector(pattern)
    leaves, treedef, segs = _flat(tree)
    new = list(leaves)
    hit = False
    for i, chosen in enumerate(_flags(selector, list(zip(segs, leaves)))):
        if chosen:
            s = segs[i]
            hit = True
            new[i] = fn("/".join(s), leaves[i]) if with_path else fn(leaves[i])
    if not hit:
        raise no_match(pattern, ["/".join(s) for s in segs])
    return jax.tree_util.tree_unflatten(treedef, new)


# ---------------------------------------------------------------- optimizer state


def _is_partition(x: Any) -> bool:
    return isinstance(x, PartitionState)


def _labels_of(x: PartitionState) -> set[str]:
    return {lab for g in x.groups.values() for lab in g.labels}


def reset_state(
    plan: Plan,
    state: Any,
    params: Any,
    *,
    label: str | None = None,
    pattern: str | None = None,
) -> Any:
    """Re-initialise part of ``plan.tx``'s optimizer state, keeping the rest bit for bit.

    Give exactly one of:

    - ``label``: that label's whole state is replaced by what ``plan.tx.init(params)``
      gives for it (counts and schedule steps included), as if the label's parameters
      had just been created; labels that share its state group keep theirs.
    - ``pattern``: only the state leaves that mirror parameters matching the pattern
      (Adam's ``mu`` and ``nu`` of those parameters, momentum buffers...) are
      re-initialised, in every label that owns such a parameter. State that is not per
      parameter, such as Adam's ``count`` or a schedule's step, is kept: it is shared by
      all parameters of the label. The state's parameter mirrors are keyed by
      parameter path, so which leaf belongs to which parameter is known exactly.

    Args:
      plan: the compiled plan whose ``tx`` made ``state``.
      state: ``plan.tx``'s state, or any pytree holding it (a ``TrainState``, the state
        of an ``optax.chain`` around ``plan.tx``); the result has the same type.
      params: the current parameters (fresh state is initialised from them).
      label: a label of ``plan`` (a key of ``plan.transforms``).
      pattern: globs over parameter paths, as for :func:`select`.

    Returns:
      The new state. Everything not reset is the same array objects as in ``state``.

    Raises:
      TypeError: neither or both of ``label`` and ``pattern``.
      SpecError: ``E705`` for an unknown label, a state without exactly one
        ``PartitionState`` of this plan, or an optimizer with per-parameter state
        outside its parameter mirrors; ``E701`` if ``pattern`` matches no parameter.

    >>> import jax.numpy as jnp, optax, partspec
    >>> params = {"body": jnp.ones(2), "head": jnp.ones(2)}
    >>> plan = partspec.compile("** -> adam(0.1)", params)
    >>> grads = {"body": jnp.ones(2), "head": jnp.ones(2)}
    >>> _, state = plan.tx.update(grads, plan.init(params), params)
    >>> state = partspec.reset_state(plan, state, params, pattern="head")
    >>> partspec.select("**/mu/**", state)
    {'groups/adam(0.1)/inner/0/mu/body': Array([0.1, 0.1], dtype=float32),
     'groups/adam(0.1)/inner/0/mu/head': Array([0., 0.], dtype=float32)}
    """
    where = "partspec.reset_state"
    if (label is None) == (pattern is None):
        raise TypeError("reset_state() takes exactly one of label= or pattern=")
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a partspec.Plan, not {type(plan).__name__}")

    leaves, treedef = jax.tree_util.tree_flatten(
        state, is_leaf=lambda x: _is_partition(x) or isinstance(x, GateState)
    )
    keys = set(plan.transforms)
    at = [i for i, x in enumerate(leaves) if _is_partition(x) and _labels_of(x) == keys]
    if len(at) != 1:
        found = "no" if not at else f"{len(at)}"
        raise error(
            "E705",
            where,
            f"the state holds {found} partition state with this plan's labels "
            f"({', '.join(f'`{k}`' for k in plan.transforms)}); expected one",
            hint="pass the state made by plan.tx.init(params) (or a pytree holding it)",
        )
    part: PartitionState = leaves[at[0]]
    try:
        plan.labels_for(params)
    except (ValueError, SpecError):
        raise error(
            "E705",
            where,
            "`params` has leaves that no rule of the plan covers",
            hint="pass the parameters the plan was compiled for",
        ) from None

    def fresh(lab: str) -> Any:
        return init_label(plan.transforms[lab], params, plan.labels_for, lab)

    if label is not None:
        if label not in plan.transforms:
            raise error(
                "E705",
                where,
                f"unknown label `{label}`",
                hint=did_you_mean(label, plan.transforms)
                or f"the plan's labels are {', '.join(f'`{k}`' for k in plan.transforms)}",
            )
        new = {label: fresh(label)}
        # A `frozen until` label that waits again must be gated again before the globals.
        for i, x in enumerate(leaves):
            if isinstance(x, GateState) and label in x.counts:
                zero = jnp.zeros_like(x.counts[label])
                leaves[i] = GateState({**x.counts, label: zero})
    else:
        assert pattern is not None
        new = _reset_pattern(plan, part, params, pattern, fresh)
    leaves[at[0]] = with_label_states(part, new)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _reset_pattern(
    plan: Plan, part: PartitionState, params: Any, pattern: str, fresh: Callable[[str], Any]
) -> dict[str, Any]:
    """The new states of the labels owning parameters that ``pattern`` selects."""
    selector = compile_selector(pattern)
    p_leaves, _, segs = _flat(params)
    flags = _flags(selector, list(zip(segs, p_leaves)))
    if not any(flags):
        raise no_match(pattern, ["/".join(s) for s in segs], "parameter")
    chosen = {s or ("",) for s, f in zip(segs, flags) if f}
    label_leaves = jax.tree_util.tree_leaves(plan.labels_for(params))
    touched = {lab for f, lab in zip(flags, label_leaves) if f} - plan.frozen_labels
    current = label_states(part, params, plan.labels_for)
    new = {}
    for lab in plan.transforms:
        if lab not in touched:
            continue
        try:
            new[lab] = refresh_leaves(current[lab], fresh(lab), chosen.__contains__)
        except ValueError as exc:
            raise error(
                "E705",
                "partspec.reset_state",
                f"cannot tell which state of `{lab}` belongs to which parameter ({exc})",
                hint="reset the whole label instead: "
                f"reset_state(plan, state, params, label={lab!r})",
            ) from None
    return new


# ---------------------------------------------------------------- transfer


def _shape_dtype(x: Any) -> LeafInfo:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(x)
        shape, dtype = arr.shape, arr.dtype
    return LeafInfo(tuple(shape), str(np.dtype(dtype)))


def transfer(
    src: Any,
    dst: Any,
    pattern: str = "**",
    *,
    rename: Rename | None = None,
    strict: bool = False,
) -> tuple[Any, TransferReport]:
    """Copy leaves of ``src`` into ``dst`` where their paths agree: load pretrained weights.

    Each leaf of ``src`` gets a destination path: its own path, rewritten by
    ``rename``. Every leaf of ``dst`` whose path matches ``pattern`` and equals the
    destination path of a source leaf takes that leaf (the very array: nothing is
    copied in memory); every other leaf of ``dst`` is kept.

    Args:
      src: the pretrained parameters (any pytree; a Linen ``variables["params"]``).
      dst: the parameters to fill; the result has its structure and container types.
      pattern: globs over *destination* paths: which leaves of ``dst`` may be filled.
      rename: rewrites source paths before matching. ``("encoder/",
        "backbone/encoder/")`` replaces a prefix (a path without it keeps its name; an
        empty old prefix adds a prefix to every path); a sequence of pairs applies the
        first whose prefix matches; a function ``path -> path`` may return ``None`` to
        leave a leaf out.
      strict: also fail when some selected destination leaf has no source (``missing``)
        or some source leaf is unused, like PyTorch's ``load_state_dict(strict=True)``.

    Returns:
      ``(new_dst, report)``; ``report`` is a :class:`TransferReport` (``print`` it).

    Raises:
      SpecError: ``E702`` for a leaf whose shape or dtype differs between source and
        destination (each such leaf is listed with both); ``E701`` if the pattern matches
        no leaf of ``dst``; ``E703`` if nothing would be copied, or with ``strict``
        leftovers; ``E704`` if two source leaves get the same destination path.

    >>> import jax.numpy as jnp, partspec
    >>> pretrained = {"encoder": {"w": jnp.ones(2)}, "decoder": {"w": jnp.ones(3)}}
    >>> params = {"backbone": {"encoder": {"w": jnp.zeros(2)}}, "head": {"w": jnp.zeros(4)}}
    >>> params, report = partspec.transfer(pretrained, params, rename=("", "backbone/"))
    >>> params["backbone"]["encoder"]["w"].tolist()
    [1.0, 1.0]
    >>> print(report)
    copied 1 leaf (2 values); not filled: 1 missing, 0 outside the pattern; unused in the source: 1
    copied:
      encoder/w -> backbone/encoder/w
    missing (selected, not in the source; kept their values):
      head/w
    unused (in the source, not copied):
      decoder/w
    """
    src_items = leaf_segments(src)
    leaves, treedef, segs_list = _flat(dst)
    pairs, report = plan_transfer(
        [("/".join(segs), _shape_dtype(leaf)) for segs, leaf in src_items],
        segs_list,
        [_shape_dtype(leaf) for leaf in leaves],
        pattern,
        rename=rename,
        strict=strict,
        condition_info=lambda i: _info(leaves[i]),
    )
    new = list(leaves)
    for i, k in pairs:
        new[i] = src_items[k][1]
    return jax.tree_util.tree_unflatten(treedef, new), report
