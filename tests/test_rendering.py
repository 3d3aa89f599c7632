"""What reaches the terminal: user text is escaped, positions point at the right line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.diagnostics import source_lines
from partspec.tools.cli import main
from partspec.tools.explain import explain, render_text
from partspec.tools.manifest import Leaf

SURROGATE = "a\ud800"
ESCAPE = "k\x1b[2J\x1b]0;owned\x07"


def _manifest(tmp_path: Path, names: list[str]) -> Path:
    leaves = [{"path": [n, "w"], "shape": [2, 2], "dtype": "float32"} for n in names]
    doc = {"format": "partspec-manifest", "version": 1, "leaves": leaves}
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(doc), encoding="utf-8")  # ensure_ascii: "\ud800" escapes
    return path


def _pspec(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The real process: its stdout is a pipe with the locale's encoding, as in CI."""
    return subprocess.run(
        [sys.executable, "-m", "partspec", *args], capture_output=True, timeout=120
    )


@pytest.mark.parametrize("fmt", ["full", "concise", "github", "json"])
def test_keys_with_surrogates_and_escapes_never_crash_or_reach_the_terminal(
    tmp_path: Path, fmt: str
) -> None:
    tree = _manifest(tmp_path, [SURROGATE, ESCAPE, "ok"])
    spec = tmp_path / "s.pspec"
    spec.write_text("ok/** -> adam(1e-3)\n", encoding="utf-8")  # the other two: uncovered
    proc = _pspec("check", str(spec), "--tree", str(tree), "--format", fmt)
    assert proc.returncode == 1, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert b"\x1b" not in proc.stdout and b"\x07" not in proc.stdout
    text = proc.stdout.decode("utf-8")
    if fmt == "json":
        notes = json.loads(text)["diagnostics"][0]["notes"]
        assert f"not covered: {SURROGATE}/w" in notes and f"not covered: {ESCAPE}/w" in notes
    elif fmt != "concise":  # concise has no notes
        assert "a\\ud800/w" in text and "k\\x1b[2J" in text


def test_explain_leaves_with_a_surrogate_key(tmp_path: Path) -> None:
    tree = _manifest(tmp_path, [SURROGATE, ESCAPE])
    spec = tmp_path / "s.pspec"
    spec.write_text("** -> adam(1e-3)\n", encoding="utf-8")
    proc = _pspec("explain", str(spec), "--tree", str(tree), "--leaves", "**")
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b" not in proc.stdout
    assert "a\\ud800/w" in proc.stdout.decode("utf-8")


def test_a_newline_in_a_string_stays_on_one_concise_line(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text('** where dtype == "f\\nx" -> frozen\n')
    out = io.StringIO()
    code = main(["check", str(tmp_path / "s.pspec"), "--format", "concise"], out=out)
    lines = out.getvalue().splitlines()
    assert code == 1
    assert len(lines) == 3 and 'unknown dtype "f\\nx"' in lines[0], lines
    assert lines[2].startswith("Coverage not checked")


# ---------------------------------------------------------------- explain on a terminal


def test_rich_tables_show_brackets_as_written() -> None:
    leaves = [
        Leaf(("blocks", "3", "attn", "q", "w"), (4, 4), "float32"),
        Leaf(("blocks", "3", "attn", "v", "w"), (4, 4), "float32"),
        Leaf(("[/b]", "w"), (4,), "float32"),
    ]
    spec = "blocks/<i>/attn/[qk]/** -> sgd(0.1 * i)\n** -> frozen"
    report = explain(spec, leaves, leaves_glob="**")
    text = render_text(report, color=True, width=200)
    assert "sgd(0.1 * i)[i=3]" in text
    assert "blocks/<i>/attn/[qk]/**" in text
    assert "[/b]/w" in text


# ---------------------------------------------------------------- source lines

#: Characters that str.splitlines() breaks lines at but the grammar does not.
NOT_NEWLINES = ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@given(
    before=st.lists(
        st.sampled_from(
            ["# c{} x", 'let s{n} = "a{}b"', "a/** -> frozen  # {}", '"x{}y" -> frozen']
        ),
        max_size=4,
    ),
    chars=st.lists(st.sampled_from(NOT_NEWLINES), min_size=4, max_size=4),
)
def test_diagnostics_show_the_line_the_parser_counts(before: list[str], chars: list[str]) -> None:
    lines = [line.format(c, n=n) for n, (line, c) in enumerate(zip(before, chars))]
    text = "\n".join([*lines, "head/** -> adma(1e-3)"])
    with pytest.raises(partspec.SpecError) as err:
        partspec.parse(text)
    (d,) = err.value.diagnostics
    assert d.line == len(lines) + 1
    assert d.source_line == "head/** -> adma(1e-3)"
    assert source_lines(text)[d.line - 1] == d.source_line
