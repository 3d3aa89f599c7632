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
    declared = list(meta["dependencies"]) + list(meta["optional-dependencies"]["test"])
    pins = _pins()
    for req in declared:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", req)
        if m is None:
            continue  # `partspec[...]` self-references
        name = m.group(1).lower().replace("_", "-")
        assert name in pins, f"{req}: not in .ci/minimum-versions.txt"
        assert pins[name].startswith(m.group(2)) or pins[name] == m.group(2), (req, pins[name])
