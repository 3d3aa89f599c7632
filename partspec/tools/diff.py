"""``pspec diff``: will a checkpoint made under one spec restore under another?

The optimizer state of a compiled spec is a
:class:`~partspec.jax.partition.PartitionState`: each label's state over that label's
leaves, the labels whose states have one structure sharing a group (see
:func:`~partspec.jax.partition.group_name`). A checkpoint of it (Orbax,
``flax.serialization``) restores into the state of another spec only when both states
have the same structure: the same labels, the same kind of state under each label, over
the same leaves, with the same shapes and dtypes. :func:`diff` compiles both specs
against one parameter structure, computes both abstract states with
``jax.eval_shape(plan.tx.init, tree)`` (nothing is allocated) and compares them, label
by label and leaf by leaf.

>>> import partspec
>>> from partspec.tools.manifest import Leaf
>>> leaves = [Leaf(("backbone", "kernel"), (16, 32), "float32"),
...           Leaf(("head", "kernel"), (32, 4), "float32")]
>>> old = partspec.parse("backbone/** -> frozen\\nhead/** -> adam(1e-3)")
>>> new = partspec.parse("backbone/** -> frozen\\nhead/** -> adam(1e-4)")
>>> report = diff(old, new, leaves)
>>> report.restorable, [(r.old, r.new, r.state_compatible) for r in report.renamed]
(False, [('adam(0.001)', 'adam(0.0001)', True)])
>>> named = diff(partspec.parse("backbone/** -> frozen\\nhead/** -> adam(1e-3) as head"),
...              partspec.parse("backbone/** -> frozen\\nhead/** -> adam(1e-4) as head"), leaves)
>>> named.restorable, named.kept
(True, ('frozen', 'head'))

``restorable`` is strict: the two abstract states must be identical. Orbax itself
rejects most differences (a label added, removed or renamed; a leaf that gains state;
a different kind of state), but it restores two kinds silently: a dtype change (it
casts) and a leaf that loses its state (the saved values are dropped). :func:`diff`
reports those too, since the restored state is then not the state that was saved.

JSON schema (``"version": 1``), as :meth:`DiffReport.to_json` returns it::

    {
      "version": 1,
      "old": str | null, "new": str | null,   # the specs' file names
      "restorable": bool,
      "leaves": int,                          # parameter leaves compared
      "labels": [                             # OLD's labels in rule order, then those added
        {"label": str,                        #   (a rename is one row, under its OLD label)
         "status": "kept" | "changed" | "added" | "removed" | "renamed",
         "renamed_to": str | null,            # for "renamed": the label in NEW
         "old_action": str | null,            # the evaluated action ("frozen", "adam(0.001)");
         "new_action": str | null,            #   null on the side the label is absent
         "old_leaves": int, "new_leaves": int}
      ],
      "renamed": [{"old": str, "new": str, "leaves": int, "state_compatible": bool,
                   "old_named": bool, "new_named": bool}],   # `as NAME` labels
      "added": [str], "removed": [str], "kept": [str], "changed": [str],
      "leaf_changes": [{"path": str, "old": str, "new": str}],
      "state_differences": [                  # inside labels both specs have
        {"label": str, "path": str,           # path inside plan.label_states(s)[label]
         "kind": "only_old" | "only_new" | "shape" | "dtype" | "structure",
         "old": str | null, "new": str | null}   # "float32[32, 4]", or a structure
      ]
    }
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from partspec.diagnostics import Diagnostic, SpecError, SpecWarning
from partspec.language import ast
from partspec.language.load import parse
from partspec.language.values import OptaxCall, ScaledSchedule, Unset, Until
from partspec.tools.manifest import Leaf, leaves_to_shape_tree

__all__ = [
    "SCHEMA_VERSION",
    "DiffReport",
    "LeafChange",
    "Rename",
    "StateDifference",
    "diff",
    "render_diff",
    "render_json",
]

#: The ``"version"`` of the JSON report described in the module docstring.
SCHEMA_VERSION = 1

#: At most this many leaf changes and state differences are listed by :func:`render_diff`.
MAX_LISTED = 20


@dataclass(frozen=True)
class LeafChange:
    """A parameter leaf whose label differs between OLD and NEW."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Rename:
    """A label of OLD replaced by a label of NEW with exactly the same leaves.

    ``state_compatible``: the two labels' states have the same structure, shapes and
    dtypes, so the saved state would fit under the new name (the usual cause: a
    number edited in an unnamed rule, whose label is its action's text).
    ``old_named``, ``new_named``: whether each label was given with ``as NAME``.
    """

    old: str
    new: str
    leaves: int
    state_compatible: bool
    old_named: bool = False
    new_named: bool = False


