"""Coverage and shadowing: what the outcome of resolving every leaf says about a spec.

An uncovered leaf is an error (``E501``); a rule that matches nothing (``W601``) or
whose every match an earlier rule takes (``W602``) is a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from partspec.diagnostics import Annotation, Diagnostic, Span
from partspec.language.checker import CheckedSpec

__all__ = ["MAX_LISTED_PATHS", "rule_diagnostics"]

#: How many uncovered paths an error lists before summarising.
MAX_LISTED_PATHS = 20


def _first_line(span: Span) -> Span:
    """The part of a rule's span on its first line."""
    end = span.end_column if span.end_line == span.line else span.column + 1
    return Span(span.line, span.column, span.line, end, span.file)


def rule_diagnostics(
    checked: CheckedSpec,
    match_sets: Iterable[tuple[int, ...]],
    uncovered_paths: Callable[[], list[str]],
) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Errors (uncovered leaves) and warnings (unused or shadowed rules).

    Args:
      checked: the checked spec.
      match_sets: the distinct lists of rules that match some leaf of the tree.
      uncovered_paths: computes the paths of uncovered leaves (called only if any).
    """
    spec = checked.spec
    finals = list(match_sets)
    errors: list[Diagnostic] = []
    if any(not m for m in finals):
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
    for m in finals:
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
        first_line = _first_line(span)
        if cr.index not in matched:
            warns.append(
                Diagnostic.at(
                    "W601",
                    "rule matches no parameter",
                    first_line,
                    severity="warning",
                    hint="compare the pattern with the parameter paths "
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
    return ([spec.attach(d) for d in errors], [spec.attach(d) for d in warns])
