"""The seed workflows, end to end: what a user relies on when replacing a hand-written optax setup.

a. Flax "Transfer learning" guide: freeze a backbone, train a head with ``TrainState``.
b. Haiku "training a subset of parameters": ``split``/``merge`` and ``trainable_tx``.
c. PyTorch-style parameter groups: one schedule, the head at 10x the base learning rate.
d. Frozen leaves stay out of weight decay and out of global-norm clipping.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from flax.training import train_state

import partspec
from tests.assertions import assert_bitwise_equal
from tests.models import Classifier

# ------------------------------------------------------------------------------------- helpers


def any_leaf_changed(a, b):
    return any(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def all_leaves_changed(a, b):
    return all(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# ------------------------------------------------------- a. Flax transfer learning (TrainState)


TRANSFER_SPEC = """
# Flax transfer learning: keep the pretrained backbone, train the classifier head.
param lr = 1e-3
backbone/** -> frozen
head/**     -> adam(lr)
"""


def _classification_data(n=64, d=8, k=3, seed=0):
    kx, kw = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, (n, d))
    y = jnp.argmax(x @ jax.random.normal(kw, (d, k)), axis=-1)
    return x, y


def _flax_setup():
    model = Classifier()
    x, y = _classification_data()
    params = model.init(jax.random.PRNGKey(1), x[:1])["params"]
    return model, params, x, y


def _make_train_step():
    @jax.jit
    def train_step(state, x, y):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    return train_step


def test_flax_labels_match_the_guides_hand_written_partition():
    _, params, _, _ = _flax_setup()
    plan = partspec.compile(TRANSFER_SPEC, params, lr=5e-3)

    # The guide's labelling, verbatim.
    guide = traverse_util.path_aware_map(
        lambda path, _: "frozen" if "backbone" in path else "trainable", params
    )
    ours = jax.tree.map(
        lambda lab: "frozen" if lab in plan.frozen_labels else "trainable", plan.labels
    )
    assert ours == guide
    # Same container structure as the params, and the labels a user sees.
    assert jax.tree.structure(plan.labels) == jax.tree.structure(params)
    assert plan.labels["backbone"]["Dense_0"]["kernel"] == "frozen"
    assert plan.labels["head"]["kernel"] == "adam(lr)"
    assert set(plan.transforms) == {"frozen", "adam(lr)"}
    # Both halves are non-empty: the partition is not trivially all-frozen or all-trainable.
    assert {"frozen", "trainable"} == set(jax.tree.leaves(guide))


def test_flax_transfer_learning_with_train_state():
    model, params, x, y = _flax_setup()
    lr = 5e-3
    plan = partspec.compile(TRANSFER_SPEC, params, lr=lr)
    step = _make_train_step()
    start = jax.tree.map(np.array, params)  # host copies, independent of device buffers

    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=plan.tx)
    # The guide's hand-written optimizer, for comparison.
    guide_labels = traverse_util.path_aware_map(
        lambda path, _: "frozen" if "backbone" in path else "trainable", params
    )
    guide_tx = optax.partition(
        {"trainable": optax.adam(lr), "frozen": optax.set_to_zero()}, guide_labels
    )
    guide_state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=guide_tx)

    losses = []
    for _ in range(30):
        state, loss = step(state, x, y)
        guide_state, _ = step(guide_state, x, y)
        losses.append(float(loss))

    assert int(state.step) == 30
    assert_bitwise_equal(state.params["backbone"], start["backbone"])
    assert all_leaves_changed(state.params["head"], start["head"])
    assert losses[-1] < losses[0] - 0.05, losses
    # partspec's optimizer is the guide's optimizer.
    for ours, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(guide_state.params)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_flax_frozen_backbone_survives_nan_gradients():
    """A frozen leaf is bit-identical through apply_updates whatever its gradient is."""
    _, params, _, _ = _flax_setup()
    plan = partspec.compile(TRANSFER_SPEC, params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)
    grads["head"] = jax.tree.map(jnp.ones_like, params["head"])
    updates, _ = plan.tx.update(grads, plan.tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert_bitwise_equal(new["backbone"], params["backbone"])
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates["head"]))


# ---------------------------------------------------- b. Haiku: training a subset of parameters


def _mlp(x):
    return hk.nets.MLP([8, 8, 1])(x)


HAIKU_SPEC = """
mlp/~/linear_1/** -> frozen
**                -> adam(1e-2)
"""


def _haiku_setup():
    net = hk.without_apply_rng(hk.transform(_mlp))
    x = jax.random.uniform(jax.random.PRNGKey(0), (128, 1), minval=-1.0, maxval=1.0)
    params = net.init(jax.random.PRNGKey(42), x)
    return net, params, x


@pytest.mark.parametrize(
    "pattern",
    ["mlp/~/linear_1/**", "**/linear_1/**", "mlp/*/linear_1/*", "*/~/linear_1/{w,b}"],
)
def test_haiku_module_name_is_three_path_segments(pattern):
    """Haiku's "mlp/~/linear_1" is one dict key but three path segments."""
    _, params, _ = _haiku_setup()
    plan = partspec.compile(f"{pattern} -> frozen\n** -> sgd(0.1)", params)
    assert plan.labels["mlp/~/linear_1"] == {"w": "frozen", "b": "frozen"}
    assert plan.labels["mlp/~/linear_0"] == {"w": "sgd(0.1)", "b": "sgd(0.1)"}
    assert plan.labels["mlp/~/linear_2"] == {"w": "sgd(0.1)", "b": "sgd(0.1)"}


