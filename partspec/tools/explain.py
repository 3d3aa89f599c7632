"""``pspec explain``: what a spec does to one model, leaf by leaf, rule by rule.

:func:`explain` compiles a spec against a parameter *structure* (a list of
:class:`~partspec.tools.manifest.Leaf`: path, shape, dtype; never arrays) and reports, per
rule and per label, how many leaves and parameters it owns, how many bytes they take,
and how many bytes of optimizer state optax will allocate for them.
:func:`render_text` and :func:`render_json` print the report.

>>> import partspec
>>> from partspec.tools.manifest import Leaf
>>> leaves = [Leaf(("backbone", "kernel"), (16, 32), "float32"),
...           Leaf(("head", "kernel"), (32, 4), "float32"),
...           Leaf(("head", "bias"), (4,), "float32")]
>>> report = explain(partspec.parse("backbone/** -> frozen\\nhead/** -> adam(1e-3)"), leaves)
>>> [(r["line"], r["pattern"], r["leaves"], r["parameters"]) for r in report["rules"]]
[(1, 'backbone/**', 1, 512), (2, 'head/**', 2, 132)]
>>> [(lab["label"], lab["optimizer_state_bytes"]) for lab in report["labels"]]
[('frozen', 0), ('adam(0.001)', 1060)]

Report schema (``"version": 1``)
--------------------------------

The report is a plain dict of JSON values; :func:`render_json` writes it as is. Keys
are only ever added within a version, never removed or retyped::

    {
      "version": 1,
      "spec": str | null,            # the spec's file name (null for a spec given as text)
      "leaves": int,                 # number of parameter leaves
      "parameters": int,             # number of scalars over all leaves
      "bytes": int,                  # their size in bytes (shape x dtype itemsize)
      "params": {name: value},       # the value of every `param` of the spec
      "rules": [                     # every rule, in file order
        {
          "index": int,              # 0-based position among the rules
          "line": int,               # 1-based line of the rule in the spec
          "pattern": str,            # the left-hand side as `pspec fmt` writes it
          "patterns": [str],         # its patterns, canonical text
          "excepts": [str],          # its `except` patterns, canonical text
          "label": str,
          "action": str,             # canonical text of the action; "frozen" for frozen
          "frozen": bool,
          "leaves": int,             # leaves this rule owns (first match wins)
          "parameters": int,         # scalars in those leaves
          "bytes": int,              # their size in bytes
          "status": "ok" | "unused" | "shadowed",
          "shadowed_by": [int]       # lines of the earlier rules that take its leaves
        }                            #   (empty unless status is "shadowed")
      ],
      "with_rules": [                # every `with` rule, in file order
        {
          "index": int,              # 0-based position among the `with` rules
          "line": int,
          "pattern": str,            # its left side, as written by `pspec fmt`
          "settings": [str],         # "lr * 0.5", "weight_decay = 0.0"
          "leaves": int,             # leaves one of whose settings it decides
          "parameters": int,
          "status": "ok" | "unused" | "shadowed" | "switched off"
        }
      ],
      "labels": [                    # every label that owns a leaf, in order of first rule
                                     #   (a capture rule's labels in natural order)
        {
          "label": str,
          "action": str,
          "frozen": bool,
          "unfreeze_at": int | null, # `frozen until N then ...`: N, the first update that
                                     #   moves it (its leaves count as trainable)
          "rules": [int],            # lines of the rules that give leaves this label
          "with_rules": [int],       # lines of the `with` rules that decided its settings
          "leaves": int,
          "parameters": int,
          "bytes": int,
          "optimizer_state_bytes": int,  # 0 for frozen labels
          "optimizer": null | {      # the evaluated action (null when frozen): every
            "name": str,             #   argument's value, params and arithmetic done;
            "args": [value],         #   a schedule is itself {"name", "args", "kwargs"},
            "kwargs": {str: value}   #   a scaled one {"scale": float, "schedule": ...}
          },
          "learning_rate": float | null,       # the rate of its first update (compiled)
          "schedule": str | null,              # the rate in words ("constant 0.001")
          "weight_decay": value | null,        # its optimizer's weight decay, if any
          "peak_learning_rate": float | null,  # its highest rate over the schedules
          "lr_scale": float | null             # that peak over the highest label's
        }                            # (the rate fields are null for frozen labels)
      ],
      "totals": {
        "parameters": int, "trainable_parameters": int, "frozen_parameters": int,
        "frozen_until_parameters": int,   # trainable, but frozen until some update
        "parameter_bytes": int, "trainable_parameter_bytes": int,
        "frozen_parameter_bytes": int, "optimizer_state_bytes": int
      },
      "diagnostics": [               # warnings: W601 (unused rule), W602 (shadowed rule)
        {"code": str, "severity": str, "message": str, "line": int, "hint": str | null}
      ],
      "leaves_glob": str | null,     # the --leaves glob, if any
      "owners": null | [             # with a glob: every leaf it matches, in input order
        {"path": str, "shape": [int], "dtype": str, "parameters": int,
         "rule": int,                # line of the rule that owns the leaf
         "label": str}
      ],
      "globals": [str],              # the `global` transforms, as written
      "rates": null | {              # with steps (--steps): each label's learning rate
        "steps": [int],              #   at each update number, from the compiled
        "labels": {str: [float | null]}  # schedules (0 while frozen or waiting)
      }
    }

Optimizer state is what ``jax.eval_shape(plan.tx.init, shape_tree)`` allocates: for a
label, the bytes of every array leaf of ``plan.label_states(state)[label]`` (step
counters and other scalars included). For large trees the state of each label is computed from
one leaf per distinct ``(shape, dtype)`` and checked by doubling (see
:func:`optimizer_state_bytes`), so the figures stay exact and a 100,000-leaf model
takes a second, not minutes of tracing. The state bytes are those JAX would allocate
in this process: with 64-bit types disabled (JAX's default) a ``float64`` parameter
gets ``float32`` state.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from partspec.diagnostics import SpecWarning, printable
from partspec.jax.partition import PartitionState, group_scalars, partition
from partspec.jax.rates import rates_at
from partspec.language import ast
from partspec.language.checker import CheckedSpec, check_spec
from partspec.language.formatter import format_expr, format_pattern, format_setting
from partspec.language.load import parse
from partspec.language.parser import parse_selector
from partspec.language.values import LeafInfo, OptaxCall, ScaledSchedule
from partspec.resolution.hyper import describe, find_arg, number
from partspec.resolution.result import Resolution, resolve_paths
from partspec.tools.manifest import Leaf, TreeInputError, leaves_to_shape_tree

__all__ = [
    "SCHEMA_VERSION",
    "collapse_labels",
    "explain",
    "human_bytes",
    "optimizer_state_bytes",
    "render_json",
    "render_text",
]

#: The ``"version"`` of the report schema described in the module docstring.
SCHEMA_VERSION = 1

#: Trees with at most this many leaves get their optimizer state from one
#: ``jax.eval_shape(plan.tx.init, tree)``; larger ones label by label, deduplicated.
DIRECT_EVAL_MAX_LEAVES = 256


# ------------------------------------------------------------------ inputs


def _itemsizes(leaves: Sequence[Leaf]) -> dict[str, np.dtype[Any]]:
    """dtype name -> numpy dtype, for the names ``leaves`` use (as the manifest reads them)."""
    import ml_dtypes

    out: dict[str, np.dtype[Any]] = {}
    for leaf in leaves:
        if leaf.dtype not in out:
            try:
                out[leaf.dtype] = np.dtype(getattr(ml_dtypes, leaf.dtype, None) or leaf.dtype)
            except TypeError:
                raise TreeInputError(
                    f"{'/'.join(leaf.path)!r}: unknown dtype {leaf.dtype!r}"
                ) from None
    return out


# ------------------------------------------------------------------ optimizer state


def _nbytes(x: Any) -> int:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:  # a Python scalar left in a state
        arr = np.asarray(x)
        shape, dtype = arr.shape, arr.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        # A typed PRNG key (``add_noise``'s state): count its underlying key data.
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype))
        shape, dtype = data.shape, data.dtype
    return math.prod(shape) * np.dtype(dtype).itemsize


def _tree_nbytes(tree: Any) -> int:
    return sum(_nbytes(x) for x in jax.tree_util.tree_leaves(tree))


def _attribute(state: Any, keys: set[str]) -> dict[str, int] | None:
    """Bytes of ``state`` per parameter key (``""`` for global leaves); None if unclear."""
    out: dict[str, int] = dict.fromkeys(keys, 0)
    out[""] = 0
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        hits = [k.key for k in path if isinstance(k, jax.tree_util.DictKey) and k.key in keys]
        if len(hits) > 1:
            return None
        out[str(hits[0]) if hits else ""] += _nbytes(x)
    return out


def optimizer_state_bytes(init: Callable[[Any], Any], structs: Sequence[Any]) -> int:
    """Bytes of the optimizer state ``init`` makes for ``structs``, from shapes alone.

    ``structs`` are ``jax.ShapeDtypeStruct`` (or anything with ``shape`` and ``dtype``);
    nothing is allocated: the state comes from ``jax.eval_shape``. Every array leaf of
    the state counts, scalars such as step counters included.

    Tracing costs about a third of a millisecond per parameter leaf, so with many leaves
    and few distinct ``(shape, dtype)`` pairs ``init`` is traced on one leaf per pair
    (``{"u0": a, "u1": b, ...}``) and each state leaf is attributed to a parameter by
    its dict key (the rest, step counters, are counted once). A second trace with every
    pair twice checks that the state is per-leaf plus a constant; if it is not (a
    transformation that ravels all leaves together, say), ``init`` is traced on every
    leaf. Either way the count is exact.

    >>> import jax, jax.numpy as jnp, optax
    >>> leaves = [jax.ShapeDtypeStruct((10,), jnp.float32)] * 1000
    >>> optimizer_state_bytes(optax.adam(1e-3).init, leaves)  # 2 x 40,000 + an int32 step
    80004
    """
    counts = Counter((tuple(s.shape), np.dtype(s.dtype)) for s in structs)
    return _counted_state_bytes(init, counts)


def _counted_state_bytes(
    init: Callable[[Any], Any], counts: Counter[tuple[tuple[int, ...], np.dtype[Any]]]
) -> int:
    uniq = list(counts)
    n = sum(counts.values())

    def every_leaf() -> int:
        structs = [jax.ShapeDtypeStruct(sh, dt) for (sh, dt), k in counts.items() for _ in range(k)]
        return _tree_nbytes(jax.eval_shape(init, structs))

    if 3 * len(uniq) >= n:
        return every_leaf()
    sds = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in uniq]
    once = {f"u{i}": s for i, s in enumerate(sds)}
    twice = {**once, **{f"v{i}": s for i, s in enumerate(sds)}}
    a = _attribute(jax.eval_shape(init, once), set(once))
    b = _attribute(jax.eval_shape(init, twice), set(twice))
    if (
        a is None
        or b is None
        or a[""] != b[""]
        or any(a[f"u{i}"] != b[f"u{i}"] or a[f"u{i}"] != b[f"v{i}"] for i in range(len(uniq)))
    ):
        return every_leaf()
    return a[""] + sum(counts[u] * a[f"u{i}"] for i, u in enumerate(uniq))


# ------------------------------------------------------------------ the report


def _plain(v: Any) -> Any:
    """A value of the spec as JSON: calls as ``{"name", "args", "kwargs"}``, tuples as lists."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, OptaxCall):
        return {
            "name": v.name,
            "args": [_plain(a) for a in v.args],
            "kwargs": {k: _plain(a) for k, a in v.kwargs},
        }
    if isinstance(v, ScaledSchedule):
        return {"scale": v.factor, "schedule": _plain(v.schedule)}
    return str(v)


