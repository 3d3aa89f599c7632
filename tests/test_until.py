"""Freezing over time: ``frozen until N then OPTIMIZER`` (docs: semantics section 3).

What is pinned down here: the group's first N updates (0..N-1) are exact ``-0.0`` whatever
the gradients (NaN and inf included) and leave the inner optimizer's state exactly as
``inner.init`` made it; update N is the inner optimizer's first (a fresh ``optax.adamw``
started at N, schedules counting from N); gradual unfreezing gives each group its own
first-moving update; a training step jits once across the unfreeze and the state's
structure never changes, so an Orbax checkpoint taken in the frozen phase restores and
unfreezes on time; errors point at the offending text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.jax.partition import Leaves, PartitionState
from partspec.jax.plan import UntilState
from tests import strategies as S
from tests.assertions import assert_bitwise_equal, assert_format_round_trip, bits


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


PARAMS = {
    "backbone": {"w": _normal(0, (3, 2)), "b": _normal(1, (2,))},
    "head": {"w": _normal(2, (2, 2)), "b": _normal(3, (2,))},
}
SHAPES = jax.eval_shape(lambda: PARAMS)

#: Gradients no optimizer should ever see: NaN, both infinities, the largest float32.
POISON = {
    "w": jnp.asarray([[np.nan, np.inf], [-np.inf, 3.4e38], [-3.4e38, np.nan]], jnp.float32),
    "b": jnp.asarray([np.inf, np.nan], jnp.float32),
}


def grads_at(t: int, backbone: Any | None = None) -> Any:
    """Finite, non-zero, step-dependent gradients (``backbone`` replaces that part)."""
    g = jax.tree.map(lambda x: _normal(100 + t, x.shape) + 0.5, PARAMS)
    if backbone is not None:
        g = {**g, "backbone": backbone}
    return g


def same_bits(a: Any, b: Any) -> bool:
    """Same structure, dtypes, shapes and bytes (for states: int counts and float moments)."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    return all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.asarray(x).shape == np.asarray(y).shape
        and np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in zip(la, lb)
    )


def make_step(tx: optax.GradientTransformation) -> Any:
    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    return step


def until_state(state: Any, label: str) -> UntilState:
    """The ``UntilState`` of ``label`` in a plan's state (with or without a ``global``):
    its counters, and the moments of its group's leaves."""
    if not isinstance(state, PartitionState):
        state = state[-1]
    (group,) = [g for g in state.groups.values() if label in g.labels]
    i, n = group.labels.index(label), len(group.labels)

    def mine(x: Any) -> Any:
        return x if isinstance(x, Leaves) or n == 1 else x[i]

    inner = jax.tree.map(mine, group.inner, is_leaf=lambda x: isinstance(x, Leaves))
    assert isinstance(inner, UntilState)
    return inner


# ---------------------------------------------------------------- 1. the exact step


