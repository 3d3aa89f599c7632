"""The ``pspec`` command line: exit codes, output formats, fmt, bad input.

Golden outputs live in ``tests/golden/cli/``; regenerate after a deliberate change
with ``PARTSPEC_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import partspec
from partspec.tools.cli import main

GOLDEN = Path(__file__).parent / "golden" / "cli"
#: The summary's second line when no --tree was given.
NO_TREE = "Coverage not checked: give --tree to check against a model's parameters."

BAD = """param lr = 1e-3
backbone/** -> frozen
head/**     -> adma(lr)
"""
GOOD = """# fine-tuning
param lr = 1e-3

backbone/** -> frozen
head/**     -> adam(lr)
"""


def run(*argv: str, cwd: Path | None = None) -> tuple[int, str]:
    out = io.StringIO()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        code = main(list(argv), out=out)
    finally:
        os.chdir(old)
    return code, out.getvalue()


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PARTSPEC_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    (tmp_path / "bad.pspec").write_text(BAD)
    (tmp_path / "good.pspec").write_text(GOOD)
    return tmp_path


@pytest.mark.parametrize("fmt", ["full", "concise", "json", "github", "sarif"])
def test_check_formats_are_stable(specs: Path, fmt: str) -> None:
    code, out = run("check", "bad.pspec", "--format", fmt, cwd=specs)
    assert code == 1
    golden(f"check_bad.{fmt}.txt", out)


def test_json_output_is_documented_schema(specs: Path) -> None:
    _, out = run("check", "bad.pspec", "--format", "json", cwd=specs)
    doc = json.loads(out)
    assert set(doc) == {"version", "diagnostics"}
    assert doc["version"] == 2
    (d,) = doc["diagnostics"]
    assert set(d) == {
        "code",
        "severity",
        "message",
        "filename",
        "line",
        "column",
        "end_line",
        "end_column",
        "hint",
        "notes",
        "url",
        "related",
    }
    assert (d["code"], d["line"], d["column"]) == ("E401", 3, 16)
    assert d["url"].endswith("/language/#E401")


def test_clean_spec_exits_zero(specs: Path) -> None:
    code, out = run("check", "good.pspec", cwd=specs)
    assert code == 0
    assert out == f"All checks passed (1 spec).\n{NO_TREE}\n"
    code, out = run("check", "good.pspec", "--format", "json", cwd=specs)
    assert (code, json.loads(out)) == (0, {"version": 2, "diagnostics": []})


def test_several_specs_are_all_reported(specs: Path) -> None:
    code, out = run("check", "good.pspec", "bad.pspec", "--format", "concise", cwd=specs)
    assert code == 1
    assert out.splitlines() == [
        "bad.pspec:3:16: E401 unknown optimizer `adma`",
        "Found 1 error.",
        NO_TREE,
    ]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", 0),  # an empty spec has no rules and nothing to check
        (b"\xff\xfe\x00garbage\x80", 2),
        (b"backbone/** ->\n", 1),
        (b"\x00\x01\x02", 2),  # a NUL byte: a binary file, not a spec
    ],
)
def test_bad_spec_files(tmp_path: Path, content: bytes, code: int) -> None:
    (tmp_path / "x.pspec").write_bytes(content)
    got, out = run("check", "x.pspec", cwd=tmp_path)
    assert got == code, out
    assert "Traceback" not in out


def test_missing_spec_is_unreadable_input(tmp_path: Path) -> None:
    code, out = run("check", "nope.pspec", cwd=tmp_path)
    assert code == 2
    assert "cannot read spec file 'nope.pspec'" in out


def test_set_values_are_typed_and_checked(specs: Path) -> None:
    assert run("check", "good.pspec", "--set", "lr=0.1", cwd=specs)[0] == 0
    code, out = run("check", "good.pspec", "--set", "lr=fast", cwd=specs)
    assert code == 2 and out == ""  # reported at the option (a usage error)
    code, out = run("check", "good.pspec", "--set", "lrr=0.1", cwd=specs)
    assert code == 2 and "unknown param `lrr`" in out and "did you mean `lr`" in out


def test_set_without_equals_is_usage_error(specs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("check", "good.pspec", "--set", "lr", cwd=specs)[0] == 2
    assert "--set expects NAME=VALUE" in capsys.readouterr().err


def test_fmt_rewrites_and_check_shows_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "s.pspec"
    path.write_text("# keep me\nhead/*->adam( 5e-3 )  # lr\nbackbone/**->frozen\n")
    code, out = run("fmt", "--check", "s.pspec", cwd=tmp_path)
    assert code == 1
    assert "-head/*->adam( 5e-3 )  # lr" in out and "+head/*      -> adam(5e-3)  # lr" in out
    assert path.read_text().startswith("# keep me\nhead/*->")  # --check writes nothing
    code, out = run("fmt", "s.pspec", cwd=tmp_path)
    assert code == 0 and "1 file reformatted" in out
    assert path.read_text() == "# keep me\nhead/*      -> adam(5e-3)  # lr\nbackbone/** -> frozen\n"
    assert run("fmt", "--check", "s.pspec", cwd=tmp_path)[0] == 0


def test_fmt_reports_syntax_errors(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text("head/** -> adam(\n")
    code, out = run("fmt", "s.pspec", cwd=tmp_path)
    assert code == 1 and "error[E100]" in out


def test_version_through_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "partspec", "--version"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"pspec {partspec.__version__}"


def test_console_script_runs_check_end_to_end(specs: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "partspec", "check", "bad.pspec", "--format", "concise"],
        capture_output=True,
        text=True,
        check=False,
        cwd=specs,
    )
    assert out.returncode == 1
    assert out.stdout.startswith("bad.pspec:3:16: E401")
    assert out.stderr == ""


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: pspec" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "x.pspec", "--bogus"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_importing_partspec_and_checking_does_not_import_jax() -> None:
    code = (
        "import sys, partspec\n"
        "partspec.check('let lr = 1e-3\\n** -> adam(lr)')\n"
        "partspec.format('a/**->frozen')\n"
        "assert 'jax' not in sys.modules and 'optax' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('jax', 'optax'))]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- newcomer slips


def test_a_tree_file_given_as_a_spec_is_a_usage_error_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pspec check spec.pspec tree.json` parsed the JSON as a spec: "this rule has no
    `->`" at the JSON's line 4."""
    spec = tmp_path / "s.pspec"
    spec.write_text(GOOD)
    tree = tmp_path / "model.tree.json"
    tree.write_text("[]")
    for argv in (
        ["check", str(spec), str(tree)],
        ["explain", str(tree), "--tree", str(tree)],
        ["diff", str(spec), str(tree), "--tree", str(tree)],
    ):
        code, out = run(*argv)
        err = capsys.readouterr().err
        assert code == 2 and out == "", argv
        assert "looks like a parameter tree" in err and f"--tree {tree}" in err, err


def test_without_a_tree_the_summary_says_coverage_was_not_checked(tmp_path: Path) -> None:
    spec = tmp_path / "s.pspec"
    spec.write_text(GOOD)
    code, out = run("check", str(spec))
    assert code == 0 and "Coverage not checked" in out
    tree = tmp_path / "t.json"
    tree.write_text('[{"path": "backbone/w", "shape": [2]}, {"path": "head/w", "shape": [2]}]')
    code, out = run("check", str(spec), "--tree", str(tree))
    assert code == 0 and "Coverage not checked" not in out


def test_a_bad_set_value_is_reported_at_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "s.pspec"
    spec.write_text(GOOD)
    tree = tmp_path / "t.json"
    tree.write_text('[{"path": "backbone/w", "shape": [2]}, {"path": "head/w", "shape": [2]}]')
    for command in (["check", str(spec)], ["explain", str(spec), "--tree", str(tree)]):
        code, out = run(*command, "--set", "lr=fast")
        err = capsys.readouterr().err
        assert code == 2, (command, out, err)
        assert err.startswith("pspec: error: --set lr=fast: param `lr` expects a number"), err
        assert f"declared at {spec}:2" in err


def test_every_option_has_help_and_every_command_an_example() -> None:
    import argparse

    from partspec.tools.cli import _parser

    parser = _parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"check", "explain", "fmt", "diff", "plot", "tree", "lsp"}
    for name, command in sub.choices.items():
        assert command.epilog and command.epilog.startswith("examples:\n  pspec " + name), name
        for action in command._actions:
            assert action.help, (name, action.dest)


@pytest.mark.parametrize(
    ("env", "flag", "tty", "want"),
    [
        ({}, "auto", False, False),
        ({}, "auto", True, True),
        ({"NO_COLOR": "1"}, "auto", True, False),
        ({"TERM": "dumb"}, "auto", True, False),
        ({"FORCE_COLOR": "1"}, "auto", False, True),
        ({"NO_COLOR": "1"}, "always", False, True),
        ({"FORCE_COLOR": "1"}, "never", True, False),
    ],
)
def test_explain_color_follows_the_conventions(
    env: dict[str, str], flag: str, tty: bool, want: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from partspec.tools.cli import _use_color

    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    class Out(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert _use_color(flag, Out()) is want


def test_explain_never_colors_when_told_not_to(tmp_path: Path) -> None:
    spec = tmp_path / "s.pspec"
    spec.write_text(GOOD)
    tree = tmp_path / "t.json"
    tree.write_text('[{"path": "backbone/w", "shape": [2]}, {"path": "head/w", "shape": [2]}]')
    code, out = run("explain", str(spec), "--tree", str(tree), "--color", "always")
    assert code == 0 and "\x1b[" in out
    code, out = run("explain", str(spec), "--tree", str(tree), "--color", "never")
    assert code == 0 and "\x1b[" not in out


def test_progress_is_shown_on_a_terminal_only_and_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from partspec.tools.cli import _Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_PROGRESS", raising=False)
    err = Tty()
    progress = _Progress(err)
    progress.say("reading")  # under a second: nothing yet
    assert err.getvalue() == ""
    progress.start -= 5  # the command has now run for 5 s
    with progress:
        progress.say("resolving 100,000 leaves")
    text = err.getvalue()
    assert "reading..." in text and "resolving 100,000 leaves..." in text
    assert text.endswith("\r\x1b[2K")  # the line is cleared at the end
    piped = io.StringIO()
    quiet = _Progress(piped)
    quiet.start -= 5
    quiet.say("reading")
    assert piped.getvalue() == ""
    monkeypatch.setenv("NO_PROGRESS", "1")
    off = _Progress(Tty())
    off.start -= 5
    off.say("reading")
    assert off.err.getvalue() == ""
