"""ULMFiT-style gradual unfreezing with `frozen until N then ...`.

ULMFiT (Howard & Ruder, 2018) fine-tunes a pretrained network by training the new head
first and unfreezing the layers below it one at a time, from the top down, so that the
lower, more general layers change last. gradual_unfreezing.pspec writes the schedule as
one rule over `layer_<i>`: layer i stays frozen for its first `every * (depth - i)` updates
and then trains with Adam; the embedding joins last.

The script trains a small pretrained-style MLP stack on a toy regression task, records at
which update each parameter first changed (by comparing the parameters before and after
every update), and checks that this is exactly the update the spec says, that frozen
groups stay bit-identical until then, and that each group's first update is Adam's first
step (a fresh optimizer state). CPU, a few seconds.

    python examples/gradual_unfreezing.py

`params()` builds the parameters without training, for `pspec tree`:

    pspec tree examples.gradual_unfreezing:params -o examples/gradual_unfreezing.tree.json
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

import partspec

LAYERS, DIM, EVERY, LR = 4, 16, 5, 1e-2


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(DIM, name="embed")(x)
        for i in range(LAYERS):
            x = x + nn.Dense(DIM, name=f"layer_{i}")(nn.tanh(x))
        return nn.Dense(1, name="head")(x)


def init_params(key):
    return Model().init(key, jnp.zeros((1, 8)))["params"]


def params():
    """The parameters `pspec tree examples.gradual_unfreezing:params` records (no training)."""
    return init_params(jax.random.PRNGKey(0))


def main() -> None:
    kx, kt, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (128, 8))
    y = jnp.sin(x @ jax.random.normal(kt, (8, 1)))
    model = Model()
    params = init_params(kp)

    spec = partspec.load(Path(__file__).with_name("gradual_unfreezing.pspec"))
    plan = partspec.compile(spec, params, lr=LR, every=EVERY)
    # What the spec says: the head from update 0, layer i from EVERY * (LAYERS - i),
    # the embedding from EVERY * (LAYERS + 1).
    expected = {"head": 0, "embed": EVERY * (LAYERS + 1)}
    expected.update({f"layer_{i}": EVERY * (LAYERS - i) for i in range(LAYERS)})
    print("plan.unfreeze_steps:", dict(plan.unfreeze_steps))
    assert dict(plan.unfreeze_steps) == {
        "embed": expected["embed"],
        **{f"layer[i={i}]": expected[f"layer_{i}"] for i in range(LAYERS)},
    }

    @jax.jit
    def step(p, s):
        def loss_fn(p):
            return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = plan.tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    p, s = params, plan.tx.init(params)
    first_move: dict[str, int] = {}
    total = EVERY * (LAYERS + 2)
    losses = []
    for n in range(total):
        new, s, loss = step(p, s)
        losses.append(float(loss))
        before = traverse_util.flatten_dict(p, sep="/")
        after = traverse_util.flatten_dict(new, sep="/")
        moved: dict[str, set[bool]] = {}
        for path in before:
            old, cur = np.asarray(before[path]), np.asarray(after[path])
            same = np.array_equal(old.view(np.uint32), cur.view(np.uint32))
            moved.setdefault(path.split("/")[0], set()).add(not same)
            if not same and path.split("/")[0] not in first_move:
                # A fresh Adam state: the first step moves some weight by lr (to 1e-4),
                # whatever the gradient's size.
                np.testing.assert_allclose(np.abs(cur - old).max(), LR, rtol=1e-4)
        for group, flags in moved.items():
            assert len(flags) == 1, f"part of {group} moved at update {n}"
            started = group in first_move
            if flags == {True} and not started:
                first_move[group] = n
            assert flags == {True} or not started, f"{group} stopped at update {n}"
        p = new

    print("update at which each group first changed:")
    for group in sorted(first_move, key=first_move.get):
        print(f"  {group:<8} {first_move[group]:3d}")
    assert first_move == expected, (first_move, expected)
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")
    assert losses[-1] < losses[0], losses
    print("every group started training at exactly the update the spec gives")


if __name__ == "__main__":
    main()