@pytest.mark.parametrize("n", [0, 1, 3])
def test_frozen_for_exactly_n_updates_even_with_nan_and_inf_gradients(n: int) -> None:
    spec = f"backbone/** -> frozen until {n} then adam(0.1)\nhead/** -> sgd(0.1)"
    plan = partspec.compile(spec, PARAMS)
    label = f"frozen until {n} then adam(0.1)"
    assert plan.unfreeze_steps == {label: n}
    state0 = plan.tx.init(PARAMS)
    step = make_step(plan.tx)
    params, state = PARAMS, state0
    for t in range(n):
        params, state, updates = step(params, state, grads_at(t, POISON))
        # Bit-identical parameters; the updates are -0.0 (so p + u == p for every p).
        assert_bitwise_equal(params["backbone"], PARAMS["backbone"])
        for u in jax.tree.leaves(updates["backbone"]):
            assert (bits(u) == 0x80000000).all()
        # The head trains all along, on finite gradients.
        assert not np.array_equal(bits(params["head"]["w"]), bits(PARAMS["head"]["w"]))
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    # Right before update n: n updates counted, and Adam's state exactly as init made it
    # (count 0, mu and nu zeros): the NaN/inf gradients were never accumulated.
    us = until_state(state, label)
    assert int(us.step) == n
    assert same_bits(us.inner, until_state(state0, label).inner)
    adam_state = us.inner[0]
    assert isinstance(adam_state, optax.ScaleByAdamState)
    assert int(adam_state.count) == 0
    for moment in (adam_state.mu, adam_state.nu):
        for x in jax.tree.leaves(moment["backbone"]):
            assert (bits(x) == 0).all()
    # Update n moves every backbone coordinate, by Adam's first step.
    g = grads_at(n)
    before = params
    params, state, updates = step(params, state, g)
    for new, old in zip(jax.tree.leaves(params["backbone"]), jax.tree.leaves(before["backbone"])):
        assert (bits(new) != bits(old)).all()
    ref = optax.adam(0.1)
    expected, _ = ref.update(g["backbone"], ref.init(PARAMS["backbone"]), PARAMS["backbone"])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates["backbone"], expected
    )
    # Adam's first step is lr * sign(g) up to eps.
    jax.tree.map(
        lambda u, gg: np.testing.assert_allclose(u, -0.1 * np.sign(gg), rtol=1e-4),
        updates["backbone"],
        g["backbone"],
    )
    assert int(until_state(state, label).step) == n + 1
    assert int(until_state(state, label).inner[0].count) == 1


def test_first_n_updates_never_touch_the_inner_state_even_eagerly() -> None:
    """The bare transform, without jit or partition: the doctest's story with NaN."""
    tx = partspec.jax.plan.frozen_until(2, optax.sgd(1.0, momentum=0.9))
    p = jnp.asarray([1.0, -2.0], jnp.float32)
    state = tx.init(p)
    init_inner = state.inner
    for _ in range(2):
        u, state = tx.update(jnp.asarray([np.nan, np.inf], jnp.float32), state, p)
        assert (bits(u) == 0x80000000).all()
        assert same_bits(state.inner, init_inner)
    u, state = tx.update(jnp.asarray([1.0, 2.0], jnp.float32), state, p)
    np.testing.assert_array_equal(u, [-1.0, -2.0])
    assert int(state.step) == 3


# ---------------------------------------------------------------- 2. a fresh start at N


def test_updates_from_n_on_equal_a_fresh_adamw_started_at_n() -> None:
    n = 3
    spec = (
        f"backbone/** -> frozen until {n} then adamw(0.01, weight_decay=0.1)\nhead/** -> sgd(0.1)"
    )
    plan = partspec.compile(spec, PARAMS)
    step = make_step(plan.tx)
    fresh = optax.adamw(0.01, weight_decay=0.1)
    ref_step = make_step(fresh)
    params, state = PARAMS, plan.tx.init(PARAMS)
    ref_params, ref_state = PARAMS["backbone"], fresh.init(PARAMS["backbone"])
    for t in range(n + 5):
        g = grads_at(t)
        params, state, _ = step(params, state, g)
        if t >= n:
            ref_params, ref_state, _ = ref_step(ref_params, ref_state, g["backbone"])
        assert_bitwise_equal(params["backbone"], ref_params)
    assert not same_bits(params["backbone"], PARAMS["backbone"])


