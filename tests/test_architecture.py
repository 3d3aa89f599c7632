"""The stages are one-way: no module imports a later stage, or a sibling backend.

Every ``import`` of a partspec module counts, inside functions too; only imports under
``if TYPE_CHECKING:`` (annotations) do not. ``docs/architecture.md`` draws the same
order; this test is what keeps it true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "partspec"

#: The stages, lowest first. A module may import a module of an earlier entry, or an
#: earlier module of its own entry (within a package, the order of the inner list).
ORDER: list[tuple[str, list[str]]] = [
    ("partspec._version", []),
    ("partspec._extras", []),
    ("partspec._caches", []),
    (
        "partspec.diagnostics",
        ["text", "render", "model", "errors", "suggest", "__init__"],
    ),
    (
        "partspec.language",
        [
            "_gc",
            "files",
            "vocabulary",
            "_optax_table",
            "_tablegen",
            "ast",
            "formatter",
            "lalr",
            "grammar",
            "syntax_errors",
            "parser",
            "includes",
            "values",
            "functions",
            "registry",
            "evaluator",
            "checker",
            "load",
            "__init__",
            "__main__",
        ],
    ),
    ("partspec.matching", ["globs", "captures", "__init__"]),
    (
        "partspec.resolution",
        [
            "settings",
            "resolver",
            "counting",
            "hints",
            "coverage",
            "result",
            "hyper",
            "selection",
            "__init__",
        ],
    ),
    ("partspec.jax", ["tree", "optimizers", "partition", "rates", "plan", "__init__"]),
    ("partspec.torch", ["schedules", "mapping", "optim", "plan", "__init__"]),
    (
        "partspec.tools",
        [
            "config",
            "plugins",
            "lexer",
            "manifest",
            "checking",
            "editor",
            "lsp",
            "surgery",
            "explain",
            "plot",
            "diff",
            "cli",
            "__init__",
        ],
    ),
    ("partspec", ["__init__", "__main__"]),
]

#: Backends are siblings: none may import another.
BACKENDS = {"partspec.jax", "partspec.torch"}


def _rank(module: str) -> tuple[int, int]:
    """(stage, position in the stage) of a module; the package itself is its __init__."""
    for i, (package, inner) in enumerate(ORDER):
        if module == package and not inner:
            return i, 0
        if module == package:
            return i, inner.index("__init__")
        prefix = package + "."
        if module.startswith(prefix) and package != "partspec":
            name = module[len(prefix) :].split(".")[0]
            assert name in inner, f"{module}: add it to ORDER in this test"
            return i, inner.index(name)
    if module == "partspec.__main__":
        return len(ORDER) - 1, 1
    raise AssertionError(f"{module}: add it to ORDER in this test")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((module, path))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every partspec import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("partspec")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("partspec"):
            assert node.module is not None
            for a in node.names:  # `from partspec.x import y`: y may be a module
                sub = f"{node.module}.{a.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                is_package = (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                found.append((node.lineno, sub if is_module or is_package else node.module))
    return found


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda x: str(x))
def test_no_module_imports_a_later_stage(module: str, path: Path) -> None:
    me = _rank(module)
    for line, target in _imports(path):
        if target == module:
            continue
        them = _rank(target)
        assert them < me, f"{path.name}:{line}: {module} imports {target}, a later stage"
        mine = next((b for b in BACKENDS if module.startswith(b)), None)
        theirs = next((b for b in BACKENDS if target.startswith(b)), None)
        assert mine is None or theirs in (None, mine), (
            f"{path.name}:{line}: backend {mine} imports backend {theirs}"
        )


def test_every_module_has_a_place_in_the_order() -> None:
    for module, _ in _modules():
        _rank(module)


DOC = PACKAGE.parent / "docs" / "architecture.md"


def test_the_architecture_page_lists_the_stages_in_this_order() -> None:
    """docs/architecture.md is the picture a contributor reads first: keep it true."""
    text = DOC.read_text(encoding="utf-8")
    listed = text.split("<!-- stages:", 1)[1]
    numbered = [
        line for line in listed.splitlines() if line[:1].isdigit() and ". `partspec" in line
    ]
    first_named = []
    for line in numbered:
        for name in line.split("`")[1::2]:
            if name.startswith("partspec"):
                first_named.append(name)
    packages = [package for package, _ in ORDER]
    assert [p for p in first_named if p in packages] == packages


#: Stages that must import no framework (the light install has none of them).
CORE = ("partspec._", "partspec.diagnostics", "partspec.language", "partspec.matching")
CORE += ("partspec.resolution",)
FRAMEWORKS = ("jax", "optax", "numpy", "ml_dtypes", "flax", "torch", "rich")
#: Regenerates the optax table from the installed optax (a maintainer's tool, not run
#: by partspec itself).
GENERATORS = {"partspec.language._tablegen"}


def _third_party(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in _modules() if m.startswith(CORE) and m not in GENERATORS],
    ids=lambda x: str(x),
)
def test_the_core_stages_import_no_framework(module: str, path: Path) -> None:
    for line, name in _third_party(path):
        assert name not in FRAMEWORKS, f"{path.name}:{line}: {module} imports {name}"
