"""Reproduces the Flax guide "Transfer learning" with partspec instead of hand-written labels.

Shows: a linen `Classifier` = pretrained `backbone` + new `head`; the spec in
transfer_learning.pspec freezes the backbone and trains the head with adam, and the optimizer
goes straight into `flax.training.train_state.TrainState`. After training, the backbone is
bit-identical to where it started. Synthetic data, CPU, a few seconds.

    python examples/transfer_learning.py

`params()` builds the classifier's parameters without training, for `pspec tree`:

    pspec tree examples.transfer_learning:params -o examples/transfer_learning.tree.json
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
    """The classifier's parameters, for 16 input features."""
    return Classifier().init(key, jnp.zeros((1, 16)))["params"]


def params():
    """The parameters `pspec tree examples.transfer_learning:params` records (no training)."""
    return init_params(jax.random.PRNGKey(0))


def main() -> None:
    kx, kw, kinit = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (256, 16))
    y = jnp.argmax(x @ jax.random.normal(kw, (16, 4)), axis=-1)

    model = Classifier()
    params = init_params(kinit)

    spec = partspec.load(Path(__file__).with_name("transfer_learning.pspec"))
    plan = partspec.compile(spec, params, lr=1e-2)

    print("labels:")
    flat = traverse_util.flatten_dict(plan.labels, sep="/")
    width = max(map(len, flat))
    for path, label in flat.items():
        print(f"  {path:<{width}}  {label}")
    trainable, frozen = plan.split(params)
    n_trainable = sum(p.size for p in jax.tree.leaves(trainable))
    n_frozen = sum(p.size for p in jax.tree.leaves(frozen))
    print(f"trainable parameters: {n_trainable}, frozen parameters: {n_frozen}")

    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=plan.tx)
    start = jax.tree.map(np.array, params)

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for _ in range(50):
        state, loss = train_step(state, x, y)
        losses.append(float(loss))
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")

    for before, after in zip(
        jax.tree.leaves(start["backbone"]), jax.tree.leaves(state.params["backbone"])
    ):
        assert np.array_equal(before.view(np.uint32), np.asarray(after).view(np.uint32))
    assert not np.array_equal(start["head"]["kernel"], state.params["head"]["kernel"])
    assert losses[-1] < losses[0], losses
    print("backbone is bit-identical after training; the head learned")


if __name__ == "__main__":
    main()