def test_haiku_star_does_not_cross_a_slash_inside_a_key():
    _, params, _ = _haiku_setup()
    with pytest.warns(partspec.SpecWarning, match="matches no parameter"):
        plan = partspec.compile("*linear_1/** -> frozen\n** -> sgd(0.1)", params)
    assert "frozen" not in jax.tree.leaves(plan.labels)


def test_haiku_subset_training():
    spec = HAIKU_SPEC
    net, params, x = _haiku_setup()
    y = x  # learn the identity
    plan = partspec.compile(spec, params)
    assert plan.labels == {
        "mlp/~/linear_0": {"w": "adam(0.01)", "b": "adam(0.01)"},
        "mlp/~/linear_1": {"w": "frozen", "b": "frozen"},
        "mlp/~/linear_2": {"w": "adam(0.01)", "b": "adam(0.01)"},
    }

    trainable, frozen = plan.split(params)
    # The same split as Haiku's own hk.data_structures.partition.
    hk_train, hk_frozen = hk.data_structures.partition(
        lambda module, name, p: module != "mlp/~/linear_1", params
    )
    assert {m for m, v in trainable.items() if v["w"] is not None} == set(hk_train)
    assert {m for m, v in frozen.items() if v["w"] is not None} == set(hk_frozen)
    assert_bitwise_equal(plan.merge(trainable, frozen), params)

    def loss_fn(trainable, frozen, x, y):
        p = plan.merge(trainable, frozen)
        return jnp.mean((net.apply(p, x) - y) ** 2)

    tx = plan.trainable_tx

    @jax.jit
    def step(trainable, opt_state, frozen, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, x, y)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    opt_state = tx.init(trainable)
    t = trainable
    first = None
    for _ in range(200):
        t, opt_state, loss = step(t, opt_state, frozen, x, y)
        first = float(loss) if first is None else first
    final = float(loss_fn(t, frozen, x, y))
    assert final < 0.05 * first, (first, final)

    learned = plan.merge(t, frozen)
    assert_bitwise_equal(learned["mlp/~/linear_1"], params["mlp/~/linear_1"])
    for m in ("mlp/~/linear_0", "mlp/~/linear_2"):
        assert all_leaves_changed(learned[m], params[m])

    # The same result through plan.tx on the full parameters.
    full_tx = plan.tx

    @jax.jit
    def full_step(p, s, x, y):
        grads = jax.grad(lambda q: jnp.mean((net.apply(q, x) - y) ** 2))(p)
        updates, s = full_tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    p, s = params, full_tx.init(params)
    for _ in range(200):
        p, s = full_step(p, s, x, y)
    assert_bitwise_equal(p["mlp/~/linear_1"], params["mlp/~/linear_1"])
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(learned)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------- c. PyTorch-style parameter groups

SCHED_ARGS = (0.0, 1e-3, 10, 100)  # init_value, peak_value, warmup_steps, decay_steps

GROUPS_SPEC = """
let sched = warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
backbone/** -> adam(sched)
head/**     -> adam(10 * sched)
"""


def _groups_params():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    return {
        "backbone": {"w": jax.random.normal(k1, (4, 4)), "b": jnp.zeros(4)},
        "head": {"w": jax.random.normal(k2, (4, 2)), "b": jax.random.normal(k3, (2,))},
    }


