"""Learning rates over time, as explain shows them: from the compiled schedules, checked
against the updates real optax states produce."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import partspec
from partspec.jax.rates import rates_at
from partspec.resolution import resolve_paths

SPEC = """
let sched = warmup_cosine_decay_schedule(0.0, 1e-2, 3, 12)
a/** -> sgd(sched) as a
b/** -> sgd(4 * sched) as b
c/** -> frozen until 5 then sgd(linear_schedule(0.1, 0.0, 6)) as c
d/** -> frozen as d
e/** -> sgd(0.05) as e
"""
PARAMS = {k: {"w": jnp.zeros(3)} for k in "abcde"}


def _sgd_rates(plan: partspec.Plan, steps: int) -> dict[str, list[float]]:
    """Each label's learning rate at every update, read off real updates: SGD's update
    of a gradient of ones is minus the rate."""
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    state = plan.tx.init(PARAMS)
    update = jax.jit(plan.tx.update)
    out: dict[str, list[float]] = {k: [] for k in "abcde"}
    for _ in range(steps):
        updates, state = update(grads, state, PARAMS)
        for k in "abcde":
            out[k].append(-float(updates[k]["w"][0]))
    return out


def test_rates_are_those_of_the_real_updates() -> None:
    plan = partspec.compile(SPEC, PARAMS)
    res = resolve_paths(plan.checked, [(k, "w") for k in "abcde"])
    steps = list(range(14))
    got = rates_at(res, steps)
    real = _sgd_rates(plan, len(steps))
    for k in "abcde":  # jitted and eager schedules may differ by an ulp near 0
        np.testing.assert_allclose(got[k], real[k], rtol=1e-6, atol=1e-8, err_msg=k)
    assert got["d"] == [0.0] * 14 and got["c"][:5] == [0.0] * 5


@settings(max_examples=25)  # each example compiles an update
@given(
    st.floats(1e-5, 1.0),
    st.integers(0, 20),
    st.integers(1, 40),
    st.integers(0, 6),
)
def test_rates_of_scheduled_labels_match_the_updates(
    peak: float, warmup: int, decay: int, until: int
) -> None:
    spec = (
        f"let s = warmup_cosine_decay_schedule(0.0, {peak!r}, {warmup}, {warmup + decay})\n"
        "a/** -> sgd(s) as a\nb/** -> sgd(3 * s) as b\n"
        f"c/** -> frozen until {until} then sgd(s) as c\nd/** -> frozen as d\ne/** -> sgd(0.5) as e"
    )
    plan = partspec.compile(spec, PARAMS)
    res = resolve_paths(plan.checked, [(k, "w") for k in "abcde"])
    n = warmup + decay + until + 2
    got, real = rates_at(res, list(range(n))), _sgd_rates(plan, n)
    for k in "abcde":  # float32 schedules, traced or not: equal to a few ulps
        np.testing.assert_allclose(got[k], real[k], rtol=1e-4, atol=1e-9, err_msg=k)


def _tree_file(tmp_path: Path, keys: list[str]) -> Path:
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"path": f"{k}/w", "shape": [3]} for k in keys]))
    return path


def test_explain_shows_each_labels_rate_decay_and_multiplier(tmp_path: Path) -> None:
    from partspec.tools.cli import main

    spec = tmp_path / "s.pspec"
    spec.write_text(
        "param lr = 1e-3\nglobal clip_by_global_norm(1.0)\n"
        "layer/<i>/** -> adamw(lr * 0.5 ** (10 - i), weight_decay=0.05) as layer\n"
        "head/** -> adamw(lr, weight_decay=0.0) as head\n"
    )
    tree = _tree_file(tmp_path, ["layer/1", "layer/2", "layer/10", "head"])
    out = io.StringIO()
    assert main(["explain", str(spec), "--tree", str(tree), "--format", "json"], out=out) == 0
    report = json.loads(out.getvalue())
    rows = {r["label"]: r for r in report["labels"]}
    assert rows["head"]["learning_rate"] == pytest.approx(1e-3)
    assert rows["layer[i=2]"]["lr_scale"] == pytest.approx(0.5**8)
    assert rows["layer[i=10]"]["lr_scale"] == pytest.approx(1.0)
    assert rows["layer[i=2]"]["weight_decay"] == 0.05 and rows["head"]["weight_decay"] == 0.0
    # Capture labels in natural order: 2 before 10.
    order = [r["label"] for r in report["labels"]]
    assert order == ["layer[i=1]", "layer[i=2]", "layer[i=10]", "head"]
    assert report["globals"] == ["clip_by_global_norm(1.0)"]
    out = io.StringIO()
    assert main(["explain", str(spec), "--tree", str(tree)], out=out) == 0
    text = out.getvalue()
    assert "params: lr = 0.001" in text and "global: clip_by_global_norm(1.0)" in text
    assert "trainable: 12 params, 100.0%" in text
    assert "3.91e-6" in text  # layer 2's rate, as people read small rates


def test_explain_steps_gives_the_rate_table(tmp_path: Path) -> None:
    from partspec.tools.cli import main

    spec = tmp_path / "s.pspec"
    spec.write_text(SPEC)
    tree = _tree_file(tmp_path, list("abcde"))
    out = io.StringIO()
    args = ["explain", str(spec), "--tree", str(tree), "--steps", "0,3,5,12", "--format", "json"]
    assert main(args, out=out) == 0
    rates = json.loads(out.getvalue())["rates"]
    assert rates["steps"] == [0, 3, 5, 12]
    cosine = 0.5 * (1 + np.cos(np.pi * 2 / 9))  # 2 of the 9 decay steps done
    assert rates["labels"]["a"] == pytest.approx([0.0, 1e-2, 1e-2 * cosine, 0.0], abs=1e-6)
    assert rates["labels"]["c"][:2] == [0.0, 0.0] and rates["labels"]["c"][2] == pytest.approx(0.1)
    out = io.StringIO()
    assert main(["explain", str(spec), "--tree", str(tree), "--steps", "0,3"], out=out) == 0
    assert "Learning rate by update" in out.getvalue()
    assert main(["explain", str(spec), "--tree", str(tree), "--steps", "x"], out=out) == 2


@settings(max_examples=12)  # each example compiles a training step
@given(st.floats(1e-4, 1.0), st.integers(0, 6), st.integers(1, 12), st.integers(0, 5))
def test_hyperparams_give_the_rate_of_the_next_update_inside_jit(
    peak: float, warmup: int, decay: int, until: int
) -> None:
    """plan.hyperparams(state) reads each label's rate off a real optimizer state, inside
    jit, with `global` transforms in front: it is the rate the next update applies."""
    spec = (
        "global clip_by_global_norm(1e6)\n"
        f"let s = warmup_cosine_decay_schedule(0.0, {peak!r}, {warmup}, {warmup + decay})\n"
        "a/** -> sgd(s) as a\nb/** -> sgd(3 * s) as b\n"
        f"c/** -> frozen until {until} then sgd(s) as c\nd/** -> frozen as d\ne/** -> sgd(0.5) as e"
    )
    plan = partspec.compile(spec, PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)

    @jax.jit
    def step(state):  # type: ignore[no-untyped-def]
        hp = plan.hyperparams(state)
        updates, state = plan.tx.update(grads, state, PARAMS)
        return state, hp, updates

    state = plan.tx.init(PARAMS)
    for n in range(warmup + decay + until + 2):
        state, hp, updates = step(state)
        for k in "abcde":
            applied = -float(updates[k]["w"][0])
            assert float(hp[k]["learning_rate"]) == pytest.approx(applied, rel=1e-5, abs=1e-9)
        trains = {k: bool(hp[k]["trains"]) for k in "abcde"}
        assert trains == {"a": True, "b": True, "c": n >= until, "d": False, "e": True}


def test_a_frozen_until_labels_peak_is_its_rate_once_it_trains(tmp_path: Path) -> None:
    """The peak was sampled from update 0, where a `frozen until N` label is still 0."""
    from partspec.tools.cli import main

    spec = tmp_path / "s.pspec"
    spec.write_text("a/** -> frozen until 500 then adam(1e-3) as a\nb/** -> adam(1e-2) as b\n")
    tree = _tree_file(tmp_path, ["a", "b"])
    out = io.StringIO()
    assert main(["explain", str(spec), "--tree", str(tree), "--format", "json"], out=out) == 0
    rows = {r["label"]: r for r in json.loads(out.getvalue())["labels"]}
    assert rows["a"]["peak_learning_rate"] == pytest.approx(1e-3)
    assert rows["a"]["learning_rate"] == pytest.approx(1e-3)  # the rate of its first update
    assert rows["a"]["lr_scale"] == pytest.approx(0.1)


def test_collapse_gives_one_row_per_capture_rule(tmp_path: Path) -> None:
    from partspec.tools.cli import main

    spec = tmp_path / "s.pspec"
    spec.write_text(
        "layer/<i>/** -> frozen until 100 * (i + 1) then adam(1e-3 * 0.5 ** (3 - i)) as layer\n"
        "head/** -> adam(1e-3) as head\n"
    )
    tree = _tree_file(tmp_path, ["layer/0", "layer/1", "layer/2", "layer/3", "head"])
    out = io.StringIO()
    args = ["explain", str(spec), "--tree", str(tree), "--collapse", "--color", "never"]
    assert main(args, out=out) == 0
    text = out.getvalue()
    (row,) = [line for line in text.splitlines() if line.lstrip().startswith("layer[")]
    assert row.split()[:4] == ["layer[i=0..3]", "1.25e-4", "..", "0.001"]
    assert "update 100 .. 400" in row and " 12 " in row  # 4 leaves of 3 parameters
    assert "frozen until update 100, 200, 300, 400: 12 params" in text


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_a_onecycle_schedule_over_a_few_steps_trains_with_finite_rates(
    kind: str, steps: int
) -> None:
    # A onecycle whose first phase rounds to zero steps (`int(0.3 * 3) == 0`) gave NaN
    # learning rates at every step before optax 0.2.7 (optax#1403): the short runs of a
    # smoke test diverged silently. pyproject.toml's optax floor rules those versions out.
    spec = f"** -> sgd({kind}_onecycle_schedule({steps}, 0.1))"
    params = {"w": jnp.zeros(3)}
    plan = partspec.compile(spec, params)
    state = plan.tx.init(params)
    update = jax.jit(plan.tx.update)
    for _ in range(steps + 2):
        updates, state = update({"w": jnp.ones(3)}, state, params)
        assert np.isfinite(np.asarray(updates["w"])).all(), updates
