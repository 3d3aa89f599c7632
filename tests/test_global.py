"""Global transforms: ``global TRANSFORM`` (docs: semantics section 4).

A ``global`` transform runs on the gradients of the trainable leaves only, before the
rules' optimizers: frozen leaves are neither counted (in a global norm) nor changed, and
leaves in a ``frozen until`` phase count only from their unfreezing update on. The
references are written by hand (a global norm over the trainable gradients, with jnp or
float64 NumPy) and with optax: ``chain(masked(clip_by_global_norm(c), mask), partition)``.
The usual mistake, ``chain(clip_by_global_norm(c), partition)``, counts frozen gradients.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.jax.partition import PartitionState
from tests import strategies as S
from tests.assertions import assert_bitwise_equal, assert_format_round_trip, bits
from tests.models import Classifier

NEG_ZERO = 0x80000000


def _normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
    return scale * jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


PARAMS = {
    "backbone": {"w": _normal(0, (3, 2)), "b": _normal(1, (2,))},
    "head": {"w": _normal(2, (2, 2)), "b": _normal(3, (2,))},
}
MASK = {"backbone": {"w": False, "b": False}, "head": {"w": True, "b": True}}
FROZEN_BACKBONE = "backbone/** -> frozen\nhead/** -> sgd(1.0)"


def grads(backbone_scale: float = 1.0, head_scale: float = 1.0, seed: int = 10) -> Any:
    return {
        "backbone": {
            "w": _normal(seed, (3, 2), backbone_scale),
            "b": _normal(seed + 1, (2,), backbone_scale),
        },
        "head": {
            "w": _normal(seed + 2, (2, 2), head_scale),
            "b": _normal(seed + 3, (2,), head_scale),
        },
    }


def clip_by_hand(g: Any, mask: Any, max_norm: float) -> Any:
    """optax's clip_by_global_norm, over the leaves where ``mask`` is True; others as they are."""
    counted = [x for x, m in zip(jax.tree.leaves(g), jax.tree.leaves(mask)) if m]
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in counted))

    def clip(x: Any, m: bool) -> Any:
        if not m:
            return x
        return x if norm < max_norm else x / norm * max_norm

    return jax.tree.map(clip, g, mask)


def update(tx: optax.GradientTransformation, g: Any, params: Any = PARAMS) -> Any:
    u, _ = jax.jit(tx.update)(g, tx.init(params), params)
    return u


def assert_all_neg_zero(tree: Any) -> None:
    for x in jax.tree.leaves(tree):
        assert (bits(x) == NEG_ZERO).all(), x


def close(a: Any, b: Any, rtol: float = 1e-6) -> None:
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=0), a, b)


# ---------------------------------------------------------------- 1. trainable-only norm


def test_global_clip_counts_only_the_trainable_gradients() -> None:
    plan = partspec.compile("global clip_by_global_norm(1.0)\n" + FROZEN_BACKBONE, PARAMS)
    assert plan.trainable_mask() == MASK
    g = grads(backbone_scale=1000.0, head_scale=2.0)
    u = update(plan.tx, g)
    # By hand: the head's gradients clipped to norm 1 (sgd(1.0) negates them).
    expected = jax.tree.map(jnp.negative, clip_by_hand(g, MASK, 1.0)["head"])
    close(u["head"], expected)
    assert float(optax.tree.norm(u["head"])) == pytest.approx(1.0, rel=1e-6)
    assert_all_neg_zero(u["backbone"])
    # optax by hand: masked clip, then the partition.
    reference = optax.chain(
        optax.masked(optax.clip_by_global_norm(1.0), MASK),
        optax.partition(plan.transforms, plan.labels),
    )
    assert_bitwise_equal(u, update(reference, g))
    # The usual mistake counts the backbone's gradients: the head barely moves.
    buggy = optax.chain(
        optax.clip_by_global_norm(1.0), optax.partition(plan.transforms, plan.labels)
    )
    wrong = update(buggy, g)["head"]
    assert float(optax.tree.norm(wrong)) < 0.01
    with pytest.raises(AssertionError):
        close(u["head"], wrong, rtol=1e-2)


