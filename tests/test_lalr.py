"""The lean LALR driver builds Lark's tree, positions and comments, or falls back.

``partspec.language.lalr`` re-implements Lark's parse loop over Lark's own tables and
lexers. What a user relies on: for every text Lark parses, the driver returns the very
same tree (node kinds, tokens, every token's position, every node's span) and collects
the same comments; for every text Lark rejects, the driver falls back, so the error
reported is Lark's. Checked on generated specs, on mutations of them, and on every
spec shipped in ``examples/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

import partspec
from partspec.language import grammar, parser
from partspec.language.formatter import format_spec
from partspec.language.lalr import Fallback
from tests import strategies as S

ROOT = Path(__file__).resolve().parent.parent


def _pos(tok: Any) -> Any:
    if tok is None:
        return None
    return (tok.start_pos, tok.line, tok.column, tok.end_pos, tok.end_line, tok.end_column)


def shape(node: Any) -> Any:
    """Everything of a parse tree the converter can read, as plain tuples: the driver
    records a node's span as its first and last tokens, Lark in ``meta``."""
    if isinstance(node, Token):
        return ("token", node.type, str(node), _pos(node))
    if isinstance(node, Tree):
        span = parser._meta_span(node)
        return ("tree", str(node.data), span, tuple(shape(c) for c in node.children))
    return ("value", node)


def error(exc: Exception) -> Any:
    """What the diagnostics read of a parse error, as plain tuples."""
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        return ("UnexpectedToken", tok.type, str(tok), _pos(tok), sorted(exc.expected))
    if isinstance(exc, UnexpectedCharacters):
        where = (exc.pos_in_stream, exc.line, exc.column)
        return ("UnexpectedCharacters", where, sorted(exc.allowed or ()))
    return (type(exc).__name__,)


def both(text: str, start: str = "start") -> tuple[Any, Any]:
    """(Lark's outcome, the driver's outcome): a tree's shape and its comments, or the
    error."""
    with grammar.collect_comments() as comments:
        try:
            lark_out: Any = (shape(grammar.lark_parser().parse(text, start=start)), comments[:])
        except (UnexpectedInput, grammar.NestingError) as exc:
            lark_out = ("error", error(exc))
    lean = grammar.driver()
    assert lean is not None, "the driver is built for the pinned lark"
    with grammar.collect_comments() as comments:
        try:
            lean_out: Any = (shape(lean.parse(text, start)), comments[:])
        except UnexpectedInput as exc:
            lean_out = ("error", error(exc))
        except Fallback:
            lean_out = ("fallback",)
    return lark_out, lean_out


def assert_same(text: str, start: str = "start") -> None:
    """The same tree, or the same error; only brackets nested too deep fall back."""
    lark_out, lean_out = both(text, start)
    if lark_out == ("error", ("NestingError",)):
        assert lean_out == ("fallback",), text
    else:
        assert lean_out == lark_out, text


@given(S.syntax_specs())
def test_generated_specs_parse_to_larks_tree(spec: partspec.ast.Spec) -> None:
    text = format_spec(spec)
    lark_out, lean_out = both(text)
    assert lark_out[0] != "error", text  # the formatter writes what parses
    assert lean_out == lark_out


@given(S.commented_specs())
def test_comments_and_multiline_statements_match(text: str) -> None:
    lark_out, lean_out = both(text)
    assert lark_out[0] != "error", text
    assert len(lark_out[1]) == text.count("# c")  # each comment the strategy wrote
    assert lean_out == lark_out


# Characters that change how the text lexes: brackets, separators, quotes, comments,
# operators, escapes, non-ASCII.
_EDIT_CHARS = "()[]{}<>,;\n\r\t #\"'\\/*?!-=+.:0123456789aeE_ é"


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A generated spec's text with a few random edits: most no longer parse."""
    text = draw(st.one_of(S.syntax_specs().map(format_spec), S.commented_specs()))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if kind == "insert":
            text = text[:i] + draw(st.text(_EDIT_CHARS, min_size=1, max_size=3)) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 4)) :]
        else:
            j = draw(st.integers(i, min(len(text), i + 12)))
            text = text[:j] + text[i:j] + text[j:]
    return text


@given(mutated())
def test_mutated_specs_parse_alike_or_fail_alike(text: str) -> None:
    """Wherever Lark raises, the driver raises the same error at the same token, with the
    same expected terminals; wherever Lark parses, the driver builds the same tree."""
    assert_same(text)


