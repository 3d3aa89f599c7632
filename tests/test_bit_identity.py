"""What bit-identity of frozen leaves promises, exactly, with both ways to apply updates.

``partspec.apply_updates`` keeps every frozen value bit for bit, subnormals included.
``optax.apply_updates`` adds ``-0.0``: bit-identical for every value except subnormals
on backends that flush them to zero (XLA on CPU and GPU), which become a zero of the
same sign. Complex leaves keep the sign of both zero parts either way.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import partspec

SPECS = {
    "frozen": "frozen_leaf -> frozen\n** -> sgd(0.5)",
    "frozen until": "frozen_leaf -> frozen until 3 then sgd(0.5)\n** -> sgd(0.5)",
}


def _uint(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).view(f"uint{np.asarray(x).dtype.itemsize * 8}")


LEAF_SIZE = 6


@functools.cache
def _runner(kind: str, apply_name: str, jit: bool, dtype: str) -> Any:
    """Three updates with NaN gradients, applied with `apply_name`: one compile per case."""
    example = {"frozen_leaf": jnp.zeros(LEAF_SIZE, dtype), "w": jnp.ones(2)}
    plan = partspec.compile(SPECS[kind], example)
    apply = {"optax": optax.apply_updates, "partspec": partspec.apply_updates}[apply_name]

    def step(p: Any, s: Any) -> tuple[Any, Any]:
        grads = jax.tree.map(lambda x: jnp.full_like(x, np.nan), p)
        u, s = plan.tx.update(grads, s, p)
        return apply(p, u), s

    run = jax.jit(step) if jit else step

    def three(params: Any) -> Any:
        state = plan.tx.init(params)
        for _ in range(3):
            params, state = run(params, state)
        return params

    return three


def _steps(kind: str, leaf: np.ndarray, apply_name: str, jit: bool) -> dict[str, Any]:
    leaf = np.resize(leaf, LEAF_SIZE)  # one shape, so each case compiles once
    params = {"frozen_leaf": jnp.asarray(leaf), "w": jnp.ones(2)}
    return _runner(kind, apply_name, jit, str(leaf.dtype))(params)


float32s = st.floats(width=32, allow_subnormal=True, allow_nan=True, allow_infinity=True)
subnormals = st.sampled_from([1e-40, -1e-40, 1.4e-45, -1.4e-45, 1.1754942e-38])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("kind", sorted(SPECS))
@settings(max_examples=50)  # each example runs 6 updates eagerly: keep CI bounded
@given(values=st.lists(st.one_of(float32s, subnormals), min_size=1, max_size=6))
def test_partspec_apply_updates_keeps_every_frozen_bit(
    values: list[float], kind: str, jit: bool
) -> None:
    """Subnormal frozen values were flushed to zero in `p + (-0.0)` (XLA CPU)."""
    for dtype in (np.float32, ml_dtypes.bfloat16):
        leaf = np.resize(np.asarray(values, np.float32).astype(dtype), LEAF_SIZE)
        out = _steps(kind, leaf, "partspec", jit)
        assert (_uint(out["frozen_leaf"]) == _uint(leaf)).all(), (leaf, out["frozen_leaf"])
        assert float(out["w"][0]) != 1.0  # the trainable leaf moved


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("kind", sorted(SPECS))
@settings(max_examples=50)
@given(values=st.lists(st.one_of(float32s, subnormals), min_size=1, max_size=6))
def test_optax_apply_updates_keeps_every_bit_but_flushed_subnormals(
    values: list[float], kind: str, jit: bool
) -> None:
    """The documented limit: a subnormal may become a zero of its sign, nothing else."""
    leaf = np.resize(np.asarray(values, np.float32), LEAF_SIZE)
    out = np.asarray(_steps(kind, leaf, "optax", jit)["frozen_leaf"])
    same = _uint(out) == _uint(leaf)
    subnormal = (leaf != 0) & (np.abs(leaf) < np.finfo(np.float32).tiny)
    flushed = (out == 0) & (np.signbit(out) == np.signbit(leaf))
    assert (same | (subnormal & flushed)).all(), (leaf, out)


@pytest.mark.parametrize("apply", ["optax", "partspec"])
@pytest.mark.parametrize("kind", sorted(SPECS))
def test_complex_leaves_keep_the_sign_of_both_zero_parts(apply: str, kind: str) -> None:
    """A complex frozen leaf's -0.0 imaginary part became +0.0 (the update was -0+0j)."""
    parts = [(-0.0, -0.0), (0.0, -0.0), (-0.0, 0.0), (1.5, -0.0), (np.nan, np.inf), (2, 3)]
    leaf = np.array([complex(a, b) for a, b in parts], np.complex64)
    out = np.asarray(_steps(kind, leaf, apply, jit=True)["frozen_leaf"])
    assert (out.view(np.uint32) == leaf.view(np.uint32)).all(), out


