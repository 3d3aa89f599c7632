"""Inputs are read safely: regular files only, with caps, and never echoed by the megabyte."""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import partspec
from partspec.diagnostics import MAX_SOURCE_WIDTH, MAX_TEXT
from partspec.language import files
from partspec.tools import manifest
from partspec.tools.cli import main
from partspec.tools.manifest import TreeInputError, load_leaves

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")


def run_pspec(*args: str, stdin: bytes = b"", cwd: Path | None = None) -> tuple[int, str]:
    """``pspec ARGS`` in a subprocess that may not take more than 60 s (a hang fails)."""
    proc = subprocess.run(
        [sys.executable, "-m", "partspec", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=cwd,
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


@needs_fifo
def test_a_spec_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.pspec"
    os.mkfifo(fifo)
    code, out = run_pspec("check", str(fifo))
    assert code == 2
    assert "E001" in out and "a FIFO (named pipe), not a regular file" in out


@needs_fifo
def test_an_include_of_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "part.pspec")
    (tmp_path / "top.pspec").write_text('include "part.pspec"\n** -> frozen\n')
    code, out = run_pspec("check", str(tmp_path / "top.pspec"))
    assert code == 1
    assert "E802" in out and "FIFO" in out


def test_an_include_of_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "top.pspec").write_text('include "/dev/zero"\n** -> frozen\n')
    with pytest.raises(partspec.SpecError) as err:
        partspec.load(tmp_path / "top.pspec", allow_outside=True)
    (d,) = err.value.diagnostics
    assert d.code == "E802" and "a character device, not a regular file" in d.message


def test_standard_input_is_read_as_dash_and_dev_stdin_is_not_a_regular_file(
    tmp_path: Path,
) -> None:
    # `include "zero"` from /dev/stdin used to read /dev/zero until memory ran out.
    code, out = run_pspec("check", "/dev/stdin", stdin=b'include "zero"\n', cwd=tmp_path)
    assert code == 2 and "not a regular file" in out
    code, out = run_pspec("check", "-", stdin=b"** -> frozen\n", cwd=tmp_path)
    assert code == 0, out
    code, out = run_pspec("fmt", "-", stdin=b"a/**->frozen\n", cwd=tmp_path)
    assert (code, out) == (0, "a/** -> frozen\n")
    code, out = run_pspec("check", "-", stdin=b"** -> adma(1)\n", cwd=tmp_path)
    assert code == 1 and "<stdin>:1:7" in out


def test_size_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.pspec"
    big.write_bytes(b"# " + b"x" * files.MAX_SPEC_BYTES + b"\n** -> frozen\n")
    with pytest.raises(partspec.SpecError) as err:
        partspec.load(big)
    assert err.value.diagnostics[0].code == "E001"
    assert "too large" in err.value.diagnostics[0].message
    (tmp_path / "top.pspec").write_text('include "big.pspec"\n')
    with pytest.raises(partspec.SpecError) as err:
        partspec.load(tmp_path / "top.pspec")
    assert err.value.diagnostics[0].code == "E802"
    assert "too large" in err.value.diagnostics[0].message


def test_nul_bytes_mean_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "zeros.pspec"
    path.write_bytes(b"\0" * 16_000)
    code, out = run_pspec("check", str(path))
    assert code == 2 and "a NUL byte at byte 0" in out
    assert len(out) < 1_000


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000 + " ->",
        "** -> adam(" + "1" * 500_000 + "x)",
        '** -> adam(1e-3, "' + "s" * 1_000_000 + '")',
        "x" * 100_000 + "\x1b[2J -> frozen\n** -> adma(1e-3)",
    ],
)
def test_diagnostics_never_echo_megabytes(text: str) -> None:
    with pytest.raises(partspec.SpecError) as err:
        partspec.parse(text)
    rendered = str(err.value)
    assert len(rendered) < 4 * (MAX_SOURCE_WIDTH + MAX_TEXT)
    assert "\x1b" not in rendered


@settings(max_examples=50)
@given(
    prefix=st.text(min_size=0, max_size=3000),
    bad=st.sampled_from(["", " -> adma(1)", " ->", "{", '"', "a**b -> frozen"]),
)
def test_every_rendered_diagnostic_is_bounded_and_printable(prefix: str, bad: str) -> None:
    try:
        partspec.parse(prefix + bad)
    except partspec.SpecError as err:
        for d in err.diagnostics:
            text = d.render()
            assert len(text) < 4 * (MAX_SOURCE_WIDTH + MAX_TEXT)
            unsafe = {"Cc", "Cf", "Cs", "Zl", "Zp"}
            assert all(c == "\n" or unicodedata.category(c) not in unsafe for c in text), text


# ---------------------------------------------------------------- manifests


@needs_fifo
@pytest.mark.parametrize("name", ["m.json", "m.npz", "m.safetensors", "_METADATA"])
def test_tree_inputs_that_are_fifos_are_refused(tmp_path: Path, name: str) -> None:
    os.mkfifo(tmp_path / name)
    with pytest.raises(TreeInputError, match="FIFO"):
        load_leaves(str(tmp_path / name))


def test_orbax_metadata_has_a_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "_METADATA").write_text('{"tree_metadata": {}, "pad": "' + "x" * 500 + '"}')
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(TreeInputError, match="too large"):
        load_leaves(str(tmp_path))


def test_cli_reports_a_fifo_tree_as_unreadable(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs os.mkfifo")
    os.mkfifo(tmp_path / "tree.json")
    (tmp_path / "s.pspec").write_text("** -> frozen\n")
    assert main(["check", str(tmp_path / "s.pspec"), "--tree", str(tmp_path / "tree.json")]) == 2