def test_a_schedule_inside_starts_counting_at_n() -> None:
    """adamw(linear_schedule(...)): the schedule's step 0 is update n.

    Compared to float tolerance: with a traced learning rate XLA fuses ``p + u`` differently
    in the two programs (a few ulps); a reference off by one update differs by far more.
    """
    n = 2
    sched = "linear_schedule(0.1, 0.0, 4)"
    spec = f"backbone/** -> frozen until {n} then adamw({sched})\nhead/** -> sgd(0.1)"
    plan = partspec.compile(spec, PARAMS)
    step = make_step(plan.tx)
    fresh = optax.adamw(optax.linear_schedule(0.1, 0.0, 4))
    ref_step = make_step(fresh)
    starts = (n - 1, n, n + 1)
    refs = {s: (PARAMS["backbone"], fresh.init(PARAMS["backbone"])) for s in starts}
    label = f"frozen until {n} then adamw({sched})"
    params, state = PARAMS, plan.tx.init(PARAMS)
    for t in range(n + 6):
        g = grads_at(t)
        params, state, _ = step(params, state, g)
        for s in starts:
            if t >= s:
                p, st_, _ = ref_step(*refs[s], g["backbone"])
                refs[s] = (p, st_)
        close = {
            s: all(
                np.allclose(a, b, rtol=1e-6, atol=0)
                for a, b in zip(jax.tree.leaves(params["backbone"]), jax.tree.leaves(refs[s][0]))
            )
            for s in starts
        }
        assert close[n], t
        if t >= n - 1:
            assert not close[n - 1] and not (t >= n and close[n + 1]), (t, close)
        assert int(until_state(state, label).inner[0].count) == max(0, t + 1 - n)