def _selector(glob: str) -> CheckedSpec:
    """The ``--leaves`` selector (patterns, ``except``, ``where``), checked as a rule is."""
    rule = parse_selector(glob, filename="--leaves")
    return check_spec(ast.Spec((rule,), source=glob, filename="--leaves"))


class _Sizes:
    """Scalars and bytes of each leaf, in input order."""

    def __init__(self, leaves: Sequence[Leaf]) -> None:
        dtypes = _itemsizes(leaves)
        self.params = [math.prod(leaf.shape) for leaf in leaves]
        self.bytes = [n * dtypes[leaf.dtype].itemsize for n, leaf in zip(self.params, leaves)]
        self.keys = [(tuple(leaf.shape), dtypes[leaf.dtype]) for leaf in leaves]


def explain(
    spec: ast.Spec | str,
    leaves: list[Leaf],
    values: dict[str, object] | None = None,
    leaves_glob: str | None = None,
    steps: Sequence[int] | None = None,
) -> dict[str, Any]:
    """What ``spec`` does to the parameters ``leaves`` describe: a JSON-able report.

    Every figure comes from one :class:`~partspec.resolution.Resolution` of the spec
    over the leaves (owner and label of each leaf, each label's evaluated action), the
    data the backends build from, plus the optimizer state the optax plan allocates.

    Args:
      spec: the spec (text is parsed).
      leaves: the parameter structure: path, shape and dtype of every leaf.
      values: values for the spec's ``param`` declarations (``--set``).
      leaves_glob: a glob (``head/**``, ``a/*, b/* except **/bias``); the report's
        ``"owners"`` then lists every leaf it matches with its owning rule and label.
      steps: update numbers; the report's ``"rates"`` then gives every label's learning
        rate at each, from the compiled schedules.

    Raises:
      SpecError: a bad spec or glob, a missing ``param``, leaves no rule covers.
      TreeInputError: leaves that do not form a tree, or an unknown dtype.
    """
    from partspec.jax.plan import compile as compile_plan

    if isinstance(spec, str):
        spec = parse(spec)
    tree = leaves_to_shape_tree(leaves)  # validates paths and dtypes
    sizes = _Sizes(leaves)
    selector = _selector(leaves_glob) if leaves_glob is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        given: dict[str, Any] = dict(values or {})
        plan = compile_plan(spec, tree, **given)
    # compile() succeeded, so every leaf has an owner and a label.
    res = resolve_paths(
        plan.checked,
        [leaf.path for leaf in leaves],
        [LeafInfo(tuple(leaf.shape), leaf.dtype) for leaf in leaves],
    )
    rules = _rule_rows(res, sizes)
    state_bytes, shared_bytes = _state_bytes(plan, tree, res, sizes)
    labels = _label_rows(plan, res, sizes, rules, state_bytes)
    return {
        "version": SCHEMA_VERSION,
        "spec": spec.filename,
        "leaves": len(leaves),
        "parameters": sum(sizes.params),
        "bytes": sum(sizes.bytes),
        "params": {p.name: _plain(res.checked.values.get(p.name)) for p in spec.params},
        "rules": rules,
        "with_rules": _with_rows(res, labels),
        "labels": labels,
        "totals": _totals(labels, sizes, shared_bytes),
        "diagnostics": [
            {
                "code": d.code,
                "severity": d.severity,
                "message": d.message,
                "line": d.line,
                "hint": d.hint,
            }
            for d in plan.diagnostics
        ],
        "leaves_glob": leaves_glob,
        "owners": None if selector is None else _selected(selector, leaves, res, sizes),
        "globals": [format_expr(g.value) for g in spec.globals],
        "rates": None
        if steps is None
        else {"steps": list(steps), "labels": rates_at(res, list(steps))},
    }


