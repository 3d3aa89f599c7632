"""Every cache partspec keeps at module level: its owner, its bound, a way to clear it.

A module that caches registers the cache here when it is imported; ``partspec.
clear_caches()`` empties them all and ``partspec.cache_info()`` lists them, with the
entries they hold and the most they may hold. Caches kept on an object (a checked spec
per ``param`` values on a ``Spec``, the lazily built states of a matcher) go with it.

>>> import partspec, partspec.resolution
>>> info = {c.name: c for c in partspec.cache_info()}
>>> info["resolution.matchers"].bound
64
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CacheInfo", "cache_info", "clear_caches", "register"]


@dataclass(frozen=True)
class CacheInfo:
    """One registered cache: who owns it, how full it is, how full it may get."""

    name: str
    owner: str
    size: int
    bound: int
    what: str


@dataclass(frozen=True)
class _Entry:
    owner: str
    bound: int
    what: str
    size: Callable[[], int]
    clear: Callable[[], None]


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    *,
    owner: str,
    bound: int,
    what: str,
    size: Callable[[], int],
    clear: Callable[[], None],
) -> None:
    """Register a module-level cache (``owner`` is the module that keeps it)."""
    _REGISTRY[name] = _Entry(owner, bound, what, size, clear)


def register_lru(name: str, fn: object, *, owner: str, what: str) -> None:
    """Register a ``functools.lru_cache``-decorated function."""
    info = fn.cache_info  # type: ignore[attr-defined]
    register(
        name,
        owner=owner,
        bound=info().maxsize or 1,
        what=what,
        size=lambda: info().currsize,
        clear=fn.cache_clear,  # type: ignore[attr-defined]
    )


def clear_caches() -> None:
    """Empty every registered cache (the next compile rebuilds what it needs)."""
    for entry in _REGISTRY.values():
        entry.clear()


def cache_info() -> list[CacheInfo]:
    """Every registered cache, sorted by name."""
    return [
        CacheInfo(name, e.owner, e.size(), e.bound, e.what) for name, e in sorted(_REGISTRY.items())
    ]
