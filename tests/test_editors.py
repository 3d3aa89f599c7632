"""The VS Code extension folder (editors/vscode): a valid extension manifest, and a
TextMate grammar that, run by VS Code's own engine (vscode-textmate with Oniguruma,
tests/js), gives every character of every example spec and docs block a scope, the same
kind of scope the Pygments lexer gives it."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import partspec
from partspec import __version__
from partspec.language.formatter import format_spec
from tests import strategies as S
from tests.js_tools import JS, node, node_module

pytest.importorskip("pygments", reason="pygments (the test extra)")
from pygments.lexers import get_lexer_by_name

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = VSCODE / "syntaxes" / "pspec.tmLanguage.json"


def _specs() -> list[tuple[str, str]]:
    """(where, text) of every example spec and every docs block that parses."""
    out = [
        (str(p.relative_to(ROOT)), p.read_text("utf-8")) for p in ROOT.glob("examples/**/*.pspec")
    ]
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text("utf-8")
        for m in re.finditer(r"```pspec\n(.*?)```", text, re.S):
            try:
                partspec.parse(m.group(1))
            except partspec.SpecError as err:
                if any(d.code.startswith("E1") for d in err.diagnostics):
                    continue
            out.append((f"{page.name}:{text[: m.start()].count(chr(10)) + 1}", m.group(1)))
    return sorted(out)


SPECS = _specs()


def test_the_manifest_is_a_loadable_extension() -> None:
    pkg = json.loads((VSCODE / "package.json").read_text("utf-8"))
    assert pkg["version"] == __version__
    for key in ("name", "publisher", "displayName", "description", "license", "main"):
        assert isinstance(pkg[key], str) and pkg[key], key
    assert re.fullmatch(r"\^\d+\.\d+\.\d+", pkg["engines"]["vscode"])
    assert (VSCODE / pkg["main"]).is_file()
    (lang,) = pkg["contributes"]["languages"]
    assert lang["id"] == "pspec" and ".pspec" in lang["extensions"]
    conf = json.loads((VSCODE / lang["configuration"]).read_text("utf-8"))
    assert conf["comments"]["lineComment"] == "#"
    assert ["(", ")"] in conf["brackets"] and ["{", "}"] in conf["brackets"]
    re.compile(conf["wordPattern"])
    (gram,) = pkg["contributes"]["grammars"]
    assert gram["language"] == "pspec" and (VSCODE / gram["path"]).resolve() == GRAMMAR
    assert json.loads(GRAMMAR.read_text("utf-8"))["scopeName"] == gram["scopeName"]
    default = pkg["contributes"]["configuration"]["properties"]["partspec.server.command"]
    assert default["default"] == ["pspec", "lsp"]


def test_the_grammar_is_what_its_generator_writes() -> None:
    # It names every allow-listed optax function: regenerate when the table changes.
    spec = importlib.util.spec_from_file_location("gen", VSCODE / "generate_grammar.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert GRAMMAR.read_text("utf-8") == gen.text(), "run python editors/vscode/generate_grammar.py"


def tokenize(texts: list[str]) -> list[list[list[tuple[int, int, list[str]]]]]:
    node_module("vscode-textmate")
    proc = subprocess.run(
        [node(), str(JS / "tokenize.js")],
        input=json.dumps({"grammar": str(GRAMMAR), "scope": "source.pspec", "texts": texts}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: Any = json.loads(proc.stdout)
    return result


def _tm_kind(scopes: list[str]) -> str | None:
    s = scopes[-1]
    table = [
        ("comment.", "comment"),
        ("storage.type.", "declaration"),
        ("storage.modifier.", "modifier"),
        ("keyword.operator.logical", "logical"),
        ("keyword.operator.", "operator"),
        ("keyword.", "keyword"),
        ("constant.language.", "constant"),
        ("constant.numeric", "number"),
        ("constant.character.escape", "escape"),
        ("support.function", "builtin"),
        ("entity.name.function", "function"),
        ("entity.name.tag.path", "path"),
        ("entity.name.type.pattern", "named-pattern"),
        ("entity.name.label", "label"),
        ("variable.", "name"),
        ("string.regexp", "class"),
        ("string.", "string"),
        ("punctuation.", "punct"),
    ]
    return next((kind for prefix, kind in table if s.startswith(prefix)), None)


def _pygments_kind(token: Any) -> str:
    t = str(token)
    table = [
        ("Token.Comment", "comment"),
        ("Token.Keyword.Declaration", "declaration"),
        ("Token.Keyword.Pseudo", "modifier"),
        ("Token.Keyword.Constant", "constant"),
        ("Token.Keyword", "keyword"),
        ("Token.Operator.Word", "logical"),
        ("Token.Operator", "operator"),
        ("Token.Name.Builtin", "builtin"),
        ("Token.Name.Function", "function"),
        ("Token.Name.Namespace", "path"),
        ("Token.Name.Decorator", "named-pattern"),
        ("Token.Name.Label", "label"),
        ("Token.Name", "name"),
        ("Token.Literal.Number", "number"),
        ("Token.Literal.String.Regex", "class"),
        ("Token.Literal.String.Escape", "escape"),
        ("Token.Literal.String", "string"),
        ("Token.Punctuation", "punct"),
    ]
    return next(kind for prefix, kind in table if t.startswith(prefix))


def test_every_character_of_every_spec_gets_the_scope_pygments_agrees_with() -> None:
    assert len(SPECS) >= 40
    _agree(SPECS)


@settings(max_examples=5)
@given(st.lists(S.syntax_specs(), min_size=10, max_size=10))
def test_generated_specs_get_the_scopes_pygments_agrees_with(specs: list[Any]) -> None:
    # Every statement kind, nesting of operators, quoting and escapes: ten specs per run
    # of the engine.
    _agree([("generated", format_spec(spec)) for spec in specs])


def _agree(specs: list[tuple[str, str]]) -> None:
    results = tokenize([text for _, text in specs])
    lexer = get_lexer_by_name("pspec")
    for (where, text), lines in zip(specs, results):
        # each character's TextMate kind
        kinds: list[str | None] = []
        for line, toks in zip(text.split("\n"), lines):
            row: list[str | None] = [None] * len(line)
            for start, end, scopes in toks:
                for i in range(start, end):
                    row[i] = _tm_kind(scopes)
            for i, ch in enumerate(line):
                assert ch.isspace() or row[i] is not None, (where, line, i)
            kinds += [*row, None]  # the newline
        offset = 0
        for tok, value in lexer.get_tokens(text):
            if value.strip() and not str(tok).startswith("Token.Text"):
                first = offset + len(value) - len(value.lstrip())
                assert kinds[first] == _pygments_kind(tok), (where, value, kinds[first], str(tok))
            offset += len(value)
