"""Reproduces the Flax NNX "Optimization Cookbook" recipe "Per-Parameter Learning Rates".

Shows: `nnx.Optimizer(model, plan.tx, wrt=nnx.Param)` with the spec in nnx_finetune.pspec:
kernels get `adam(lr)`, biases (and BatchNorm's scale) `adam(10 * lr)`, as in the cookbook,
and the first two of the model's pretrained `blocks` (an `nnx.List`) are frozen. The spec is
compiled against `nnx.eval_shape`, before any weight exists, and the same optimizer then
trains the real model: NNX hands the optimizer `Variable`-wrapped parameters in `init` and
plain arrays in `update`, and partspec labels both. After training the frozen blocks are
bit-identical, and the rest equals the cookbook's hand-written `nnx.map_state` labels +
`optax.partition`. Synthetic data, CPU, a few seconds.

    python examples/nnx_finetune.py

`params()` builds the model's `nnx.Param` state without training, for `pspec tree`:

    pspec tree examples.nnx_finetune:params -o examples/nnx_finetune.tree.json
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import partspec
from partspec.jax.tree import leaf_paths

LR = 1e-3


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, din: int = 16, width: int = 32, dout: int = 4):
        # Stand-ins for pretrained blocks, then a new head.
        self.blocks = nnx.List(
            [nnx.Linear(din, width, rngs=rngs)]
            + [nnx.Linear(width, width, rngs=rngs) for _ in range(2)]
        )
        self.norm = nnx.BatchNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, dout, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = nnx.relu(block(x))
        return self.head(self.norm(x))


def params():
    """The parameters `pspec tree examples.nnx_finetune:params` records (no training)."""
    return nnx.state(Model(nnx.Rngs(0)), nnx.Param)


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


def snapshot(model):
    return {p: np.array(v) for p, v in leaf_paths(nnx.state(model, nnx.Param))}


def main() -> None:
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (256, 16))
    y = jnp.argmax(x @ jax.random.normal(kw, (16, 4)), axis=-1)

    # Compile against the abstract model: shapes only, nothing allocated.
    abstract = nnx.eval_shape(lambda: Model(nnx.Rngs(0)))
    spec = partspec.load(Path(__file__).with_name("nnx_finetune.pspec"))
    plan = partspec.compile(spec, nnx.state(abstract, nnx.Param), lr=LR)
    labels = dict(leaf_paths(plan.labels))
    print("labels:")
    width = max(map(len, labels))
    for path, label in labels.items():
        print(f"  {path:<{width}}  {label}")

    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, plan.tx, wrt=nnx.Param)

    # The cookbook's way, by hand, on a twin model.
    twin = Model(nnx.Rngs(0))

    def kind(path, _):
        if path[0] == "blocks" and path[1] in (0, 1):
            return "frozen"
        return "kernel" if path[-1] == "kernel" else "bias"

    rates = {
        "frozen": optax.set_to_zero(),
        "kernel": optax.adam(LR),
        "bias": optax.adam(10 * LR),
    }
    param_tys = nnx.map_state(kind, nnx.state(twin, nnx.Param))
    cookbook = nnx.Optimizer(twin, optax.partition(rates, param_tys), wrt=nnx.Param)

    start = snapshot(model)
    losses = []
    for _ in range(50):
        losses.append(float(train_step(model, optimizer, x, y)))
        train_step(twin, cookbook, x, y)
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")

    end, reference = snapshot(model), snapshot(twin)
    frozen = [p for p, label in labels.items() if label == "frozen"]
    assert frozen == ["blocks/0/bias", "blocks/0/kernel", "blocks/1/bias", "blocks/1/kernel"]
    for path in start:
        if path in frozen:
            assert np.array_equal(start[path].view(np.uint32), end[path].view(np.uint32)), path
        else:
            assert not np.array_equal(start[path], end[path]), f"{path} did not move"
        np.testing.assert_allclose(end[path], reference[path], rtol=1e-6, atol=1e-7)
    assert losses[-1] < losses[0], losses
    print(
        f"{len(frozen)} frozen parameters are bit-identical after training; "
        "the rest trained exactly as the cookbook's hand-written optax.partition"
    )


if __name__ == "__main__":
    main()
