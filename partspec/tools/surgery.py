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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from partspec._caches import register_lru
from partspec.diagnostics import Diagnostic, SpecError, did_you_mean
from partspec.jax.partition import (
    PartitionState,
    init_label,
    label_states,
    refresh_leaves,
    with_label_states,
)
from partspec.jax.plan import GateState, Plan
from partspec.jax.tree import leaf_info, leaf_segments
from partspec.language import ast
from partspec.language.checker import check_spec
from partspec.language.parser import parse_selector
from partspec.language.values import LeafInfo
from partspec.resolution.resolver import Resolver, matcher_for

__all__ = ["TransferReport", "replace", "reset_state", "select", "transfer"]

#: How many paths an error or a report lists before summarising.
MAX_LISTED = 20

#: ``rename`` for :func:`transfer`: one ``(old_prefix, new_prefix)`` pair, a sequence of
#: pairs (the first whose prefix matches applies), or a function from a source path to a
#: destination path (``None`` to leave the leaf out).
Rename = Union[tuple[str, str], Sequence[tuple[str, str]], Callable[[str], Union[str, None]]]

_PATTERN_FILE = "<pattern>"


# ---------------------------------------------------------------- patterns


class _Selector:
    """A compiled selector: the left side of a rule (patterns, ``except``, ``where``).

    Leaves are selected exactly as a rule would own them: by the same matcher and, with
    a ``where`` clause, by the same condition on each leaf's shape and dtype.
    """

    def __init__(self, spec: ast.Spec):
        self.checked = check_spec(spec)  # an unknown dtype or a type error in `where`
        self.matcher = matcher_for(self.checked)
        self.has_condition = spec.rules[0].where is not None

    def flags(self, leaves: Sequence[tuple[Sequence[str], Any]]) -> list[bool]:
        """Whether each ``(segments, leaf)`` is selected."""
        if not self.has_condition:
            return [bool(self.matcher.match(segs)) for segs, _ in leaves]
        resolver = Resolver(self.checked, self.matcher)
        return [
            resolver.locate(segs, functools.partial(_info, leaf))[0] == 0 for segs, leaf in leaves
        ]


def _info(leaf: Any) -> LeafInfo | None:
    """A leaf's shape and dtype for a ``where`` clause; ``None`` (error E409) if it has none."""
    if not hasattr(leaf, "shape") and not isinstance(leaf, (bool, int, float, complex)):
        return None
    try:
        return leaf_info(leaf)
    except (TypeError, ValueError):
        return None


def _compile(pattern: str) -> _Selector:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    return _compile_cached(pattern)


@functools.lru_cache(maxsize=256)
def _compile_cached(pattern: str) -> _Selector:
    """The selector of ``pattern`` (patterns, ``,``, ``except``, ``where``)."""
    if "\n" in pattern or "\r" in pattern:
        raise _pattern_error(pattern, "a pattern must be on one line")
    if not pattern:
        raise _pattern_error(pattern, 'empty pattern: `**` matches every leaf, `""` the root')
    rule = parse_selector(pattern, filename=_PATTERN_FILE)
    return _Selector(ast.Spec((rule,), source=pattern, filename=_PATTERN_FILE))


register_lru(
    "surgery.selectors", _compile_cached, owner=__name__, what="a compiled selector per pattern"
)


def _pattern_error(pattern: str, message: str, code: str = "E100") -> SpecError:
    return SpecError(
        [
            Diagnostic(
                code,
                "error",
                message,
                1,
                1,
                1,
                max(2, len(pattern) + 1),
                filename=_PATTERN_FILE,
                source_line=pattern,
            )
        ]
    )


def _listed(paths: Sequence[str], limit: int = MAX_LISTED) -> list[str]:
    shown = [p or "<root>" for p in paths[:limit]]
    if len(paths) > limit:
        shown.append(f"... and {len(paths) - limit} more")
    return shown


def _no_match(pattern: str, paths: Sequence[str], what: str = "leaf") -> SpecError:
    examples = ", ".join(f"`{p or '<root>'}`" for p in paths[:5])
    more = ", ..." if len(paths) > 5 else ""
    hint = (
        f"the tree's paths are {examples}{more} (partspec.jax.tree.leaf_paths lists them)"
        if paths
        else "the tree has no leaves"
    )
    return SpecError(
        [
            Diagnostic(
                "E701",
                "error",
                f"`{pattern}` matches no {what} of the tree",
                1,
                1,
                1,
                max(2, len(pattern) + 1),
                filename=_PATTERN_FILE,
                hint=hint,
                label="matches nothing",
                source_line=pattern,
            )
        ]
    )


def _error(code: str, where: str, message: str, **kw: Any) -> SpecError:
    return SpecError([Diagnostic(code, "error", message, filename=where, **kw)])


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
    selector = _compile(pattern)
    items = leaf_segments(tree)
    out: dict[str, Any] = {}
    for (segs, leaf), hit in zip(items, selector.flags(items)):
        if hit:
            path = "/".join(segs)
            if path in out:
                raise _duplicate("partspec.select", path)
            out[path] = leaf
    return out


