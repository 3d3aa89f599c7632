"""The parser loads generated tables from the package, never a cache from the temp dir."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import pickle
import re
import subprocess
import sys
import textwrap
import tracemalloc

import lark
import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.diagnostics import Span
from partspec.language import grammar, parser
from partspec.language.grammar import TABLES, build, render

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.skipif(
    f"(lark {lark.__version__})" not in TABLES.read_text(encoding="utf-8"),
    reason="the tables were generated with another lark release; that they parse like a "
    "freshly built parser is tested below",
)
def test_committed_tables_are_generated_from_the_grammar() -> None:
    assert TABLES.read_text(encoding="utf-8") == render(grammar.grammar_text()), (
        "partspec/parser_tables.json is stale: run python -m partspec.language"
    )


def test_render_is_the_same_every_run() -> None:
    # Lark numbers states by sets of objects hashed by identity; the tables are renumbered.
    text = grammar.grammar_text()
    assert render(text) == render(text)


SAMPLES = [
    *(p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("**/*.pspec"))),
    "a/** except b/* where ndim > 1 and shape[-1] == 3 -> adam(1e-3) as x",
    "a -> frozen until 10 then sgd(0.1)\nglobal clip_by_global_norm(1.0)",
    "a/** ->",
    "a/**/b -> adma(1e-3",
    'x -> chain(\n  clip(1.0),\n  sgd(0.1))  # c\n"k y"/{a,b/c}/<i> -> frozen',
    "let = 3",
    "a\\",
    "x -> adam((1e-3 + 2) * 3, b1=-(0.9), eps=[1, (2)][0])\n(a) -> sgd(1)",
    'a/** where not (ndim > 1 and (size >= 2 or dtype in ["float32"])) -> frozen',
    "param p = (1)\nlet q = ((p)) ** -(2)\nglobal chain(clip(1.0),)",
    '{a,b/{c,d},0..2}/<i>/[!x-z]?\\*"q r"/** -> frozen until (3) then sgd(i)',
]


@pytest.mark.parametrize("text", SAMPLES)
def test_tables_parse_like_a_freshly_built_parser(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same AST, comments, spans of every node, and errors (positions tracked by
    partspec on generated tables, against Lark's own ``propagate_positions``)."""

    def outcome() -> object:
        try:
            spec = parser.parse_syntax(text)
        except partspec.SpecError as err:
            return [d.render() for d in err.diagnostics]
        return (spec, spec.comments, _spans(spec.statements))

    from_tables = outcome()
    fresh = build(
        grammar.grammar_text(),
        postlex=grammar._PostLex(),
        lexer_callbacks={"COMMENT": grammar._on_comment},
        tree_class=grammar._Node,
    )
    monkeypatch.setattr(parser, "lark_parser", lambda: fresh)
    monkeypatch.setattr(parser, "driver", lambda: None)  # valid text too goes to `fresh`
    assert outcome() == from_tables


def _spans(node: object) -> list[object]:
    """Every span in an AST, depth first."""
    if isinstance(node, tuple):
        return [s for item in node for s in _spans(item)]
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        if isinstance(node, Span):
            return [node]
        return [s for f in dataclasses.fields(node) for s in _spans(getattr(node, f.name))]
    return []


def test_valid_text_goes_through_the_driver_which_tracks_positions_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lark's propagate_positions costs a third of a parse: valid text must not reach
    Lark's parser, whose own tracking is kept for errors."""
    lean = grammar.driver()
    assert lean is not None
    assert grammar.lark_parser().options.propagate_positions is True

    calls: list[str] = []
    real = grammar.lark_parser

    def counted() -> object:
        calls.append("lark")
        return real()

    monkeypatch.setattr(parser, "lark_parser", counted)
    valid = 0
    for text in SAMPLES:
        calls.clear()
        try:
            parser.parse_syntax(text)
        except partspec.SpecError:
            continue  # a syntax error: Lark's parser says what is wrong
        else:
            assert not calls, text
            valid += 1
    assert valid >= len(SAMPLES) // 2


def test_nothing_under_the_temp_dir_is_read(tmp_path: pathlib.Path) -> None:
    """Another local user could plant a pickle where Lark's ``cache=True`` looks for one."""
    tmp = tmp_path / "shared-tmp"
    tmp.mkdir()
    marker = tmp_path / "pwned"
    # A pickle that runs code when loaded, under every name Lark's cache uses.
    payload = pickle.dumps(_Exploit(str(marker)))
    for user in ("planted", os.environ.get("USER", "root"), str(os.getuid())):
        (tmp / f".lark_cache_{user}.tmp").write_bytes(payload)
    script = textwrap.dedent(
        f"""
        import sys, tempfile
        tmp = tempfile.gettempdir()
        opened = []
        def hook(event, args):
            if event == "open" and isinstance(args[0], str) and args[0].startswith(tmp):
                opened.append(args[0])
        sys.addaudithook(hook)
        import partspec
        from partspec.tools.cli import main
        partspec.parse("a/** -> frozen")
        main(["fmt", "--check", {str(EXAMPLES / "transfer_learning.pspec")!r}])
        print("OPENED", opened)
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert "OPENED []" in out.stdout, out.stdout
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (pathlib.Path.write_text, (pathlib.Path(self.path), "x"))  # type: ignore[return-value]


# ---------------------------------------------------------------- terminals

#: The terminals as first written, one character per group repetition: the reference
#: for what they match. Python's `re` keeps state for every repetition of a group, so
#: these took hundreds of megabytes to lex a 4 MB literal; the grammar unrolls them.
REFERENCE_TERMINALS = {
    "LITERAL": r'(?:[^\s\/*?\[\]{},"\\#;<>=()\-]|-(?!>))+',
    "CLASS": r"\[(?:[^\]\\\n]|\\[^\n])+\]",
    "NUMBER": r"(?:[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?|\.[0-9](?:_?[0-9])*)"
    r"(?:[eE][+-]?[0-9]+)?",
    "STRING": r'"(?:[^"\\\n]|\\[^\n])*"',
}


def _grammar_terminal(name: str) -> str:
    for line in grammar.grammar_text().splitlines():
        if line.startswith(f"{name}: /"):
            return line[len(name) + 3 : -1]
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(REFERENCE_TERMINALS))
@given(text=st.text(alphabet='ab0_9.eE+-> \\"[]!^\n#/*x', max_size=30))
def test_unrolled_terminals_match_what_the_reference_matches(name: str, text: str) -> None:
    ours = re.compile(_grammar_terminal(name))
    ref = re.compile(REFERENCE_TERMINALS[name])
    for start in range(len(text) + 1):
        a, b = ours.match(text, start), ref.match(text, start)
        assert (a and a.end()) == (b and b.end()), (name, text, start)


@pytest.mark.parametrize(
    "text",
    [
        "a" * 2_000_000 + " -> frozen",
        '"' + "k" * 2_000_000 + '" -> frozen',
        "x -> sgd(" + "1" * 2_000_000 + ".5)",
        "[" + "a" * 2_000_000 + "] -> frozen",
    ],
)
def test_lexing_a_long_token_takes_memory_linear_in_its_length(text: str) -> None:
    tracemalloc.start()
    try:
        with contextlib.suppress(partspec.SpecError):
            parser.parse_syntax(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * len(text), f"{peak:,} bytes for {len(text):,} characters"
