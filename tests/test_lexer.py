"""The Pygments lexer (alias ``pspec``): every spec the project ships and every
```` ```pspec ```` block of the docs lexes with no error token, losslessly, and tokens
mean what the grammar says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given

import partspec
from partspec.language import ast
from partspec.language.formatter import format_spec
from tests import strategies as S

pygments = pytest.importorskip("pygments", reason="pygments (the test extra)")
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import Error, Token  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in ROOT.glob("examples/**/*.pspec"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```pspec\n(.*?)```", re.S)


def tokens(text: str) -> list[tuple[object, str]]:
    return list(get_lexer_by_name("pspec").get_tokens(text))


def no_errors(text: str, where: str) -> None:
    toks = tokens(text)
    bad = [(i, v) for i, (t, v) in enumerate(toks) if t in Error]
    assert not bad, f"{where}: error tokens {bad[:5]}"
    assert "".join(v for _, v in toks).rstrip("\n") == text.rstrip("\n"), where


def test_the_entry_point_finds_the_lexer_by_alias_and_file_name() -> None:
    assert get_lexer_by_name("pspec").name == "partspec"
    assert get_lexer_for_filename("vit.pspec").name == "partspec"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_spec_lexes_without_errors(path: Path) -> None:
    no_errors(path.read_text(encoding="utf-8"), str(path))


def test_every_pspec_block_of_the_docs_that_parses_lexes_without_errors() -> None:
    n = 0
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            try:
                partspec.parse(m.group(1))
            except partspec.SpecError as err:
                if any(d.code.startswith("E1") for d in err.diagnostics):
                    continue  # a block that shows a syntax error
            no_errors(m.group(1), f"{page.name}:{line}")
            n += 1
    assert n >= 24  # the issue counted 24 blocks rendered as plain text


@given(S.syntax_specs())
def test_any_formatted_spec_lexes_without_errors(spec: ast.Spec) -> None:
    no_errors(format_spec(spec), "generated")


def kinds(text: str) -> dict[str, str]:
    """Each non-blank token's text -> the last part of its type (Token.Name.Builtin: Builtin)."""
    return {v: str(t).split(".")[-1] for t, v in tokens(text) if v.strip()}


def test_keywords_are_keywords_only_where_the_grammar_expects_them() -> None:
    k = kinds("frozen/** except **/as/** -> frozen until 10 then sgd(0.1) as frozen_head")
    assert k["frozen/"[:6]] == "Keyword"  # the action (the path's `frozen` came first)
    first = tokens("frozen/** -> sgd(1)")[0]
    assert (first[1], str(first[0])) == ("frozen", "Token.Name.Namespace")
    assert k["except"] == "Keyword" and k["until"] == "Keyword" and k["then"] == "Keyword"
    assert k["as"] == "Keyword" and k["frozen_head"] == "Label"
    k = kinds("let @norms = **/ln_*/**, (?i)**/layernorm/**\n@norms where ndim > 1 -> frozen")
    assert (k["let"], k["@norms"], k["(?i)"], k["where"], k["ndim"]) == (
        "Declaration",
        "Decorator",
        "Pseudo",
        "Keyword",
        "Name",
    )
    k = kinds('blocks/<i>/** with lr * 0.75 ** (11 - i), weight_decay = 0\ninclude "b.pspec"')
    assert (k["<"], k["i"], k["with"], k["0.75"], k["11"], k['"b.pspec"']) == (
        "Punctuation",
        "Name",
        "Keyword",
        "Float",
        "Integer",
        "Double",
    )
    k = kinds("param n = 3\nx/** -> chain(add_decayed_weights(max(1, n)), my_opt(1e-3))")
    assert (k["chain"], k["add_decayed_weights"], k["max"], k["my_opt"]) == (
        "Builtin",
        "Builtin",
        "Builtin",
        "Function",
    )


def test_a_newline_inside_parentheses_continues_the_statement() -> None:
    text = (
        "head/** -> adamw(\n    1e-3,  # the rate\n    weight_decay=0.05,\n)\ntail/** -> frozen\n"
    )
    no_errors(text, "multi-line call")
    k = kinds(text)
    assert (k["weight_decay"], k["tail"], k["# the rate"]) == ("Name", "Namespace", "Single")
    assert Token.Error not in {t for t, _ in tokens(text)}
