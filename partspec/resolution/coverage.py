"""Coverage and shadowing: what the outcome of resolving every leaf says about a spec.

An uncovered leaf is an error (``E501``), and so is a spec under which nothing trains
though some rule gives an optimizer (``E502``), and an integer or boolean leaf (a
BatchNorm counter, a step) that a wildcard hands an optimizer (``E503``); a rule that
matches nothing (``W601``) or whose every match an earlier rule takes (``W602``) is a
warning. A rule that matches
nothing, and a tree none of whose leaves is covered, get the likely slip named
(:mod:`partspec.resolution.hints`): dotted names, a module without ``/**``, a missing or
extra leading segment; never the advice to add a catch-all, which would make such a
spec pass and train nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from partspec.diagnostics import Annotation, Diagnostic, Span
from partspec.language import ast
from partspec.language.checker import CheckedSpec
from partspec.language.values import LeafInfo
from partspec.resolution.hints import unmatched_hint

__all__ = [
    "MAX_HINTED_RULES",
    "MAX_LISTED_PATHS",
    "integer_leaf_errors",
    "is_integer_dtype",
    "rule_diagnostics",
]

#: How many uncovered paths an error lists before summarising.
MAX_LISTED_PATHS = 20
#: At most this many rules that match nothing get a correction searched for.
MAX_HINTED_RULES = 5


def _first_line(span: Span) -> Span:
    """The part of a rule's span on its first line."""
    end = span.end_column if span.end_line == span.line else span.column + 1
    return Span(span.line, span.column, span.line, end, span.file)


