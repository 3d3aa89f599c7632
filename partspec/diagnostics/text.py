"""Showing text from users' files safely: lines as the parser counts them, escapes, cuts.

Keys, file names and source lines come from files partspec reads; every renderer
passes them through :func:`printable` (and :func:`clip`), so an escape sequence never
reaches a terminal, a newline never splits a one-line format and a lone surrogate never
crashes a write.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "MAX_SOURCE_WIDTH",
    "MAX_TEXT",
    "clip",
    "line_of",
    "printable",
    "shown",
    "source_lines",
    "source_window",
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


def shown(text: str) -> str:
    """``text`` cut and escaped: user text on one line."""
    return printable(clip(text))


def source_window(src: str, column: int, width: int) -> tuple[str, int, int]:
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


def line_of(source: str, line: int) -> str:
    """Line ``line`` (1-based) of ``source``, without splitting all of it."""
    start = 0
    for _ in range(line - 1):
        start = source.find("\n", start) + 1
        if start == 0:
            return ""
    end = source.find("\n", start)
    text = source[start:] if end < 0 else source[start:end]
    return text[:-1] if text.endswith("\r") else text
