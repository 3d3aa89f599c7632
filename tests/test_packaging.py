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


def test_the_metadata_names_the_license_urls_and_typing_that_ship() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert (ROOT / "partspec" / "py.typed").is_file()
    assert "Typing :: Typed" in meta["classifiers"]
    from partspec.diagnostics.render import DOCS_URL

    assert meta["urls"]["Documentation"] == DOCS_URL
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert f"site_url: {DOCS_URL}" in mkdocs
    assert meta["urls"]["Repository"] in mkdocs


def test_every_readme_link_works_on_pypi() -> None:
    # PyPI renders the README without the repository around it: a relative link is dead.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links
    relative = [t for t in links if not t.startswith(("https://", "http://", "#"))]
    assert not relative, relative
    repo = "https://github.com/partspec/partspec/"
    for target in links:
        if target.startswith(repo):  # and each points at a file of this checkout
            path = re.sub(r"^(blob|tree)/main/", "", target[len(repo) :]).split("#")[0]
            assert (ROOT / path).exists(), target


def test_mypy_in_a_user_project_sees_partspecs_types(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy (the dev extra)")
    import subprocess
    import sys

    user = tmp_path / "train.py"
    user.write_text(
        "import partspec\n"
        "spec = partspec.parse('** -> frozen')\n"
        "n: str = len(spec.rules)\n"  # an error only if mypy knows what parse returns
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--strict", str(user)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "py.typed" not in proc.stdout, proc.stdout
    assert 'Incompatible types in assignment (expression has type "int"' in proc.stdout, proc.stdout