def _rule_rows(res: Resolution, sizes: _Sizes) -> list[dict[str, Any]]:
    """One row per rule: what it owns and whether it is used, unused or shadowed."""
    crules = res.checked.rules
    owned = [[0, 0, 0] for _ in crules]  # leaves, scalars, bytes
    for o, n, nb in zip(res.owners, sizes.params, sizes.bytes):
        row = owned[o]
        row[0] += 1
        row[1] += n
        row[2] += nb
    matched: set[int] = set()
    shadowers: dict[int, set[int]] = {}
    for m in res.match_sets:
        matched.update(m)
        for r in m[1:]:
            shadowers.setdefault(r, set()).add(m[0])
    rows = []
    for cr, (n_leaves, n_params, n_bytes) in zip(crules, owned):
        i = cr.index
        status = "ok" if n_leaves else ("shadowed" if i in matched else "unused")
        rows.append(
            {
                "index": i,
                "line": cr.rule.span.line,
                "pattern": _lhs(cr.rule),
                "patterns": [format_pattern(p) for p in cr.rule.patterns],
                "excepts": [format_pattern(p) for p in cr.rule.excepts],
                "label": cr.label,
                "action": format_expr(cr.rule.action),
                "frozen": cr.action is None,
                "leaves": n_leaves,
                "parameters": n_params,
                "bytes": n_bytes,
                "status": status,
                "shadowed_by": sorted(crules[r].rule.span.line for r in shadowers.get(i, ()))
                if status == "shadowed"
                else [],
            }
        )
    return rows


