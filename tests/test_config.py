"""``[tool.partspec]`` in pyproject.toml: defaults for ``pspec``, the command line wins."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from partspec.tools.cli import main
from partspec.tools.config import ConfigError, expand_specs, load_config

TREE = {
    "backbone": {"w": {"shape": [2, 2], "dtype": "float32"}},
    "head": {"w": {"shape": [2], "dtype": "float32"}},
}
SPEC = "param lr = 0.1\nbackbone/** -> frozen\nhead/** -> sgd(lr)\n"


def run(cwd: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old, old_err = os.getcwd(), sys.stderr
    os.chdir(cwd)
    sys.stderr = err
    try:
        code = main(list(argv), out=out)
    finally:
        os.chdir(old)
        sys.stderr = old_err
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()  # the search for pyproject.toml stops here
    (tmp_path / "specs" / "parts").mkdir(parents=True)
    (tmp_path / "specs" / "main.pspec").write_text(SPEC)
    (tmp_path / "specs" / "parts" / "head.pspec").write_text("head/** -> sgd(lr)\n")
    (tmp_path / "model.tree.json").write_text(json.dumps(TREE))
    return tmp_path


def configure(project: Path, table: str) -> None:
    (project / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.partspec]\n{table}")


def test_files_tree_and_exclude_make_a_bare_check_check_the_project(project: Path) -> None:
    configure(project, 'files = ["specs"]\nexclude = ["specs/parts/*"]\ntree = "model.tree.json"\n')
    code, out, _ = run(project, "check", "--format", "concise")
    assert (code, out) == (0, "All checks passed (1 spec).\n")
    # from a subdirectory: paths are relative to pyproject.toml, shown relative to here
    (project / "specs" / "main.pspec").write_text(SPEC + "other/** -> sgd(0.1)\n")
    code, out, _ = run(project / "specs", "check", "--format", "concise")
    assert code == 0 and out.startswith("main.pspec:4:1: W601"), out


def test_without_exclude_a_fragment_that_needs_its_parents_param_fails(project: Path) -> None:
    configure(project, 'files = ["specs"]\n')
    code, out, _ = run(project, "check", "--format", "concise")
    assert code == 1
    assert "specs/parts/head.pspec:1:16: E301" in out, out


def test_strict_and_set_come_from_the_table_and_the_command_line_wins(project: Path) -> None:
    spec = project / "specs" / "main.pspec"
    spec.write_text(SPEC + "other/** -> sgd(0.1)\n")  # W601
    configure(
        project, 'tree = "model.tree.json"\nstrict = true\n[tool.partspec.set]\nlr = "fast"\n'
    )
    code, _, err = run(project, "check", "specs/main.pspec")
    assert code == 2 and "lr" in err and "number" in err, err  # the table's value is used
    code, _, err = run(project, "check", "specs/main.pspec", "--set", "lr=0.5")
    assert code == 1  # --set replaced it; strict turns W601 into an error
    code, _, _ = run(project, "check", "specs/main.pspec", "--set", "lr=0.5", "--no-strict")
    assert code == 0


def test_explain_takes_the_tree_from_the_table(project: Path) -> None:
    pytest.importorskip("jax", reason="explain needs the jax extra")
    code, _, err = run(project, "explain", "specs/main.pspec")
    assert code == 2 and "--tree TREE is required" in err and "[tool.partspec]" in err
    configure(project, 'tree = "model.tree.json"\n')
    code, out, _ = run(project, "explain", "specs/main.pspec", "--format", "json")
    assert code == 0
    assert json.loads(out)["leaves"] == 2


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('tre = "m.json"', "unknown key `tre` in [tool.partspec]; did you mean `tree`?"),
        ("strict = 1", "strict must be true or false, got 1"),
        ('files = "specs"', "files must be a list of paths, got 'specs'"),
        ("[tool.partspec.set]\nlr = [1, 2]", "[tool.partspec.set] lr must be a number"),
        ("files = [", "cannot read"),
    ],
)
def test_a_wrong_table_is_a_usage_error_naming_the_key(
    project: Path, table: str, message: str
) -> None:
    configure(project, table + "\n")
    with pytest.raises(ConfigError, match=None) as info:
        load_config(project)
    assert message in str(info.value)
    code, out, err = run(project, "check", "specs/main.pspec")
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err


def test_directories_expand_to_their_specs_sorted_and_an_empty_one_is_a_usage_error(
    project: Path,
) -> None:
    (project / "specs" / ".hidden").mkdir()
    (project / "specs" / ".hidden" / "x.pspec").write_text("** -> frozen\n")
    got = expand_specs([str(project / "specs"), "-"])
    assert [Path(p).name for p in got] == ["main.pspec", "head.pspec", "-"]
    (project / "empty").mkdir()
    code, _, err = run(project, "fmt", "--check", "empty")
    assert code == 2 and "no .pspec file in directory 'empty'" in err
    code, _, err = run(project, "check")
    assert code == 2 and "give SPEC files or directories" in err


def test_fmt_rewrites_a_directory(project: Path) -> None:
    (project / "specs" / "main.pspec").write_text("param lr=0.1\n** -> sgd( lr )\n")
    code, out, _ = run(project, "fmt", "specs")
    assert code == 0 and "1 file reformatted, 1 file left unchanged" in out
    assert (project / "specs" / "main.pspec").read_text() == "param lr = 0.1\n** -> sgd(lr)\n"


def test_check_reads_standard_input(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "partspec", "check", "-", "--tree", "model.tree.json"],
        input=SPEC + "other/** -> sgd(0.1)\n",
        capture_output=True,
        text=True,
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr
    assert "<stdin>:4:1" in proc.stdout, proc.stdout


def test_a_module_callable_tree_is_kept_as_written(project: Path) -> None:
    # It was dropped (tree None): `pspec check` then checked no coverage at all.
    configure(project, 'tree = "my_models.vit:params"\n')
    assert load_config(project).tree == "my_models.vit:params"
    configure(project, 'tree = "model.tree.json"\n')
    assert load_config(project).tree.endswith("model.tree.json")