def test_a_schedule_learning_rate_by_hand() -> None:
    """sgd(linear_schedule(1, 0, 4)): update n + k is -(1 - k/4) * g; 0 from n + 4 on."""
    n = 3
    plan = partspec.compile(
        f"backbone/** -> frozen until {n} then sgd(linear_schedule(1.0, 0.0, 4))\n"
        "head/** -> sgd(0.1)",
        PARAMS,
    )
    step = make_step(plan.tx)
    params, state = PARAMS, plan.tx.init(PARAMS)
    for t in range(n + 6):
        g = grads_at(t)
        params, state, updates = step(params, state, g)
        lr = 0.0 if t < n else max(0.0, 1.0 - (t - n) / 4)
        for u, gg in zip(jax.tree.leaves(updates["backbone"]), jax.tree.leaves(g["backbone"])):
            if t < n:
                assert (bits(u) == 0x80000000).all()
            else:
                np.testing.assert_allclose(u, -lr * np.asarray(gg), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- 3. gradual unfreezing

GRADUAL_PARAMS = {
    "a": jnp.ones(2),
    "b": jnp.ones(2),
    "c": jnp.ones(2),
    "layers": [{"w": jnp.ones(2), "b": jnp.ones(1)} for _ in range(3)],
    "head": jnp.ones(2),
    "pretrained": jnp.ones(2),
}


def _flat(tree: Any) -> dict[str, Any]:
    """``{"layers/0/w": leaf, ...}``."""
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def first_moves(plan: partspec.Plan, params: Any, steps: int) -> dict[str, int | None]:
    """Each leaf's first update that changes it (``None``: never within ``steps``)."""
    step = make_step(plan.tx)
    state = plan.tx.init(params)
    start = _flat(params)
    first: dict[str, int | None] = dict.fromkeys(start)
    grads = jax.tree.map(jnp.ones_like, params)
    for t in range(steps):
        params, state, _ = step(params, state, grads)
        for key, new in _flat(params).items():
            if first[key] is None and not np.array_equal(bits(new), bits(start[key])):
                first[key] = t
    return first


EXPECTED_FIRST_MOVES = {
    "a": 2,
    "b": 4,
    "c": 6,
    "layers/0/w": 6,
    "layers/0/b": 6,
    "layers/1/w": 4,
    "layers/1/b": 4,
    "layers/2/w": 2,
    "layers/2/b": 2,
    "head": 0,
    "pretrained": None,
}


def test_gradual_unfreezing_table_of_first_moving_updates() -> None:
    """ULMFiT / Lightning's BackboneFinetuning: each group starts at its own update."""
    spec = """
    a -> frozen until 2 then sgd(0.1)
    b -> frozen until 4 then sgd(0.1) as bee
    c -> frozen until 6 then sgd(0.1)
    layers/<i>/** -> frozen until 2 * (3 - i) then sgd(0.1)
    head -> sgd(0.1)
    pretrained -> frozen
    """
    plan = partspec.compile(spec, GRADUAL_PARAMS)
    layer = "frozen until 2 * (3 - i) then sgd(0.1)"
    assert plan.unfreeze_steps == {
        "frozen until 2 then sgd(0.1)": 2,
        "bee": 4,
        "frozen until 6 then sgd(0.1)": 6,
        f"{layer}[i=0]": 6,
        f"{layer}[i=1]": 4,
        f"{layer}[i=2]": 2,
    }
    assert plan.labels["layers"][1] == {"w": f"{layer}[i=1]", "b": f"{layer}[i=1]"}
    assert plan.frozen_labels == {"frozen"}
    assert first_moves(plan, GRADUAL_PARAMS, 9) == EXPECTED_FIRST_MOVES


def test_gradual_unfreezing_with_count_of_the_capture() -> None:
    spec = """
    let depth = count(i)
    a -> frozen until 2 then sgd(0.1)
    b -> frozen until 4 then sgd(0.1) as bee
    c -> frozen until 6 then sgd(0.1)
    layers/<i>/** -> frozen until 2 * (depth - i) then sgd(0.1) as layer
    head -> sgd(0.1)
    pretrained -> frozen
    """
    plan = partspec.compile(spec, GRADUAL_PARAMS)
    assert {k: v for k, v in plan.unfreeze_steps.items() if k.startswith("layer[")} == {
        "layer[i=0]": 6,
        "layer[i=1]": 4,
        "layer[i=2]": 2,
    }
    assert first_moves(plan, GRADUAL_PARAMS, 9) == EXPECTED_FIRST_MOVES


# ---------------------------------------------------------------- 4. one trace


@pytest.mark.parametrize("glob", ["", "global clip_by_global_norm(1.0)\n"])
def test_train_step_traces_once_across_the_unfreeze(glob: str) -> None:
    plan = partspec.compile(
        glob + "backbone/** -> frozen until 4 then adamw(1e-2)\nhead/** -> adam(1e-2)", PARAMS
    )
    traces = []

    @jax.jit
    def train_step(params: Any, state: Any, t: jax.Array) -> tuple[Any, Any]:
        traces.append(1)  # runs only while tracing
        grads = jax.tree.map(lambda x: jnp.cos(x * t) + 0.1, params)
        updates, state = plan.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state0 = plan.tx.init(PARAMS)
    params, state = PARAMS, state0
    structures = [jax.tree_util.tree_structure(state)]
    for t in range(10):
        params, state = train_step(params, state, jnp.float32(t))
        structures.append(jax.tree_util.tree_structure(state))
        moved = not same_bits(params["backbone"], PARAMS["backbone"])
        assert moved == (t >= 4)
    assert len(traces) == 1
    assert all(s == structures[0] for s in structures)
    assert jax.eval_shape(lambda: state) == jax.eval_shape(lambda: state0)


# ---------------------------------------------------------------- 5. checkpoints


def _save_restore(directory: Path, item: Any, abstract: Any) -> Any:
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory, item)
        ckpt.wait_until_finished()
        return ckpt.restore(directory, abstract)