def _with_rows(res: Resolution, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``with`` rule: its settings, the trained leaves whose settings it
    decides, and whether it is used, unused, shadowed or switched off by a ``param``."""
    owned = [[0, 0] for _ in res.checked.with_rules]
    for row in labels:
        for w in res.actions[row["label"]].with_rules:
            owned[w][0] += row["leaves"]
            owned[w][1] += row["parameters"]
    warned = {(d.code, d.line) for d in res.warnings}
    rows = []
    for cw, (n_leaves, n_params) in zip(res.checked.with_rules, owned):
        line = cw.rule.span.line
        if n_leaves:
            status = "ok"
        elif cw.switched_off:
            status = "switched off"
        elif ("W602", line) in warned:
            status = "shadowed"
        else:
            status = "unused"
        rows.append(
            {
                "index": cw.index,
                "line": line,
                "pattern": _lhs(cw.rule),
                "settings": [format_setting(st) for st in cw.rule.settings],
                "leaves": n_leaves,
                "parameters": n_params,
                "status": status,
            }
        )
    return rows


def _label_rows(
    plan: Any,
    res: Resolution,
    sizes: _Sizes,
    rules: list[dict[str, Any]],
    state_bytes: dict[str, int],
) -> list[dict[str, Any]]:
    """One row per label in use: its evaluated action, what it owns, its optimizer state."""
    totals: dict[str, list[int]] = {}
    for lab, n, nb in zip(res.labels, sizes.params, sizes.bytes):
        assert lab is not None
        tot = totals.setdefault(lab, [0, 0, 0])
        tot[0] += 1
        tot[1] += n
        tot[2] += nb
    series = _rate_series(res)
    peaks = {lab: max((v for v in vs if v is not None), default=None) for lab, vs in series.items()}
    top = max((p or 0.0 for lab, p in peaks.items() if not res.actions[lab].frozen), default=0.0)
    rows = []
    for lab, act in res.actions.items():
        n_leaves, n_params, n_bytes = totals[lab]
        lr = find_arg(act.action, "learning_rate")
        wd = find_arg(act.action, "weight_decay")
        peak = None if act.frozen else peaks[lab]
        rows.append(
            {
                "label": lab,
                "action": rules[act.rules[0]]["action"],
                "frozen": act.frozen,
                "unfreeze_at": act.unfreeze_at,
                "rules": [rules[r]["line"] for r in act.rules],
                "with_rules": [res.checked.with_rules[w].rule.span.line for w in act.with_rules],
                "leaves": n_leaves,
                "parameters": n_params,
                "bytes": n_bytes,
                "optimizer_state_bytes": state_bytes[lab],
                "optimizer": _plain(act.optimizer),
                "learning_rate": None if act.frozen else series[lab][0],
                "schedule": None if act.frozen or lr is None else describe(lr),
                "weight_decay": _plain(wd) if not act.frozen else None,
                "peak_learning_rate": peak,
                "lr_scale": peak / top if peak is not None and top > 0 else None,
            }
        )
    # Rule order, then labels in natural order: layer[i=2] before layer[i=10].
    rows.sort(key=lambda r: (min(r["rules"], default=0), _natural(r["label"])))
    return rows


def _rate_series(res: Resolution) -> dict[str, list[float | None]]:
    """Each label's rate at 65 updates spread over the schedules' horizon, counted from
    the label's own first update (a `frozen until N` label's count starts at update N):
    the first is the rate of that update, the largest its peak."""
    horizon = max(
        (_horizon(find_arg(a.action, "learning_rate")) for a in res.actions.values()), default=0
    )
    samples = sorted({int(x) for x in np.linspace(0, horizon, 65)})  # starts at 0
    series: dict[str, list[float | None]] = {}
    for offset in {a.unfreeze_at or 0 for a in res.actions.values()}:
        for lab, vs in rates_at(res, [offset + x for x in samples]).items():
            if (res.actions[lab].unfreeze_at or 0) == offset:
                series[lab] = vs
    return series


def _horizon(value: Any) -> int:
    """The largest step count among a schedule's arguments (0 for a constant)."""
    if isinstance(value, ScaledSchedule):
        return _horizon(value.schedule)
    if isinstance(value, OptaxCall):
        ints = [a for a in (*value.args, *(v for _, v in value.kwargs)) if type(a) is int]
        return max([0, *ints, *(_horizon(a) for a in value.args)])
    return 0


