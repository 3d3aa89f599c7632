"""Reproduces the Flax guide "Transfer learning" with differential learning rates, not a freeze.

Shows: a linen `Classifier` = pretrained `backbone` + new `head`; the spec in
linen_differential_lr.pspec fine-tunes the backbone with `adam(lr / 10)` and trains the head
with `adam(lr)`, and the optimizer goes straight into `flax.training.train_state.TrainState`.
Adam's first step moves each parameter by its group's learning rate times the sign of its
gradient, so the script checks that the backbone moved by lr / 10 and the head by lr, and that
the whole run equals the hand-written `path_aware_map` + `optax.partition` of the guide.
Synthetic data, CPU, a few seconds.

    python examples/linen_differential_lr.py

`params()` builds the classifier's parameters without training, for `pspec tree`:

    pspec tree examples.linen_differential_lr:params -o examples/linen_differential_lr.tree.json
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

import partspec

LR = 1e-2


class Backbone(nn.Module):
    """Stands in for a pretrained feature extractor."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        return nn.relu(nn.Dense(32)(x))


class Classifier(nn.Module):
    num_classes: int = 4

    def setup(self):
        self.backbone = Backbone()
        self.head = nn.Dense(self.num_classes)

    def __call__(self, x):
        return self.head(self.backbone(x))


def init_params(key):
    """The classifier's parameters for 16 input features, the backbone's from "pretraining"."""
    k_model, k_backbone = jax.random.split(key)
    x = jnp.zeros((1, 16))
    params = Classifier().init(k_model, x)["params"]
    pretrained = Backbone().init(k_backbone, x)["params"]  # as the guide loads a checkpoint
    return {**params, "backbone": pretrained}


def params():
    """The parameters `pspec tree examples.linen_differential_lr:params` records (no training)."""
    return init_params(jax.random.PRNGKey(0))


def main() -> None:
    kx, kw, kinit = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (256, 16))
    y = jnp.argmax(x @ jax.random.normal(kw, (16, 4)), axis=-1)

    model = Classifier()
    params = init_params(kinit)
    spec = partspec.load(Path(__file__).with_name("linen_differential_lr.pspec"))
    plan = partspec.compile(spec, params, lr=LR)

    print("labels:")
    flat = traverse_util.flatten_dict(plan.labels, sep="/")
    width = max(map(len, flat))
    for path, label in flat.items():
        print(f"  {path:<{width}}  {label}")

    # The guide's way, by hand: label by path, then one optax.partition.
    guide_labels = traverse_util.path_aware_map(lambda path, _: path[0], params)
    guide_tx = optax.partition(
        {"backbone": optax.adam(LR / 10), "head": optax.adam(LR)}, guide_labels
    )

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=plan.tx)
    guide = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=guide_tx)
    start = jax.tree.map(np.array, params)

    losses = []
    for step in range(50):
        state, loss = train_step(state, x, y)
        guide, _ = train_step(guide, x, y)
        losses.append(float(loss))
        if step == 0:
            # Adam's first step is lr * sign(grad) (up to eps): lr / 10 for the backbone.
            for part, rate in (("backbone", LR / 10), ("head", LR)):
                moved = max(
                    float(np.max(np.abs(np.asarray(a) - b)))
                    for a, b in zip(
                        jax.tree.leaves(state.params[part]), jax.tree.leaves(start[part])
                    )
                )
                print(f"first step: {part} moved by at most {moved:.6f} (its rate: {rate:g})")
                assert abs(moved - rate) < 1e-3 * rate, (part, moved, rate)
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")

    for part in ("backbone", "head"):
        for before, after in zip(jax.tree.leaves(start[part]), jax.tree.leaves(state.params[part])):
            assert not np.array_equal(before, after), f"{part} did not move"
    for ours, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(guide.params)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert losses[-1] < losses[0], losses
    print(
        "the backbone fine-tuned at lr / 10, the head at lr; same result as the hand-written optax"
    )


if __name__ == "__main__":
    main()
