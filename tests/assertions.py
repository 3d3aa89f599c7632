"""Bit-level assertions shared by the tests."""

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