@pytest.mark.parametrize("glob", ["", "global clip_by_global_norm(1.0)\n"])
def test_checkpoint_in_the_frozen_phase_restores_and_unfreezes_on_time(
    tmp_path: Path, glob: str
) -> None:
    n, saved_at, total = 4, 2, 8
    spec = glob + f"backbone/** -> frozen until {n} then adam(1e-2)\nhead/** -> adam(1e-2) as head"
    plan = partspec.compile(spec, PARAMS)
    step = make_step(plan.tx)
    # Uninterrupted.
    params, state = PARAMS, plan.tx.init(PARAMS)
    history = []
    for t in range(total):
        params, state, _ = step(params, state, grads_at(t))
        history.append((params, state))
    # Interrupted at `saved_at`, restored by a restarted job (a fresh compile).
    p, s = history[saved_at - 1]
    again = partspec.compile(spec, SHAPES)
    abstract = {"params": SHAPES, "opt_state": jax.eval_shape(again.tx.init, SHAPES)}
    restored = _save_restore(tmp_path / "ckpt", {"params": p, "opt_state": s}, abstract)
    assert same_bits(restored, {"params": p, "opt_state": s})
    assert jax.tree_util.tree_structure(restored["opt_state"]) == jax.tree_util.tree_structure(s)
    assert int(until_state(restored["opt_state"], f"frozen until {n} then adam(0.01)").step) == 2
    step2 = make_step(again.tx)
    p, s = restored["params"], restored["opt_state"]
    for t in range(saved_at, total):
        before = p
        p, s, _ = step2(p, s, grads_at(t))
        assert same_bits(p, history[t][0])
        assert same_bits(s, history[t][1])
        assert same_bits(p["backbone"], before["backbone"]) == (t < n)


# ---------------------------------------------------------------- 6. errors, labels, format


def _col(text: str, needle: str) -> tuple[int, int]:
    """1-based (line, column) of the last ``needle`` in ``text``."""
    i = text.rindex(needle)
    return text.count("\n", 0, i) + 1, i - (text.rfind("\n", 0, i) + 1) + 1


@pytest.mark.parametrize(
    ("text", "needle", "code", "message"),
    [
        (
            "head/** -> sgd(0.1)\nbackbone/** -> frozen until -1 then sgd(1.0)",
            "-1",
            "E414",
            "`until` takes a number of updates (a non-negative integer), got an integer `-1`",
        ),
        (
            "head/** -> sgd(0.1)\nbackbone/** -> frozen until 1.5 then sgd(1.0)",
            "1.5",
            "E414",
            "got a number `1.5`",
        ),
        (
            'head/** -> sgd(0.1)\nbackbone/** -> frozen until "x" then sgd(1.0)',
            '"x"',
            "E414",
            "got a string",
        ),
        (
            "head/** -> sgd(0.1)\nbackbone/** -> frozen until true then sgd(1.0)",
            "true",
            "E414",
            "got a boolean",
        ),
        (
            "head/** -> sgd(0.1)\nbackbone/** -> frozen until 3 then 0.1",
            "0.1",
            "E412",
            "a rule's action must be `frozen` or an optimizer, got a number",
        ),
        (
            "head/** -> sgd(0.1)\nbackbone/** -> frozen until 3 then linear_schedule(1.0, 0.0, 5)",
            "linear_schedule",
            "E412",
            "got a schedule",
        ),
        (
            "backbone/** -> frozen until count(j) then sgd(1.0)\nhead/** -> sgd(0.1)",
            "j)",
            "E301",
            "no pattern captures `j`",
        ),
    ],
)
def test_bad_until_errors_point_at_the_text(
    text: str, needle: str, code: str, message: str
) -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(text, PARAMS)
    (d,) = info.value.diagnostics
    assert d.code == code
    assert message in d.message
    line, column = _col(text, needle)
    assert (d.line, d.column) == (line, column)
    # The same error without a tree (no JAX needed).
    with pytest.raises(partspec.SpecError) as info2:
        partspec.check(text)
    assert [x.code for x in info2.value.diagnostics] == [code]


def test_negative_until_from_a_param_is_an_error_at_compile() -> None:
    spec = "param n\nbackbone/** -> frozen until n then sgd(1.0)\nhead/** -> sgd(0.1)"
    assert partspec.compile(spec, PARAMS, n=2).unfreeze_steps == {"frozen until n then sgd(1.0)": 2}
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(spec, PARAMS, n=-3)
    assert [(d.code, d.line) for d in info.value.diagnostics] == [("E414", 2)]
    assert "`-3`" in info.value.diagnostics[0].message


