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
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "MAX_SOURCE_WIDTH",
    "MAX_SUGGEST_CANDIDATES",
    "MAX_SUGGEST_LENGTH",
    "MAX_TEXT",
    "Diagnostic",
    "Span",
    "SpecError",
    "SpecWarning",
    "clip",
    "did_you_mean",
    "printable",
    "render",
    "source_lines",
]

#: A source line longer than this is shown as a window of this many characters
#: around the carets, so that a diagnostic never echoes megabytes of source.
MAX_SOURCE_WIDTH = 160
#: Messages, hints and notes are cut to this many characters when rendered.
MAX_TEXT = 1000


def source_lines(text: str) -> list[str]:
    r"""The lines of a spec as the parser counts them: split at ``\n`` only.

    ``str.splitlines`` also splits at form feeds, ``\x1c``-``\x1e``, U+0085, U+2028 and
    U+2029, which the grammar treats as ordinary characters; counting with it would put
    a diagnostic on the wrong line. A ``\r`` before ``\n`` is dropped.

    >>> source_lines("a # \u2028 b\r\nc")
    ['a # \u2028 b', 'c']
    """
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    code = ord(c)
    if c in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[c]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


#: Unicode categories shown as escapes: controls, format characters (bidirectional
#: overrides included), surrogates, and line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in _UNSAFE_CATEGORIES


def printable(text: str) -> str:
    r"""``text`` safe to print on a terminal: control and format characters (such as
    bidirectional overrides), line separators and lone surrogates are shown as escapes
    (``\x1b``, ``\n``, ``\u202e``, ``\u2028``, ``\ud800``).

    Keys and file names come from the user's files; printed as they are, an ESC sequence
    would reach the terminal, a newline would split a one-line format, and a lone
    surrogate would crash the write.

    >>> print(printable("a\x1b[31mb\nc\ud800"))
    a\x1b[31mb\nc\ud800
    """
    if text.isprintable():
        return text
    return "".join(_escape_char(c) if _unsafe(c) else c for c in text)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out.

    >>> clip("x" * 30, 10)
    'xxxxxxxxxx... (20 more characters)'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _shown(text: str) -> str:
    return printable(clip(text))


def _source_window(src: str, column: int, width: int) -> tuple[str, int, int]:
    """The part of a source line to show, and the caret's column and width in it.

    Tabs become spaces and unprintable characters escapes, so the carets stay under
    what they mark; a line longer than :data:`MAX_SOURCE_WIDTH` is cut to a window.
    """
    start = 0
    if len(src) > MAX_SOURCE_WIDTH:
        start = max(0, min(column - 1 - MAX_SOURCE_WIDTH // 3, len(src) - MAX_SOURCE_WIDTH))
    end = start + MAX_SOURCE_WIDTH
    lo = min(max(column - 1, start), end)
    hi = min(lo + max(width, 0), end)

    def show(t: str) -> str:
        return printable(t.replace("\t", " "))

    before, marked, after = show(src[start:lo]), show(src[lo:hi]), show(src[hi:end])
    head = "..." if start else ""
    tail = "..." if end < len(src) else ""
    return head + before + marked + after + tail, len(head) + len(before) + 1, max(1, len(marked))


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
        """The diagnostic as ruff would print it: header, location, source, carets.

        Text from the user's files is shown safely: long source lines as a window
        around the carets, long messages cut, control characters escaped.
        """
        out = [
            f"{self.severity}[{self.code}]: {_shown(self.message)}",
            f" --> {_shown(self.location)}",
        ]
        if self.line > 0 and self.source_line is not None:
            gutter = " " * len(str(self.line))
            src = self.source_line
            if self.end_line == self.line and self.end_column > self.column:
                width = self.end_column - self.column
            else:
                width = max(1, len(src) - self.column + 1)
            shown, col, width = _source_window(src, self.column, width)
            caret = " " * (col - 1) + "^" * width
            if self.label:
                caret += " " + _shown(self.label)
            out += [f"{gutter} |", f"{self.line} | {shown}", f"{gutter} | {caret}", f"{gutter} |"]
        for note in self.notes:
            out.append(f"   = note: {_shown(note)}")
        if self.hint:
            out.append(f"   = help: {_shown(self.hint)}")
        return "\n".join(out)

    def with_source(self, source: str | None, filename: str | None) -> Diagnostic:
        """A copy with the source line and file name filled in."""
        src_line = self.source_line
        if self.filename is not None and filename is not None and self.filename != filename:
            return self  # about another file (an included one): its own source fills it in
        if src_line is None and source is not None and self.line > 0:
            src_line = _line_of(source, self.line)
        return replace(self, source_line=src_line, filename=self.filename or filename)


def _line_of(source: str, line: int) -> str:
    """Line ``line`` (1-based) of ``source``, without splitting all of it."""
    start = 0
    for _ in range(line - 1):
        start = source.find("\n", start) + 1
        if start == 0:
            return ""
    end = source.find("\n", start)
    text = source[start:] if end < 0 else source[start:end]
    return text[:-1] if text.endswith("\r") else text


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


#: Names longer than this get a suggestion only for a difference in case: edit
#: distance costs length squared, and a name this long is pasted, not mistyped.
MAX_SUGGEST_LENGTH = 64
#: At most this many candidates (the nearest in length) are compared with a name.
MAX_SUGGEST_CANDIDATES = 200


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A ``did you mean `x`?`` hint, or ``None`` when nothing is close.

    The work is bounded: candidates whose length alone rules them out are skipped,
    at most :data:`MAX_SUGGEST_CANDIDATES` are compared, and a name longer than
    :data:`MAX_SUGGEST_LENGTH` is only matched ignoring case.

    >>> did_you_mean("adma", ["adam", "adamax", "sgd"])
    'did you mean `adam`?'
    """
    pool = sorted(set(candidates))
    if not pool:
        return None
    if len(name) > MAX_SUGGEST_LENGTH:
        folded = name.casefold()
        same = [c for c in pool if len(c) == len(name) and c.casefold() == folded]
        return f"did you mean `{same[0]}`?" if same else None
    limit = max(1, len(name) // 3)
    near = [c for c in pool if abs(len(c) - len(name)) <= max(limit, len(name) // 2)]
    near = sorted(near, key=lambda c: abs(len(c) - len(name)))[:MAX_SUGGEST_CANDIDATES]
    near = [c for c in near if len(c) <= 2 * MAX_SUGGEST_LENGTH]
    if not near:
        return None
    scored = sorted(
        near,
        key=lambda c: (
            _osa_distance(name, c),
            -difflib.SequenceMatcher(None, name, c).ratio(),
            c,
        ),
    )
    best = scored[0]
    if _osa_distance(name, best) <= limit:
        return f"did you mean `{best}`?"
    matches = difflib.get_close_matches(name, near, n=1, cutoff=0.75)
    return f"did you mean `{matches[0]}`?" if matches else None
