"""Coverage and shadowing: which rule owns which leaf, and what that says about the spec.

Pure Python (no JAX): ``pspec check`` uses it on manifests, and
:func:`partspec.compile` on real trees.

>>> import partspec
>>> from partspec.coverage import label_paths
>>> checked = partspec.check("backbone/** -> frozen\\n** -> adam(1e-3)\\nhead/* -> sgd(0.1)")
>>> owners, errors, warnings = label_paths(checked, [("backbone", "w"), ("head", "w")])
>>> owners, errors, [w.code for w in warnings]
([0, 1], [], ['W602'])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

from partspec import ast
from partspec.checker import CheckedSpec
from partspec.errors import Diagnostic, Span
from partspec.matcher import Matcher, compile_rules

__all__ = ["MAX_LISTED_PATHS", "label_paths", "matcher_for", "rule_diagnostics"]

#: How many uncovered paths an error lists before summarising.
MAX_LISTED_PATHS = 20


@functools.lru_cache(maxsize=64)
def _matcher(rules: tuple[tuple[tuple[ast.Pattern, ...], tuple[ast.Pattern, ...]], ...]) -> Matcher:
    return compile_rules(rules)


def matcher_for(checked: CheckedSpec) -> Matcher:
    """The (cached) matcher of a checked spec's rules."""
    return _matcher(tuple((r.rule.patterns, r.rule.excepts) for r in checked.rules))


def rule_diagnostics(
    checked: CheckedSpec,
    matcher: Matcher,
    final_states: Iterable[int],
    uncovered_paths: Callable[[], list[str]],
) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Errors (uncovered leaves) and warnings (unused or shadowed rules).

    Args:
      checked: the checked spec.
      matcher: its matcher.
      final_states: the distinct matcher states the tree's leaves ended in.
      uncovered_paths: computes the paths of uncovered leaves (called only if any).
    """
    spec = checked.spec
    finals = list(final_states)
    errors: list[Diagnostic] = []
    if any(not matcher.matches(f) for f in finals):
        paths = uncovered_paths()
        listed = paths[:MAX_LISTED_PATHS]
        notes = tuple(f"not covered: {p or '<root>'}" for p in listed)
        if len(paths) > len(listed):
            notes += (f"... and {len(paths) - len(listed)} more",)
        errors.append(
            Diagnostic(
                "E501",
                "error",
                f"{len(paths)} parameter {'leaves are' if len(paths) != 1 else 'leaf is'} "
                "not covered by any rule",
                filename=spec.filename,
                notes=notes,
                hint="add rules for them, or a catch-all as the last rule: `** -> frozen`",
            )
        )
    owned: set[int] = set()
    matched: set[int] = set()
    shadowers: dict[int, set[int]] = {}
    for f in finals:
        m = matcher.matches(f)
        if not m:
            continue
        owned.add(m[0])
        for r in m[1:]:
            matched.add(r)
            shadowers.setdefault(r, set()).add(m[0])
        matched.add(m[0])
    warns: list[Diagnostic] = []
    for cr in checked.rules:
        span = cr.rule.span
        first_line = Span(
            span.line,
            span.column,
            span.line,
            span.end_column if span.end_line == span.line else span.column + 1,
        )
        if cr.index not in matched:
            warns.append(
                Diagnostic.at(
                    "W601",
                    "rule matches no parameter",
                    first_line,
                    severity="warning",
                    hint="compare the pattern with the parameter paths "
                    "(`partspec.tree.leaf_paths(params)` lists them)",
                )
            )
        elif cr.index not in owned:
            lines = sorted(checked.rules[r].rule.span.line for r in shadowers.get(cr.index, ()))
            warns.append(
                Diagnostic.at(
                    "W602",
                    "rule is shadowed: every parameter it matches is taken by an earlier rule "
                    f"(line{'s' if len(lines) != 1 else ''} {', '.join(map(str, lines))})",
                    first_line,
                    severity="warning",
                    hint="move the more specific rule first (the first matching rule wins)",
                )
            )
    src, name = spec.source, spec.filename
    return ([d.with_source(src, name) for d in errors], [d.with_source(src, name) for d in warns])


def label_paths(
    checked: CheckedSpec, paths: Sequence[Sequence[str]]
) -> tuple[list[int], list[Diagnostic], list[Diagnostic]]:
    """Owner rule index per path (``-1`` if uncovered), with errors and warnings."""
    matcher = matcher_for(checked)
    owners: list[int] = []
    finals: set[int] = set()
    # Paths come in tree order, so neighbours share prefixes: keep the state after
    # each segment of the previous path (with its trailing "/") and reuse the common part.
    prev: tuple[str, ...] = ()
    after_sep: list[int] = [matcher.start]  # after_sep[i]: state before segment i
    key, sep = matcher.key, matcher.sep
    for path in paths:
        segs = tuple(path)
        common = 0
        limit = min(len(segs), len(prev)) - 1
        while common < limit and segs[common] == prev[common]:
            common += 1
        del after_sep[common + 1 :]
        s = after_sep[common]
        for i in range(common, len(segs)):
            s = key(s, segs[i])
            if i < len(segs) - 1:
                s = sep(s)
                after_sep.append(s)
        finals.add(s)
        owners.append(matcher.owner(s))
        prev = segs
    errors, warns = rule_diagnostics(
        checked,
        matcher,
        finals,
        lambda: ["/".join(p) for p, o in zip(paths, owners) if o < 0],
    )
    return owners, errors, warns
