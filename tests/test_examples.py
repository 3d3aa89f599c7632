"""Every example script runs to completion, and every example spec parses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import partspec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
SPECS = sorted(EXAMPLES.glob("*.pspec"))


def test_examples_exist():
    # The seed workflows; a rename or a lost file should not silently shrink this suite.
    seeds = {"transfer_learning", "haiku_subset", "param_groups"}
    assert seeds <= {p.stem for p in SCRIPTS}
    assert seeds <= {p.stem for p in SPECS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs(script):
    if "import torch" in script.read_text():
        pytest.importorskip("torch", reason=f"{script.name} needs torch (the test extra)")
    env = dict(os.environ)
    # Run against this checkout even when partspec is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    # Examples (and partspec) call no deprecated API: optax and JAX attribute their
    # deprecation warnings to the caller's module. Libraries' own uses are theirs.
    env["PYTHONWARNINGS"] = "error::DeprecationWarning:__main__,error::DeprecationWarning:partspec"
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{script.name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    assert proc.stdout.strip(), f"{script.name} printed nothing"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_example_spec_parses(spec):
    parsed = partspec.load(spec)
    assert isinstance(parsed, partspec.Spec)
    assert spec.read_text().lstrip().startswith("#"), "example specs start with a comment header"
    partspec.check(parsed)  # names, calls and argument types, without a parameter tree