def test_gradients_under_the_threshold_pass_unchanged() -> None:
    plan = partspec.compile("global clip_by_global_norm(100.0)\n" + FROZEN_BACKBONE, PARAMS)
    g = grads(backbone_scale=1000.0, head_scale=1.0)
    u = update(plan.tx, g)
    assert_bitwise_equal(u["head"], jax.tree.map(jnp.negative, g["head"]))
    assert_all_neg_zero(u["backbone"])


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf, 3.4e38])
def test_nan_or_inf_frozen_gradients_neither_move_frozen_leaves_nor_poison_the_clip(
    poison: float,
) -> None:
    plan = partspec.compile("global clip_by_global_norm(1.0)\n" + FROZEN_BACKBONE, PARAMS)
    clean = grads(head_scale=3.0)
    g = {**clean, "backbone": jax.tree.map(lambda x: jnp.full_like(x, poison), clean["backbone"])}
    state = plan.tx.init(PARAMS)
    step = jax.jit(plan.tx.update)
    u, state = step(g, state, PARAMS)
    new = optax.apply_updates(PARAMS, u)
    assert_bitwise_equal(new["backbone"], PARAMS["backbone"])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(u["head"]))
    # Exactly what it would be with clean frozen gradients.
    assert_bitwise_equal(u["head"], update(plan.tx, clean)["head"])
    close(u["head"], jax.tree.map(jnp.negative, clip_by_hand(clean, MASK, 1.0)["head"]))


def test_frozen_leaves_have_no_global_state_either() -> None:
    """A stateful global (Adam's moments) keeps no state for frozen leaves."""
    plan = partspec.compile("global scale_by_adam()\n" + FROZEN_BACKBONE, PARAMS)
    state = plan.tx.init(PARAMS)
    adam = state[0].inner_state[0]
    assert isinstance(adam, optax.ScaleByAdamState)
    assert isinstance(adam.mu["backbone"]["w"], optax.MaskedNode)
    assert adam.mu["head"]["w"].shape == (2, 2)
    g = grads()
    u = update(plan.tx, g)
    reference = optax.chain(
        optax.masked(optax.scale_by_adam(), MASK), optax.partition(plan.transforms, plan.labels)
    )
    assert_bitwise_equal(u, update(reference, g))


# ---------------------------------------------------------------- 2. order and composition


@pytest.mark.parametrize(
    ("globals_", "norm"),
    [
        # clip to 0.5, then double: norm 1.0
        (["clip_by_global_norm(0.5)", "scale(2.0)"], 1.0),
        # double (norm 6), then clip: norm 0.5
        (["scale(2.0)", "clip_by_global_norm(0.5)"], 0.5),
    ],
)
def test_several_globals_apply_in_file_order(globals_: list[str], norm: float) -> None:
    # The statements may be anywhere: the first before the rules, the second after them.
    text = f"global {globals_[0]}\n{FROZEN_BACKBONE}\nglobal {globals_[1]}\n"
    plan = partspec.compile(text, PARAMS)
    g = grads(backbone_scale=50.0)
    g = {**g, "head": jax.tree.map(lambda x: x * (3.0 / optax.tree.norm(g["head"])), g["head"])}
    u = update(plan.tx, g)
    assert float(optax.tree.norm(u["head"])) == pytest.approx(norm, rel=1e-5)
    direction = jax.tree.map(lambda x: -x * (norm / 3.0), g["head"])
    close(u["head"], direction, rtol=1e-5)
    assert_all_neg_zero(u["backbone"])
    builders = {
        "clip_by_global_norm(0.5)": lambda: optax.clip_by_global_norm(0.5),
        "scale(2.0)": lambda: optax.scale(2.0),
    }
    reference = optax.chain(
        optax.masked(optax.chain(*(builders[t]() for t in globals_)), MASK),
        optax.partition(plan.transforms, plan.labels),
    )
    assert_bitwise_equal(u, update(reference, g))