@given(mutated())
def test_syntax_diagnostics_are_the_same_with_and_without_the_driver(text: str) -> None:
    with patch.object(parser, "driver", lambda: None):
        try:
            plain: Any = parser.parse_syntax(text)
        except partspec.SpecError as err:
            plain = err.diagnostics
    try:
        lean: Any = parser.parse_syntax(text)
    except partspec.SpecError as err:
        lean = err.diagnostics
    assert lean == plain


@given(st.text(_EDIT_CHARS, max_size=30))
def test_selectors_parse_alike_or_fail_alike(text: str) -> None:
    assert_same(text, "selector")


# Pieces of the language, to string together at random: mostly errors, now and then a
# statement no generator writes.
_PIECES = (
    "a", "b_1", "/", "**", "*", "?", "[ab]", "{x,y}", "{0..3}", "<i>", "<j:int>", "->",
    "adam(1e-3)", "sgd", "(", ")", ",", "1", "0.5", "1e-3", "frozen", "until", "then",
    "where", "except", "as", "let", "param", "global", "include", "with", "=", "lr",
    "[", "]", "\n", ";", "# c\n", '"s p"', "and", "or", "not", "<", "<=", "==", "+",
    "-", "ndim", "shape[0]", "true", "none", "(?i)", "count(i)", "\\", " ",
)  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=14), st.sampled_from(["", " "]))
def test_random_token_strings_parse_alike_or_fail_alike(pieces: list[str], sep: str) -> None:
    assert_same(sep.join(pieces))
    assert_same(sep.join(pieces), "selector")


SPECS = sorted((ROOT / "examples").rglob("*.pspec"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_specs_parse_to_larks_tree(path: Path) -> None:
    lark_out, lean_out = both(path.read_text(encoding="utf-8"))
    assert lark_out[0] != "error"
    assert lean_out == lark_out


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "# only a comment",
        "a/** -> adam(1e-3)",  # no final newline: $END borrows the last token's position
        "a -> sgd(0.1); b -> frozen\n",
        "a -> chain(\n  clip(1.0),\n  sgd(0.1)\n)\n",  # newlines inside brackets vanish
        "a -> sgd(0.1;)\n",  # a `;` inside brackets does not vanish: an error
        "a -> sgd(0.1)\n)\nb -> frozen\n",  # a stray `)` leaves the depth at 0
        'let s = "x\\ny"\n"a b"/** -> frozen\n',
    ],
)
def test_edge_texts(text: str) -> None:
    assert_same(text)


def test_nesting_too_deep_falls_back_to_larks_error() -> None:
    text = "a -> sgd(" + "(" * 150 + "1" + ")" * 150 + ")\n"
    assert both(text) == (("error", ("NestingError",)), ("fallback",))
    with pytest.raises(partspec.SpecError) as info:
        partspec.parse(text)
    assert info.value.diagnostics[0].code == "E102"


def test_a_fallback_drops_the_comments_the_driver_collected(monkeypatch: Any) -> None:
    """Lark lexes the text again after a fallback; its comments must not be doubled."""

    class Halfway:
        def parse(self, text: str, start: str) -> Any:
            sink = grammar.comments_sink()
            assert sink is not None
            sink.append(Token("COMMENT", "# seen by the driver", 0, 1, 1))
            raise Fallback

    monkeypatch.setattr(parser, "driver", lambda: Halfway())
    spec = parser.parse_syntax("# one\na -> frozen  # two\n")
    assert [c.text for c in spec.comments] == ["# one", "# two"]


@pytest.mark.parametrize(
    "text",
    ["a/** -> adam(1e-3\nb -> frozen\n", "a/** -> adam(1e-3))\n", "a/** -> ~\n", "a/** ->\n"],
)
def test_errors_are_larks(text: str, monkeypatch: Any) -> None:
    """The diagnostics of a syntax error are the same with and without the driver."""
    with pytest.raises(partspec.SpecError) as lean:
        parser.parse_syntax(text)
    monkeypatch.setattr(parser, "driver", lambda: None)
    with pytest.raises(partspec.SpecError) as plain:
        parser.parse_syntax(text)
    assert lean.value.diagnostics == plain.value.diagnostics
    assert str(lean.value) == str(plain.value)