def rule_diagnostics(
    checked: CheckedSpec,
    match_sets: Iterable[tuple[int, ...]],
    uncovered_paths: Callable[[], list[str]],
    all_paths: Callable[[], Sequence[tuple[str, ...]]] | None = None,
    with_sets: Iterable[tuple[int, ...]] = (),
    with_frozen: Iterable[int] = (),
) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Errors (uncovered leaves, nothing trains) and warnings (unused or shadowed rules).

    Args:
      checked: the checked spec.
      match_sets: the distinct lists of rules that match some leaf of the tree.
      with_sets: the distinct lists of ``with`` rules (numbered after the ``->`` rules)
        that match some trained leaf; ``with_frozen`` those that match a frozen leaf.
      uncovered_paths: computes the paths of uncovered leaves (called only if any).
      all_paths: computes every leaf's path as segments (called only for hints).
    """
    spec = checked.spec
    finals = list(match_sets)
    paths_cache: list[Sequence[tuple[str, ...]]] = []
    hints: dict[int, str | None] = {}

    def hint_for(index: int) -> str | None:
        if index in hints:
            return hints[index]
        if all_paths is None or len(hints) >= MAX_HINTED_RULES:
            return None
        if not paths_cache:
            paths_cache.append(all_paths())
        found = None
        for pattern in checked.rule_at(index).rule.patterns:
            found = unmatched_hint(pattern, paths_cache[0])
            if found is not None:
                break
        hints[index] = found
        return found

    owned: set[int] = set()
    matched: set[int] = set()
    shadowers: dict[int, set[int]] = {}
    for m in finals:
        if not m:
            continue
        owned.add(m[0])
        for r in m[1:]:
            matched.add(r)
            shadowers.setdefault(r, set()).add(m[0])
        matched.add(m[0])
    errors: list[Diagnostic] = []
    if any(not m for m in finals):
        errors.append(_uncovered_error(checked, owned, matched, uncovered_paths, hint_for))
    elif finals and not any(checked.rules[r].action is not None for r in owned):
        meant = [cr for cr in checked.rules if cr.action is not None]
        if meant:
            errors.append(_nothing_trains(checked, meant[0].index, matched, hint_for))
    warns: list[Diagnostic] = []
    for cr in checked.rules:
        span = cr.rule.span
        first_line = _first_line(span)
        if cr.switched_off:
            continue  # a `param` switched it off: matching nothing is what it means
        if cr.index not in matched:
            warns.append(
                Diagnostic.at(
                    "W601",
                    "rule matches no parameter",
                    first_line,
                    severity="warning",
                    hint=hint_for(cr.index)
                    or "compare the pattern with the parameter paths "
                    "(`partspec.jax.tree.leaf_paths(params)` lists them)",
                )
            )
        elif cr.index not in owned:
            spans = sorted(
                (checked.rules[r].rule.span for r in shadowers.get(cr.index, ())),
                key=lambda s: (s.file or "", s.line),
            )
            lines = [str(s.line) if s.file == span.file else f"{s.file}:{s.line}" for s in spans]
            warns.append(
                Diagnostic.at(
                    "W602",
                    "rule is shadowed: every parameter it matches is taken by an earlier rule "
                    f"(line{'s' if len(lines) != 1 else ''} {', '.join(lines)})",
                    first_line,
                    severity="warning",
                    hint="move the more specific rule first (the first matching rule wins)",
                    annotations=tuple(
                        Annotation.at(_first_line(s), "takes its parameters first") for s in spans
                    ),
                )
            )
    if checked.with_rules:
        warns += _with_warnings(checked, list(with_sets), set(with_frozen), hint_for)
        warns.sort(key=lambda d: (d.filename or "", d.line, d.column))
    return ([spec.attach(d) for d in errors], [spec.attach(d) for d in warns])


def _with_warnings(
    checked: CheckedSpec,
    with_sets: list[tuple[int, ...]],
    with_frozen: set[int],
    hint_for: Callable[[int], str | None],
) -> list[Diagnostic]:
    """W601 for a ``with`` rule that matches no trained leaf, W602 for one whose every
    setting, on every leaf it matches, an earlier ``with`` rule decides."""
    n = len(checked.rules)
    warns: list[Diagnostic] = []
    for cw in checked.with_rules:
        if cw.switched_off:
            continue
        me = n + cw.index
        sets = [ws for ws in with_sets if me in ws]
        first_line = _first_line(cw.rule.span)
        if not sets:
            frozen = me in with_frozen
            warns.append(
                Diagnostic.at(
                    "W601",
                    "`with` rule matches only frozen parameters, which take no settings"
                    if frozen
                    else "`with` rule matches no parameter",
                    first_line,
                    severity="warning",
                    hint=(None if frozen else hint_for(me))
                    or "a `with` rule sets the optimizer of the trained leaves it matches",
                )
            )
            continue
        deciders: set[int] = set()
        shadowed = True
        for ws in sets:
            earlier = ws[: ws.index(me)]
            for name in cw.names:
                first = next((e for e in earlier if name in checked.with_rules[e - n].names), None)
                if first is None:
                    shadowed = False
                    break
                deciders.add(first)
            if not shadowed:
                break
        if shadowed:
            spans = sorted(
                (checked.rule_at(e).rule.span for e in deciders),
                key=lambda s: (s.file or "", s.line),
            )
            lines = [str(s.line) for s in spans]
            warns.append(
                Diagnostic.at(
                    "W602",
                    "`with` rule is shadowed: on every parameter it matches, earlier `with` "
                    f"rules decide its settings (line{'s' if len(lines) != 1 else ''} "
                    f"{', '.join(lines)})",
                    first_line,
                    severity="warning",
                    hint="for each setting the first matching `with` rule wins: move the more "
                    "specific rule first",
                    annotations=tuple(
                        Annotation.at(_first_line(s), "decides its settings first") for s in spans
                    ),
                )
            )
    return warns


def _uncovered_error(
    checked: CheckedSpec,
    owned: set[int],
    matched: set[int],
    uncovered_paths: Callable[[], list[str]],
    hint_for: Callable[[int], str | None],
) -> Diagnostic:
    """``E501``: leaves no rule covers. When none is covered, the tree or its prefix is
    wrong, and a catch-all would only hide that."""
    paths = uncovered_paths()
    listed = paths[:MAX_LISTED_PATHS]
    notes = tuple(f"not covered: {p or '<root>'}" for p in listed)
    if len(paths) > len(listed):
        notes += (f"... and {len(paths) - len(listed)} more",)
    n = len(paths)
    if not owned:
        hint = next((h for h in map(hint_for, range(len(checked.rules))) if h), None)
        return Diagnostic(
            "E501",
            "error",
            f"no rule covers any of the {n} parameter leaves: wrong tree, or wrong prefix?",
            filename=checked.spec.filename,
            notes=notes,
            hint=hint
            or "compare the patterns with the tree's paths (the notes list some); check "
            "that the spec is compiled against the model it was written for",
        )
    # A rule that matches nothing was most likely meant for them: its correction first.
    for cr in checked.rules:
        if cr.index not in matched:
            fix = hint_for(cr.index)
            if fix is not None and not fix.startswith("the nearest"):
                hint = f"the rule on line {cr.rule.span.line} matches no parameter; {fix}"
                break
    else:
        hint = "add rules for them, or a catch-all as the last rule: `** -> frozen`"
    return Diagnostic(
        "E501",
        "error",
        f"{n} parameter {'leaves are' if n != 1 else 'leaf is'} not covered by any rule",
        filename=checked.spec.filename,
        notes=notes,
        hint=hint,
    )


def _nothing_trains(
    checked: CheckedSpec,
    index: int,
    matched: set[int],
    hint_for: Callable[[int], str | None],
) -> Diagnostic:
    """``E502``: every leaf is frozen, yet rule ``index`` gives an optimizer."""
    cr = checked.rules[index]
    why = "matches no parameter" if index not in matched else "gets none of its parameters"
    hint = hint_for(index) if index not in matched else None
    return Diagnostic.at(
        "E502",
        f"nothing trains: every parameter is frozen, yet this rule gives an optimizer and {why}",
        _first_line(cr.rule.span),
        hint=hint
        or "fix the rule's pattern, or move it before the rules that take its parameters; "
        "if nothing should train, say `frozen` in every rule",
    )


#: dtype names of leaves that an optimizer must not get by a wildcard: counters, flags.
_INTEGER_KINDS = ("int", "uint", "bool")


def is_integer_dtype(name: str) -> bool:
    """Whether a dtype name is an integer or boolean one (``int64``, ``uint8``, ``bool``).

    >>> is_integer_dtype("int64"), is_integer_dtype("bool"), is_integer_dtype("bfloat16")
    (True, True, False)
    """
    return name.startswith(_INTEGER_KINDS)


def _names_leaf(rule: ast.Rule) -> bool:
    """Whether a rule picks its leaves deliberately: a ``where`` condition, or a pattern
    whose last segment is literal text (``bn/num_batches_tracked``, not ``**``)."""
    if rule.where is not None:
        return True
    for pattern in rule.patterns:
        last: list[ast.GlobNode] = []
        for node in pattern.nodes:
            last = [] if isinstance(node, ast.Sep) else [*last, node]
        if last and all(isinstance(n, ast.Lit) for n in last):
            return True
    return False


def integer_leaf_errors(
    checked: CheckedSpec,
    leaves: Iterable[tuple[tuple[str, ...], LeafInfo]],
    locate: Callable[[tuple[str, ...], LeafInfo], tuple[int, str | None]],
) -> list[Diagnostic]:
    """``E503`` for each rule that gives integer or boolean ``leaves`` an optimizer
    through a wildcard: an optimizer would round its float updates into them (a
    BatchNorm ``num_batches_tracked`` would drift), so they must be frozen or named.

    ``locate(path, info)`` gives a leaf's owner rule (or -1) and label.
    """
    by_rule: dict[int, list[str]] = {}
    for segs, info in leaves:
        if not is_integer_dtype(info.dtype):
            continue
        owner, label = locate(segs, info)
        if owner < 0 or label is None:
            continue
        cr = checked.rules[owner]
        if cr.action is None or _names_leaf(cr.rule):
            continue
        by_rule.setdefault(owner, []).append(f"{'/'.join(segs) or '<root>'} ({info.dtype})")
    errors = []
    for owner, found in sorted(by_rule.items()):
        cr = checked.rules[owner]
        listed = found[:MAX_LISTED_PATHS]
        notes = tuple(f"integer leaf: {p}" for p in listed)
        if len(found) > len(listed):
            notes += (f"... and {len(found) - len(listed)} more",)
        first = found[0].rsplit(" (", 1)[0].rsplit("/", 1)[-1]
        diag = Diagnostic.at(
            "E503",
            f"this rule gives {len(found)} integer or boolean "
            f"{'leaves' if len(found) != 1 else 'leaf'} an optimizer through a wildcard",
            _first_line(cr.rule.span),
            hint=f"freeze them with a rule before this one (`**/{first} -> frozen`), or "
            "name them in a rule of their own if they really should train",
        )
        errors.append(checked.spec.attach(dataclasses.replace(diag, notes=notes)))
    return errors
