"""partspec in the training loops each framework's users write, end to end on a CPU.

The tests train a few jitted steps of tiny models on synthetic data and check what each leaf's
label promises: frozen leaves stay bit-identical, an ``sgd(lr)`` leaf moves by exactly
``-lr * grad``, an ``adam(lr)`` leaf's first step is ``-lr * g / (|g| + eps)``, and the plan
trains exactly like the optax code a user would otherwise write by hand.

a. Flax linen, ``TrainState``: differential learning rates, a pretrained backbone at a tenth of
   the head's rate (the frozen-backbone transfer-learning guide is in test_workflows.py).
b. Flax NNX: ``nnx.Optimizer(model, plan.tx, wrt=nnx.Param)`` passes ``Variable``-wrapped
   parameters to ``init`` and plain arrays to ``update`` (flax#5372, optax#1148); ``nnx.List``
   and plain Python lists of layers; specs compiled against ``nnx.eval_shape`` state; the
   functional ``nnx.split`` / ``jax.jit`` loop; the NNX Optimization Cookbook's recipe.
c. Haiku ``transform_with_state``: BatchNorm statistics are state, not parameters.
d. Equinox: ``eqx.filter(model, eqx.is_array)`` trees in the standard ``filter_value_and_grad``
   loop, the label tree being a callable module (equinox#193), ``split``/``merge`` as in the
   "Freezing parameters" example, and what compiling against a whole module does.
"""

from __future__ import annotations

import functools

import equinox as eqx
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util
from flax.training import train_state

import partspec
from partspec.jax.tree import leaf_paths
from tests.assertions import assert_bitwise_equal, bits
from tests.models import Backbone as LinenBackbone
from tests.models import Classifier as LinenClassifier

ADAM_EPS = 1e-8  # optax.adam's default eps

# ------------------------------------------------------------------------------------- helpers


def by_path(tree):
    """``{path: host copy of the leaf}``, with partspec's paths (NNX wrappers invisible)."""
    return {p: np.array(leaf) for p, leaf in leaf_paths(tree)}


def labels_by_path(plan):
    return dict(leaf_paths(plan.labels))


def adam_first_step(g, lr):
    """Adam's first update: the moments are debiased to g and g**2, so -lr * g / (|g| + eps)."""
    g = np.asarray(g, dtype=np.float64)
    return -lr * g / (np.abs(g) + ADAM_EPS)


def assert_moved_by(after, before, expected, rtol=1e-4):
    """``after - before == expected``, up to the rounding of ``before + update`` in float32."""
    delta = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    atol = 2 * float(np.max(np.spacing(np.abs(np.asarray(before, np.float32)))))
    np.testing.assert_allclose(delta, expected, rtol=rtol, atol=atol)