@pytest.mark.parametrize(
    ("text", "column", "found"),
    [
        ("** -> frozen until 3", 21, "unexpected end of the spec"),
        ("** -> frozen until 3\n", 21, "unexpected end of line"),
        ("** -> frozen until 3 as x", 22, "unexpected `as`"),
    ],
)
def test_missing_then_is_a_syntax_error(text: str, column: int, found: str) -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.parse(text)
    d = info.value.diagnostics[0]
    assert d.code == "E100"
    assert d.message.startswith(found)
    assert "expected `then`" in d.message
    assert (d.line, d.column) == (1, column)


def test_labels_are_the_canonical_text_or_the_as_name() -> None:
    plan = partspec.compile(
        "backbone/** -> frozen until 1000 then adamw(1e-5)\n"
        "head/** -> frozen until 10 then sgd(0.1) as late",
        PARAMS,
    )
    assert plan.labels == {
        "backbone": {
            "w": "frozen until 1000 then adamw(1e-05)",
            "b": "frozen until 1000 then adamw(1e-05)",
        },
        "head": {"w": "late", "b": "late"},
    }
    assert plan.unfreeze_steps == {"frozen until 1000 then adamw(1e-05)": 1000, "late": 10}
    assert set(plan.transforms) == {"frozen until 1000 then adamw(1e-05)", "late"}


def test_named_until_label_survives_an_edit_of_n() -> None:
    """With `as`, changing N keeps the state structure (an old checkpoint restores)."""
    a = partspec.compile(
        "backbone/** -> frozen until 10 then adam(1e-3) as bb\n** -> sgd(0.1)", PARAMS
    )
    b = partspec.compile(
        "backbone/** -> frozen until 20 then adam(1e-3) as bb\n** -> sgd(0.1)", PARAMS
    )
    assert jax.tree.structure(a.tx.init(PARAMS)) == jax.tree.structure(b.tx.init(PARAMS))
    assert (a.unfreeze_steps, b.unfreeze_steps) == ({"bb": 10}, {"bb": 20})


@pytest.mark.parametrize(
    "text",
    [
        "backbone/** -> frozen until 1000 then adamw(1e-5)\n",
        "backbone/** -> frozen until 10 then sgd(0.1) as late\n",
        "let n = 4\nbackbone/** -> frozen until 2 * n + 1 then adam(1e-3, b1=0.8)\n",
        "layers/<i>/** -> frozen until 100 * (11 - i) then adamw(1e-5) as ld\n",
        "a/** where ndim >= 2 -> frozen until (3) then sgd(linear_schedule(1.0, 0.0, 5))\n",
        "global clip_by_global_norm(1.0)\n"
        "head/** -> frozen until 0 then chain(clip(1.0), sgd(0.1))\n",
    ],
)
def test_format_round_trip(text: str) -> None:
    formatted = assert_format_round_trip(text)
    assert " until " in formatted and " then " in formatted


def test_until_groups_are_trainable_for_split_and_mask() -> None:
    plan = partspec.compile(
        "backbone/w -> frozen until 3 then sgd(1.0)\nbackbone/b -> frozen\nhead/** -> sgd(0.1)",
        PARAMS,
    )
    assert plan.frozen_labels == {"frozen"}
    assert "frozen until 3 then sgd(1.0)" not in plan.frozen_labels
    assert plan.trainable_mask() == {
        "backbone": {"w": True, "b": False},
        "head": {"w": True, "b": True},
    }
    trainable, frozen_part = plan.split(PARAMS)
    assert trainable["backbone"]["w"] is PARAMS["backbone"]["w"]
    assert trainable["backbone"]["b"] is None and frozen_part["backbone"]["w"] is None
    # The optimizer of the trainable half still waits 3 updates for backbone/w.
    tx = plan.trainable_tx
    state = tx.init(trainable)
    grads = jax.tree.map(jnp.ones_like, trainable)
    for t in range(5):
        updates, state = tx.update(grads, state, trainable)
        u = np.asarray(updates["backbone"]["w"])
        if t < 3:
            assert (bits(u) == 0x80000000).all()
        else:
            np.testing.assert_array_equal(u, -np.ones_like(u))
        np.testing.assert_allclose(updates["head"]["w"], -0.1)


