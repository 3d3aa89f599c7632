"""``[tool.partspec]`` in ``pyproject.toml``: a project's defaults for ``pspec``.

``pspec`` reads the table of the ``pyproject.toml`` in the current directory or the
nearest directory above it (stopping at a repository's root, a ``.git`` directory)::

    [tool.partspec]
    files = ["configs/"]            # what `pspec check` and `pspec fmt` take with no SPEC
    exclude = ["configs/parts/*"]   # files of those directories to skip (include fragments)
    tree = "model.tree.json"        # the default --tree
    strict = true                   # the default of --strict (--no-strict overrides)
    plugins = ["my_project.ext"]    # modules imported first (they run: user code)

    [tool.partspec.set]             # values of `param`s, as --set gives them
    learning_rate = 3e-4

Paths are relative to the directory of the ``pyproject.toml``. The command line wins:
``--tree`` replaces ``tree``, each ``--set NAME=VALUE`` replaces that name's value, SPEC
arguments replace ``files``. An unknown key or a value of the wrong type is a usage error
(exit 2) that names the key.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "pyproject.toml").write_text('[tool.partspec]\\ntree = "m.json"\\nstrict = true\\n')
>>> c = load_config(d)
>>> (c.tree.endswith("m.json"), c.strict, c.files, c.values)
(True, True, (), {})
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "expand_specs", "find_pyproject", "load_config", "read_toml"]

#: The keys of ``[tool.partspec]`` and what each must be.
KEYS = {
    "files": "a list of paths",
    "exclude": "a list of glob patterns",
    "tree": "a path",
    "strict": "true or false",
    "plugins": "a list of module names",
    "set": "a table of param values",
}


class ConfigError(Exception):
    """A ``pyproject.toml`` that cannot be read, or a ``[tool.partspec]`` table that is wrong."""


@dataclass(frozen=True)
class Config:
    """The ``[tool.partspec]`` table, paths made absolute (empty without a table)."""

    path: Path | None = None
    files: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tree: str | None = None
    strict: bool = False
    plugins: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)


def find_pyproject(start: Path | None = None) -> Path | None:
    """The ``pyproject.toml`` in ``start`` (the current directory) or the nearest
    directory above it, stopping at a repository's root (a ``.git`` directory)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return candidate
        if (d / ".git").exists():
            return None
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; :class:`ConfigError` when it cannot be read or parsed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    return data


def _strings(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: [tool.partspec] {key} must be {KEYS[key]}, got {value!r}")
    return tuple(value)


def load_config(start: Path | None = None) -> Config:
    """The ``[tool.partspec]`` table that applies in ``start`` (the current directory).

    Raises:
      ConfigError: an unreadable file, an unknown key, a value of the wrong type.
    """
    path = find_pyproject(start)
    if path is None:
        return Config()
    table = read_toml(path).get("tool", {}).get("partspec")
    if table is None:
        return Config(path=path)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.partspec] must be a table")
    for key in table:
        if key not in KEYS:
            near = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f"; did you mean `{near[0]}`?" if near else f" (known: {', '.join(KEYS)})"
            raise ConfigError(f"{path}: unknown key `{key}` in [tool.partspec]{hint}")
    base = path.parent

    def at(p: str) -> str:  # shown relative to the current directory
        return os.path.relpath(base / p)

    tree = table.get("tree")
    if tree is not None and not isinstance(tree, str):
        raise ConfigError(f"{path}: [tool.partspec] tree must be {KEYS['tree']}, got {tree!r}")
    strict = table.get("strict", False)
    if not isinstance(strict, bool):
        raise ConfigError(f"{path}: [tool.partspec] strict must be true or false, got {strict!r}")
    values = table.get("set", {})
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [tool.partspec] set must be {KEYS['set']}, got {values!r}")
    for name, value in values.items():
        if not isinstance(value, (bool, int, float, str)):
            raise ConfigError(
                f"{path}: [tool.partspec.set] {name} must be a number, a string or a "
                f"boolean, got {value!r}"
            )
    return Config(
        path=path,
        files=tuple(at(f) for f in _strings(path, "files", table.get("files", []))),
        exclude=_strings(path, "exclude", table.get("exclude", [])),
        tree=None if tree is None else tree if _is_callable_ref(tree, base) else at(tree),
        strict=strict,
        plugins=_strings(path, "plugins", table.get("plugins", [])),
        values=dict(values),
    )


def _is_callable_ref(tree: str, base: Path) -> bool:
    """``MODULE:CALLABLE`` (``pspec tree``'s form), not a path."""
    import re

    return bool(re.fullmatch(r"[\w.]+:[\w.]+", tree)) and not (base / tree).exists()


def _shown_path(p: Path) -> str:
    """A path relative to the current directory when it is below it, else as is."""
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def expand_specs(
    paths: list[str], exclude: tuple[str, ...] = (), base: Path | None = None
) -> list[str]:
    """The spec files that ``paths`` name: a directory is every ``*.pspec`` below it
    (sorted, hidden directories skipped), less those matching an ``exclude`` glob (relative
    to ``base``, the ``pyproject.toml``'s directory, or to the directory given); ``-``
    and files stay as given.

    Raises:
      ConfigError: a directory with no spec file in it.
    """
    out: list[str] = []
    for p in paths:
        d = Path(p)
        if p == "-" or not d.is_dir():
            out.append(p)
            continue
        found = []
        for f in sorted(d.rglob("*.pspec")):
            rel = f.relative_to(d)
            if any(part.startswith(".") for part in rel.parts[:-1]):
                continue
            against = [rel.as_posix()]
            if base is not None:
                with contextlib.suppress(ValueError):  # a directory outside the project
                    against.append(f.resolve().relative_to(base.resolve()).as_posix())
            if any(fnmatch.fnmatchcase(a, pat) for a in against for pat in exclude):
                continue
            found.append(_shown_path(f) if d.is_absolute() else str(f))
        if not found:
            raise ConfigError(f"no .pspec file in directory {p!r}")
        out += found
    return out