def test_param_groups_match_hand_written_optax():
    params = _groups_params()
    plan = partspec.compile(GROUPS_SPEC, params)
    assert plan.labels["backbone"]["w"] == "adam(sched)"
    assert plan.labels["head"]["w"] == "adam(10 * sched)"

    sched = optax.warmup_cosine_decay_schedule(*SCHED_ARGS)
    labels = {
        "backbone": {"w": "base", "b": "base"},
        "head": {"w": "head", "b": "head"},
    }
    ref = optax.partition(
        {"base": optax.adam(sched), "head": optax.adam(lambda c: 10 * sched(c))}, labels
    )

    ours_p, ours_s = params, plan.tx.init(params)
    ref_p, ref_s = params, ref.init(params)
    key = jax.random.PRNGKey(7)
    for _ in range(25):  # through the warmup and into the decay
        key, sub = jax.random.split(key)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(sub, len(leaves))
        grads = treedef.unflatten(
            [jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
        )
        ours_u, ours_s = plan.tx.update(grads, ours_s, ours_p)
        ref_u, ref_s = ref.update(grads, ref_s, ref_p)
        for a, b in zip(jax.tree.leaves(ours_u), jax.tree.leaves(ref_u)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
        ours_p = optax.apply_updates(ours_p, ours_u)
        ref_p = optax.apply_updates(ref_p, ref_u)
    for a, b in zip(jax.tree.leaves(ours_p), jax.tree.leaves(ref_p)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert all_leaves_changed(ours_p, params)


def test_param_groups_schedule_values_match_optax():
    """With sgd and unit gradients the update is -lr(step): read the spec's schedule off it."""
    params = {"backbone": jnp.ones(()), "head": jnp.ones(())}
    plan = partspec.compile(
        """
        let sched = warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
        backbone -> sgd(sched)
        head     -> sgd(10 * sched)
        """,
        params,
    )
    sched = optax.warmup_cosine_decay_schedule(*SCHED_ARGS)
    grads = jax.tree.map(jnp.ones_like, params)
    state = plan.tx.init(params)
    seen = []
    for count in range(60):
        updates, state = plan.tx.update(grads, state, params)
        expected = float(sched(count))
        np.testing.assert_allclose(-updates["backbone"], expected, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(-updates["head"], 10 * expected, rtol=1e-6, atol=1e-12)
        seen.append(float(-updates["head"]))
    assert seen[0] == 0.0
    assert max(seen) == pytest.approx(1e-2, rel=1e-6)  # 10x the peak, at the end of warmup
    assert seen[-1] < seen[10]  # decaying


# ------------------------------------------- d. frozen leaves vs weight decay and clipping


def _two_part_params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(11))
    return {
        "backbone": {"w": jax.random.normal(k1, (5, 5)) + 1.0},
        "head": {"w": jax.random.normal(k2, (5, 3)) + 1.0},
    }


def test_adamw_weight_decay_skips_frozen_leaves():
    params = _two_part_params()
    plan = partspec.compile(
        "backbone/** -> frozen\nhead/** -> adamw(1e-2, weight_decay=0.5)", params
    )
    zero = jax.tree.map(jnp.zeros_like, params)

    p, s = params, plan.tx.init(params)
    for _ in range(5):
        u, s = plan.tx.update(zero, s, p)
        p = optax.apply_updates(p, u)
    assert_bitwise_equal(p["backbone"], params["backbone"])
    # Decoupled weight decay alone shrinks the head (the gradient is zero).
    assert float(jnp.sum(jnp.abs(p["head"]["w"]))) < float(jnp.sum(jnp.abs(params["head"]["w"])))

    ref = optax.adamw(1e-2, weight_decay=0.5)
    rp, rs = params["head"], ref.init(params["head"])
    for _ in range(5):
        u, rs = ref.update(zero["head"], rs, rp)
        rp = optax.apply_updates(rp, u)
    np.testing.assert_allclose(p["head"]["w"], rp["w"], rtol=1e-6)

    # Control: a single global adamw would have decayed the backbone.
    g = optax.adamw(1e-2, weight_decay=0.5)
    u, _ = g.update(zero, g.init(params), params)
    assert any_leaf_changed(optax.apply_updates(params, u)["backbone"], params["backbone"])


@pytest.mark.parametrize(
    "inner, ref_inner",
    [("adam(1e-2)", lambda: optax.adam(1e-2)), ("sgd(0.1)", lambda: optax.sgd(0.1))],
)
def test_clip_by_global_norm_ignores_frozen_gradients(inner, ref_inner):
    params = _two_part_params()
    plan = partspec.compile(
        f"backbone/** -> frozen\nhead/** -> chain(clip_by_global_norm(1.0), {inner})", params
    )
    grads = {
        "backbone": {"w": jnp.full((5, 5), 1e10)},  # huge, but frozen
        "head": {"w": jnp.linspace(-0.5, 0.5, 15).reshape(5, 3)},  # norm ~1.1: clipped a bit
    }
    ref = optax.chain(optax.clip_by_global_norm(1.0), ref_inner())

    p, s = params, plan.tx.init(params)
    rp, rs = params["head"], ref.init(params["head"])
    for _ in range(3):
        u, s = plan.tx.update(grads, s, p)
        p = optax.apply_updates(p, u)
        ru, rs = ref.update(grads["head"], rs, rp)
        rp = optax.apply_updates(rp, ru)
        np.testing.assert_allclose(u["head"]["w"], ru["w"], rtol=1e-5, atol=1e-9)
    assert_bitwise_equal(p["backbone"], params["backbone"])
    np.testing.assert_allclose(p["head"]["w"], rp["w"], rtol=1e-5, atol=1e-9)

    # Control: clipping over all gradients (frozen ones included) gives a different head update.
    naive = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.partition(
            {"f": optax.set_to_zero(), "t": ref_inner()}, {"backbone": "f", "head": "t"}
        ),
    )
    nu, _ = naive.update(grads, naive.init(params), params)
    first, _ = ref.update(grads["head"], ref.init(params["head"]), params["head"])
    assert not np.allclose(nu["head"]["w"], first["w"], rtol=1e-3)
