"""Plugins: the modules ``pspec`` imports so that specs can name user extensions.

This is the one place where ``pspec check``, ``explain``, ``diff`` and ``plot`` import
user code, and only modules the user names: ``--plugin MODULE`` on the command line, or
``plugins = ["MODULE", ...]`` in the ``[tool.partspec]`` table of the ``pyproject.toml``
found in the current directory or the nearest directory above it
(:mod:`partspec.tools.config`). A plugin module
registers its factories with :func:`partspec.register` when imported. Specs themselves
never import anything.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["PluginError", "load_plugins"]


class PluginError(Exception):
    """A plugin that cannot be imported, or a ``[tool.partspec]`` table that is wrong."""


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