def test_partspec_apply_updates_is_optax_apply_updates_elsewhere() -> None:
    params = {"a": jnp.asarray([1.0, -2.0, 3.0]), "n": None, "i": jnp.asarray([1, 2])}
    updates = {"a": jnp.asarray([0.5, -0.0, 0.0]), "n": None, "i": jnp.asarray([1, 0])}
    got, want = partspec.apply_updates(params, updates), optax.apply_updates(params, updates)
    assert got["n"] is None
    for k in ("a", "i"):
        assert got[k].dtype == want[k].dtype
        assert (_uint(np.asarray(got[k])) == _uint(np.asarray(want[k]))).all()


# ---------------------------------------------------------------- wrappers around the optimizer


WRAP_PARAMS = {
    "frozen_leaf": jnp.asarray([-0.0, 0.0, 1.5], jnp.float32),
    "w": jnp.asarray([1.0, -2.0], jnp.float32),
}
WRAP_SPEC = "frozen_leaf -> frozen\nglobal clip_by_global_norm(1.0)\n** -> adam(0.1)"


def test_multi_steps_around_the_plan_keeps_frozen_leaves_out() -> None:
    """optax.MultiSteps(plan.tx) kept an accumulator for frozen leaves and emitted +0.0
    updates between steps, which flip -0.0 weights; plan.wrap keeps them out."""
    plan = partspec.compile(WRAP_SPEC, WRAP_PARAMS)
    tx = plan.wrap(lambda inner: optax.MultiSteps(inner, every_k_schedule=3))
    state = tx.init(WRAP_PARAMS)
    assert "frozen_leaf" not in str(partspec.select("**/acc_grads/**", state))
    reference = optax.MultiSteps(
        optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)), every_k_schedule=3
    )
    ref_state = reference.init({"w": WRAP_PARAMS["w"]})
    params, ref = WRAP_PARAMS, {"w": WRAP_PARAMS["w"]}
    for k in range(7):
        g = {"frozen_leaf": jnp.full(3, np.nan), "w": jnp.asarray([0.5 * k, -1.0])}
        u, state = jax.jit(tx.update)(g, state, params)
        params = optax.apply_updates(params, u)
        ru, ref_state = reference.update({"w": g["w"]}, ref_state, ref)
        ref = optax.apply_updates(ref, ru)
        assert (_uint(params["frozen_leaf"]) == _uint(WRAP_PARAMS["frozen_leaf"])).all()
        np.testing.assert_array_equal(params["w"], ref["w"])


def test_apply_if_finite_around_the_plan_ignores_frozen_gradients() -> None:
    """optax.apply_if_finite(plan.tx) skipped every update for a NaN frozen gradient."""
    plan = partspec.compile(WRAP_SPEC, WRAP_PARAMS)
    tx = plan.wrap(lambda inner: optax.apply_if_finite(inner, 2))
    state = tx.init(WRAP_PARAMS)
    nan_frozen = {"frozen_leaf": jnp.full(3, np.nan), "w": jnp.asarray([1.0, 1.0])}
    u, state = tx.update(nan_frozen, state, WRAP_PARAMS)
    assert float(jnp.abs(u["w"]).min()) > 0  # the trainable leaf moved
    assert (_uint(u["frozen_leaf"]) == _uint(jnp.full(3, -0.0))).all()
    nan_trained = {"frozen_leaf": jnp.ones(3), "w": jnp.asarray([np.nan, 1.0])}
    u, state = tx.update(nan_trained, state, WRAP_PARAMS)
    assert float(jnp.abs(u["w"]).max()) == 0.0  # a NaN where it matters: skipped
    # The unwrapped way around, for contrast: one NaN frozen gradient skips everything.
    bad = optax.apply_if_finite(plan.tx, 2)
    u, _ = bad.update(nan_frozen, bad.init(WRAP_PARAMS), WRAP_PARAMS)
    assert float(jnp.abs(u["w"]).max()) == 0.0