@dataclass(frozen=True)
class StateDifference:
    """One difference inside the state of a label both specs have.

    ``path`` is inside ``plan.label_states(state)[label]`` (``0/mu/head/kernel``);
    ``kind`` is ``only_old`` (in a checkpoint made under OLD, not expected by NEW),
    ``only_new`` (expected by NEW, not in the checkpoint), ``shape``, ``dtype``, or
    ``structure`` (same arrays, different containers, e.g. ``adam`` -> ``adamw``).
    ``old`` and ``new`` describe each side (``float32[32, 4]``), ``None`` when absent.
    """

    label: str
    path: str
    kind: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class DiffReport:
    """What changes in the optimizer state when a spec is edited (see :func:`diff`).

    Attributes:
      old_spec, new_spec: the specs' file names (``None`` for specs given as text).
      restorable: a checkpoint made under OLD restores under NEW: the abstract
        optimizer states have identical structure, shapes and dtypes.
      leaves: the number of parameter leaves.
      old_labels, new_labels: the labels in use, in rule order.
      added, removed: labels only NEW or only OLD has (renames excluded).
      renamed: OLD labels replaced by NEW labels over exactly the same leaves.
      kept: labels both specs have, with identical state (a checkpoint's state for
        them restores, even when the whole checkpoint does not).
      changed: labels both specs have, whose state differs (see ``state_differences``).
      old_actions, new_actions: label -> evaluated action text (``frozen`` for frozen).
      leaf_changes: every leaf whose label changes, in tree order.
      state_differences: the differences inside the labels in ``changed``.
    """

    old_spec: str | None
    new_spec: str | None
    restorable: bool
    leaves: int
    old_labels: tuple[str, ...]
    new_labels: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    renamed: tuple[Rename, ...]
    kept: tuple[str, ...]
    changed: tuple[str, ...]
    old_actions: Mapping[str, str]
    new_actions: Mapping[str, str]
    old_counts: Mapping[str, int]
    new_counts: Mapping[str, int]
    leaf_changes: tuple[LeafChange, ...]
    state_differences: tuple[StateDifference, ...]

    @property
    def action_changes(self) -> tuple[tuple[str, str, str], ...]:
        """``(label, old action, new action)`` for kept or changed labels whose action differs."""
        return tuple(
            (lab, self.old_actions[lab], self.new_actions[lab])
            for lab in self.old_labels
            if lab in self.new_actions and self.old_actions[lab] != self.new_actions[lab]
        )

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values (schema in the module docstring)."""
        rename_of = {r.old: r.new for r in self.renamed}
        rows: list[dict[str, Any]] = []
        for lab in self.old_labels:
            if lab in rename_of:
                status = "renamed"
            elif lab in self.removed:
                status = "removed"
            elif lab in self.kept:
                status = "kept"
            else:
                status = "changed"
            rows.append(self._label_row(lab, status, rename_of.get(lab)))
        rows += [self._label_row(lab, "added", None) for lab in self.added]
        return {
            "version": SCHEMA_VERSION,
            "old": self.old_spec,
            "new": self.new_spec,
            "restorable": self.restorable,
            "leaves": self.leaves,
            "labels": rows,
            "renamed": [
                {
                    "old": r.old,
                    "new": r.new,
                    "leaves": r.leaves,
                    "state_compatible": r.state_compatible,
                    "old_named": r.old_named,
                    "new_named": r.new_named,
                }
                for r in self.renamed
            ],
            "added": list(self.added),
            "removed": list(self.removed),
            "kept": list(self.kept),
            "changed": list(self.changed),
            "leaf_changes": [
                {"path": c.path, "old": c.old, "new": c.new} for c in self.leaf_changes
            ],
            "state_differences": [
                {"label": d.label, "path": d.path, "kind": d.kind, "old": d.old, "new": d.new}
                for d in self.state_differences
            ],
        }

    def _label_row(self, lab: str, status: str, renamed_to: str | None) -> dict[str, Any]:
        now = renamed_to or lab  # a renamed label's NEW side is the label it became
        return {
            "label": lab,
            "status": status,
            "renamed_to": renamed_to,
            "old_action": self.old_actions.get(lab),
            "new_action": self.new_actions.get(now),
            "old_leaves": self.old_counts.get(lab, 0),
            "new_leaves": self.new_counts.get(now, 0),
        }


# ---------------------------------------------------------------- computing


def _structure(leaves_or_params: Any) -> Any:
    """A tree to compile against: manifest leaves become ``jax.ShapeDtypeStruct``s."""
    if (
        isinstance(leaves_or_params, (list, tuple))
        and leaves_or_params
        and all(isinstance(x, Leaf) for x in leaves_or_params)
    ):
        return leaves_to_shape_tree(leaves_or_params)
    return leaves_or_params


def _compile(spec: ast.Spec, tree: Any, values: Mapping[str, Any] | None) -> Any:
    from partspec.jax.plan import compile as compile_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)  # unused rules do not matter here
        return compile_plan(spec, tree, **dict(values or {}))


def _value_text(v: Any) -> str:
    if isinstance(v, OptaxCall):
        args = [_value_text(a) for a in v.args]
        args += [f"{k}={_value_text(x)}" for k, x in v.kwargs]
        return f"{v.name}({', '.join(args)})"
    if isinstance(v, Until):
        return f"frozen until {v.at} then {_value_text(v.then)}"
    if isinstance(v, ScaledSchedule):
        return f"{v.factor!r} * {_value_text(v.schedule)}"
    if isinstance(v, Unset):  # pragma: no cover - compile() requires every value
        return v.name
    if isinstance(v, tuple):
        return "[" + ", ".join(_value_text(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _actions(plan: Any) -> dict[str, str]:
    """Label in use -> its evaluated action, as text (``frozen`` for frozen labels)."""
    return {
        lab: "frozen" if a is None else _value_text(a)
        for lab, a in plan.actions.items()
        if lab in plan.transforms
    }


def _named(plan: Any) -> set[str]:
    """The labels given with ``as NAME`` (``NAME[i=3]`` for a rule with captures)."""
    names = {cr.label for cr in plan.checked.rules if cr.rule.label is not None}
    return {lab for lab in plan.transforms if lab in names or lab.split("[", 1)[0] in names}


def _key_text(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)  # pragma: no cover - jax has no other key types


def _describe(x: Any) -> str:
    shape = ", ".join(str(d) for d in getattr(x, "shape", ()))
    return f"{getattr(x, 'dtype', type(x).__name__)}[{shape}]"


def _summary(tree: Any, depth: int = 0) -> str:
    """The containers of a state, without the parameter-shaped dicts: for messages."""
    import jax

    if depth > 6:
        return "..."
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        fields = [
            f"{f}={_summary(getattr(tree, f), depth + 1)}"
            for f in tree._fields
            if jax.tree_util.tree_leaves(getattr(tree, f))
        ]
        return f"{type(tree).__name__}({', '.join(fields)})"
    if isinstance(tree, (tuple, list)):
        inner = ", ".join(_summary(x, depth + 1) for x in tree)
        return f"({inner},)" if len(tree) == 1 else f"({inner})"
    if isinstance(tree, dict):
        return "{...}"
    if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(tree)):
        return "array" if hasattr(tree, "shape") else type(tree).__name__
    return type(tree).__name__  # pragma: no cover - other pytree nodes


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
    """Leaves by their keys: a tuple, never joined, since ``{"a/b": x}`` beside
    ``{"a": {"b": y}}`` would give two leaves one text path (and hide a difference)."""
    import jax

    pairs, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(_key_text(k) for k in path): leaf for path, leaf in pairs}


def _same_structure(a: Any, b: Any) -> bool:
    import jax

    sa: Any = jax.tree_util.tree_structure(a)
    return bool(sa == jax.tree_util.tree_structure(b))


def _same(a: Any, b: Any) -> bool:
    """Identical structure, shapes and dtypes."""
    import jax

    if not _same_structure(a, b):
        return False
    return all(
        tuple(x.shape) == tuple(y.shape) and x.dtype == y.dtype
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


#: The ``label`` of state differences in the state of the ``global`` transforms.
GLOBAL_LABEL = "(global)"


def _differences(label: str, old: Any, new: Any) -> list[StateDifference]:
    fo, fn = _flat(old), _flat(new)
    out: list[StateDifference] = []
    for keys, x in fo.items():
        path = "/".join(keys)
        if keys not in fn:
            out.append(StateDifference(label, path, "only_old", _describe(x), None))
            continue
        y = fn[keys]
        if tuple(x.shape) != tuple(y.shape):
            out.append(StateDifference(label, path, "shape", _describe(x), _describe(y)))
        elif x.dtype != y.dtype:
            out.append(StateDifference(label, path, "dtype", _describe(x), _describe(y)))
    out += [
        StateDifference(label, "/".join(keys), "only_new", None, _describe(y))
        for keys, y in fn.items()
        if keys not in fo
    ]
    if not out and not _same_structure(old, new):
        out.append(StateDifference(label, "", "structure", _summary(old), _summary(new)))
    return out


def _compile_both(
    old: ast.Spec, new: ast.Spec, tree: Any, old_values: Any, new_values: Any
) -> tuple[Any, Any]:
    """Both plans; the diagnostics of both specs in one :class:`SpecError`."""
    plans: list[Any] = []
    diags: list[Diagnostic] = []
    for spec, values in ((old, old_values), (new, new_values)):
        try:
            plans.append(_compile(spec, tree, values))
        except SpecError as err:
            diags += err.diagnostics
    if diags:
        raise SpecError(diags)
    return plans[0], plans[1]


def diff(
    old: ast.Spec | str,
    new: ast.Spec | str,
    leaves_or_params: Sequence[Leaf] | Any,
    old_values: Mapping[str, Any] | None = None,
    new_values: Mapping[str, Any] | None = None,
) -> DiffReport:
    """Compare the optimizer states of two specs compiled against the same parameters.

    Args:
      old: the spec a checkpoint was made under (text is parsed).
      new: the edited spec.
      leaves_or_params: the parameter structure: a list of
        :class:`~partspec.tools.manifest.Leaf` (as ``pspec tree`` manifests hold), or any
        parameter pytree (arrays or ``jax.ShapeDtypeStruct``; only the structure is used).
      old_values, new_values: values for each spec's ``param`` declarations.

    Returns:
      A :class:`DiffReport`; ``report.restorable`` says whether a checkpoint made under
      ``old`` restores under ``new``.

    Raises:
      SpecError: either spec is bad or does not cover the parameters (the diagnostics
        of both specs together).
      TreeInputError: ``leaves`` that do not form a tree, or an unknown dtype.
    """
    import jax

    from partspec.jax.partition import PartitionState
    from partspec.jax.tree import leaf_paths

    old = parse(old) if isinstance(old, str) else old
    new = parse(new) if isinstance(new, str) else new
    tree = _structure(leaves_or_params)
    old_plan, new_plan = _compile_both(old, new, tree, old_values, new_values)
    old_state = jax.eval_shape(old_plan.tx.init, tree)
    new_state = jax.eval_shape(new_plan.tx.init, tree)
    old_inner = jax.eval_shape(lambda t: old_plan.label_states(old_plan.tx.init(t)), tree)
    new_inner = jax.eval_shape(lambda t: new_plan.label_states(new_plan.tx.init(t)), tree)

    old_leaf_labels = leaf_paths(old_plan.labels)
    new_leaf_labels = leaf_paths(new_plan.labels)
    assert [p for p, _ in old_leaf_labels] == [p for p, _ in new_leaf_labels]
    groups_old: dict[str, list[str]] = {}
    groups_new: dict[str, list[str]] = {}
    leaf_changes: list[LeafChange] = []
    for (path, a), (_, b) in zip(old_leaf_labels, new_leaf_labels):
        groups_old.setdefault(a, []).append(path)
        groups_new.setdefault(b, []).append(path)
        if a != b:
            leaf_changes.append(LeafChange(path, a, b))

    old_labels = tuple(old_plan.transforms)
    new_labels = tuple(new_plan.transforms)

    only_old = [lab for lab in old_labels if lab not in new_plan.transforms]
    only_new = [lab for lab in new_labels if lab not in old_plan.transforms]
    by_leaves = {tuple(groups_new.get(lab, ())): lab for lab in only_new}
    renamed: list[Rename] = []
    for lab in only_old:
        target = by_leaves.get(tuple(groups_old.get(lab, ())))
        if target is not None:
            compatible = _same(old_inner[lab], new_inner[target])
            n = len(groups_old.get(lab, ()))
            named = (lab in _named(old_plan), target in _named(new_plan))
            renamed.append(Rename(lab, target, n, compatible, *named))
    renamed_old = {r.old for r in renamed}
    renamed_new = {r.new for r in renamed}

    kept: list[str] = []
    changed: list[str] = []
    differences: list[StateDifference] = []
    for lab in old_labels:
        if lab not in new_plan.transforms:
            continue
        found = _differences(lab, old_inner[lab], new_inner[lab])
        (changed if found else kept).append(lab)
        differences += found

    # The state of the `global` transforms (before the partition in a chain), if any.
    old_rest = () if isinstance(old_state, PartitionState) else tuple(old_state[:-1])
    new_rest = () if isinstance(new_state, PartitionState) else tuple(new_state[:-1])
    global_diffs = _differences(GLOBAL_LABEL, old_rest, new_rest)
    differences += global_diffs

    restorable = _same(old_state, new_state)
    # The whole state is the labels' states (and the globals'): identical iff nothing changed.
    assert restorable == (not (only_old or only_new or changed or global_diffs)), (
        only_old,
        only_new,
        changed,
    )
    return DiffReport(
        old_spec=old.filename,
        new_spec=new.filename,
        restorable=restorable,
        leaves=len(old_leaf_labels),
        old_labels=old_labels,
        new_labels=new_labels,
        added=tuple(lab for lab in only_new if lab not in renamed_new),
        removed=tuple(lab for lab in only_old if lab not in renamed_old),
        renamed=tuple(renamed),
        kept=tuple(kept),
        changed=tuple(changed),
        old_actions=_actions(old_plan),
        new_actions=_actions(new_plan),
        old_counts={lab: len(v) for lab, v in groups_old.items()},
        new_counts={lab: len(v) for lab, v in groups_new.items()},
        leaf_changes=tuple(leaf_changes),
        state_differences=tuple(differences),
    )


# ---------------------------------------------------------------- rendering


_KIND_TEXT = {
    "only_old": "in the checkpoint, not expected by NEW",
    "only_new": "expected by NEW, not in the checkpoint",
    "shape": "shape changes",
    "dtype": "dtype changes",
    "structure": "the state's containers change",
}


def _sides(d: StateDifference) -> str:
    if d.old is None or d.new is None:
        return d.old or d.new or ""
    return f"{d.old} -> {d.new}"


def _table(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {'leaves' if word == 'leaf' else word + 's'}"


def _reasons(r: DiffReport) -> list[str]:
    """Why a checkpoint does not restore, one short clause per kind of change."""
    out = [f"`{x.old}` is renamed `{x.new}`" for x in r.renamed]
    out += [f"label `{lab}` is removed" for lab in r.removed]
    out += [f"label `{lab}` is added" for lab in r.added]
    out += [f"the state of `{lab}` changes" for lab in r.changed]
    if any(d.label == GLOBAL_LABEL for d in r.state_differences):
        out.append("the state of the `global` transforms changes")
    return out


def render_diff(report: DiffReport) -> str:
    """The report for people: the verdict, the labels, the leaves that move, the reasons."""
    old_name = report.old_spec or "OLD"
    new_name = report.new_spec or "NEW"
    r = report
    lines: list[str] = []
    if r.restorable:
        lines.append(
            f"restorable: a checkpoint made under {old_name} restores under {new_name} "
            f"(identical optimizer state: {_plural(len(r.new_labels), 'label')}, "
            f"{_plural(r.leaves, 'leaf')})"
        )
    else:
        lines.append(
            f"not restorable: a checkpoint made under {old_name} does not restore under "
            f"{new_name}: {'; '.join(_reasons(r))}"
        )

    rows: list[list[str]] = []
    rename_of = {x.old: x for x in r.renamed}
    for lab in r.old_labels:
        old_action, new_action = r.old_actions[lab], r.new_actions.get(lab)
        n_old = _plural(r.old_counts.get(lab, 0), "leaf")
        if lab in rename_of:
            ren = rename_of[lab]
            note = "renamed, same state shape" if ren.state_compatible else "renamed, state changes"
            new_action = r.new_actions[ren.new]
            if old_action != new_action and (old_action, new_action) != (lab, ren.new):
                note += f": {old_action} -> {r.new_actions[ren.new]}"
            rows.append(["~", f"{lab} -> {ren.new}", note, n_old])
        elif lab in r.removed:
            rows.append(["-", lab, "removed", n_old])
        else:
            status = "state kept" if lab in r.kept else "state changes"
            if new_action is not None and new_action != old_action:
                status += f": {old_action} -> {new_action}"
            counts = n_old
            if r.new_counts.get(lab, 0) != r.old_counts.get(lab, 0):
                counts = (
                    f"{r.old_counts.get(lab, 0)} -> {_plural(r.new_counts.get(lab, 0), 'leaf')}"
                )
            rows.append(["=" if lab in r.kept else "!", lab, status, counts])
    for lab in r.added:
        rows.append(["+", lab, "added", _plural(r.new_counts.get(lab, 0), "leaf")])
    lines += ["", "labels:", *_table(rows)]

    renamed_pairs = {
        (c.old, c.new)
        for c in r.leaf_changes
        if c.old in rename_of and rename_of[c.old].new == c.new
    }
    moved = [c for c in r.leaf_changes if (c.old, c.new) not in renamed_pairs]
    if moved:
        lines += ["", f"leaves that change label ({len(moved)}):"]
        lines += _table([[c.path, f"{c.old} -> {c.new}"] for c in moved[:MAX_LISTED]])
        if len(moved) > MAX_LISTED:
            lines.append(f"  ... and {len(moved) - MAX_LISTED} more")

    if r.state_differences:
        diffs = r.state_differences
        lines += ["", f"state differences ({len(diffs)}):"]
        table = []
        for d in diffs[:MAX_LISTED]:
            table.append([f"{d.label}: {d.path or '(whole state)'}", _KIND_TEXT[d.kind], _sides(d)])
        lines += _table(table)
        if len(diffs) > MAX_LISTED:
            lines.append(f"  ... and {len(diffs) - MAX_LISTED} more")

    help_lines = [] if r.restorable else _help(r)
    lines += ["", *help_lines, LAYOUT_NOTE]
    return "\n".join(lines) + "\n"


#: Both sides of a diff are today's state layout; what earlier releases saved differs.
LAYOUT_NOTE = (
    "note: checkpoints saved by partspec 0.1 or 0.2 have another layout; they restore under "
    "plan.legacy_tx(version), then plan.upgrade_state (docs/checkpoints.md)"
)


def _help(r: DiffReport) -> list[str]:
    out: list[str] = []
    for x in r.renamed:
        if not x.state_compatible:
            continue
        head = f"help: `{x.old}` -> `{x.new}`: same leaves, same state shape, new label"
        if x.old_named:
            out.append(f"{head}: name the rule `as {x.old}` in NEW to keep the state")
        elif not x.new_named:
            out.append(
                f"{head}. An unnamed rule's label is its action's text, so editing a number "
                "in it renames the state: name the rule (`... as NAME`), or write the number "
                "as a `param` or `let`, so that later edits keep the label"
            )
    if any(d.kind in ("only_old", "dtype") for d in r.state_differences):
        out.append(
            "note: Orbax restores dtype changes (it casts) and state NEW no longer needs "
            "(it drops it) without an error; the restored state is then not the saved one"
        )
    if r.kept or any(x.state_compatible for x in r.renamed):
        out.append(
            "help: to resume from an existing checkpoint, restore it under OLD, then carry "
            "the state of the kept labels (and of renamed labels with the same state shape) "
            "over to NEW's freshly initialised state"
        )
    return out


def render_json(report: DiffReport) -> str:
    """The report as indented JSON (schema in the module docstring), ending in a newline."""
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
