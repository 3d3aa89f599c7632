"""The pre-commit hooks (.pre-commit-hooks.yaml) do what docs/cli.md says, run as
pre-commit runs them: the entry, then the staged files that match ``files`` and not the
config's ``exclude``."""

from __future__ import annotations

import io
import os
import re
import shlex
from pathlib import Path

import pytest

from partspec import __version__
from partspec.tools.cli import main

yaml = pytest.importorskip("yaml", reason="pyyaml (the test extra)")

ROOT = Path(__file__).resolve().parent.parent
HOOKS = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
DOC = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
CONFIG = yaml.safe_load(re.search(r"```yaml\n(repos:\n  - repo: https.*?)```", DOC, re.S)[1])


def hook(project: Path, hook_id: str, staged: list[str]) -> tuple[int, str]:
    """Run a hook as pre-commit does, with the documented config's `exclude` and `args`."""
    spec = HOOKS[hook_id]
    entry = {h["id"]: h for h in CONFIG["repos"][0]["hooks"]}.get(hook_id, {})
    files = [
        f
        for f in staged
        if re.search(spec["files"], f) and not re.search(entry.get("exclude", "^$"), f)
    ]
    argv = shlex.split(spec["entry"])[1:] + entry.get("args", []) + files
    out, old = io.StringIO(), os.getcwd()
    os.chdir(project)
    try:
        return main(argv, out=out), out.getvalue()
    finally:
        os.chdir(old)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    parts = tmp_path / "configs" / "parts"
    parts.mkdir(parents=True)
    (parts / "head.pspec").write_text("head/**   ->   adam(lr)\n")  # unformatted, uses lr
    (tmp_path / "configs" / "main.pspec").write_text(
        'param lr = 1e-3\ninclude "parts/head.pspec"\nbackbone/** -> frozen\n'
    )
    (tmp_path / "README.md").write_text("not a spec\n")
    return tmp_path


STAGED = ["configs/main.pspec", "configs/parts/head.pspec", "README.md"]


def test_the_documented_config_uses_the_hooks_and_names_this_release() -> None:
    (repo,) = CONFIG["repos"]
    assert repo["rev"] == f"v{__version__}"
    assert {h["id"] for h in repo["hooks"]} <= set(HOOKS)
    assert set(HOOKS) == {"pspec-check", "pspec-fmt", "pspec-fmt-check"}


def test_check_skips_fragments_as_documented_and_checks_them_through_their_parent(
    project: Path,
) -> None:
    assert hook(project, "pspec-check", STAGED)[0] == 0
    # without the documented exclude, the fragment alone has an undefined name
    old = os.getcwd()
    os.chdir(project)
    try:
        assert main(["check", "configs/parts/head.pspec"], out=io.StringIO()) == 1
    finally:
        os.chdir(old)
    # a broken fragment still fails the commit, through the file that includes it
    (project / "configs" / "parts" / "head.pspec").write_text("head/** -> adma(lr)\n")
    code, out = hook(project, "pspec-check", STAGED)
    assert code == 1 and "E401" in out


def test_fmt_rewrites_and_fmt_check_only_reports(project: Path) -> None:
    fragment = project / "configs" / "parts" / "head.pspec"
    code, out = hook(project, "pspec-fmt-check", STAGED)
    assert code == 1 and "Would reformat: configs/parts/head.pspec" in out
    assert fragment.read_text() == "head/**   ->   adam(lr)\n"  # nothing written
    code, out = hook(project, "pspec-fmt", STAGED)
    assert code == 0 and "1 file reformatted" in out
    assert fragment.read_text() == "head/** -> adam(lr)\n"  # pre-commit sees the change
    assert hook(project, "pspec-fmt-check", STAGED)[0] == 0
