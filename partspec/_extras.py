"""Optional parts of partspec and the one-line error that names the extra to install.

``pip install partspec`` installs the language and ``pspec check`` / ``pspec fmt`` with
lark alone. Compiling to optax, ``explain``, ``diff``, ``tree`` and model surgery need
JAX and optax: ``pip install 'partspec[jax]'``.

>>> needs("jax") is None  # this environment has the extra
True
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "has", "needs"]

#: extra -> the modules it installs (what partspec imports from it).
EXTRAS: dict[str, tuple[str, ...]] = {
    "jax": ("jax", "optax", "numpy"),
    "plot": ("matplotlib",),
    "torch": ("torch",),
    "lsp": ("pygls", "lsprotocol"),
}


class MissingExtra(ImportError):
    """A feature needs an optional extra that is not installed; the message names it."""


def has(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS[extra])


def needs(extra: str, what: str = "this") -> None:
    """Raise :class:`MissingExtra` (one line, naming the extra) if ``extra`` is missing."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f"{what} needs {', '.join(missing)}: install partspec with the `{extra}` extra: "
            f"pip install 'partspec[{extra}]'"
        )
