"""Gradient clipping by global norm over the trainable parameters only: `global`.

With a frozen backbone, the usual optax recipe

    optax.chain(optax.clip_by_global_norm(1.0), optax.partition(...))

computes the norm over *all* gradients, the backbone's included: the frozen gradients
are never applied, but they count in the norm and so shrink the head's updates, the
more the larger the backbone's gradients are. global_clip.pspec says
`global clip_by_global_norm(1.0)`, which partspec applies to the trainable leaves only,
before the rules' optimizers, like

    optax.chain(optax.masked(optax.clip_by_global_norm(1.0), trainable), optax.partition(...))

The script compares the two on one batch, checks that partspec's optimizer equals the
masked one update for update, and trains a few steps. CPU, a few seconds.

    python examples/global_clip.py

`params()` builds the parameters without training, for `pspec tree`:

    pspec tree examples.global_clip:params -o examples/global_clip.tree.json
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import partspec

LR, MAX_NORM = 0.05, 1.0


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(64, name="Dense_0")(x))
        h = nn.relu(nn.Dense(64, name="Dense_1")(h))
        return nn.Dense(1, name="head")(h)


def init_params(key):
    raw = Model().init(key, jnp.zeros((1, 16)))["params"]
    # Regroup as {"backbone": ..., "head": ...}, the layout the spec is written for.
    return {"backbone": {k: raw[k] for k in ("Dense_0", "Dense_1")}, "head": raw["head"]}


def params():
    """The parameters `pspec tree examples.global_clip:params` records (no training)."""
    return init_params(jax.random.PRNGKey(0))


def apply(p, x):
    return Model().apply({"params": {**p["backbone"], "head": p["head"]}}, x)


def main() -> None:
    kx, kt, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (128, 16))
    y = 3 * jnp.sin(x @ jax.random.normal(kt, (16, 1)))
    params = init_params(kp)

    spec = partspec.load(Path(__file__).with_name("global_clip.pspec"))
    plan = partspec.compile(spec, params, lr=LR, max_norm=MAX_NORM)

    def loss_fn(p):
        return jnp.mean((apply(p, x) - y) ** 2)

    grads = jax.grad(loss_fn)(params)
    norm_all = float(optax.tree.norm(grads))
    norm_head = float(optax.tree.norm(grads["head"]))
    print(f"gradient norm: all parameters {norm_all:.3f}, trainable (head) {norm_head:.3f}")
    assert norm_head > MAX_NORM  # so clipping is active

    # With sgd(lr), the head's update is -lr * (clipped gradient): its norm / lr is the
    # norm of the clipped gradient.
    labels = plan.labels
    buggy = optax.chain(
        optax.clip_by_global_norm(MAX_NORM),
        optax.partition({"frozen": optax.set_to_zero(), "sgd(lr)": optax.sgd(LR)}, labels),
    )
    masked = optax.chain(
        optax.masked(optax.clip_by_global_norm(MAX_NORM), plan.trainable_mask()),
        optax.partition({"frozen": optax.set_to_zero(), "sgd(lr)": optax.sgd(LR)}, labels),
    )
    for name, tx in [("partspec plan.tx", plan.tx), ("chain(clip, partition)", buggy)]:
        updates, _ = tx.update(grads, tx.init(params), params)
        clipped = float(optax.tree.norm(updates["head"])) / LR
        print(f"  {name:<24} norm of the head's clipped gradient: {clipped:.4f}")
        if tx is plan.tx:
            np.testing.assert_allclose(clipped, MAX_NORM, rtol=1e-5)
            assert float(optax.tree.norm(updates["backbone"])) == 0.0
        else:
            np.testing.assert_allclose(clipped, MAX_NORM * norm_head / norm_all, rtol=1e-5)
    print(f"chain(clip, partition) makes the head's step {norm_all / norm_head:.1f}x smaller")

    def make_step(tx):
        @jax.jit
        def step(p, s):
            loss, g = jax.value_and_grad(loss_fn)(p)
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s, loss

        return step

    step, ref_step = make_step(plan.tx), make_step(masked)
    p, s = params, plan.tx.init(params)
    rp, rs = params, masked.init(params)
    losses = []
    for _ in range(40):
        p, s, loss = step(p, s)
        rp, rs, _ = ref_step(rp, rs)
        losses.append(float(loss))
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(rp)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(params["backbone"]), jax.tree.leaves(p["backbone"])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")
    assert losses[-1] < losses[0], losses
    print("plan.tx equals chain(masked(clip, trainable), partition) after 40 steps")


if __name__ == "__main__":
    main()