def test_globals_run_before_the_rules_optimizers() -> None:
    """sgd(10.0) after a clip to 1: the updates' norm is 10 (not 1, as a clip after would give)."""
    plan = partspec.compile(
        "global clip_by_global_norm(1.0)\nbackbone/** -> frozen\nhead/** -> sgd(10.0)", PARAMS
    )
    u = update(plan.tx, grads(head_scale=5.0))
    assert float(optax.tree.norm(u["head"])) == pytest.approx(10.0, rel=1e-5)


def test_globals_compose_with_per_rule_chains() -> None:
    text = """
    global clip_by_global_norm(1.0)
    backbone/** -> frozen
    head/w -> chain(clip(0.05), sgd(1.0))
    head/b -> adam(0.1)
    """
    plan = partspec.compile(text, PARAMS)
    g = grads(backbone_scale=100.0, head_scale=4.0)
    u = update(plan.tx, g)
    clipped = clip_by_hand(g, MASK, 1.0)["head"]
    close(u["head"]["w"], -jnp.clip(clipped["w"], -0.05, 0.05))
    adam = optax.adam(0.1)
    expected_b, _ = adam.update(clipped["b"], adam.init(PARAMS["head"]["b"]))
    close(u["head"]["b"], expected_b, rtol=1e-5)
    assert_all_neg_zero(u["backbone"])


# ---------------------------------------------------------------- 3. frozen until


def test_until_groups_count_in_the_global_norm_only_from_their_unfreezing() -> None:
    n = 2
    text = f"""
    global clip_by_global_norm(1.0)
    backbone/w -> frozen until {n} then sgd(1.0)
    backbone/b -> frozen
    head/** -> sgd(1.0)
    """
    plan = partspec.compile(text, PARAMS)
    assert plan.unfreeze_steps == {f"frozen until {n} then sgd(1.0)": n}
    step = jax.jit(plan.tx.update)
    state = plan.tx.init(PARAMS)
    g = grads(backbone_scale=30.0, head_scale=2.0)
    head_norm = float(optax.tree.norm(g["head"]))
    full_norm = float(optax.tree.norm([g["head"], g["backbone"]["w"]]))
    assert head_norm > 1.0
    for t in range(n + 2):
        u, state = step(g, state, PARAMS)
        assert_all_neg_zero(u["backbone"]["b"])
        if t < n:
            # The clip factor from the head alone; backbone/w waits.
            factor = 1.0 / head_norm
            assert_all_neg_zero(u["backbone"]["w"])
        else:
            # From update n on, backbone/w counts: a much smaller factor for both.
            factor = 1.0 / full_norm
            close(u["backbone"]["w"], -factor * g["backbone"]["w"], rtol=1e-5)
        close(u["head"], jax.tree.map(lambda x, f=factor: -f * x, g["head"]), rtol=1e-5)
    # After the unfreezing the head's share of the unit norm is small.
    assert float(optax.tree.norm(u["head"])) < 0.1


def test_nan_gradients_of_a_waiting_group_do_not_poison_the_clip() -> None:
    text = """
    global clip_by_global_norm(1.0)
    backbone/** -> frozen until 3 then sgd(1.0)
    head/** -> sgd(1.0)
    """
    plan = partspec.compile(text, PARAMS)
    step = jax.jit(plan.tx.update)
    state = plan.tx.init(PARAMS)
    clean = grads(head_scale=3.0)
    g = {**clean, "backbone": jax.tree.map(lambda x: jnp.full_like(x, np.nan), clean["backbone"])}
    expected_head = jax.tree.map(jnp.negative, clip_by_hand(clean, MASK, 1.0)["head"])
    for _ in range(3):
        u, state = step(g, state, PARAMS)
        assert_all_neg_zero(u["backbone"])
        close(u["head"], expected_head)
    # From update 3 on a NaN gradient counts (as it would in any optimizer).
    u, state = step(g, state, PARAMS)
    assert all(np.isnan(x).all() for x in jax.tree.leaves(u["backbone"]))


