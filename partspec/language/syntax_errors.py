"""What a syntax error means: Lark's errors turned into diagnostics a newcomer can act on.

Each kind of error (an unexpected character, an unexpected token) goes through a list
of rules, each recognising one usual mistake (an unterminated string, attribute
access, a rule with no ``->``, a keyword used as a path segment...) and giving its
message and hint; the first that applies wins, and otherwise the message says what was
found and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from partspec.diagnostics import Diagnostic, Span, clip, source_lines

__all__ = ["syntax_diagnostic"]

_KEYWORD_SEGMENT = re.compile(
    r"/(where|except|as|until|then)(?![A-Za-z0-9_])|^\s*(include|global|let|param)/"
)


def _tok_span(tok: Token) -> Span:
    line = tok.line or 1
    col = tok.column or 1
    end_line = tok.end_line or line
    end_col = tok.end_column or col + max(1, len(str(tok)))
    return Span(line, col, end_line, end_col)


_PATTERN_START = {
    "LITERAL",
    "STRING",
    "ESCAPED",
    "STAR",
    "GLOBSTAR",
    "QMARK",
    "CLASS",
    "SLASH",
    "LBRACE",
    "LANGLE",
}
_EXPR_START = {
    "NUMBER",
    "STRING",
    "NAME",
    "TRUE",
    "FALSE",
    "NONE",
    "MINUS",
    "PLUS",
    "_LPAR",
    "_LSQB",
    "_NOT",
}
_OPERATORS = {
    "PLUS",
    "MINUS",
    "STAR",
    "SLASH",
    "GLOBSTAR",
    "EQEQ",
    "NOTEQ",
    "LE",
    "GE",
    "LANGLE",
    "RANGLE",
    "IN",
    "_AND",
    "_OR",
    "_LSQB",
}
_DESCR = {
    "_WHERE": "`where`",
    "_UNTIL": "`until`",
    "_THEN": "`then`",
    "_INCLUDE": "`include`",
    "_GLOBAL": "`global`",
    "_AND": "`and`",
    "_OR": "`or`",
    "_NOT": "`not`",
    "IN": "`in`",
    "EQEQ": "`==`",
    "NOTEQ": "`!=`",
    "LE": "`<=`",
    "GE": "`>=`",
    "_SEP": "a newline or `;`",
    "_ARROW": "`->`",
    "_EXCEPT": "`except`",
    "_WITH": "`with`",
    "PATTERN_REF": "a named pattern (`@name`)",
    "NOCASE": "`(?i)`",
    "_AS": "`as`",
    "_LET": "`let`",
    "_PARAM": "`param`",
    "FROZEN": "`frozen`",
    "TRUE": "`true`",
    "FALSE": "`false`",
    "NONE": "`none`",
    "LITERAL": "a path segment",
    "STRING": "a string",
    "ESCAPED": "an escaped character",
    "CLASS": "a character class",
    "GLOBSTAR": "`**`",
    "STAR": "`*`",
    "QMARK": "`?`",
    "SLASH": "`/`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "COMMA": "`,`",
    "LANGLE": "`<`",
    "RANGLE": "`>`",
    "NAME": "a name",
    "NUMBER": "a number",
    "PLUS": "`+`",
    "MINUS": "`-`",
    "_EQUAL": "`=`",
    "_LPAR": "`(`",
    "_RPAR": "`)`",
    "_LSQB": "`[`",
    "_RSQB": "`]`",
    "$END": "the end of the spec",
}


def _describe_expected(expected: set[str]) -> str:
    names = set(expected)
    parts: list[str] = []
    if "LITERAL" in names and len(names & _PATTERN_START) >= 4:
        names -= _PATTERN_START
        parts.append("a pattern")
    if len(names & _EXPR_START) >= 4:
        names -= _EXPR_START
        parts.append("an expression")
    if len(names & _OPERATORS) >= 6:
        names -= _OPERATORS
        parts.append("an operator")
    # The end of a statement first: it is what a stray token after a complete rule needs.
    ends = [n for n in ("_SEP", "$END") if n in names]
    parts = [_DESCR[n] for n in ends] + parts
    parts += sorted(_DESCR.get(n, f"`{n}`") for n in names - set(ends))
    if len(parts) > 8:
        parts = [*parts[:8], "..."]
    if len(parts) == 1:
        return parts[0]
    return "one of " + ", ".join(parts)


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of the spec"
    if tok.type == "_SEP":
        return "`;`" if tok.value == ";" else "end of line"
    return f"`{clip(str(tok.value), 40)}`"


def syntax_diagnostic(exc: UnexpectedInput, text: str) -> Diagnostic:
    """The E100 diagnostic of a Lark error: the position, what was expected, a hint."""
    lines = source_lines(text)
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_character(exc, text, lines)
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(exc, lines)
    if isinstance(exc, UnexpectedEOF):  # pragma: no cover - LALR reports UnexpectedToken($END)
        return Diagnostic.at("E100", "unexpected end of the spec", _end_span(lines))
    return Diagnostic("E100", "error", f"syntax error: {exc}")  # pragma: no cover


# -- unexpected characters: (message, hint) rules, the first that applies wins

_ATTRIBUTE_HINT = "call optax functions by their optax name: `adam(...)`, not `optax.adam(...)`"


@dataclass(frozen=True)
class _Char:
    char: str
    before: str  # the text of the line before it
    allowed: frozenset[str]

    @property
    def in_pattern(self) -> bool:
        return bool(self.allowed & _PATTERN_START)


def _char_rules(c: _Char) -> tuple[str | None, str | None] | None:
    """``(message or None for the default, hint)`` for an unexpected character."""
    if c.char == '"':
        return "unterminated string", 'close the string with `"` on the same line'
    if c.char == "[" and "CLASS" in c.allowed:
        return (
            "unterminated or empty character class",
            'write a class as `[abc]`, `[a-z]` or `[!abc]`; quote a literal `[` as `"["`',
        )
    if c.char == "." and re.search(r"[A-Za-z_][A-Za-z0-9_]*$", c.before):
        return "attribute access is not allowed in a spec", _ATTRIBUTE_HINT
    if c.char == "\\":
        return "a `\\` must be followed by the character it escapes", None
    if c.char in "=(" and c.in_pattern:
        return None, "a rule is `PATTERN -> ACTION`; bind a name with `let NAME = VALUE`"
    if c.in_pattern and not c.char.isspace():
        return None, 'quote keys that contain special characters: `"my key"/**`'
    return None


def _unexpected_character(exc: UnexpectedCharacters, text: str, lines: list[str]) -> Diagnostic:
    line, col = exc.line, exc.column
    pos = exc.pos_in_stream or 0
    char = text[pos] if pos < len(text) else ""
    before = lines[line - 1][: col - 1] if line <= len(lines) else ""
    allowed = frozenset(exc.allowed or ())
    message, hint = _char_rules(_Char(char, before, allowed)) or (None, None)
    message = message or f"unexpected character `{char}`"
    if allowed and char != '"':
        message += f"; expected {_describe_expected(set(allowed))}"
    return Diagnostic("E100", "error", message, line, col, line, col + 1, hint=hint)


# -- unexpected tokens: the same, with the token and the text before it on its line

_CLOSERS = frozenset({"_LPAR", "_RPAR", "_SEP", "$END", "COMMA", "_AS"})


@dataclass(frozen=True)
class _Tok:
    tok: Token
    expected: frozenset[str]
    line: str  # the token's whole line
    before: str  # the text of that line before the token

    @property
    def ends(self) -> bool:
        return self.tok.type in ("_SEP", "$END")


def _token_rules(t: _Tok) -> tuple[str | None, str | None] | None:
    """``(message or None for the default, hint)`` for an unexpected token."""
    tok, expected = t.tok, t.expected
    if str(tok.value).startswith(".") and expected & _CLOSERS:
        return "attribute access is not allowed in a spec", _ATTRIBUTE_HINT
    if "_ARROW" in expected and t.ends:
        return (
            "this rule has no `->` and no action",
            "a rule is `PATTERN -> ACTION`, for example `head/** -> adam(1e-3)`",
        )
    after = t.line[len(t.before) :]
    if after.startswith("=>") and "_ARROW" in expected:
        return "`=>` is not an arrow", "a rule is `PATTERN -> ACTION`: write `->`"
    slashes = t.line.find("//")
    if 0 <= slashes <= len(t.before) <= slashes + 2 and "->" in t.line[:slashes]:
        return "`//` does not start a comment", "comments start with `#`: `# a comment`"
    if tok.type == "_LPAR" and re.search(r"\bfrozen\s*$", t.before):
        return (
            "`frozen` takes no arguments",
            "write `frozen`, or `frozen until N then OPTIMIZER` for parameters that start "
            "training at update N",
        )
    if "_ARROW" in expected and "->" not in t.line and not re.match(r"\s*(let|param)\b", t.line):
        return (
            "this rule has no `->` between its pattern and its action",
            "a rule is `PATTERN -> ACTION`, for example `head/** -> adam(1e-3)`",
        )
    if re.fullmatch(r"\s*(let|param)", t.before) and tok.type in _PATTERN_START:
        word = "param" if t.line.split()[0].startswith("param") else "let"
        return None, (
            f"`{word}` starts a definition; to match a key named {word}, quote it: "
            f'`"{word}"{tok.value}...`'
        )
    if expected & _PATTERN_START and re.search(r"except\s*$", t.before):
        return (
            "`except` needs patterns after it",
            'to match a key named except, quote it: `"except"`',
        )
    if tok.type in ("_EXCEPT", "_AS", "_LET", "_PARAM") and expected & _PATTERN_START:
        return None, (
            f'`{tok.value}` is a keyword; quote it to match a key of that name: `"{tok.value}"`'
        )
    if tok.type == "NAME" and tok.value in ("True", "False", "None"):
        return None, f"write `{tok.value.lower()}`"
    if tok.type == "NOCASE":
        return (
            "`(?i)` goes before the whole pattern",
            "write `(?i)encoder/layernorm/**` for a pattern whose letters match either case",
        )
    if "_RPAR" in expected and t.ends:
        return "unclosed `(`", "close every `(` with `)`"
    return None


def _keyword_segment_hint(line: str) -> str | None:
    """A keyword used as a path segment (`x/where`, `include/**`) ends the pattern."""
    m = _KEYWORD_SEGMENT.search(line)
    if m is None:
        return None
    word = m.group(1) or m.group(2)
    return f'`{word}` is a keyword; to match a key named {word}, quote it: `"{word}"`'


def _unexpected_token(exc: UnexpectedToken, lines: list[str]) -> Diagnostic:
    tok = exc.token
    expected = frozenset(exc.expected or ())
    span = _tok_span(tok) if tok.type != "$END" else _end_span(lines)
    if tok.type == "_SEP" and tok.value != ";":
        span = Span(span.line, span.column, span.line, span.column + 1)
    line = lines[(tok.line or 1) - 1] if (tok.line or 0) >= 1 else ""
    before = line[: (tok.column or 1) - 1]
    message, hint = _token_rules(_Tok(tok, expected, line, before)) or (None, None)
    if message is None:
        message = f"unexpected {_describe_token(tok)}; expected {_describe_expected(set(expected))}"
    elif message.startswith("attribute access"):
        span = Span(span.line, span.column, span.line, span.column + 1)
    if hint is None and (tok.line or 0) >= 1:
        hint = _keyword_segment_hint(line)
    return Diagnostic.at("E100", message, span, hint=hint)


def _end_span(lines: list[str]) -> Span:
    if len(lines) > 1 and not lines[-1]:
        lines = lines[:-1]  # the end of a text that ends with a newline: its last line
    line = max(1, len(lines))
    col = len(lines[-1]) + 1 if lines else 1
    return Span(line, col, line, col + 1)


# ---------------------------------------------------------------- tree -> AST
