"""Pausing the cyclic garbage collector while large acyclic structures are built."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["no_gc"]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (restoring its previous state).

    Parse trees, ASTs and checked specs are acyclic, so reference counting frees them;
    but while they grow, the collector rescans them again and again, which took more
    than half of parsing or checking 10,000 rules.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