def test_a_label_frozen_again_by_reset_state_is_gated_again() -> None:
    """reset_state(label=...) on a `frozen until` label must reset the gate's counter too:
    otherwise its NaN gradients reach the global clip while it waits again, and every
    trainable update becomes NaN."""
    text = """
    global clip_by_global_norm(1.0)
    backbone/** -> frozen until 2 then sgd(1.0)
    head/** -> sgd(1.0)
    """
    plan = partspec.compile(text, PARAMS)
    step = jax.jit(plan.tx.update)
    state = plan.tx.init(PARAMS)
    clean = grads(head_scale=3.0)
    for _ in range(4):  # past the unfreezing
        _, state = step(clean, state, PARAMS)
    (label,) = plan.unfreeze_steps
    state = partspec.reset_state(plan, state, PARAMS, label=label)
    g = {**clean, "backbone": jax.tree.map(lambda x: jnp.full_like(x, np.nan), clean["backbone"])}
    expected_head = jax.tree.map(jnp.negative, clip_by_hand(clean, MASK, 1.0)["head"])
    for _ in range(2):  # frozen again, for 2 updates: as at the start
        u, state = step(g, state, PARAMS)
        assert_all_neg_zero(u["backbone"])
        close(u["head"], expected_head)
    u, state = step(clean, state, PARAMS)  # update 2 after the reset: it trains again
    close(
        u["backbone"],
        jax.tree.map(
            jnp.negative,
            clip_by_hand(clean, {**MASK, "backbone": {"w": True, "b": True}}, 1.0)["backbone"],
        ),
    )


# ---------------------------------------------------------------- 4. no global


@pytest.mark.parametrize(
    "text",
    [
        FROZEN_BACKBONE,
        "backbone/** -> frozen until 3 then adam(1e-3)\nhead/** -> adam(1e-2)",
    ],
)
def test_without_global_tx_is_exactly_the_partition(text: str) -> None:
    plan = partspec.compile(text, PARAMS)
    partition = optax.partition(plan.transforms, plan.labels)
    state = plan.tx.init(PARAMS)
    assert isinstance(state, PartitionState)  # no gate, no masked chain
    g = grads()
    assert_bitwise_equal(update(plan.tx, g), update(partition, g))


def test_with_global_the_per_label_part_is_unchanged() -> None:
    without = partspec.compile(FROZEN_BACKBONE, PARAMS)
    with_ = partspec.compile("global clip_by_global_norm(1.0)\n" + FROZEN_BACKBONE, PARAMS)
    assert with_.labels == without.labels
    assert set(with_.transforms) == set(without.transforms)
    assert with_.frozen_labels == without.frozen_labels
    state = with_.tx.init(PARAMS)
    assert jax.tree.structure(state[-1]) == jax.tree.structure(without.tx.init(PARAMS))


# ---------------------------------------------------------------- 5. errors, format, frameworks


def _col(text: str, needle: str) -> tuple[int, int]:
    i = text.rindex(needle)
    return text.count("\n", 0, i) + 1, i - (text.rfind("\n", 0, i) + 1) + 1


@pytest.mark.parametrize(
    ("text", "needle", "code", "message", "hint"),
    [
        (
            "head/** -> sgd(0.1)\nglobal 1.0",
            "1.0",
            "E413",
            "`global` takes a transform, such as `clip_by_global_norm(1.0)`, got a number",
            None,
        ),
        (
            "global linear_schedule(0.1, 0.0, 10)\nhead/** -> sgd(0.1)",
            "linear_schedule",
            "E413",
            "got a schedule",
            None,
        ),
        (
            "global clip_by_globl_norm(1.0)\nhead/** -> sgd(0.1)",
            "clip_by_globl_norm",
            "E401",
            "unknown optimizer `clip_by_globl_norm`",
            "did you mean `clip_by_global_norm`?",
        ),
        (
            "global clip_by_global_norm(1.0, max=2.0)\nhead/** -> sgd(0.1)",
            "max=",
            "E402",
            "`clip_by_global_norm` has no argument `max`",
            "max_norm",
        ),
        (
            'global "clip"\nhead/** -> sgd(0.1)',
            '"clip"',
            "E413",
            "got a string",
            None,
        ),
        (
            "global clip_by_global_norm(undefined_name)\nhead/** -> sgd(0.1)",
            "undefined_name",
            "E301",
            "undefined_name",
            None,
        ),
    ],
)
def test_bad_globals_are_errors_at_their_position(
    text: str, needle: str, code: str, message: str, hint: str | None
) -> None:
    for run in (lambda: partspec.check(text), lambda: partspec.compile(text, PARAMS)):
        with pytest.raises(partspec.SpecError) as info:
            run()
        (d,) = info.value.diagnostics
        assert d.code == code
        assert message in d.message
        if hint is not None:
            assert d.hint is not None and hint in d.hint
        assert (d.line, d.column) == _col(text, needle)