def _classification_data(n=64, d=8, k=3, seed=0):
    """Synthetic inputs and integer labels (NumPy: no JAX compilations for the data)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((d, k)), axis=-1).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


# ------------------------------------------ a. Flax linen: differential learning rates (TrainState)


DIFF_LR_SPEC = """
# Fine-tune a pretrained backbone at a tenth of the new head's learning rate.
param lr = 1e-3
backbone/** -> adam(lr / 10)
head/**     -> adam(lr)
"""
LINEN_LR = 1e-2


@functools.cache
def _linen_setup():
    """The classifier, its parameters with a pretrained backbone, and data (built once)."""
    x, y = _classification_data()
    model = LinenClassifier()
    params = jax.jit(model.init)(jax.random.PRNGKey(1), x[:1])["params"]
    # As in the transfer-learning guide: the backbone's weights come from a pretrained model.
    pretrained = jax.jit(LinenBackbone().init)(jax.random.PRNGKey(2), x[:1])["params"]
    params = {**params, "backbone": pretrained}
    return model, params, x, y


def _linen_loss(apply_fn, params, x, y):
    logits = apply_fn({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@jax.jit
def _linen_step(state, x, y):
    loss, grads = jax.value_and_grad(lambda p: _linen_loss(state.apply_fn, p, x, y))(state.params)
    return state.apply_gradients(grads=grads), loss


def _hand_written_diff_lr(params, lr):
    """What a user writes without partspec: path_aware_map labels and optax.partition."""
    labels = traverse_util.path_aware_map(lambda path, _: path[0], params)
    return optax.partition({"backbone": optax.adam(lr / 10), "head": optax.adam(lr)}, labels)


def test_linen_differential_lr_labels():
    _, params, _, _ = _linen_setup()
    plan = partspec.compile(DIFF_LR_SPEC, params, lr=LINEN_LR)
    assert labels_by_path(plan) == {
        "backbone/Dense_0/bias": "adam(lr / 10)",
        "backbone/Dense_0/kernel": "adam(lr / 10)",
        "backbone/Dense_1/bias": "adam(lr / 10)",
        "backbone/Dense_1/kernel": "adam(lr / 10)",
        "head/bias": "adam(lr)",
        "head/kernel": "adam(lr)",
    }
    assert list(plan.transforms) == ["adam(lr / 10)", "adam(lr)"]
    assert plan.frozen_labels == frozenset()
    assert plan.checked.values["lr"] == LINEN_LR
    # Both groups get Adam moments: nothing is frozen.
    state = plan.tx.init(params)
    mu = {g: s[0].mu for g, s in plan.label_states(state).items()}
    assert {p for p, _ in leaf_paths(mu["adam(lr / 10)"])} == {
        p for p, lab in labels_by_path(plan).items() if lab == "adam(lr / 10)"
    }
    assert {p for p, _ in leaf_paths(mu["adam(lr)"])} == {"head/bias", "head/kernel"}


def test_linen_differential_lr_first_step_is_adams_exact_first_step():
    model, params, x, y = _linen_setup()
    plan = partspec.compile(DIFF_LR_SPEC, params, lr=LINEN_LR)
    grads = jax.jit(jax.grad(lambda p: _linen_loss(model.apply, p, x, y)))(params)

    ref_tx = _hand_written_diff_lr(params, LINEN_LR)

    @jax.jit
    def first_updates(grads):
        ours, _ = plan.tx.update(grads, plan.tx.init(params), params)
        ref, _ = ref_tx.update(grads, ref_tx.init(params), params)
        return ours, ref

    ours, ref = first_updates(grads)
    assert_bitwise_equal(ours, ref)  # the same arithmetic as the hand-written optimizer

    for group, rate in (("backbone", LINEN_LR / 10), ("head", LINEN_LR)):
        for u, g in zip(jax.tree.leaves(ours[group]), jax.tree.leaves(grads[group])):
            np.testing.assert_allclose(u, adam_first_step(g, rate), rtol=1e-5, atol=1e-12)
            big = np.abs(np.asarray(g)) > 1e-4  # there, the step is lr * sign(g)
            assert big.any()
            np.testing.assert_allclose(np.abs(np.asarray(u))[big], rate, rtol=1e-3)
            assert float(np.max(np.abs(u))) <= rate * (1 + 1e-5)

    # The jitted TrainState step moves every parameter by that update, the backbone included.
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=plan.tx)
    state, _ = _linen_step(state, x, y)
    before, after = by_path(params), by_path(state.params)
    expected = {p: np.asarray(u, np.float64) for p, u in by_path(ours).items()}
    for path in before:
        assert_moved_by(after[path], before[path], expected[path])
        assert not np.array_equal(after[path], before[path]), f"{path} did not move"
    backbone_step = max(np.max(np.abs(after[p] - before[p])) for p in before if "backbone" in p)
    head_step = max(np.max(np.abs(after[p] - before[p])) for p in before if "head" in p)
    assert backbone_step == pytest.approx(LINEN_LR / 10, rel=1e-3)
    assert head_step == pytest.approx(LINEN_LR, rel=1e-3)


def test_linen_differential_lr_trains_like_hand_written_partition():
    model, params, x, y = _linen_setup()
    plan = partspec.compile(DIFF_LR_SPEC, params, lr=LINEN_LR)
    ours = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=plan.tx)
    ref = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=_hand_written_diff_lr(params, LINEN_LR)
    )
    losses = []
    for _ in range(15):
        ours, loss = _linen_step(ours, x, y)
        ref, _ = _linen_step(ref, x, y)
        losses.append(float(loss))
        for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(ref.params)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(ours.step) == 15
    assert losses[-1] < losses[0] - 0.05, losses

    # Adam moves a leaf by about its learning rate per step: the backbone a tenth as far.
    before, after = by_path(params), by_path(ours.params)
    travel = {p: float(np.max(np.abs(after[p] - before[p]))) for p in before}
    backbone = max(t for p, t in travel.items() if p.startswith("backbone/"))
    head = max(t for p, t in travel.items() if p.startswith("head/"))
    assert all(t > 0 for t in travel.values()), travel
    assert backbone < 0.2 * head, travel


# --------------------------------------------------------------------------------- b. Flax NNX


class NNXNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, din: int = 8, width: int = 8, dout: int = 3):
        self.blocks = nnx.List(
            [nnx.Linear(din, width, rngs=rngs), nnx.Linear(width, width, rngs=rngs)]
        )
        # A plain Python list of layers: flax 0.12 asks for nnx.data(...) around it.
        self.extra = nnx.data([nnx.Linear(width, width, rngs=rngs) for _ in range(2)])
        self.norm = nnx.BatchNorm(width, rngs=rngs)  # its statistics are BatchStat, not Param
        self.head = nnx.Linear(width, dout, rngs=rngs)

    def __call__(self, x):
        for layer in self.blocks:
            x = nnx.relu(layer(x))
        for layer in self.extra:
            x = nnx.relu(layer(x))
        return self.head(self.norm(x))


NNX_SPEC = """
# Fine-tuning an NNX model: some pretrained layers frozen, the head's kernel by plain SGD.
param lr = 0.05
blocks/0/** -> frozen
extra/1/**  -> frozen
head/kernel -> sgd(lr)
**          -> adam(1e-2)
"""
NNX_LR = 0.05
NNX_FROZEN = {"blocks/0/bias", "blocks/0/kernel", "extra/1/bias", "extra/1/kernel"}
NNX_ADAM = {
    "blocks/1/bias",
    "blocks/1/kernel",
    "extra/0/bias",
    "extra/0/kernel",
    "head/bias",
    "norm/bias",
    "norm/scale",
}


def _nnx_loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def _nnx_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(_nnx_loss)(model, x, y)
    optimizer.update(model, grads)
    return loss, grads


def test_nnx_labels_of_lists_of_layers():
    model = NNXNet(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    plan = partspec.compile(NNX_SPEC, params, lr=NNX_LR)
    labels = labels_by_path(plan)
    assert set(labels) == NNX_FROZEN | NNX_ADAM | {"head/kernel"}  # no BatchNorm statistics
    assert {p for p, lab in labels.items() if lab == "frozen"} == NNX_FROZEN
    assert {p for p, lab in labels.items() if lab == "adam(0.01)"} == NNX_ADAM
    assert labels["head/kernel"] == "sgd(lr)"
    # The label tree has the params' structure, NNX Variable wrappers included.
    assert jax.tree.structure(plan.labels) == jax.tree.structure(params)


def test_nnx_optimizer_labels_variables_at_init_and_arrays_at_update():
    model = NNXNet(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    plan = partspec.compile(NNX_SPEC, params, lr=NNX_LR)
    optimizer = nnx.Optimizer(model, plan.tx, wrt=nnx.Param)

    # init got Variable-wrapped parameters: Adam's moments exist for exactly the adam leaves,
    # and the frozen and sgd leaves have none.
    inner = plan.label_states(optimizer.opt_state)
    assert {p for p, _ in leaf_paths(inner["adam(0.01)"][0].mu)} == NNX_ADAM
    assert not jax.tree.leaves(inner["frozen"]) and not jax.tree.leaves(inner["sgd(lr)"])

    # update gets plain arrays (nnx.as_pure): the same labels, step by step.
    x, y = _classification_data(n=32)
    stats = by_path(nnx.state(model, nnx.BatchStat))
    before = by_path(nnx.state(model, nnx.Param))
    loss0, grads = _nnx_step(model, optimizer, x, y)
    after, g = by_path(nnx.state(model, nnx.Param)), by_path(grads)
    for path in NNX_FROZEN:
        np.testing.assert_array_equal(bits(after[path]), bits(before[path]))
    # sgd(lr): exactly -lr * grad.
    assert_moved_by(after["head/kernel"], before["head/kernel"], -NNX_LR * g["head/kernel"], 1e-6)
    # adam(1e-2): Adam's first step.
    for path in NNX_ADAM:
        assert_moved_by(after[path], before[path], adam_first_step(g[path], 1e-2))
        assert not np.array_equal(after[path], before[path]), path

    start = before
    for _ in range(4):
        loss, _ = _nnx_step(model, optimizer, x, y)
    end = by_path(nnx.state(model, nnx.Param))
    for path in start:
        if path in NNX_FROZEN:
            np.testing.assert_array_equal(bits(end[path]), bits(start[path]))
        else:
            assert not np.array_equal(end[path], start[path]), path
    assert float(loss) < float(loss0)
    assert int(optimizer.step[...]) == 5
    # The batch statistics moved too: the model updates them, the optimizer never sees them.
    new_stats = by_path(nnx.state(model, nnx.BatchStat))
    assert all(not np.array_equal(new_stats[p], stats[p]) for p in stats)


def test_nnx_plain_python_list_in_a_non_pytree_module():
    class Stack(nnx.Module, pytree=False):  # a plain list attribute, no nnx.data needed
        def __init__(self, rngs):
            self.layers = [nnx.Linear(4, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)]

        def __call__(self, x):
            return self.layers[1](nnx.relu(self.layers[0](x)))

    model = Stack(nnx.Rngs(0))
    plan = partspec.compile("layers/0/** -> frozen\nlayers/1/** -> sgd(0.1)", nnx.state(model))
    assert labels_by_path(plan) == {
        "layers/0/bias": "frozen",
        "layers/0/kernel": "frozen",
        "layers/1/bias": "sgd(0.1)",
        "layers/1/kernel": "sgd(0.1)",
    }
    optimizer = nnx.Optimizer(model, plan.tx, wrt=nnx.Param)
    x, _ = _classification_data(n=16, d=4)
    y = jnp.zeros((16,), jnp.int32)
    before = by_path(nnx.state(model, nnx.Param))
    _, grads = _nnx_step(model, optimizer, x, y)
    after, g = by_path(nnx.state(model, nnx.Param)), by_path(grads)
    for p in ("layers/0/bias", "layers/0/kernel"):
        np.testing.assert_array_equal(bits(after[p]), bits(before[p]))
    for p in ("layers/1/bias", "layers/1/kernel"):
        assert_moved_by(after[p], before[p], -0.1 * g[p], rtol=1e-6)


def test_nnx_compile_against_eval_shape_state_without_materialising():
    abstract = nnx.eval_shape(lambda: NNXNet(nnx.Rngs(0)))
    abstract_params = nnx.state(abstract, nnx.Param)
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree.leaves(abstract_params))
    plan_abstract = partspec.compile(NNX_SPEC, abstract_params, lr=NNX_LR)

    concrete = NNXNet(nnx.Rngs(0))
    plan_concrete = partspec.compile(NNX_SPEC, nnx.state(concrete, nnx.Param), lr=NNX_LR)
    assert labels_by_path(plan_abstract) == labels_by_path(plan_concrete)

    # The abstract plan drives a real model exactly as the concrete one does.
    twin = NNXNet(nnx.Rngs(0))
    opt_a = nnx.Optimizer(twin, plan_abstract.tx, wrt=nnx.Param)
    opt_c = nnx.Optimizer(concrete, plan_concrete.tx, wrt=nnx.Param)
    start = by_path(nnx.state(twin, nnx.Param))
    x, y = _classification_data(n=32)
    for _ in range(3):
        _nnx_step(twin, opt_a, x, y)
        _nnx_step(concrete, opt_c, x, y)
    assert_bitwise_equal(nnx.state(twin, nnx.Param), nnx.state(concrete, nnx.Param))
    end = by_path(nnx.state(twin, nnx.Param))
    for path in NNX_FROZEN:
        np.testing.assert_array_equal(bits(end[path]), bits(start[path]))


def _cookbook_model(rngs):
    """The model of the Flax NNX "Optimization Cookbook"."""
    return nnx.Sequential(nnx.Linear(2, 8, rngs=rngs), nnx.Linear(8, 8, rngs=rngs))


def _cookbook_data():
    rngs = nnx.Rngs(0)
    return rngs.normal((32, 2)), rngs.normal((32, 8))


def _sum_squares(model, x, y):
    return jnp.sum((model(x) - y) ** 2)


def test_nnx_cookbook_per_parameter_learning_rates():
    """The cookbook's "Per-Parameter Learning Rates" recipe, written as a spec."""
    x, y = _cookbook_data()
    ours_model, ref_model = _cookbook_model(nnx.Rngs(0)), _cookbook_model(nnx.Rngs(0))

    state = nnx.state(ref_model, nnx.Param)
    rates = {"kernel": optax.adam(1e-3), "bias": optax.adam(1e-2)}
    param_tys = nnx.map_state(lambda p, v: list(p)[-1], state)
    ref_opt = nnx.Optimizer(ref_model, tx=optax.partition(rates, param_tys), wrt=nnx.Param)

    plan = partspec.compile(
        "**/kernel -> adam(1e-3)\n**/bias -> adam(1e-2)", nnx.state(ours_model, nnx.Param)
    )
    assert labels_by_path(plan) == {
        p: {"kernel": "adam(0.001)", "bias": "adam(0.01)"}[p.rsplit("/", 1)[1]]
        for p, _ in leaf_paths(state)
    }
    ours_opt = nnx.Optimizer(ours_model, plan.tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_sum_squares)(model, x, y)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(ours_model, ours_opt, x, y))]
    for _ in range(9):
        train_step(ref_model, ref_opt, x, y)
        losses.append(float(train_step(ours_model, ours_opt, x, y)))
    train_step(ref_model, ref_opt, x, y)
    for a, b in zip(
        jax.tree.leaves(nnx.state(ours_model, nnx.Param)),
        jax.tree.leaves(nnx.state(ref_model, nnx.Param)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert losses[-1] < losses[0]


def test_nnx_functional_split_merge_loop():
    """``nnx.split`` + ``jax.jit`` + plain optax: Variable-wrapped trees at init and update."""
    x, y = _cookbook_data()
    model = _cookbook_model(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    plan = partspec.compile("layers/0/** -> frozen\nlayers/1/** -> sgd(1e-3)", params)
    tx = plan.tx
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            return _sum_squares(nnx.merge(graphdef, p), x, y)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    start = by_path(params)
    new_params, opt_state, loss0, grads = step(params, opt_state)
    assert isinstance(new_params, nnx.State)
    after, g = by_path(new_params), by_path(grads)
    for p in ("layers/1/bias", "layers/1/kernel"):
        assert_moved_by(after[p], start[p], -1e-3 * g[p], rtol=1e-6)
    for _ in range(4):
        new_params, opt_state, loss, _ = step(new_params, opt_state)
    end = by_path(new_params)
    for p in ("layers/0/bias", "layers/0/kernel"):
        np.testing.assert_array_equal(bits(end[p]), bits(start[p]))
    assert float(loss) < float(loss0)

    # The same steps through nnx.Optimizer on a twin model.
    twin = _cookbook_model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(twin, plan.tx, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer):
        _, grads = nnx.value_and_grad(_sum_squares)(model, x, y)
        optimizer.update(model, grads)

    for _ in range(5):
        nnx_step(twin, optimizer)
    for a, b in zip(jax.tree.leaves(nnx.state(twin, nnx.Param)), jax.tree.leaves(new_params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------- c. Haiku: transform_with_state


def _bn_forward(x, is_training):
    x = hk.Linear(8, name="linear_0")(x)
    x = hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9, name="bn")(
        x, is_training
    )
    return hk.Linear(1, name="linear_1")(jax.nn.relu(x))


HAIKU_BN_SPEC = """
# The spec covers parameters only: BatchNorm's moving averages live in Haiku's state.
param lr = 0.1
linear_0/** -> frozen
bn/**       -> sgd(lr)
**          -> adam(1e-2)
"""


def test_haiku_transform_with_state_batch_norm():
    net = hk.without_apply_rng(hk.transform_with_state(_bn_forward))
    x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    y = np.sin(x.sum(axis=1, keepdims=True))
    params, state = jax.jit(functools.partial(net.init, is_training=True))(jax.random.PRNGKey(1), x)
    assert {p for p, _ in leaf_paths(state)} == {
        "bn/~/mean_ema/average",
        "bn/~/mean_ema/counter",
        "bn/~/mean_ema/hidden",
        "bn/~/var_ema/average",
        "bn/~/var_ema/counter",
        "bn/~/var_ema/hidden",
    }

    plan = partspec.compile(HAIKU_BN_SPEC, params, lr=0.1, strict=True)
    assert labels_by_path(plan) == {
        "bn/offset": "sgd(lr)",
        "bn/scale": "sgd(lr)",
        "linear_0/b": "frozen",
        "linear_0/w": "frozen",
        "linear_1/b": "adam(0.01)",
        "linear_1/w": "adam(0.01)",
    }
    tx = plan.tx

    def loss_fn(params, state, x, y):
        out, state = net.apply(params, state, x, is_training=True)
        return jnp.mean((out - y) ** 2), state

    @jax.jit
    def step(params, state, opt_state, x, y):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss, grads

    opt_state = tx.init(params)
    p1, s1, opt_state, loss0, grads = step(params, state, opt_state, x, y)
    before, after, g = by_path(params), by_path(p1), by_path(grads)
    for p in ("bn/offset", "bn/scale"):
        assert_moved_by(after[p], before[p], -0.1 * g[p], rtol=1e-6)
    for p in ("linear_1/b", "linear_1/w"):
        assert_moved_by(after[p], before[p], adam_first_step(g[p], 1e-2))

    p, s = p1, s1
    for _ in range(9):
        p, s, opt_state, loss, _ = step(p, s, opt_state, x, y)
    assert_bitwise_equal(p["linear_0"], params["linear_0"])
    assert float(loss) < float(loss0)
    # The moving averages were updated by Haiku, not by the optimizer.
    assert int(s["bn/~/mean_ema"]["counter"]) == 10
    assert not np.array_equal(s["bn/~/mean_ema"]["average"], state["bn/~/mean_ema"]["average"])


# ---------------------------------------------------------------------------------- d. Equinox


class EqxNet(eqx.Module):
    encoder: eqx.nn.MLP  # three Linear layers, plus activation functions (not arrays)
    dropout: eqx.nn.Dropout  # its `p` (a float) and `inference` (a bool) are pytree leaves
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.encoder = eqx.nn.MLP(8, 8, 8, depth=2, key=k1)
        self.dropout = eqx.nn.Dropout(0.1, inference=True)
        self.head = eqx.nn.Linear(8, 3, key=k2)

    def __call__(self, x):
        return self.head(self.dropout(jax.nn.relu(self.encoder(x))))


EQX_SPEC = """
# Freeze the first two encoder layers; no catch-all: every array is named.
param lr = 0.05
encoder/layers/{0..1}/** -> frozen
encoder/layers/2/**      -> adam(1e-2)
head/*                   -> sgd(lr)
"""
EQX_LR = 0.05
EQX_FROZEN = {f"encoder/layers/{i}/{n}" for i in (0, 1) for n in ("weight", "bias")}
EQX_ADAM = {"encoder/layers/2/weight", "encoder/layers/2/bias"}
EQX_SGD = {"head/weight", "head/bias"}
EQX_NON_ARRAYS = {
    "encoder/activation",
    "encoder/final_activation",
    "dropout/p",
    "dropout/inference",
}


@functools.cache
def _eqx_model():
    return EqxNet(jax.random.PRNGKey(0))  # immutable: shared by the tests


def _eqx_loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y).mean()


def _eqx_train(model, optim, steps, x, y):
    """The standard Equinox loop; returns the model, losses, and the first step's gradients."""

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(_eqx_loss)(model, x, y)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss, grads

    opt_state = optim.init(eqx.filter(model, eqx.is_array))
    losses, first_grads, first_model = [], None, None
    for _ in range(steps):
        model, opt_state, loss, grads = step(model, opt_state, x, y)
        losses.append(float(loss))
        if first_grads is None:
            first_grads, first_model = grads, model
    return model, losses, first_grads, first_model


def _hand_written_eqx_optim(params, lr):
    """The optax code an Equinox user writes: labels by eqx.tree_at, a function for partition."""
    labels = jax.tree.map(lambda _: "frozen", params)
    labels = eqx.tree_at(
        lambda m: (m.encoder.layers[2].weight, m.encoder.layers[2].bias), labels, ("adam", "adam")
    )
    labels = eqx.tree_at(lambda m: (m.head.weight, m.head.bias), labels, ("sgd", "sgd"))
    transforms = {"frozen": optax.set_to_zero(), "adam": optax.adam(1e-2), "sgd": optax.sgd(lr)}
    # equinox#193: a label tree is a callable module, so it has to be wrapped in a function.
    return optax.partition(transforms, lambda _: labels)


def test_equinox_standard_loop_with_filtered_model():
    model = _eqx_model()
    params = eqx.filter(model, eqx.is_array)
    plan = partspec.compile(EQX_SPEC, params, lr=EQX_LR, strict=True)
    labels = labels_by_path(plan)
    assert set(labels) == EQX_FROZEN | EQX_ADAM | EQX_SGD  # non-arrays are None: no labels
    assert {p for p, lab in labels.items() if lab == "frozen"} == EQX_FROZEN
    assert {p for p, lab in labels.items() if lab == "adam(0.01)"} == EQX_ADAM
    assert {p for p, lab in labels.items() if lab == "sgd(lr)"} == EQX_SGD

    x, y = _classification_data()
    trained, losses, grads, first = _eqx_train(model, plan.tx, 6, x, y)
    before, g = by_path(params), by_path(grads)
    after, end = (
        by_path(eqx.filter(first, eqx.is_array)),
        by_path(eqx.filter(trained, eqx.is_array)),
    )
    for p in EQX_SGD:
        assert_moved_by(after[p], before[p], -EQX_LR * g[p], rtol=1e-6)
    for p in EQX_ADAM:
        assert_moved_by(after[p], before[p], adam_first_step(g[p], 1e-2))
    for p in EQX_FROZEN:
        np.testing.assert_array_equal(bits(end[p]), bits(before[p]))
    for p in EQX_ADAM | EQX_SGD:
        assert not np.array_equal(end[p], before[p]), p
    assert losses[-1] < losses[0], losses
    # The non-array leaves pass through untouched.
    assert trained.encoder.activation is model.encoder.activation
    assert trained.dropout.p == 0.1 and trained.dropout.inference is True

    # The same training as the hand-written optax code.
    ref, ref_losses, _, _ = _eqx_train(model, _hand_written_eqx_optim(params, EQX_LR), 6, x, y)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(trained, eqx.is_array)),
        jax.tree.leaves(eqx.filter(ref, eqx.is_array)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)


def test_equinox_label_tree_is_a_callable_module():
    model = _eqx_model()
    params = eqx.filter(model, eqx.is_array)
    plan = partspec.compile(EQX_SPEC, params, lr=EQX_LR)
    assert isinstance(plan.labels, EqxNet) and callable(plan.labels)
    assert jax.tree.structure(plan.labels) == jax.tree.structure(params)
    # optax takes a callable label argument for a labelling function (equinox#193) ...
    with pytest.raises(TypeError):
        optax.partition(plan.transforms, plan.labels).init(params)
    # ... which is why plan.tx labels through a function: init and update both work.
    state = plan.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = plan.tx.update(grads, state, params)
    assert bool(jnp.all(updates.head.weight == -EQX_LR))
    assert bool(jnp.all(updates.encoder.layers[0].weight == 0))


def test_equinox_split_merge_like_the_freezing_parameters_example():
    """Differentiate only the trainable half, as the Equinox "Freezing parameters" example does."""
    model = _eqx_model()
    params, static = eqx.partition(model, eqx.is_array)
    plan = partspec.compile(EQX_SPEC, params, lr=EQX_LR)
    trainable, frozen = plan.split(params)
    assert {p for p, _ in leaf_paths(trainable)} == EQX_ADAM | EQX_SGD
    assert {p for p, _ in leaf_paths(frozen)} == EQX_FROZEN
    assert_bitwise_equal(plan.merge(trainable, frozen), params)

    tx = plan.trainable_tx

    def loss_fn(trainable, frozen, x, y):
        return _eqx_loss(eqx.combine(trainable, frozen, static), x, y)

    @eqx.filter_jit
    def step(trainable, opt_state, frozen, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, x, y)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    x, y = _classification_data()
    opt_state = tx.init(trainable)
    t = trainable
    for _ in range(6):
        t, opt_state, _ = step(t, opt_state, frozen, x, y)
    learned = eqx.combine(t, frozen, static)

    # The same model as the standard loop with plan.tx on the whole filtered tree.
    full, _, _, _ = _eqx_train(model, plan.tx, 6, x, y)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(learned, eqx.is_array)),
        jax.tree.leaves(eqx.filter(full, eqx.is_array)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    end = by_path(eqx.filter(learned, eqx.is_array))
    for p, v in by_path(params).items():
        if p in EQX_FROZEN:
            np.testing.assert_array_equal(bits(end[p]), bits(v))


def test_equinox_whole_module_labels_non_array_leaves():
    """Compile against ``eqx.filter(model, eqx.is_array)``, not the whole module.

    partspec labels every pytree leaf it is given. A whole Equinox module has non-array
    leaves (activation functions, Dropout's ``p`` and ``inference``), so a spec that names
    every array but has no catch-all leaves them uncovered (E501, naming each one).
    With a catch-all the whole-module plan works: its labels at the arrays are the filtered
    plan's, its ``tx`` labels the filtered trees of the standard loop, and its
    ``trainable_mask()`` is an ``eqx.partition`` filter spec for the whole module.
    """
    model = _eqx_model()
    assert {p for p, _ in leaf_paths(model)} == EQX_FROZEN | EQX_ADAM | EQX_SGD | EQX_NON_ARRAYS

    with pytest.raises(partspec.SpecError) as err:
        partspec.compile(EQX_SPEC, model, lr=EQX_LR)
    (d,) = err.value.diagnostics
    assert d.code == "E501"
    assert set(d.notes) == {f"not covered: {p}" for p in EQX_NON_ARRAYS}
    assert "eqx.filter(model, eqx.is_array)" in d.hint
    assert "(bool, custom_jvp, float, function)" in d.hint

    spec = EQX_SPEC + "** -> frozen\n"
    whole = partspec.compile(spec, model, lr=EQX_LR)
    with pytest.warns(partspec.SpecWarning, match="W602"):  # no non-array leaves to catch
        filtered = partspec.compile(spec, eqx.filter(model, eqx.is_array), lr=EQX_LR)
    whole_labels, filtered_labels = labels_by_path(whole), labels_by_path(filtered)
    assert {p: whole_labels[p] for p in filtered_labels} == filtered_labels
    assert {whole_labels[p] for p in EQX_NON_ARRAYS} == {"frozen"}

    x, y = _classification_data()
    a, _, _, _ = _eqx_train(model, whole.tx, 3, x, y)
    b, _, _, _ = _eqx_train(model, filtered.tx, 3, x, y)
    assert_bitwise_equal(eqx.filter(a, eqx.is_array), eqx.filter(b, eqx.is_array))

    diff, static = eqx.partition(model, whole.trainable_mask())
    assert {p for p, _ in leaf_paths(diff)} == EQX_ADAM | EQX_SGD
    assert static.encoder.activation is model.encoder.activation
