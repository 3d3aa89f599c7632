"""Assertions shared by the tests: bit-level equality, format round trips."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def bits(x: Any) -> np.ndarray:
    """The raw bits of a float32 array (so that -0.0 != 0.0 and NaN == NaN bit for bit)."""
    a = np.asarray(x)
    assert a.dtype == np.float32, a.dtype
    return a.view(np.uint32)


def assert_bitwise_equal(a: Any, b: Any) -> None:
    """Two pytrees of float32 arrays are bit-identical, leaf for leaf."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    assert la, "no leaves to compare"
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(bits(x), bits(y))


def assert_format_round_trip(text: str) -> str:
    """``parse(format(spec)) == spec`` and formatting is stable; returns the formatted text."""
    import partspec

    spec = partspec.parse(text)
    formatted = partspec.format(spec)
    assert partspec.parse(formatted) == spec
    assert partspec.format(partspec.parse(formatted)) == formatted
    return formatted


def label_paths(
    checked: Any, paths: Any, leaves: Any = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """``(labels, errors, warnings)`` of paths, from :func:`partspec.resolution.resolve_paths`."""
    from partspec.resolution import resolve_paths

    r = resolve_paths(checked, paths, leaves)
    return list(r.labels), list(r.errors), list(r.warnings)
