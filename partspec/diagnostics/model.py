"""Diagnostics as data: a severity, a code, a message, a primary span, secondary notes.

Modelled on ruff's: every problem partspec finds is a :class:`Diagnostic`, with a
primary location (where the carets go) and optional secondary :class:`Annotation`\\ s
(the earlier rule that shadows this one, the other side of a label conflict), a hint and
notes. Renderers (:mod:`partspec.diagnostics.render`) turn them into text, one per
output format; :meth:`Diagnostic.render` is the full one.

>>> d = Diagnostic.at("E401", "unknown optimizer `adma`", Span(1, 12, 1, 16))
>>> d.severity is Severity.ERROR, d.severity == "error", d.location
(True, True, '<string>:1:12')
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from partspec.diagnostics.render import full
from partspec.diagnostics.text import line_of

__all__ = ["Annotation", "Diagnostic", "Severity", "Span"]


class Severity(str, enum.Enum):
    """How bad a diagnostic is. A ``str``: ``Severity.ERROR == "error"``."""

    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


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
class Annotation:
    """A secondary location of a diagnostic, with a short label.

    For example the earlier rule that takes every leaf of a shadowed rule, or the first
    use of a label that another action reuses. ``file`` is ``None`` for the diagnostic's
    own file; ``source_line`` is filled in with the diagnostic's source.
    """

    line: int
    column: int
    end_line: int
    end_column: int
    label: str
    file: str | None = None
    source_line: str | None = None

    @classmethod
    def at(cls, span: Span, label: str) -> Annotation:
        """An annotation covering ``span``."""
        return cls(span.line, span.column, span.end_line, span.end_column, label, span.file)


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec.

    Attributes:
      code: a stable identifier such as ``E401`` (errors) or ``W601`` (warnings); the
        table in ``docs/language.md`` says what each means.
      severity: :class:`Severity` (a ``str``, so ``"error"`` compares equal).
      message: one sentence naming the bad value.
      line, column: 1-based start of the primary span, or 0 when the problem has no
        position (for example a parameter tree that no rule covers).
      end_line, end_column: end of the primary span (column exclusive).
      filename: the spec's file name, or ``None`` for a string spec.
      hint: how to fix it, when partspec knows.
      label: a short note printed under the carets.
      source_line: the text of ``line`` (without its newline), when known.
      notes: extra lines (for example the uncovered paths).
      annotations: secondary locations, each with its label.
    """

    code: str
    severity: Severity | str
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
    annotations: tuple[Annotation, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.severity, Severity):
            object.__setattr__(self, "severity", Severity(self.severity))

    @classmethod
    def at(
        cls,
        code: str,
        message: str,
        span: Span,
        *,
        severity: Severity | str = Severity.ERROR,
        hint: str | None = None,
        label: str | None = None,
        annotations: tuple[Annotation, ...] = (),
    ) -> Diagnostic:
        """A diagnostic whose primary span is ``span``."""
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
            annotations=annotations,
        )

    @property
    def is_error(self) -> bool:
        """Whether the severity is :attr:`Severity.ERROR`."""
        return self.severity is Severity.ERROR

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
        """The diagnostic as ruff prints it: header, location, source, carets, notes."""
        return full(self)

    def with_source(self, source: str | None, filename: str | None) -> Diagnostic:
        """A copy with the source lines and the file name filled in from ``source``."""
        if self.filename is not None and filename is not None and self.filename != filename:
            return self  # about another file (an included one): its own source fills it in
        src_line = self.source_line
        if src_line is None and source is not None and self.line > 0:
            src_line = line_of(source, self.line)
        annotations = tuple(
            replace(a, source_line=line_of(source, a.line))
            if a.source_line is None and source is not None and a.line > 0 and a.file is None
            else a
            for a in self.annotations
        )
        return replace(
            self,
            source_line=src_line,
            filename=self.filename or filename,
            annotations=annotations,
        )
