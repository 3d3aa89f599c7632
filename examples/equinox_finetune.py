"""Reproduces the Equinox example "Freezing parameters" with a spec instead of a filter_spec.

Shows: an `eqx.nn.MLP` learns y = 5x - 2 (the example's toy data) while only its last layer
trains (equinox_finetune.pspec). The spec is compiled against `eqx.filter(model,
eqx.is_array)` and `plan.tx` runs in the standard Equinox loop (`eqx.filter_value_and_grad`,
`optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))`, `eqx.apply_updates`).
The label tree is itself a callable `eqx.Module`, which `optax.partition` would call as a
labelling function (equinox#193); `plan.tx` labels through a function, so it just works.
After training the first layer is bit-identical, and the model equals the one the example's
own `filter_spec` + `eqx.partition` recipe trains. Synthetic data, CPU, a few seconds.

    python examples/equinox_finetune.py

`params()` builds the MLP's arrays (`eqx.filter(model, eqx.is_array)`) without training, for
`pspec tree`:

    pspec tree examples.equinox_finetune:params -o examples/equinox_finetune.tree.json
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import partspec
from partspec.jax.tree import leaf_paths

LR, STEPS, SEED = 3e-3, 300, 5678


def make_model(key):
    return eqx.nn.MLP(in_size=1, out_size=1, width_size=8, depth=1, key=key)


def params():
    """The model's arrays, which `pspec tree examples.equinox_finetune:params` records."""
    return eqx.filter(make_model(jax.random.PRNGKey(SEED)), eqx.is_array)


def loss_fn(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def train_with_partspec(model, plan, x, y):
    """The standard Equinox loop, with plan.tx as the optimizer."""
    optim = plan.tx

    @eqx.filter_jit
    def make_step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    opt_state = optim.init(eqx.filter(model, eqx.is_array))
    losses = []
    for _ in range(STEPS):
        model, opt_state, loss = make_step(model, opt_state, x, y)
        losses.append(float(loss))
    return model, losses


def train_like_the_example(model, x, y):
    """The example's recipe: a hand-made filter_spec, eqx.partition, gradients of one half."""
    filter_spec = jax.tree.map(lambda _: False, model)
    filter_spec = eqx.tree_at(
        lambda tree: (tree.layers[-1].weight, tree.layers[-1].bias),
        filter_spec,
        replace=(True, True),
    )
    optim = optax.sgd(LR)

    @eqx.filter_jit
    def make_step(model, x, y, opt_state):
        @eqx.filter_grad
        def loss(diff_model, static_model, x, y):
            return loss_fn(eqx.combine(diff_model, static_model), x, y)

        diff_model, static_model = eqx.partition(model, filter_spec)
        grads = loss(diff_model, static_model, x, y)
        updates, opt_state = optim.update(grads, opt_state)
        return eqx.apply_updates(model, updates), opt_state

    opt_state = optim.init(eqx.filter(model, eqx.is_array))
    for _ in range(STEPS):
        model, opt_state = make_step(model, x, y, opt_state)
    return model


def main() -> None:
    data_key, model_key = jax.random.split(jax.random.PRNGKey(SEED))
    x = jax.random.normal(data_key, (256, 1))
    y = 5 * x - 2

    model = make_model(model_key)
    arrays = eqx.filter(model, eqx.is_array)  # activation functions become None
    spec = partspec.load(Path(__file__).with_name("equinox_finetune.pspec"))
    plan = partspec.compile(spec, arrays, lr=LR)
    print("labels:")
    for path, label in leaf_paths(plan.labels):
        print(f"  {path:<15} {label}")
    assert isinstance(plan.labels, eqx.nn.MLP) and callable(plan.labels)

    trained, losses = train_with_partspec(model, plan, x, y)
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")
    reference = train_like_the_example(model, x, y)

    for before, after in zip(jax.tree.leaves(model.layers[0]), jax.tree.leaves(trained.layers[0])):
        assert np.array_equal(np.asarray(before).view(np.uint32), np.asarray(after).view(np.uint32))
    for before, after in zip(jax.tree.leaves(model.layers[1]), jax.tree.leaves(trained.layers[1])):
        assert not np.array_equal(before, after)
    for ours, theirs in zip(
        jax.tree.leaves(eqx.filter(trained, eqx.is_array)),
        jax.tree.leaves(eqx.filter(reference, eqx.is_array)),
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert losses[-1] < 0.5 * losses[0], losses
    print(
        "layers/0 is bit-identical after training; layers/1 learned, "
        "exactly as with the example's filter_spec"
    )


if __name__ == "__main__":
    main()
