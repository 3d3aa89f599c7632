"""Diagnostics and the one exception that partspec raises for bad specs.

Every problem partspec finds in a spec, or in a spec applied to a parameter tree,
is a :class:`Diagnostic`: a code, a severity, a message, a position and an optional
hint. :class:`SpecError` carries a list of them and renders them the way ruff
does::

    error[E401]: unknown optimizer `adma`
     --> spec.pspec:2:12
      |
    2 | head/** -> adma(1e-3)
      |            ^^^^ not an allow-listed optax function
      |
      = help: did you mean `adam`?

>>> import partspec
>>> try:
...     partspec.parse("head/** -> adma(1e-3)", filename="spec.pspec")
... except partspec.SpecError as err:
...     print(err.diagnostics[0].code, err.diagnostics[0].line, err.diagnostics[0].column)
E401 1 12
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

__all__ = ["Diagnostic", "Span", "SpecError", "SpecWarning", "did_you_mean", "render"]


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based lines and columns, end column exclusive.

    ``file`` names the file the text is in when it differs from the spec's own (a
    statement that came from an ``include``); ``None`` otherwise.
    """

    line: int
    column: int
    end_line: int
    end_column: int
    file: str | None = None

    def to(self, other: Span) -> Span:
        """The span from the start of ``self`` to the end of ``other``."""
        return Span(self.line, self.column, other.end_line, other.end_column, self.file)


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec.

    Attributes:
      code: a stable identifier such as ``E401`` (errors) or ``W601`` (warnings).
      severity: ``"error"`` or ``"warning"``.
      message: one sentence naming the bad value.
      line, column: 1-based start position, or 0 when the problem has no position
        (for example a parameter tree that no rule covers is reported at the spec).
      end_line, end_column: end of the region (column exclusive).
      filename: the spec's file name, or ``None`` for a string spec.
      hint: how to fix it, when partspec knows.
      label: a short note printed under the carets.
      source_line: the text of ``line`` (without its newline), when known.
      notes: extra lines (for example the uncovered paths).
    """

    code: str
    severity: str
    message: str
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0
    filename: str | None = None
    hint: str | None = None
    label: str | None = None
    source_line: str | None = None
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def at(
        cls,
        code: str,
        message: str,
        span: Span,
        *,
        severity: str = "error",
        hint: str | None = None,
        label: str | None = None,
    ) -> Diagnostic:
        """A diagnostic covering ``span``."""
        return cls(
            code,
            severity,
            message,
            span.line,
            span.column,
            span.end_line,
            span.end_column,
            filename=span.file,
            hint=hint,
            label=label,
        )

    @property
    def end(self) -> tuple[int, int]:
        """``(end_line, end_column)``."""
        return (self.end_line, self.end_column)

    @property
    def location(self) -> str:
        """``file:line:col`` (``<string>`` for specs given as text)."""
        name = self.filename or "<string>"
        if self.line <= 0:
            return name
        return f"{name}:{self.line}:{self.column}"

    def render(self) -> str:
        """The diagnostic as ruff would print it: header, location, source, carets."""
        out = [f"{self.severity}[{self.code}]: {self.message}", f" --> {self.location}"]
        if self.line > 0 and self.source_line is not None:
            gutter = " " * len(str(self.line))
            src = self.source_line.replace("\t", " ")
            if self.end_line == self.line and self.end_column > self.column:
                width = self.end_column - self.column
            else:
                width = max(1, len(src) - self.column + 1)
            width = max(1, width)
            caret = " " * (self.column - 1) + "^" * width
            if self.label:
                caret += " " + self.label
            out += [f"{gutter} |", f"{self.line} | {src}", f"{gutter} | {caret}", f"{gutter} |"]
        for note in self.notes:
            out.append(f"   = note: {note}")
        if self.hint:
            out.append(f"   = help: {self.hint}")
        return "\n".join(out)

    def with_source(self, source: str | None, filename: str | None) -> Diagnostic:
        """A copy with the source line and file name filled in."""
        src_line = self.source_line
        if self.filename is not None and filename is not None and self.filename != filename:
            return self  # about another file (an included one): its own source fills it in
        if src_line is None and source is not None and self.line > 0:
            lines = source.splitlines()
            src_line = lines[self.line - 1] if self.line <= len(lines) else ""
        return replace(self, source_line=src_line, filename=self.filename or filename)


def render(diagnostics: Iterable[Diagnostic]) -> str:
    """Render diagnostics one after another, separated by blank lines."""
    return "\n\n".join(d.render() for d in diagnostics)


class SpecError(ValueError):
    """A spec that cannot be parsed, checked or compiled.

    ``str(err)`` renders every diagnostic with its location, source line and caret;
    ``err.diagnostics`` gives them as data.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(render(self.diagnostics))

    def __reduce__(self) -> tuple[type, tuple[list[Diagnostic]]]:
        return (type(self), (self.diagnostics,))


class SpecWarning(UserWarning):
    """A rule that matches nothing or is shadowed by earlier rules."""


def _osa_distance(a: str, b: str) -> int:
    """Edit distance counting an adjacent transposition as one edit."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A ``did you mean `x`?`` hint, or ``None`` when nothing is close.

    >>> did_you_mean("adma", ["adam", "adamax", "sgd"])
    'did you mean `adam`?'
    """
    pool = sorted(set(candidates))
    if not pool:
        return None
    scored = sorted(
        pool,
        key=lambda c: (
            _osa_distance(name, c),
            -difflib.SequenceMatcher(None, name, c).ratio(),
        ),
    )
    best = scored[0]
    if _osa_distance(name, best) <= max(1, len(name) // 3):
        return f"did you mean `{best}`?"
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=0.75)
    return f"did you mean `{matches[0]}`?" if matches else None
