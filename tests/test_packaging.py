"""Packaging facts users rely on: the declared dependency floors are the tested ones."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".ci" / "minimum-versions.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_every_floor_is_a_pinned_minimum_that_ci_tests() -> None:
    """The floors were wrong (optax 0.2.4 lacks partition): .ci/run installs exactly the
    pinned minimums and runs the tests, so each floor must be pinned there."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    declared = list(meta["dependencies"]) + list(extras["jax"]) + list(extras["test"])
    pins = _pins()
    for req in declared:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", req)
        if m is None:
            continue  # `partspec[...]` self-references
        name = m.group(1).lower().replace("_", "-")
        assert name in pins, f"{req}: not in .ci/minimum-versions.txt"
        assert pins[name].startswith(m.group(2)) or pins[name] == m.group(2), (req, pins[name])


def _without_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name.split(".")[0] in ("jax", "optax", "numpy") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_what_needs_the_jax_extra_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import partspec
    from partspec.tools.cli import main

    _without_jax(monkeypatch)
    for call in (
        lambda: partspec.compile("** -> frozen", {}),
        lambda: partspec.apply_updates({}, {}),
        lambda: partspec.Plan,
        lambda: partspec.select("**", {}),
    ):
        with pytest.raises(ImportError, match=r"pip install 'partspec\[jax\]'"):
            call()
    (tmp_path / "s.pspec").write_text("** -> frozen\n")
    (tmp_path / "t.json").write_text('[{"path": "w", "shape": [2]}]')
    for command in ("explain", "diff"):
        args = [command, str(tmp_path / "s.pspec")] + (
            [str(tmp_path / "s.pspec")] if command == "diff" else []
        )
        assert main([*args, "--tree", str(tmp_path / "t.json")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pip install 'partspec[jax]'" in err, err
    assert (
        main(["check", "--strict", str(tmp_path / "s.pspec"), "--tree", str(tmp_path / "t.json")])
        == 0
    )
