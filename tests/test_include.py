"""``include "base.pspec"``: resolution, order, safety, diagnostics and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.diagnostics import Diagnostic, Span, SpecError
from partspec.language import ast
from partspec.language.includes import MAX_INCLUDE_DEPTH, relocate, resolve_includes
from partspec.language.parser import parse_syntax
from tests.strategies import patterns
from tests.test_cli import run

#: `pspec check` without --tree: all passed, and coverage was not checked.
PASSED_NO_TREE = (
    "All checks passed (1 spec).\n"
    "Coverage not checked: give --tree to check against a model's parameters.\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(fn: object, *args: object, **kwargs: object) -> Diagnostic:
    assert callable(fn)
    with pytest.raises(SpecError) as info:
        fn(*args, **kwargs)
    assert len(info.value.diagnostics) == 1, str(info.value)
    return info.value.diagnostics[0]


def pats(spec: ast.Spec) -> list[str]:
    return [", ".join(partspec.format_pattern(p) for p in r.patterns) for r in spec.rules]


def spans(node: object) -> Iterator[Span]:
    """Every Span inside an AST node."""
    if isinstance(node, Span):
        yield node
    elif isinstance(node, tuple):
        for x in node:
            yield from spans(x)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            yield from spans(getattr(node, f.name))


MANIFEST_PATHS = [("a", "kernel"), ("a", "bias"), ("b", "kernel"), ("c", "kernel")]


def manifest(tmp_path: Path) -> Path:
    leaves = [{"path": list(p), "shape": [2], "dtype": "float32"} for p in MANIFEST_PATHS]
    doc = {"format": "partspec-manifest", "version": 1, "leaves": leaves}
    return write(tmp_path / "model.tree.json", json.dumps(doc))


# ---------------------------------------------------------------- semantics


def test_included_statements_take_the_include_place(tmp_path: Path) -> None:
    write(tmp_path / "base.pspec", "a/** -> frozen\n** -> sgd(0.1)\n")
    top = write(
        tmp_path / "top.pspec", 'a/bias -> sgd(0.5)\ninclude "base.pspec"\nb/** -> frozen\n'
    )
    spec = partspec.load(top)
    assert pats(spec) == ["a/bias", "a/**", "**", "b/**"]
    assert not spec.includes
    assert spec.filename == str(top) and spec.source == top.read_text()
    assert dict(spec.sources) == {str(tmp_path / "base.pspec"): "a/** -> frozen\n** -> sgd(0.1)\n"}
    checked = partspec.check(spec)
    assert [(r.index, r.label) for r in checked.rules] == [
        (0, "sgd(0.5)"),
        (1, "frozen"),
        (2, "sgd(0.1)"),
        (3, "frozen"),
    ]


def test_rule_above_include_wins_and_rule_below_loses(tmp_path: Path) -> None:
    # Shown by shadowing: base.pspec's `a/**` loses a/bias to the override (and is still
    # used for a/kernel); the rule below the include is shadowed by base.pspec's `**`.
    write(tmp_path / "base.pspec", "a/** -> frozen\n** -> sgd(0.1)\n")
    write(tmp_path / "top.pspec", 'a/bias -> sgd(0.5)\ninclude "base.pspec"\nb/** -> frozen\n')
    manifest(tmp_path)
    code, out = run(
        "check", "top.pspec", "--tree", "model.tree.json", "--format", "json", cwd=tmp_path
    )
    diags = json.loads(out)["diagnostics"]
    assert code == 0, out
    assert [(d["code"], d["filename"], d["line"]) for d in diags] == [("W602", "top.pspec", 3)]


def test_compiled_labels_follow_first_match_across_files(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    write(tmp_path / "base.pspec", "a/** -> frozen\n** -> sgd(0.1)\n")
    top = write(
        tmp_path / "top.pspec", 'a/bias -> sgd(0.5)\ninclude "base.pspec"\nb/** -> frozen\n'
    )
    params: dict[str, dict[str, object]] = {}
    for outer, inner in MANIFEST_PATHS:
        params.setdefault(outer, {})[inner] = np.zeros(2, np.float32)
    with pytest.warns(partspec.SpecWarning, match="shadowed"):  # `b/**`, below `**`
        plan = partspec.compile(partspec.load(top), params)
    assert plan.labels == {
        "a": {"bias": "sgd(0.5)", "kernel": "frozen"},
        "b": {"kernel": "sgd(0.1)"},
        "c": {"kernel": "sgd(0.1)"},
    }


def test_paths_are_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path / "shared" / "base.pspec", "** -> frozen\n")
    write(tmp_path / "configs" / "parts" / "head.pspec", "head/** -> sgd(0.1)\n")
    write(
        tmp_path / "configs" / "mid.pspec",
        'include "parts/head.pspec"\ninclude "../shared/base.pspec"\n',
    )
    top = write(tmp_path / "top.pspec", 'include "configs/mid.pspec"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = os.getcwd()
    os.chdir(elsewhere)  # the current directory plays no part
    try:
        spec = partspec.load(top)
    finally:
        os.chdir(old)
    assert pats(spec) == ["head/**", "**"]
    assert [r.span.file for r in spec.rules] == [
        str(tmp_path / "configs" / "parts" / "head.pspec"),
        str(tmp_path / "shared" / "base.pspec"),
    ]


def test_nested_includes_and_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "sub" / "deep" / "c.pspec", "c/** -> frozen\n")
    write(tmp_path / "sub" / "b.pspec", 'b/** -> frozen\ninclude "deep/c.pspec"\nb2 -> frozen\n')
    write(tmp_path / "a.pspec", 'a/** -> frozen\ninclude "sub/b.pspec"\n** -> sgd(0.1)\n')
    monkeypatch.chdir(tmp_path)
    spec = partspec.load("a.pspec")
    assert pats(spec) == ["a/**", "b/**", "c/**", "b2", "**"]
    files = [r.span.file for r in spec.rules]
    assert files == [None, "sub/b.pspec", "sub/deep/c.pspec", "sub/b.pspec", None]
    assert set(spec.sources) == {"sub/b.pspec", "sub/deep/c.pspec"}


def test_every_span_of_an_included_statement_names_its_file(tmp_path: Path) -> None:
    write(
        tmp_path / "base.pspec",
        "let lr = 1e-3\nparam wd = 0.1\n"
        "a/<i>/x, b/<i> except b/c where i > 1 -> chain(clip(1.0), adamw(lr * 2, weight_decay=wd))"
        " as main\nc/** -> frozen until 10 then sgd(-lr)\n",
    )
    spec = resolve_includes(parse_syntax('include "base.pspec"', "top.pspec"), tmp_path)
    assert len(spec.statements) == 4
    found = list(spans(spec.statements))
    assert len(found) > 20
    assert {s.file for s in found} == {str(tmp_path / "base.pspec")}
    # Spans never take part in equality: the statements equal the file's own.
    assert spec.statements == parse_syntax((tmp_path / "base.pspec").read_text()).statements


def test_relocate_is_generic_and_keeps_spanless_nodes() -> None:
    rule = parse_syntax("a/{b,c}/[xy]* -> sgd([1, 2][0], momentum=-0.5)").rules[0]
    moved = relocate(rule, "f.pspec")
    assert moved == rule
    assert {s.file for s in spans(moved)} == {"f.pspec"}
    assert moved.patterns[0].nodes is rule.patterns[0].nodes  # no spans inside globs
    assert relocate(moved, "f.pspec") is moved


def test_diamond_includes_are_allowed(tmp_path: Path) -> None:
    write(tmp_path / "leaf.pspec", "x -> frozen\n")
    write(tmp_path / "l.pspec", 'include "leaf.pspec"\n')
    write(tmp_path / "r.pspec", 'include "leaf.pspec"\n')
    top = write(tmp_path / "top.pspec", 'include "l.pspec"\ninclude "r.pspec"\n** -> frozen\n')
    assert pats(partspec.load(top)) == ["x", "x", "**"]


def test_empty_included_file(tmp_path: Path) -> None:
    write(tmp_path / "empty.pspec", "# nothing yet\n")
    top = write(tmp_path / "top.pspec", 'include "empty.pspec"\n** -> frozen\n')
    assert pats(partspec.load(top)) == ["**"]


# ---------------------------------------------------------------- string specs


def test_string_spec_with_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "base.pspec", "** -> frozen\n")
    spec = partspec.parse('head/** -> sgd(0.1)\ninclude "base.pspec"', base_dir=tmp_path)
    assert pats(spec) == ["head/**", "**"]
    assert spec.filename is None
    assert spec.rules[1].span.file == str(tmp_path / "base.pspec")


def test_string_spec_base_dir_is_the_root(tmp_path: Path) -> None:
    write(tmp_path / "base.pspec", "** -> frozen\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    d = error_of(partspec.parse, 'include "../base.pspec"', base_dir=sub)
    assert d.code == "E803"
    assert d.filename is None and d.location == "<string>:1:1"
    spec = partspec.parse('include "../base.pspec"', base_dir=sub, allow_outside=True)
    assert pats(spec) == ["**"]


def test_string_spec_without_base_dir_is_e804() -> None:
    with pytest.raises(SpecError) as info:
        partspec.parse('a -> frozen\ninclude "x.pspec"')
    (d,) = info.value.diagnostics
    assert (d.code, d.line, d.column) == ("E804", 2, 1)
    assert d.hint is not None and "base_dir" in d.hint


def test_parse_syntax_never_resolves(tmp_path: Path) -> None:
    spec = parse_syntax('include "missing.pspec"\n** -> frozen', "top.pspec")
    assert spec.includes == (ast.Include("missing.pspec"),)


# ---------------------------------------------------------------- cycles, depth


def test_self_include_is_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.pspec", '** -> frozen\ninclude "a.pspec"\n')
    monkeypatch.chdir(tmp_path)
    d = error_of(partspec.load, "a.pspec")
    assert d.code == "E801"
    assert d.message == "include cycle: a.pspec -> a.pspec"
    assert (d.filename, d.line, d.column) == ("a.pspec", 2, 1)
    assert d.source_line == 'include "a.pspec"'
    assert d.notes == ()


def test_two_file_cycle_shows_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.pspec", '# a\ninclude "b.pspec"\n')
    write(tmp_path / "b.pspec", 'x -> frozen\n\ninclude "./a.pspec"\n')
    monkeypatch.chdir(tmp_path)
    d = error_of(partspec.load, "a.pspec")
    assert d.code == "E801"
    assert d.message == "include cycle: a.pspec -> b.pspec -> a.pspec"
    assert (d.filename, d.line, d.column, d.end_column) == ("b.pspec", 3, 1, 20)
    assert d.notes == ("included from a.pspec:2",)
    text = d.render()
    assert " --> b.pspec:3:1" in text
    assert '3 | include "./a.pspec"' in text
    assert "^^^^^^^^^^^^^^^^^^" in text
    assert "= note: included from a.pspec:2" in text


def test_cycle_through_a_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.pspec", 'include "alias.pspec"\n')
    (tmp_path / "alias.pspec").symlink_to(tmp_path / "a.pspec")
    monkeypatch.chdir(tmp_path)
    d = error_of(partspec.load, "a.pspec")
    assert d.code == "E801" and d.message == "include cycle: a.pspec -> alias.pspec"


def test_nesting_depth_is_bounded(tmp_path: Path) -> None:
    n = MAX_INCLUDE_DEPTH + 5
    for i in range(n):
        write(tmp_path / f"f{i}.pspec", f'include "f{i + 1}.pspec"\n')
    write(tmp_path / f"f{n}.pspec", "** -> frozen\n")
    d = error_of(partspec.load, tmp_path / "f0.pspec")
    assert d.code == "E801"
    assert f"more than {MAX_INCLUDE_DEPTH} deep" in d.message
    assert d.filename == str(tmp_path / f"f{MAX_INCLUDE_DEPTH}.pspec")
    assert len(d.notes) == MAX_INCLUDE_DEPTH
    # Exactly the limit is fine.
    assert pats(partspec.load(tmp_path / f"f{n - MAX_INCLUDE_DEPTH}.pspec")) == ["**"]


def test_exponential_includes_are_bounded(tmp_path: Path) -> None:
    for i in range(30):
        write(tmp_path / f"g{i}.pspec", f'include "g{i + 1}.pspec"\ninclude "g{i + 1}.pspec"\n')
    write(tmp_path / "g30.pspec", "x -> frozen\n")
    d = error_of(partspec.load, tmp_path / "g0.pspec")
    assert d.code == "E801" and "includes in one spec" in d.message


# ---------------------------------------------------------------- missing, unreadable


def test_missing_included_file_shows_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "top.pspec", '** -> frozen\n\ninclude "lib/b.pspec"\n')
    write(tmp_path / "lib" / "b.pspec", 'include "gone.pspec"\n')
    monkeypatch.chdir(tmp_path)
    d = error_of(partspec.load, "top.pspec")
    assert d.code == "E802"
    assert "cannot read included file 'lib/gone.pspec'" in d.message
    assert (d.filename, d.line, d.column) == ("lib/b.pspec", 1, 1)
    assert d.source_line == 'include "gone.pspec"'
    assert d.notes == ("included from top.pspec:3",)


def test_non_utf8_and_directory_includes(tmp_path: Path) -> None:
    (tmp_path / "latin1.pspec").write_bytes(b"# caf\xe9\n")
    (tmp_path / "dir.pspec").mkdir()
    d = error_of(partspec.parse, 'include "latin1.pspec"', base_dir=tmp_path)
    assert d.code == "E802" and "is not UTF-8 text" in d.message
    d = error_of(partspec.parse, 'include "dir.pspec"', base_dir=tmp_path)
    assert d.code == "E802" and "cannot read included file" in d.message
    d = error_of(partspec.parse, 'include ""', base_dir=tmp_path)
    assert d.code == "E802" and "empty" in d.message
    d = error_of(partspec.parse, 'include "a\0"', base_dir=tmp_path)
    assert d.code in ("E100", "E802")  # the grammar may already refuse a NUL


def test_missing_top_level_file_stays_e001(tmp_path: Path) -> None:
    d = error_of(partspec.load, tmp_path / "nope.pspec")
    assert d.code == "E001"


# ---------------------------------------------------------------- outside the root


def test_dotdot_outside_the_root_is_rejected(tmp_path: Path) -> None:
    write(tmp_path / "shared.pspec", "** -> frozen\n")
    top = write(tmp_path / "proj" / "top.pspec", 'include "../shared.pspec"\n')
    d = error_of(partspec.load, top)
    assert d.code == "E803"
    assert "outside the directory of the top-level spec" in d.message
    assert d.hint is not None and "allow_outside=True" in d.hint
    assert "--allow-outside-includes" in d.hint
    assert pats(partspec.load(top, allow_outside=True)) == ["**"]


def test_dotdot_that_comes_back_inside_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "proj" / "base.pspec", "** -> frozen\n")
    top = write(tmp_path / "proj" / "sub" / "top.pspec", 'include "../base.pspec"\n')
    d = error_of(partspec.load, top)  # the root is the top-level spec's own directory
    assert d.code == "E803"
    top2 = write(tmp_path / "proj" / "top2.pspec", 'include "sub/../../proj/base.pspec"\n')
    assert pats(partspec.load(top2)) == ["**"]


def test_absolute_path_outside_the_root_is_rejected(tmp_path: Path) -> None:
    shared = write(tmp_path / "shared.pspec", "** -> frozen\n")
    top = write(tmp_path / "proj" / "top.pspec", f'include "{shared}"\n')
    assert error_of(partspec.load, top).code == "E803"
    assert pats(partspec.load(top, allow_outside=True)) == ["**"]
    inside = write(tmp_path / "proj" / "in.pspec", "x -> frozen\n")
    top2 = write(tmp_path / "proj" / "top2.pspec", f'include "{inside}"\n')
    assert pats(partspec.load(top2)) == ["x"]


def test_symlink_out_of_the_root_is_rejected(tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "secret.pspec", "** -> frozen\n")
    proj = tmp_path / "proj"
    top = write(proj / "top.pspec", 'include "link.pspec"\n')
    (proj / "link.pspec").symlink_to(secret)
    assert error_of(partspec.load, top).code == "E803"
    # A symlinked directory is no way out either.
    (proj / "dirlink").symlink_to(tmp_path / "outside", target_is_directory=True)
    top2 = write(proj / "top2.pspec", 'include "dirlink/secret.pspec"\n')
    assert error_of(partspec.load, top2).code == "E803"
    assert pats(partspec.load(top, allow_outside=True)) == ["**"]
    assert pats(partspec.load(top2, allow_outside=True)) == ["**"]


def test_outside_file_is_not_read_before_the_check(tmp_path: Path) -> None:
    # A missing file outside the root is reported as outside: nothing leaks about it.
    top = write(tmp_path / "proj" / "top.pspec", 'include "../nope.pspec"\n')
    assert error_of(partspec.load, top).code == "E803"
    assert error_of(partspec.load, top, allow_outside=True).code == "E802"


# ---------------------------------------------------------------- errors inside included files


def test_syntax_error_inside_an_included_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "top.pspec", 'a -> frozen\ninclude "base.pspec"\n')
    write(tmp_path / "base.pspec", "b -> frozen\nc/** ->\n")
    monkeypatch.chdir(tmp_path)
    d = error_of(partspec.load, "top.pspec")
    assert d.code == "E100"
    assert (d.filename, d.line) == ("base.pspec", 2)
    assert d.source_line == "c/** ->"
    assert d.notes == ("included from top.pspec:2",)
    assert d.render().splitlines()[1] == " --> base.pspec:2:8"


def test_check_error_inside_an_included_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "top.pspec", 'a -> frozen\n\ninclude "base.pspec"\n')
    write(tmp_path / "base.pspec", "b -> frozen\n\n\nc/** -> adma(0.1)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        partspec.load("top.pspec")
    (d,) = info.value.diagnostics
    assert d.code == "E401"
    assert (d.filename, d.line, d.column) == ("base.pspec", 4, 9)
    assert d.source_line == "c/** -> adma(0.1)"
    assert " --> base.pspec:4:9" in str(info.value)
    assert "4 | c/** -> adma(0.1)" in str(info.value)


def test_duplicate_let_across_files_points_into_the_right_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "top.pspec", 'let lr = 0.1\ninclude "base.pspec"\n** -> sgd(lr)\n')
    write(tmp_path / "base.pspec", "# base\nlet lr = 0.5\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        partspec.load("top.pspec")
    (d,) = info.value.diagnostics
    assert d.code == "E302"
    assert (d.filename, d.line, d.column) == ("base.pspec", 2, 5)
    assert d.source_line == "let lr = 0.5"
    assert "2 | let lr = 0.5" in d.render()


def test_spec_error_inside_included_file_via_parse_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "base.pspec", "x -> sgd(\n")
    d = error_of(partspec.parse, 'include "base.pspec"', "top.pspec", base_dir=tmp_path)
    assert d.filename == str(tmp_path / "base.pspec")
    assert d.source_line == "x -> sgd("
    assert d.notes == ("included from top.pspec:1",)


# ---------------------------------------------------------------- formatting


def test_format_round_trip_keeps_include_nodes() -> None:
    text = '# header\ninclude   "base.pspec"  # the shared rules\nhead/*->sgd(0.1)\n'
    spec = parse_syntax(text)
    out = partspec.format(spec)
    assert out == '# header\ninclude "base.pspec"  # the shared rules\nhead/* -> sgd(0.1)\n'
    again = parse_syntax(out)
    assert again == spec
    assert again.includes == (ast.Include("base.pspec"),)
    assert partspec.format(again) == out


def test_include_path_with_quotes_round_trips() -> None:
    spec = parse_syntax('include "we\\"ird dir/b.pspec"')
    assert spec.includes[0].path == 'we"ird dir/b.pspec'
    assert parse_syntax(partspec.format(spec)) == spec


def test_format_of_a_resolved_spec_is_the_flattened_spec(tmp_path: Path) -> None:
    write(tmp_path / "base.pspec", "# base rules\nlet lr = 0.1\n\nb/** -> sgd(lr)\n** -> frozen\n")
    top = write(
        tmp_path / "top.pspec",
        '# top\n\n\n\n\na/** -> sgd(0.5)  # override\ninclude "base.pspec"\nc -> frozen\n',
    )
    spec = partspec.load(top)
    text = partspec.format(spec)
    assert text == (
        "a/** -> sgd(0.5)\nlet lr = 0.1\nb/** -> sgd(lr)\n**   -> frozen\nc    -> frozen\n"
    )
    assert partspec.parse(text) == spec
    assert str(spec) == text


# ---------------------------------------------------------------- the command line


def test_cli_check_follows_includes(tmp_path: Path) -> None:
    write(tmp_path / "base.pspec", "a/** -> frozen\n** -> sgd(0.1)\n")
    write(tmp_path / "top.pspec", 'a/bias -> sgd(0.5)\ninclude "base.pspec"\n')
    manifest(tmp_path)
    assert run("check", "top.pspec", cwd=tmp_path) == (0, PASSED_NO_TREE)
    code, out = run("check", "--strict", "top.pspec", "--tree", "model.tree.json", cwd=tmp_path)
    assert (code, out) == (0, "All checks passed (1 spec).\n")


def test_cli_check_names_the_included_file(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "base.pspec", "x -> frozen\ny -> adma(0.1)\n")
    write(tmp_path / "top.pspec", 'include "lib/base.pspec"\n')
    code, out = run("check", "top.pspec", cwd=tmp_path)
    assert code == 1
    assert "--> lib/base.pspec:2:6" in out
    assert "2 | y -> adma(0.1)" in out
    code, out = run("check", "top.pspec", "--format", "concise", cwd=tmp_path)
    assert out.splitlines()[0] == "lib/base.pspec:2:6: E401 unknown optimizer `adma`"
    code, out = run("check", "top.pspec", "--format", "json", cwd=tmp_path)
    (d,) = json.loads(out)["diagnostics"]
    assert (d["filename"], d["line"], d["code"]) == ("lib/base.pspec", 2, "E401")
    code, out = run("check", "top.pspec", "--format", "github", cwd=tmp_path)
    assert out.startswith("::error file=lib/base.pspec,line=2,col=6,")


def test_cli_warning_in_an_included_file(tmp_path: Path) -> None:
    write(tmp_path / "base.pspec", "nothing/** -> frozen\n** -> sgd(0.1)\n")
    write(tmp_path / "top.pspec", 'include "base.pspec"\n')
    manifest(tmp_path)
    code, out = run("check", "--strict", "top.pspec", "--tree", "model.tree.json", cwd=tmp_path)
    assert code == 1
    assert "error[W601]" in out and "--> base.pspec:1:1" in out
    assert "1 | nothing/** -> frozen" in out


@pytest.mark.parametrize(
    ("files", "code", "expected"),
    [
        ({"top.pspec": 'include "gone.pspec"\n'}, 1, "E802"),
        ({"top.pspec": 'include "top.pspec"\n'}, 1, "E801"),
        ({"top.pspec": 'include "../out.pspec"\n'}, 1, "E803"),
        ({"top.pspec": 'include "b.pspec"\n', "b.pspec": "x ->\n"}, 1, "E100"),
        ({}, 2, "E001"),
    ],
)
def test_cli_exit_codes(tmp_path: Path, files: dict[str, str], code: int, expected: str) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    write(tmp_path / "out.pspec", "** -> frozen\n")
    for name, text in files.items():
        write(proj / name, text)
    got, out = run("check", "top.pspec", "--format", "json", cwd=proj)
    assert got == code, out
    assert [d["code"] for d in json.loads(out)["diagnostics"]] == [expected]


def test_cli_allow_outside_includes(tmp_path: Path) -> None:
    write(tmp_path / "shared.pspec", "** -> frozen\n")
    proj = tmp_path / "proj"
    write(proj / "top.pspec", 'include "../shared.pspec"\n')
    code, out = run("check", "top.pspec", cwd=proj)
    assert code == 1 and "E803" in out and "--allow-outside-includes" in out
    code, out = run("check", "--allow-outside-includes", "top.pspec", cwd=proj)
    assert (code, out) == (0, PASSED_NO_TREE)


def test_cli_explain_and_diff_follow_includes(tmp_path: Path) -> None:
    write(tmp_path / "ok.pspec", "** -> frozen\n")
    write(tmp_path / "top.pspec", 'include "gone.pspec"\n')
    manifest(tmp_path)
    code, out = run("explain", "top.pspec", "--tree", "model.tree.json", cwd=tmp_path)
    assert code == 1 and "E802" in out and "gone.pspec" in out
    code, out = run("diff", "ok.pspec", "top.pspec", "--tree", "model.tree.json", cwd=tmp_path)
    assert code == 1 and "E802" in out
    code, out = run("explain", "nope.pspec", "--tree", "model.tree.json", cwd=tmp_path)
    assert code == 2 and "E001" in out
    write(tmp_path / "out.pspec", "** -> frozen\n")
    proj = tmp_path / "proj"
    write(proj / "top.pspec", 'include "../out.pspec"\n')
    tree = str(tmp_path / "model.tree.json")
    for argv in (["explain", "top.pspec"], ["diff", "top.pspec", "top.pspec"]):
        code, out = run(*argv, "--tree", tree, cwd=proj)
        assert code == 1 and "E803" in out
        code, out = run(*argv, "--tree", tree, "--allow-outside-includes", cwd=proj)
        assert "E803" not in out


def test_cli_fmt_formats_as_written(tmp_path: Path) -> None:
    # The included file does not exist: fmt never reads it.
    canonical = '# layered\nhead/** -> sgd(0.5)\n\ninclude "missing/base.pspec"\n'
    path = write(tmp_path / "top.pspec", canonical)
    assert run("fmt", "--check", "top.pspec", cwd=tmp_path)[0] == 0
    path.write_text('# layered\nhead/**->sgd(0.5)\n\ninclude    "missing/base.pspec"\n')
    code, out = run("fmt", "--check", "top.pspec", cwd=tmp_path)
    assert code == 1 and '+include "missing/base.pspec"' in out
    assert run("fmt", "top.pspec", cwd=tmp_path)[0] == 0
    assert path.read_text() == canonical


def test_layered_example_checks_strictly() -> None:
    root = Path(__file__).resolve().parent.parent
    spec = root / "examples" / "layered" / "vit_layered.pspec"
    tree = root / "examples" / "vit_b16.tree.json"
    assert 'include "base.pspec"' in spec.read_text()
    code, out = run("check", "--strict", str(spec), "--tree", str(tree), cwd=root)
    assert (code, out) == (0, "All checks passed (1 spec).\n")
    loaded = partspec.load(spec)
    assert loaded.rules[0].span.file is None  # the override comes first
    assert {r.span.file for r in loaded.rules[1:]} == {str(spec.with_name("base.pspec"))}


# ---------------------------------------------------------------- property


_ACTIONS = ["frozen", "sgd(0.1)"]
rule_lines = st.lists(
    st.builds(
        lambda p, a, lab: (
            f"{partspec.format_pattern(p)} -> {a}" + (f" as {lab}{a[0]}" if lab else "")
        ),
        patterns,
        st.sampled_from(_ACTIONS),
        st.sampled_from([None, "l"]),
    ),
    min_size=0,
    max_size=8,
)


@given(lines=rule_lines, data=st.data())
def test_splitting_a_spec_into_an_include_keeps_its_labels(
    lines: list[str], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(lines)), label="split")
    single = "".join(line + "\n" for line in lines)
    head = "".join(line + "\n" for line in lines[:split]) + 'include "rest.pspec"\n'
    rest = "".join(line + "\n" for line in lines[split:])
    expected = [(r.index, r.label) for r in partspec.check(single).rules]
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "rest.pspec", rest)
        top = write(Path(tmp) / "top.pspec", head)
        spec = partspec.load(top)
        got = [(r.index, r.label) for r in partspec.check(spec).rules]
        assert got == expected
        assert spec == partspec.parse(single)
        assert [r.span.file for r in spec.rules] == [None] * split + [
            str(Path(tmp) / "rest.pspec")
        ] * (len(lines) - split)


def test_each_file_is_parsed_once_per_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 includes of a 100-rule file parsed it 100 times (10 s)."""
    from partspec.language import parser

    rules = "".join(f"layer_{i}/** -> sgd({i + 1}e-3)\n" for i in range(100))
    (tmp_path / "part.pspec").write_text(rules)
    (tmp_path / "top.pspec").write_text('include "part.pspec"\n' * 100 + "** -> frozen\n")
    calls: list[str | None] = []
    real = parser.parse_syntax

    def counting(text: str, filename: str | None = None) -> Any:
        calls.append(filename)
        return real(text, filename)

    monkeypatch.setattr(parser, "parse_syntax", counting)
    spec = partspec.load(tmp_path / "top.pspec")
    assert len(spec.rules) == 100 * 100 + 1
    assert sorted(calls, key=str) == sorted(
        [str(tmp_path / "part.pspec"), str(tmp_path / "top.pspec")]
    )
    assert spec.rules[150].span.file == str(tmp_path / "part.pspec")