def _duplicate(where: str, path: str) -> SpecError:
    return _error(
        "E704",
        where,
        f"two leaves have the same path `{path}`",
        hint="a `/` inside a key separates segments: `{'a/b': x}` and `{'a': {'b': y}}` "
        "both have the path `a/b`",
    )


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
    selector = _compile(pattern)
    leaves, treedef, segs = _flat(tree)
    new = list(leaves)
    hit = False
    for i, chosen in enumerate(selector.flags(list(zip(segs, leaves)))):
        if chosen:
            s = segs[i]
            hit = True
            new[i] = fn("/".join(s), leaves[i]) if with_path else fn(leaves[i])
    if not hit:
        raise _no_match(pattern, ["/".join(s) for s in segs])
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
        raise _error(
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
        raise _error(
            "E705",
            where,
            "`params` has leaves that no rule of the plan covers",
            hint="pass the parameters the plan was compiled for",
        ) from None

    def fresh(lab: str) -> Any:
        return init_label(plan.transforms[lab], params, plan.labels_for, lab)

    if label is not None:
        if label not in plan.transforms:
            raise _error(
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
    selector = _compile(pattern)
    p_leaves, _, segs = _flat(params)
    flags = selector.flags(list(zip(segs, p_leaves)))
    if not any(flags):
        raise _no_match(pattern, ["/".join(s) for s in segs], "parameter")
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
            raise _error(
                "E705",
                "partspec.reset_state",
                f"cannot tell which state of `{lab}` belongs to which parameter ({exc})",
                hint="reset the whole label instead: "
                f"reset_state(plan, state, params, label={lab!r})",
            ) from None
    return new


# ---------------------------------------------------------------- transfer


@dataclass(frozen=True)
class TransferReport:
    """What :func:`transfer` did.

    Attributes:
      copied: ``(source path, destination path)`` of every copied leaf, in the
        destination's leaf order.
      missing: destination paths that the pattern selects but the source does not
        have: they kept their values ("not filled").
      skipped: destination paths outside the pattern: left as they were.
      unused: source paths (before renaming) that were not copied anywhere.
      values: the number of array elements copied.
    """

    copied: tuple[tuple[str, str], ...]
    missing: tuple[str, ...]
    skipped: tuple[str, ...]
    unused: tuple[str, ...]
    values: int = 0

    @property
    def not_filled(self) -> tuple[str, ...]:
        """Every destination path that kept its value: ``missing`` then ``skipped``."""
        return self.missing + self.skipped

    def __str__(self) -> str:
        n = len(self.copied)
        lines = [
            f"copied {_plural(n, 'leaf', 'leaves')} ({self.values:,} values); "
            f"not filled: {len(self.missing)} missing, {len(self.skipped)} outside the "
            f"pattern; unused in the source: {len(self.unused)}"
        ]
        if self.copied:
            lines.append("copied:")
            lines += [
                f"  {s or '<root>'} -> {d or '<root>'}" if s != d else f"  {d or '<root>'}"
                for s, d in self.copied[:MAX_LISTED]
            ]
            if n > MAX_LISTED:
                lines.append(f"  ... and {n - MAX_LISTED} more")
        for title, paths in (
            ("missing (selected, not in the source; kept their values):", self.missing),
            ("unused (in the source, not copied):", self.unused),
        ):
            if paths:
                lines.append(title)
                lines += [f"  {p}" for p in _listed(paths)]
        return "\n".join(lines)


def _renamer(rename: Rename | None) -> Callable[[str], str | None]:
    if rename is None:
        return lambda p: p
    if callable(rename):
        return rename
    pairs: list[tuple[str, str]]
    if (
        isinstance(rename, tuple)
        and len(rename) == 2
        and isinstance(rename[0], str)
        and isinstance(rename[1], str)
    ):
        pairs = [(rename[0], rename[1])]
    else:
        pairs = []
        for pair in rename:
            if not (
                isinstance(pair, (tuple, list))
                and len(pair) == 2
                and all(isinstance(x, str) for x in pair)
            ):
                raise TypeError(
                    "rename must be an (old_prefix, new_prefix) pair of strings, a sequence "
                    f"of such pairs or a function, not {rename!r}"
                )
            pairs.append((pair[0], pair[1]))

    def apply(path: str) -> str:
        for old, new in pairs:
            if path.startswith(old):
                return new + path[len(old) :]
        return path

    return apply


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], Any]:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(x)
        shape, dtype = arr.shape, arr.dtype
    return tuple(shape), np.dtype(dtype)


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{dtype}[{','.join(map(str, shape))}]"


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
    where = "partspec.transfer"
    selector = _compile(pattern)
    sources, dropped = _sources(src, _renamer(rename), where)
    leaves, treedef, segs_list = _flat(dst)
    paths = ["/".join(s) for s in segs_list]
    selected = selector.flags(list(zip(segs_list, leaves)))
    if not any(selected):
        raise _no_match(pattern, paths)
    new = list(leaves)
    copied: list[tuple[str, str]] = []
    missing: list[str] = []
    mismatches: list[str] = []
    values = 0
    seen: set[str] = set()
    for i, path in enumerate(paths):
        if not selected[i]:
            continue
        if path in seen:
            raise _duplicate(where, path)
        seen.add(path)
        got = sources.get(path)
        if got is None:
            missing.append(path)
        elif (bad := _mismatch(path, got[0], got[1], leaves[i])) is not None:
            mismatches.append(bad)
        else:
            new[i] = got[1]
            copied.append((got[0], path))
            values += int(np.prod(_shape_dtype(got[1])[0], dtype=np.int64))
    if mismatches:
        raise _mismatches(where, mismatches)
    used = {d for _, d in copied}
    report = TransferReport(
        tuple(copied),
        tuple(missing),
        tuple(p for p, s in zip(paths, selected) if not s),
        tuple(sorted([s for t, (s, _) in sources.items() if t not in used] + dropped)),
        values,
    )
    _check_transfer(report, where, pattern, sources, [p for p, s in zip(paths, selected) if s])
    if strict and (report.missing or report.unused):
        raise _strict_error(report, where)
    return jax.tree_util.tree_unflatten(treedef, new), report