def _natural(text: str) -> tuple[Any, ...]:
    """A sort key that orders the numbers inside text by value: ``x[i=2] < x[i=10]``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _shared_bytes(state: PartitionState) -> int:
    """Bytes of the state that labels of one group share (their step count): each
    label's row counts it, the optimizer's state holds it once per group."""
    shared = 0
    for group in state.groups.values():
        scalars = group_scalars(group)
        shared += (len(group.labels) - 1) * sum(_nbytes(x) for x in scalars)
    return shared


def _groups_state(plan: Any, res: Resolution, sizes: _Sizes) -> PartitionState:
    """The state's groups, found as ``init`` finds them, on a tree of one scalar leaf per
    label and dtype (what grouping reads: each label's state structure and dtypes)."""
    kinds: dict[str, set[np.dtype[Any]]] = {}
    for lab, (_, dtype) in zip(res.labels, sizes.keys):
        assert lab is not None
        kinds.setdefault(lab, set()).add(np.dtype(dtype))
    tree = {lab: {d.name: jax.ShapeDtypeStruct((), d) for d in ds} for lab, ds in kinds.items()}

    def labels_for(t: Any) -> Any:
        return {lab: {k: lab for k in sub} for lab, sub in t.items()}

    part = partition({lab: plan.transforms[lab] for lab in kinds}, labels_for)
    state: PartitionState = jax.eval_shape(part.init, tree)
    return state


def _totals(labels: list[dict[str, Any]], sizes: _Sizes, shared: int = 0) -> dict[str, int]:
    def total(key: str, which: Callable[[dict[str, Any]], bool]) -> int:
        return sum(lab[key] for lab in labels if which(lab))

    frozen_params = total("parameters", lambda lab: lab["frozen"])
    frozen_bytes = total("bytes", lambda lab: lab["frozen"])
    all_params, all_bytes = sum(sizes.params), sum(sizes.bytes)
    return {
        "parameters": all_params,
        "trainable_parameters": all_params - frozen_params,
        "frozen_parameters": frozen_params,
        "frozen_until_parameters": total("parameters", lambda lab: lab["unfreeze_at"] is not None),
        "parameter_bytes": all_bytes,
        "trainable_parameter_bytes": all_bytes - frozen_bytes,
        "frozen_parameter_bytes": frozen_bytes,
        "optimizer_state_bytes": total("optimizer_state_bytes", lambda lab: True) - shared,
    }


def _selected(
    selector: CheckedSpec, leaves: Sequence[Leaf], res: Resolution, sizes: _Sizes
) -> list[dict[str, Any]]:
    """The leaves ``--leaves`` selects (as a rule would own them), with their owners."""
    crules = res.checked.rules
    chosen = resolve_paths(
        selector,
        [leaf.path for leaf in leaves],
        [LeafInfo(tuple(leaf.shape), leaf.dtype) for leaf in leaves],
    )
    return [
        {
            "path": "/".join(leaf.path),
            "shape": list(leaf.shape),
            "dtype": leaf.dtype,
            "parameters": n,
            "rule": crules[o].rule.span.line,
            "label": lab,
        }
        for leaf, n, o, lab, hit in zip(leaves, sizes.params, res.owners, res.labels, chosen.owners)
        if hit == 0
    ]


def _lhs(rule: ast.Rule | ast.WithRule) -> str:
    text = ", ".join(format_pattern(p) for p in rule.patterns)
    if rule.excepts:
        text += " except " + ", ".join(format_pattern(p) for p in rule.excepts)
    if rule.where is not None:
        text += " where " + format_expr(rule.where)
    return text


def _state_bytes(
    plan: Any, tree: Any, res: Resolution, sizes: _Sizes
) -> tuple[dict[str, int], int]:
    """Optimizer-state bytes per label (0 for frozen labels), and the bytes that labels
    of one group share (counted in each label's row, held once)."""
    if len(sizes.params) <= DIRECT_EVAL_MAX_LEAVES:
        # One init of the plan's own transformation: its groups come with it.
        state, inner = jax.eval_shape(lambda t: (s := plan.tx.init(t), plan.label_states(s)), tree)
        per_label = {lab: _tree_nbytes(inner[lab]) for lab in plan.transforms}
        return per_label, _shared_bytes(plan.partition_state(state))
    counts: dict[str, Counter[tuple[tuple[int, ...], np.dtype[Any]]]] = {}
    for lab, key in zip(res.labels, sizes.keys):
        assert lab is not None
        counts.setdefault(lab, Counter())[key] += 1
    per_label = {
        lab: 0
        if lab in plan.frozen_labels
        else _counted_state_bytes(tx.init, counts.get(lab, Counter()))
        for lab, tx in plan.transforms.items()
    }
    return per_label, _shared_bytes(_groups_state(plan, res, sizes))


# ------------------------------------------------------------------ rendering


def human_bytes(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``4.7 MiB``, ``1.2 GiB`` (binary units).

    >>> human_bytes(1023), human_bytes(1536), human_bytes(5 * 2**30)
    ('1,023 B', '1.5 KiB', '5.0 GiB')
    """
    if n < 1024:
        return f"{n:,} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:,.1f} PiB"


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


def _status_text(rule: dict[str, Any]) -> str:
    if rule["status"] == "shadowed":
        lines = rule["shadowed_by"]
        return f"shadowed (line{'s' if len(lines) != 1 else ''} {', '.join(map(str, lines))})"
    return str(rule["status"])


def _sections(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], set[int]]]:
    """Each table: title, header, rows and the indices of right-aligned columns."""
    # A "trains from" column only when some label is `frozen until` an update, and a
    # "schedule" column only when some learning rate changes over time.
    until = int(any(lab.get("unfreeze_at") is not None for lab in report["labels"]))
    scheduled = int(
        any(
            not str(lab.get("schedule") or "-").startswith(("-", "constant"))
            for lab in report["labels"]
        )
    )
    tables = [
        (
            "Rules",
            ["line", "pattern", "label", "action", "leaves", "params", "status"],
            [
                [
                    str(r["line"]),
                    r["pattern"],
                    r["label"],
                    r["action"],
                    f"{r['leaves']:,}",
                    f"{r['parameters']:,}",
                    _status_text(r),
                ]
                for r in report["rules"]
            ],
            {0, 4, 5},
        ),
        (
            "Labels",
            ["label", "lr", "peak", "x top", "weight decay"]
            + (["schedule"] * scheduled)
            + ["leaves", "params", "bytes", "opt-state bytes"]
            + (["trains from"] * until),
            [
                [
                    lab["label"],
                    _num_cell(lab.get("learning_rate")),
                    _num_cell(lab.get("peak_learning_rate")),
                    _num_cell(lab.get("lr_scale")),
                    _num_cell(lab.get("weight_decay")),
                ]
                + ([lab.get("schedule") or "-"] * scheduled)
                + [
                    f"{lab['leaves']:,}",
                    f"{lab['parameters']:,}",
                    human_bytes(lab["bytes"]),
                    human_bytes(lab["optimizer_state_bytes"]),
                ]
                + (
                    [
                        "never"
                        if lab["frozen"]
                        else f"update {_updates(lab['unfreeze_at'])}"
                        if lab["unfreeze_at"] is not None
                        else "update 0"
                    ]
                    * until
                )
                for lab in report["labels"]
            ],
            {1, 2, 3, 4, *range(5 + scheduled, 9 + scheduled + until)},
        ),
    ]
    if report.get("with_rules"):
        tables.insert(
            1,
            (
                "With rules",
                ["line", "pattern", "settings", "leaves", "params", "status"],
                [
                    [
                        str(w["line"]),
                        w["pattern"],
                        ", ".join(w["settings"]),
                        f"{w['leaves']:,}",
                        f"{w['parameters']:,}",
                        w["status"],
                    ]
                    for w in report["with_rules"]
                ],
                {0, 3, 4},
            ),
        )
    rates = report.get("rates")
    if rates is not None:
        tables.append(
            (
                "Learning rate by update",
                ["label"] + [f"{s:,}" for s in rates["steps"]],
                [
                    [lab] + [_num_cell(v) for v in values]
                    for lab, values in _ordered(rates["labels"], report["labels"])
                ],
                set(range(1, len(rates["steps"]) + 1)),
            )
        )
    if report.get("owners") is not None:
        tables.append(
            (
                f"Leaves matching {report['leaves_glob']}",
                ["path", "shape", "dtype", "params", "line", "label"],
                [
                    [
                        o["path"] or "<root>",
                        _shape_text(o["shape"]),
                        o["dtype"],
                        f"{o['parameters']:,}",
                        str(o["rule"]),
                        o["label"],
                    ]
                    for o in report["owners"]
                ],
                {3, 4},
            )
        )
    return tables


def _num_cell(x: Any) -> str:
    if isinstance(x, tuple):  # a collapsed row's range
        lo, hi = x
        return _num_cell(lo) if lo == hi else f"{_num_cell(lo)} .. {_num_cell(hi)}"
    return "-" if x is None else number(x)


_CAPTURED = re.compile(r"^(?P<base>.*)\[(?P<name>[A-Za-z_]\w*)=(?P<value>-?\d+)\]$")


def _capture_value(label: str) -> str:
    m = _CAPTURED.match(label)
    assert m is not None
    return m.group("value")


def collapse_labels(report: dict[str, Any]) -> dict[str, Any]:
    """The report with the labels of each capture rule in one row: ``layer[i=0..11]``,
    numbers summed, rates and weight decays as ``low .. high`` ranges.

    Labels are merged when they come from the same rules and differ only in one
    integer capture (``layer[i=0]``, ``layer[i=1]``, ...); others are kept as they are.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    order: list[tuple[Any, ...]] = []
    for row in report["labels"]:
        m = _CAPTURED.match(row["label"])
        key: tuple[Any, ...] = (
            (m.group("base"), m.group("name"), tuple(row["rules"]), row["frozen"])
            if m
            else (row["label"],)
        )
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(row)
    rows = []
    for key in order:
        members = groups[key]
        if len(members) == 1:
            rows.append(members[0])
            continue
        values = [int(_capture_value(r["label"])) for r in members]
        row = dict(members[0])
        row["label"] = f"{key[0]}[{key[1]}={min(values)}..{max(values)}]"
        for field in ("leaves", "parameters", "bytes", "optimizer_state_bytes"):
            row[field] = sum(r[field] for r in members)
        for field in ("learning_rate", "peak_learning_rate", "lr_scale", "weight_decay"):
            got = [r.get(field) for r in members]
            numbers = [g for g in got if isinstance(g, (int, float)) and not isinstance(g, bool)]
            row[field] = (min(numbers), max(numbers)) if len(numbers) == len(got) else got[0]
        starts = [r["unfreeze_at"] for r in members]
        row["unfreeze_at"] = starts[0] if len(set(starts)) == 1 else (min(starts), max(starts))
        rows.append(row)
    return {**report, "labels": rows, "expanded_labels": report["labels"]}


def _updates(at: Any) -> str:
    if isinstance(at, tuple):
        return f"{at[0]:,} .. {at[1]:,}"
    return f"{at:,}"


def _ordered(
    by_label: dict[str, list[Any]], labels: list[dict[str, Any]]
) -> list[tuple[str, list[Any]]]:
    """``by_label``'s items in the order of the labels table (labels it does not show,
    such as those a collapsed row stands for, in natural order after them)."""
    shown = [lab["label"] for lab in labels if lab["label"] in by_label]
    rest = sorted(set(by_label) - set(shown), key=_natural)
    return [(lab, by_label[lab]) for lab in shown + rest]


def _printable_sections(
    report: dict[str, Any],
) -> list[tuple[str, list[str], list[list[str]], set[int]]]:
    """:func:`_sections` with every cell safe to print (keys come from user files)."""
    return [
        (printable(title), header, [[printable(c) for c in row] for row in rows], right)
        for title, header, rows, right in _sections(report)
    ]


def _title(report: dict[str, Any]) -> str:
    name = printable(report["spec"] or "<string>")
    n = report["leaves"]
    lines = [
        f"{name}: {n:,} lea{'f' if n == 1 else 'ves'}, {report['parameters']:,} parameters "
        f"({human_bytes(report['bytes'])})"
    ]
    if report.get("params"):
        given = ", ".join(f"{k} = {number(v)}" for k, v in report["params"].items())
        lines.append(printable(f"params: {given}"))
    for g in report.get("globals") or ():
        lines.append(printable(f"global: {g} (on all trainable gradients, before the rules)"))
    return "\n".join(lines)


def _totals_line(report: dict[str, Any]) -> str:
    t = report["totals"]
    share = t["trainable_parameters"] / t["parameters"] if t["parameters"] else 0.0
    line = (
        f"trainable: {t['trainable_parameters']:,} params, {share:.1%} "
        f"({human_bytes(t['trainable_parameter_bytes'])}) · "
        f"frozen: {t['frozen_parameters']:,} params ({human_bytes(t['frozen_parameter_bytes'])})"
    )
    waiting = t.get("frozen_until_parameters", 0)
    if waiting:
        every = report.get("expanded_labels", report["labels"])
        steps = sorted({lab["unfreeze_at"] for lab in every if lab["unfreeze_at"]})
        line += f" · frozen until update {', '.join(f'{s:,}' for s in steps)}: {waiting:,} params"
    return line + f" · optimizer state: {human_bytes(t['optimizer_state_bytes'])}"


def _warning_lines(report: dict[str, Any]) -> list[str]:
    return [
        printable(f"line {d['line']}: {d['severity']}[{d['code']}]: {d['message']}")
        for d in report["diagnostics"]
    ]


#: Where a long cell may wrap: after a path separator, a comma or a space, so that a
#: pattern is never broken inside a segment.
_BREAKS = re.compile(r"[^/, ]*(?:/|, |,| |$)")


#: A wrapped column is never narrower than this.
_MIN_WRAP = 16


def _wrap_cell(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken only after ``/``, a comma
    or a space (a piece longer than ``width`` stays whole)."""
    pieces = [p for p in _BREAKS.findall(text) if p]
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece.rstrip()) > width:
            lines[-1] = lines[-1].rstrip()
            lines.append("")
        lines[-1] += piece
    return [line.rstrip() for line in lines]


def _fit_cells(
    header: list[str], rows: list[list[str]], right: set[int], width: int | None
) -> tuple[list[list[list[str]]], list[int]]:
    """Each cell as lines, and each column's width; with ``width``, the widest text
    columns share a cap and wrap (at ``/``, commas and spaces) until the table fits, as
    far as whole segments allow."""
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    cells: list[list[list[str]]] = [[[c] for c in row] for row in rows]
    if width is not None:
        left = [i for i in range(len(widths)) if i not in right]
        fixed = 2 + 2 * (len(widths) - 1) + sum(widths[i] for i in right)
        if left and fixed + sum(widths[i] for i in left) > width:
            # The widest cap C for the text columns with which the table fits.
            cap = max(widths[i] for i in left)
            while cap > _MIN_WRAP and fixed + sum(min(widths[i], cap) for i in left) > width:
                cap -= 1
            for i in left:
                target = max(cap, len(header[i]))
                if widths[i] <= target:
                    continue
                wrapped = [_wrap_cell(row[i][0], target) for row in cells]
                for row, w in zip(cells, wrapped):
                    row[i] = w
                widths[i] = max(len(header[i]), *(len(x) for w in wrapped for x in w))
    return cells, widths


def _plain_table(
    header: list[str], rows: list[list[str]], right: set[int], width: int | None = None
) -> list[str]:
    """An aligned table, fitted to ``width`` if given (see :func:`_fit_cells`)."""
    cells, widths = _fit_cells(header, rows, right, width)
    out = []

    def line(parts: list[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(parts, widths))
        ]
        return ("  " + "  ".join(padded)).rstrip()

    out.append(line(header))
    for row in cells:
        for k in range(max(len(c) for c in row)):
            out.append(line([c[k] if k < len(c) else "" for c in row]))
    return out


def render_text(report: dict[str, Any], *, color: bool = False, width: int | None = None) -> str:
    """The report for people: a title, rule and label tables, totals, warnings, owners.

    With ``color=False`` (the default) the text is plain, aligned and deterministic (no
    ANSI escapes); given a ``width`` (a terminal's), the widest text columns wrap after
    ``/``, commas and spaces until the tables fit, never inside a path segment. With
    ``color=True`` the tables are drawn by rich (if installed) at ``width`` columns
    (default 100).
    """
    if color:
        try:
            return _render_rich(report, width or 100)
        except ImportError:  # pragma: no cover - rich is optional
            pass
    lines = [_title(report)]
    tables = _printable_sections(report)
    for title, header, rows, right in tables[:2]:
        lines += ["", title, *_plain_table(header, rows, right, width)]
    lines += ["", _totals_line(report)]
    warns = _warning_lines(report)
    if warns:
        lines += ["", "Warnings", *("  " + w for w in warns)]
    for title, header, rows, right in tables[2:]:
        lines += ["", title]
        lines += _plain_table(header, rows, right, width) if rows else ["  (no leaf matches)"]
    return "\n".join(lines) + "\n"


def _render_rich(report: dict[str, Any], width: int) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buf = io.StringIO()
    console = Console(
        file=buf, force_terminal=True, color_system="standard", width=width, highlight=False
    )
    console.print(Text(_title(report), style="bold"))

    def table(title: str, header: list[str], rows: list[list[str]], right: set[int]) -> None:
        # Cells are Text, never markup: `[i=3]` and `attn/[qk]/**` are shown as written.
        if not rows and title.startswith("Leaves matching"):
            console.print(Text(f"{title}: no leaf matches", style="bold"))
            return
        t = Table(title=Text(title, style="bold"), title_justify="left", box=box.SIMPLE_HEAD)
        for i, h in enumerate(header):
            t.add_column(Text(h), justify="right" if i in right else "left", overflow="fold")
        # Wrapped as the plain text is (between path segments), with room for the frame.
        cells, _ = _fit_cells(header, rows, right, width - 2 * len(header))
        for row in cells:
            t.add_row(*(Text("\n".join(cell)) for cell in row))
        console.print(t)

    tables = _printable_sections(report)
    for section in tables[:2]:
        table(*section)
    console.print(Text(_totals_line(report), style="bold"))
    for w in _warning_lines(report):
        console.print(Text(w, style="yellow"))
    for section in tables[2:]:
        console.print()
        table(*section)
    return buf.getvalue()


def render_json(report: dict[str, Any]) -> str:
    """The report as JSON (schema in the module docstring), indented, ending in a newline."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