def test_until_beyond_int32_is_an_error_and_the_int32_limit_works() -> None:
    text = "backbone/** -> frozen until 3000000000 then sgd(1.0)\nhead/** -> sgd(0.1)"
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(text, PARAMS)
    (d,) = info.value.diagnostics
    assert (d.code, d.line, d.column) == ("E414", 1, text.index("3000") + 1)
    assert "2,147,483,647" in d.message
    plan = partspec.compile(text.replace("3000000000", str(2**31 - 1)), PARAMS)
    state = plan.tx.init(PARAMS)
    updates, _ = jax.jit(plan.tx.update)(grads_at(0), state, PARAMS)
    assert (bits(updates["backbone"]["w"]) == 0x80000000).all()


# ---------------------------------------------------------------- 7. property

_STEPS: dict[int, Any] = {}
_UNTIL_PARAMS = {"f": jnp.zeros(3), "h": jnp.zeros(1)}


def _until_step(n: int) -> tuple[partspec.Plan, Any]:
    """One compiled plan and jitted step per N (the shapes are fixed: no retracing)."""
    if n not in _STEPS:
        plan = partspec.compile(
            f"f -> frozen until {n} then sgd(0.5, momentum=0.9)\nh -> sgd(0.1)", _UNTIL_PARAMS
        )
        _STEPS[n] = (plan, make_step(plan.tx))
    return _STEPS[n]


finite_params = st.lists(
    st.floats(-4.0, 4.0, width=32, allow_subnormal=False), min_size=3, max_size=3
).map(lambda xs: np.asarray(xs, np.float32))


@given(st.integers(0, 4), finite_params, st.data())
def test_frozen_phase_is_bit_identical_then_moves_at_n(n: int, p0: np.ndarray, data: Any) -> None:
    plan, step = _until_step(n)
    label = f"frozen until {n} then sgd(0.5, momentum=0.9)"
    params = {"f": jnp.asarray(p0), "h": jnp.zeros(1)}
    state = plan.tx.init(params)
    init_inner = until_state(state, label).inner
    for _ in range(n):
        g = np.resize(data.draw(S.arrays()), 3)  # NaN, inf, huge, tiny, -0.0
        params, state, updates = step(params, state, {"f": g, "h": jnp.ones(1)})
        np.testing.assert_array_equal(bits(params["f"]), bits(p0))
        assert (bits(updates["f"]) == 0x80000000).all()
        assert same_bits(until_state(state, label).inner, init_inner)
    g = np.resize(data.draw(S.arrays()), 3)
    params, state, updates = step(params, state, {"f": g, "h": jnp.ones(1)})
    u = np.asarray(updates["f"])
    # The first update of sgd with momentum: the trace is 0, so it is -lr * g (XLA on CPU
    # may flush subnormal results to zero).
    expected = np.float32(-0.5) * g
    sub = np.abs(expected) < np.finfo(np.float32).tiny
    np.testing.assert_array_equal(u[~sub], expected[~sub])
    assert ((u[sub] == 0) | (u[sub] == expected[sub])).all()
    movable = np.isfinite(g) & (np.abs(g) >= 1e-5)
    assert (np.asarray(params["f"])[movable] != p0[movable]).all()
    assert (bits(params["f"])[~np.isfinite(g)] != bits(p0)[~np.isfinite(g)]).all()