def _sources(
    src: Any, renamer: Callable[[str], str | None], where: str
) -> tuple[dict[str, tuple[str, Any]], list[str]]:
    """Destination path -> (source path, leaf), and the source paths renamed to ``None``."""
    sources: dict[str, tuple[str, Any]] = {}
    dropped: list[str] = []
    for segs, leaf in leaf_segments(src):
        path = "/".join(segs)
        target = renamer(path)
        if target is None:
            dropped.append(path)
            continue
        if not isinstance(target, str):
            raise TypeError(f"rename returned {target!r} for `{path}`; expected a str or None")
        if target in sources:
            raise _error(
                "E704",
                where,
                f"source leaves `{sources[target][0]}` and `{path}` both go to `{target}`",
                hint="check `rename`, or leave one of them out with a rename function",
            )
        sources[target] = (path, leaf)
    return sources, dropped


def _mismatch(path: str, src_path: str, leaf: Any, dst_leaf: Any) -> str | None:
    """Why ``leaf`` cannot replace ``dst_leaf`` (shapes or dtypes differ), or ``None``."""
    s_shape, s_dtype = _shape_dtype(leaf)
    d_shape, d_dtype = _shape_dtype(dst_leaf)
    what = " and ".join(
        w for w, bad in (("shapes", s_shape != d_shape), ("dtypes", s_dtype != d_dtype)) if bad
    )
    if not what:
        return None
    frm = f" (from `{src_path or '<root>'}`)" if src_path != path else ""
    return (
        f"`{path or '<root>'}`{frm}: {what} differ: source "
        f"{_describe(s_shape, s_dtype)}, destination {_describe(d_shape, d_dtype)}"
    )


def _mismatches(where: str, mismatches: list[str]) -> SpecError:
    """``E702``, one diagnostic per leaf whose shape or dtype differs."""
    hint = (
        "cast or reshape the source first (partspec.replace helps), or leave these "
        "leaves out with `pattern` or `rename`"
    )
    last = len(mismatches) - 1
    return SpecError(
        [
            Diagnostic("E702", "error", m, filename=where, hint=hint if i == last else None)
            for i, m in enumerate(mismatches)
        ]
    )


def _check_transfer(
    report: TransferReport,
    where: str,
    pattern: str,
    sources: dict[str, tuple[str, Any]],
    selected: list[str],
) -> None:
    """``E703`` when nothing would be copied: both sides' paths, to compare."""
    if report.copied:
        return
    raise _error(
        "E703",
        where,
        f"nothing to copy: no source path equals a destination path matching `{pattern}`",
        notes=(
            "source paths: " + ", ".join(_listed([s for s, _ in sources.values()], 5)),
            "destination paths: " + ", ".join(_listed(selected, 5)),
        ),
        hint="rewrite source paths with rename=(old_prefix, new_prefix)",
    )


def _strict_error(report: TransferReport, where: str) -> SpecError:
    """``E703`` for ``strict=True``: every missing and unused leaf, named."""
    missing, unused = report.missing, report.unused
    notes = [f"missing: {p}" for p in missing] + [f"unused: {p}" for p in unused]
    return _error(
        "E703",
        where,
        f"strict transfer: {_plural(len(missing), 'destination leaf', 'destination leaves')} "
        f"not filled, {_plural(len(unused), 'source leaf', 'source leaves')} unused",
        notes=tuple(_listed(notes)),
        hint="narrow `pattern`, fix `rename`, or pass strict=False and read the report",
    )
