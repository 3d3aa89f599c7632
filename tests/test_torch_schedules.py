"""The PyTorch backend's schedules equal optax's at every step count (to float32)."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch", reason="partspec.torch needs torch (the test extra)")

from partspec.language._optax_table import TABLE
from partspec.language.values import OptaxCall, ScaledSchedule
from partspec.torch.schedules import _SCHEDULES, schedule_fn

COUNTS = [*list(range(0, 70)), 99, 100, 101, 1000, 10**6]
# float32 values, as optax computes; no subnormals, which XLA flushes to zero (a peak of
# 1e-39 is a schedule of zeros in optax, not a learning rate anyone trains with).
value = st.floats(0.0, 2.0, width=32, allow_subnormal=False)
steps = st.integers(-3, 40)
pos_steps = st.integers(1, 40)
rate = st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99, 1.0, 1.5])

ARGS: dict[str, Any] = {
    "constant_schedule": st.fixed_dictionaries({"value": value}),
    "polynomial_schedule": st.fixed_dictionaries(
        {
            "init_value": value,
            "end_value": value,
            "power": st.sampled_from([0.5, 1, 2, 3]),
            "transition_steps": steps,
        },
        optional={"transition_begin": steps},
    ),
    "linear_schedule": st.fixed_dictionaries(
        {"init_value": value, "end_value": value, "transition_steps": steps},
        optional={"transition_begin": steps},
    ),
    "exponential_decay": st.fixed_dictionaries(
        {"init_value": value, "transition_steps": steps, "decay_rate": rate},
        optional={
            "transition_begin": steps,
            "staircase": st.booleans(),
            "end_value": st.none() | value,
        },
    ),
    "cosine_decay_schedule": st.fixed_dictionaries(
        {"init_value": value, "decay_steps": pos_steps},
        optional={"alpha": st.floats(0, 1), "exponent": st.sampled_from([0.5, 1.0, 2.0])},
    ),
    "warmup_constant_schedule": st.fixed_dictionaries(
        {"init_value": value, "peak_value": value, "warmup_steps": steps}
    ),
    "warmup_cosine_decay_schedule": st.integers(0, 20).flatmap(
        lambda w: st.fixed_dictionaries(
            {
                "init_value": value,
                "peak_value": value,
                "warmup_steps": st.just(w),
                "decay_steps": st.integers(w + 1, w + 40),
            },
            optional={"end_value": value, "exponent": st.sampled_from([1.0, 2.0])},
        )
    ),
    "warmup_exponential_decay_schedule": st.fixed_dictionaries(
        {
            "init_value": value,
            "peak_value": value,
            "warmup_steps": st.integers(0, 20),
            "transition_steps": steps,
            "decay_rate": rate,
        },
        optional={
            "transition_begin": steps,
            "staircase": st.booleans(),
            "end_value": st.none() | value,
        },
    ),
    "linear_onecycle_schedule": st.fixed_dictionaries(
        {"transition_steps": pos_steps, "peak_value": value},
        optional={
            "pct_start": st.sampled_from([0.1, 0.3, 0.5]),
            "pct_final": st.sampled_from([0.6, 0.85]),
            "div_factor": st.sampled_from([5.0, 25.0]),
            "final_div_factor": st.sampled_from([10.0, 1e4]),
        },
    ),
    "cosine_onecycle_schedule": st.fixed_dictionaries(
        {"transition_steps": pos_steps, "peak_value": value},
        optional={
            "pct_start": st.sampled_from([0.1, 0.3, 0.5]),
            "div_factor": st.sampled_from([5.0, 25.0]),
            "final_div_factor": st.sampled_from([10.0, 1e4]),
        },
    ),
}


def test_every_allow_listed_schedule_has_an_implementation_and_a_strategy() -> None:
    names = {k for k, v in TABLE.items() if v["kind"] == "schedule"}
    assert names == set(_SCHEDULES)
    assert names - {"join_schedules"} == set(ARGS)


def _close(name: str, kwargs: dict[str, Any], factor: float = 1.0) -> None:
    ours = schedule_fn(
        ScaledSchedule(factor, OptaxCall(name, "schedule", (), tuple(kwargs.items())))
    )
    theirs = getattr(optax, name)(**kwargs)
    # optax computes in float32: a value that cancels (1 + cos(x) near x = pi) is off
    # by float32 ulps of the schedule's scale, not of the value itself.
    scale = factor * max(
        [1.0] + [abs(v) for k, v in kwargs.items() if k.endswith("value") and v is not None]
    )
    for n in COUNTS:
        # The count as optax's optimizer state holds it (int32 under jit), not a Python
        # int, which takes numpy's path through the schedule instead of XLA's.
        want = factor * float(theirs(jnp.asarray(n, jnp.int32)))
        got = ours(n)
        # and a float32 power's error grows with the log of the result (1.5 ** 200).
        grown = abs(math.log(abs(want) / scale)) if math.isfinite(want) and want else 0.0
        rel = 2e-6 + 5e-7 * grown
        assert got == pytest.approx(want, rel=rel, abs=4e-7 * scale, nan_ok=True), (
            name,
            kwargs,
            n,
        )


@pytest.mark.parametrize("name", sorted(ARGS))
@settings(max_examples=25)
@given(data=st.data())
def test_schedule_equals_optax(name: str, data: st.DataObject) -> None:
    kwargs = data.draw(ARGS[name])
    factor = data.draw(st.sampled_from([1.0, 0.1, 10.0]))
    _close(name, kwargs, factor)


@settings(max_examples=25)
@given(
    a=ARGS["linear_schedule"],
    b=ARGS["cosine_decay_schedule"],
    boundary=st.integers(0, 40),
)
def test_join_schedules_equals_optax(a: dict[str, Any], b: dict[str, Any], boundary: int) -> None:
    calls = (
        OptaxCall("linear_schedule", "schedule", (), tuple(a.items())),
        OptaxCall("cosine_decay_schedule", "schedule", (), tuple(b.items())),
    )
    ours = schedule_fn(OptaxCall("join_schedules", "schedule", (calls, (boundary,)), ()))
    theirs = optax.join_schedules(
        [optax.linear_schedule(**a), optax.cosine_decay_schedule(**b)], [boundary]
    )
    for n in COUNTS:
        # float32 ulps of the schedules' scale (values <= 2), as in _close
        want = float(theirs(jnp.asarray(n, jnp.int32)))
        assert ours(n) == pytest.approx(want, rel=2e-6, abs=4e-7), n


def test_bad_arguments_fail_as_in_optax() -> None:
    call = OptaxCall("cosine_decay_schedule", "schedule", (1.0, 0), ())
    with pytest.raises(ValueError, match="positive decay_steps"):
        schedule_fn(call)
    with pytest.raises(ValueError):
        optax.cosine_decay_schedule(1.0, 0)