def test_global_uses_lets_and_params() -> None:
    spec = "param max_norm\nlet half = max_norm / 2\nglobal clip_by_global_norm(half)\n"
    spec += FROZEN_BACKBONE
    plan = partspec.compile(spec, PARAMS, max_norm=2.0)
    g = grads(head_scale=5.0)
    close(
        update(plan.tx, g)["head"], jax.tree.map(jnp.negative, clip_by_hand(g, MASK, 1.0)["head"])
    )


@pytest.mark.parametrize(
    "text",
    [
        "global clip_by_global_norm(1.0)\nbackbone/** -> frozen\nhead/** -> sgd(1.0)\n",
        "backbone/** -> frozen\nglobal clip(0.5)\nhead/** -> adam(1e-3)\nglobal scale(2.0)\n",
        "let c = 2 * 0.5\nglobal clip_by_global_norm(c)\nglobal chain(clip(1.0), scale(-1.0))\n"
        "** -> sgd(1.0)\n",
    ],
)
def test_format_round_trip(text: str) -> None:
    formatted = assert_format_round_trip(text)

    # The statements keep their places and their order.
    def shape(t: str) -> list[str]:
        return [line.split()[1] if line.startswith("global ") else "-" for line in t.splitlines()]

    assert shape(formatted) == shape(text)


def test_canonical_text_of_a_global() -> None:
    spec = partspec.parse("global   clip_by_global_norm( 1e0 )\n** -> sgd(1.0)")
    assert partspec.format(spec) == "global clip_by_global_norm(1e0)\n** -> sgd(1.0)\n"


def test_linen_train_state_in_a_jitted_step() -> None:
    model = Classifier()
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 4))
    y = jnp.arange(16) % 3
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    spec = "global clip_by_global_norm(0.1)\nbackbone/** -> frozen\nhead/** -> sgd(1.0)"
    plan = partspec.compile(spec, params)
    mask = plan.trainable_mask()
    reference_tx = optax.chain(
        optax.masked(optax.clip_by_global_norm(0.1), mask),
        optax.partition(plan.transforms, plan.labels),
    )
    traces = []

    @jax.jit
    def step(state: train_state.TrainState) -> tuple[train_state.TrainState, Any]:
        traces.append(1)

        def loss_fn(p: Any) -> Any:
            logits = state.apply_fn({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() * 100.0

        grads = jax.grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), grads

    def create(tx: optax.GradientTransformation) -> train_state.TrainState:
        return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    state, ref = create(plan.tx), create(reference_tx)
    for _ in range(3):
        before = state.params
        state, g = step(state)
        ref, _ = step(ref)
        assert_bitwise_equal(state.params["backbone"], params["backbone"])
        assert_bitwise_equal(state.params, ref.params)
        # The head moved by exactly 0.1 (its gradients alone exceed the threshold).
        assert float(optax.tree.norm(g["head"])) > 0.1
        moved = jax.tree.map(lambda a, b: a - b, state.params["head"], before["head"])
        assert float(optax.tree.norm(moved)) == pytest.approx(0.1, rel=1e-3)
    assert len(traces) == 2  # once per optimizer


def test_nnx_optimizer_in_a_jitted_step() -> None:
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.backbone = nnx.Linear(2, 3, rngs=rngs)
            self.head = nnx.Linear(3, 2, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.head(self.backbone(x))

    model = Model(nnx.Rngs(0))
    spec = "global clip_by_global_norm(0.1)\nbackbone/** -> frozen\nhead/** -> sgd(1.0)"
    plan = partspec.compile(spec, nnx.state(model, nnx.Param))
    opt = nnx.Optimizer(model, plan.tx, wrt=nnx.Param)

    @nnx.jit
    def step(model: Model, opt: nnx.Optimizer) -> None:
        grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((4, 2))) ** 2) * 100.0)(model)
        opt.update(model, grads)

    backbone = jax.tree.map(np.asarray, nnx.state(model.backbone, nnx.Param))
    for _ in range(2):
        head = jax.tree.map(np.asarray, nnx.state(model.head, nnx.Param))
        step(model, opt)
        assert same_bits(nnx.state(model.backbone, nnx.Param), backbone)
        moved = jax.tree.map(lambda a, b: np.asarray(a) - b, nnx.state(model.head, nnx.Param), head)
        assert float(optax.tree.norm(moved)) == pytest.approx(0.1, rel=1e-3)


