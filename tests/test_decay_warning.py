"""W604: weight decay added after the update's sign is applied makes the weights grow."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import pytest

import partspec


def w604(action: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        checked = partspec.check(f"** -> {action}")
    return any(w.code == "W604" for w in checked.warnings)


@pytest.mark.parametrize(
    "action",
    [
        "chain(sgd(0.1), add_decayed_weights(1e-4))",
        "chain(scale_by_adam(), scale_by_learning_rate(1e-3), add_decayed_weights(1e-4))",
        "chain(scale_by_adam(), scale(-1e-3), add_decayed_weights(1e-4))",
        "chain(sgd(0.1), add_decayed_weights(1e-4), scale(-1), scale(-1))",
    ],
)
def test_decay_after_the_sign_flip_warns(action: str) -> None:
    assert w604(action)


@pytest.mark.parametrize(
    "action",
    [
        "chain(add_decayed_weights(1e-4), sgd(0.1))",
        "chain(scale_by_adam(), add_decayed_weights(1e-4), scale_by_learning_rate(1e-3))",
        "chain(sgd(0.1), add_decayed_weights(-1e-4))",
        # big_vision's make(): the sign is applied last, by scale(-1).
        "chain(scale(0.5), scale_by_learning_rate(0.01, flip_sign=false), "
        "add_decayed_weights(1e-3), scale(-1))",
    ],
)
def test_decay_that_shrinks_the_weights_is_quiet(action: str) -> None:
    assert not w604(action)


@pytest.mark.parametrize(
    "action",
    [
        "chain(sgd(0.1), add_decayed_weights(0.5))",
        "chain(scale(0.5), scale_by_learning_rate(0.1, flip_sign=false), "
        "add_decayed_weights(0.5), scale(-1))",
        "chain(add_decayed_weights(0.5), sgd(0.1))",
    ],
)
def test_the_warning_agrees_with_what_the_weights_do(action: str) -> None:
    """With zero gradients only the decay moves a positive weight: W604 exactly when it
    grows."""
    params = {"w": jnp.ones(1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        plan = partspec.compile(f"** -> {action}", params)
    updates, _ = plan.tx.update({"w": jnp.zeros(1)}, plan.init(params), params)
    assert (float(updates["w"][0]) > 0) == w604(action)
