"""The command line entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

import partspec
from partspec.cli import main


def test_version_through_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "partspec", "--version"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"pspec {partspec.__version__}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: pspec" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bogus"]) == 2
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