def same_bits(a: Any, b: Any) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb)
    )


def test_trainable_tx_of_the_split_applies_the_globals() -> None:
    text = """
    global clip_by_global_norm(1.0)
    backbone/w -> frozen until 2 then sgd(1.0)
    backbone/b -> frozen
    head/** -> sgd(1.0)
    """
    plan = partspec.compile(text, PARAMS)
    trainable, _ = plan.split(PARAMS)
    tx = plan.trainable_tx
    state = tx.init(trainable)
    g = grads(backbone_scale=30.0, head_scale=2.0)
    g_trainable, _ = plan.split(g)
    full = plan.tx
    full_state = full.init(PARAMS)
    for _ in range(4):
        u, state = jax.jit(tx.update)(g_trainable, state, trainable)
        expected, full_state = jax.jit(full.update)(g, full_state, PARAMS)
        assert u["backbone"]["b"] is None
        assert_bitwise_equal(u["head"], expected["head"])
        assert_bitwise_equal(u["backbone"]["w"], expected["backbone"]["w"])


def test_all_frozen_with_a_global() -> None:
    plan = partspec.compile("global clip_by_global_norm(1.0)\n** -> frozen", PARAMS)
    assert_all_neg_zero(update(plan.tx, grads(100.0, 100.0)))


def test_a_global_gets_the_trainable_params() -> None:
    """add_decayed_weights: the head's params reach it; the frozen backbone is untouched."""
    plan = partspec.compile("global add_decayed_weights(0.5)\n" + FROZEN_BACKBONE, PARAMS)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    u = update(plan.tx, zeros)
    close(u["head"], jax.tree.map(lambda p: -0.5 * p, PARAMS["head"]))
    assert_all_neg_zero(u["backbone"])


# ---------------------------------------------------------------- 6. property

finite = st.floats(-1e3, 1e3, width=32, allow_subnormal=False)
finite_arrays = st.integers(1, 3).flatmap(
    lambda n: st.lists(finite, min_size=n, max_size=n).map(lambda xs: np.asarray(xs, np.float32))
)


@given(
    S.param_trees(finite_arrays, max_leaves=6),
    S.param_trees(S.arrays(), max_leaves=4),
    st.floats(0.01, 100.0),
)
def test_partspec_clip_equals_a_trainable_only_clip(train: Any, frozen: Any, c: float) -> None:
    g = {"frozen": {"x": frozen}, "train": {"x": train}}
    params = jax.tree.map(np.zeros_like, g)
    plan = partspec.compile(
        f"global clip_by_global_norm({c!r})\nfrozen/** -> frozen\ntrain/** -> sgd(1.0)", params
    )
    u, _ = plan.tx.update(g, plan.tx.init(params), params)
    assert_all_neg_zero(u["frozen"])
    # Float64 NumPy, independent of optax.
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(train)]
    norm = np.sqrt(sum(float(np.sum(x * x)) for x in leaves))
    factor = 1.0 if norm < c else c / norm
    for got, x in zip(jax.tree.leaves(u["train"]), leaves):
        np.testing.assert_allclose(np.asarray(got, np.float64), -factor * x, rtol=1e-5, atol=1e-30)
