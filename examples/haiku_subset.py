"""Reproduces Haiku's "training a subset of parameters" with partspec.

Shows: an `hk.nets.MLP([8, 8, 1])` learns y = x while `mlp/~/linear_1` stays frozen
(haiku_subset.pspec). As in Haiku's recipe, gradients are taken with respect to the trainable
half only: `plan.split` replaces `hk.data_structures.partition`, `plan.merge` replaces
`hk.data_structures.merge`, and `plan.trainable_tx` optimizes the trainable half.
Synthetic data, CPU, a few seconds.

    python examples/haiku_subset.py

`params()` builds the parameters with `hk.transform(...).init` and no training, for `pspec tree`:

    pspec tree examples.haiku_subset:params -o examples/haiku_subset.tree.json
"""

from __future__ import annotations

from pathlib import Path

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import partspec


def forward(x):
    return hk.nets.MLP([8, 8, 1])(x)


def params():
    """The MLP's parameters (`hk.transform(forward).init`) for one scalar input, untrained."""
    return hk.transform(forward).init(jax.random.PRNGKey(42), jnp.zeros((1, 1)))


def main() -> None:
    net = hk.without_apply_rng(hk.transform(forward))
    x = jax.random.uniform(jax.random.PRNGKey(0), (128, 1), minval=-1.0, maxval=1.0)
    y = x  # the identity function
    params = net.init(jax.random.PRNGKey(42), x)

    spec = partspec.load(Path(__file__).with_name("haiku_subset.pspec"))
    plan = partspec.compile(spec, params)

    print("labels:")
    for module, leaves in plan.labels.items():
        for name, label in leaves.items():
            print(f"  {module}/{name:<3} {label}")
    trainable, frozen = plan.split(params)
    n_trainable = sum(p.size for p in jax.tree.leaves(trainable))
    n_frozen = sum(p.size for p in jax.tree.leaves(frozen))
    print(f"trainable parameters: {n_trainable}, frozen parameters: {n_frozen}")

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
    start_loss = float(loss_fn(trainable, frozen, x, y))
    for _ in range(300):
        trainable, opt_state, _ = step(trainable, opt_state, frozen, x, y)
    end_loss = float(loss_fn(trainable, frozen, x, y))
    print(f"loss: start {start_loss:.4f}, end {end_loss:.6f}")

    learned = plan.merge(trainable, frozen)
    for before, after in zip(
        jax.tree.leaves(params["mlp/~/linear_1"]), jax.tree.leaves(learned["mlp/~/linear_1"])
    ):
        assert np.array_equal(np.asarray(before).view(np.uint32), np.asarray(after).view(np.uint32))
    assert end_loss < 0.05 * start_loss, (start_loss, end_loss)
    print("mlp/~/linear_1 is bit-identical after training; the rest learned y = x")


if __name__ == "__main__":
    main()
