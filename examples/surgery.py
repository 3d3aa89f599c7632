"""Reproduces the Flax guide "Model surgery" with partspec globs instead of flattened dicts.

Shows: `partspec.transfer` loads "pretrained" CNN weights (synthetic) into a new classifier
whose `backbone` is the CNN's feature layers and whose `head` is new, and reports what it
copied and what it left (the CNN's own 10-way head is unused); `partspec.select` and
`partspec.replace` read and change leaves of the parameters and of the optimizer state by
glob; after some training the head is re-initialised and `partspec.reset_state` resets its
Adam moments (optax#1371) while the backbone's optimizer state stays bit for bit. The spec is
surgery.pspec. Synthetic data, CPU, a few seconds.

    python examples/surgery.py

`params()` builds the new classifier's parameters without training, for `pspec tree`:

    pspec tree examples.surgery:params -o examples/surgery.tree.json
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import partspec

IMAGE = (1, 8, 8, 1)


class Features(nn.Module):
    """The feature layers of the guide's CNN (two convolutions and a dense layer)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(features=8, kernel_size=(3, 3))(x))
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(features=16, kernel_size=(3, 3))(x))
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(features=32)(x))


class CNN(nn.Module):
    """The "pretrained" model: the guide's CNN with a 10-way output (flat names)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(features=8, kernel_size=(3, 3))(x))
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(features=16, kernel_size=(3, 3))(x))
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(features=32)(x))
        return nn.Dense(features=10)(x)


class Classifier(nn.Module):
    """The new model: the pretrained feature layers as `backbone`, a new 4-way `head`."""

    num_classes: int = 4

    def setup(self):
        self.backbone = Features()
        self.head = nn.Dense(self.num_classes)

    def __call__(self, x):
        return self.head(self.backbone(x))


def init_params(key):
    """The classifier's parameters (jitted: one compilation instead of one per initializer)."""
    return jax.jit(Classifier().init)(key, jnp.zeros(IMAGE))["params"]


def params():
    """The parameters `pspec tree examples.surgery:params` records (no training)."""
    return init_params(jax.random.PRNGKey(0))


def bits(tree):
    """Every leaf as raw bytes, to compare trees bit for bit."""
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def load_pretrained(seed=1):
    """Stands in for loading a checkpoint of `CNN`: NumPy arrays of the right shapes."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(CNN().init, jax.random.PRNGKey(0), jnp.zeros(IMAGE))["params"]
    return jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, *IMAGE[1:])).astype(np.float32)
    y = np.argmax(x.reshape(128, -1) @ rng.standard_normal((64, 4)), axis=-1)

    # 1. "Pretrained" weights of a CNN with flat names Conv_0, Conv_1, Dense_0 and Dense_1.
    pretrained = load_pretrained()
    for path, leaf in partspec.select("Conv_*/kernel", pretrained).items():
        print(f"pretrained {path}: {leaf.shape}")

    # 2. The guide's `params['backbone'] = pretrained['params']`, by path: every pretrained
    #    leaf goes under `backbone/`, and only `backbone/**` may be filled.
    params = init_params(jax.random.PRNGKey(0))
    params, report = partspec.transfer(pretrained, params, "backbone/**", rename=("", "backbone/"))
    print(report)
    assert report.unused == ("Dense_1/bias", "Dense_1/kernel")  # the old 10-way head
    assert set(report.skipped) == {"head/bias", "head/kernel"}  # the new head keeps its init
    assert bits(params["backbone"]["Conv_0"]) == bits(pretrained["Conv_0"])

    # 3. Train with surgery.pspec: frozen convolutions, a slow dense layer, a fast head.
    plan = partspec.compile(partspec.load(Path(__file__).with_name("surgery.pspec")), params)
    state = train_state.TrainState.create(apply_fn=Classifier().apply, params=params, tx=plan.tx)

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    def train(state, steps):
        losses = []
        for _ in range(steps):
            state, loss = train_step(state, x, y)
            losses.append(float(loss))
        return state, losses

    state, losses = train(state, 40)
    print(f"fine-tuning: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < losses[0], losses

    # The optimizer state has paths too: the head's Adam moments, whatever wraps them.
    for path, mu in partspec.select("**/mu/head/**", state.opt_state).items():
        print(f"  {path}: |mu| = {float(jnp.linalg.norm(mu)):.4f}")

    # 4. Surgery mid-training: start the head again from zeros, and reset its optimizer state
    #    alone (Adam moments and step count), keeping the backbone's moments bit for bit.
    backbone_state = bits(plan.label_states(state.opt_state)["backbone"])
    new_params = partspec.replace("head/**", state.params, jnp.zeros_like)
    opt_state = partspec.reset_state(plan, state.opt_state, new_params, label="head")
    state = state.replace(params=new_params, opt_state=opt_state)

    head_state = jax.tree_util.tree_leaves(plan.label_states(state.opt_state)["head"])
    assert head_state and not any(np.any(np.asarray(v)) for v in head_state)  # mu, nu, count
    assert bits(plan.label_states(state.opt_state)["backbone"]) == backbone_state
    print(f"reset the head's optimizer state ({len(head_state)} leaves); the backbone's is kept")

    state, losses = train(state, 40)
    print(f"after the reset: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < losses[0], losses

    # 5. Reset by pattern: only the moments that mirror `head/bias`; Adam's step count,
    #    shared by the whole label, is kept.
    opt_state = partspec.reset_state(plan, state.opt_state, state.params, pattern="head/bias")
    reset = partspec.select("**/{mu,nu}/head/bias", opt_state)
    assert len(reset) == 2 and not any(np.any(v) for v in reset.values())
    kept = partspec.select("**/{mu,nu}/head/kernel", opt_state)
    assert bits(kept) == bits(partspec.select("**/{mu,nu}/head/kernel", state.opt_state))
    (count,) = partspec.select("**/count", plan.label_states(opt_state)["head"]).values()
    print(f"reset head/bias's moments by pattern; the head's step count stays {int(count)}")


if __name__ == "__main__":
    main()
