"""Plugins: the modules ``pspec`` imports so that specs can name user extensions.

This is the one place where ``pspec check``, ``explain``, ``diff`` and ``plot`` import
user code, and only modules the user names: ``--plugin MODULE`` on the command line, or
``plugins = ["MODULE", ...]`` in the ``[tool.partspec]`` table of the ``pyproject.toml``
found in the current directory or the nearest directory above it. A plugin module
registers its factories with :func:`partspec.register` when imported. Specs themselves
never import anything.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PluginError", "find_pyproject", "load_plugins", "pyproject_plugins"]


class PluginError(Exception):
    """A plugin that cannot be imported, or a ``[tool.partspec]`` table that is wrong."""


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


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except (OSError, ValueError) as err:
        raise PluginError(f"cannot read {path}: {err}") from None
    return data


def pyproject_plugins(path: Path | None) -> list[str]:
    """The ``plugins`` of the ``[tool.partspec]`` table in ``path`` (none without one)."""
    if path is None:
        return []
    table = _read_toml(path).get("tool", {}).get("partspec", {})
    plugins = table.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise PluginError(
            f"{path}: [tool.partspec] plugins must be a list of module names, "
            f'for example plugins = ["my_project.partspec_ext"]'
        )
    return plugins


def load_plugins(modules: Sequence[str]) -> list[str]:
    """Import each module (once), so that it registers its factories.

    The current directory is importable, as under ``python -m``.

    Raises:
      PluginError: a module cannot be imported (its error is in the message).
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:
            raise PluginError(
                f"cannot import plugin `{name}`: {type(err).__name__}: {err}"
            ) from None
        loaded.append(name)
    return loaded
