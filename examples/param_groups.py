"""PyTorch-style parameter groups with partspec: one schedule, the head at 10x the base rate.

Reproduces the PyTorch idiom
    torch.optim.Adam([{"params": backbone}, {"params": head, "lr": 10 * lr}]) + one scheduler
with optax: param_groups.pspec gives the backbone `adam(sched)` and the head
`adam(10 * sched)`. Shows that the learning rates the two groups see are exactly optax's
warmup-cosine schedule and 10x it, and that the result equals the hand-written optax.partition.
Synthetic data, CPU, a few seconds.

    python examples/param_groups.py

`params()` builds the parameters without training, for `pspec tree`:

    pspec tree examples.param_groups:params -o examples/param_groups.tree.json
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import partspec

PEAK_LR, WARMUP_STEPS, TOTAL_STEPS = 1e-2, 6, 60


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "backbone": {"w": jax.random.normal(k1, (8, 16)) / 4, "b": jnp.zeros(16)},
        "head": {"w": jax.random.normal(k2, (16, 1)) / 4, "b": jnp.zeros(1)},
    }


def params():
    """The parameters `pspec tree examples.param_groups:params` records (no training)."""
    return init_params(jax.random.PRNGKey(0))


def predict(params, x):
    h = jnp.tanh(x @ params["backbone"]["w"] + params["backbone"]["b"])
    return h @ params["head"]["w"] + params["head"]["b"]


def main() -> None:
    kx, kt, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (128, 8))
    y = jnp.sin(x @ jax.random.normal(kt, (8, 1)))
    params = init_params(kp)

    spec = partspec.load(Path(__file__).with_name("param_groups.pspec"))
    values = {"peak_lr": PEAK_LR, "warmup_steps": WARMUP_STEPS, "total_steps": TOTAL_STEPS}
    plan = partspec.compile(spec, params, **values)
    print("labels:")
    for group, leaves in plan.labels.items():
        for name, label in leaves.items():
            print(f"  {group + '/' + name:<12} {label}")
    n = {g: sum(p.size for p in jax.tree.leaves(params[g])) for g in params}
    print(f"parameters per group: {n}")

    # The hand-written optax equivalent.
    sched = optax.warmup_cosine_decay_schedule(0.0, PEAK_LR, WARMUP_STEPS, TOTAL_STEPS)
    ref_tx = optax.partition(
        {"base": optax.adam(sched), "head": optax.adam(lambda count: 10 * sched(count))},
        {"backbone": {"w": "base", "b": "base"}, "head": {"w": "head", "b": "head"}},
    )

    def loss_fn(p):
        return jnp.mean((predict(p, x) - y) ** 2)

    def make_step(tx, log=None):
        @jax.jit
        def step(p, s):
            # The rates this update applies, read off the optimizer state inside the jitted
            # step: what a training loop logs to TensorBoard or W&B.
            rates = log(s) if log is not None else None
            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, s = tx.update(grads, s, p)
            return optax.apply_updates(p, updates), s, loss, rates

        return step

    step, ref_step = make_step(plan.tx, plan.hyperparams), make_step(ref_tx)
    p, s = params, plan.tx.init(params)
    rp, rs = params, ref_tx.init(params)
    losses = []
    print("step  backbone lr  head lr")
    for count in range(TOTAL_STEPS):
        p, s, loss, hp = step(p, s)
        rp, rs, _, _ = ref_step(rp, rs)
        losses.append(float(loss))
        base = float(hp["adam(sched)"]["learning_rate"])
        head = float(hp["adam(10 * sched)"]["learning_rate"])
        np.testing.assert_allclose(base, float(sched(count)), rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(head, 10 * float(sched(count)), rtol=1e-5, atol=1e-12)
        if count % 10 == 0:
            print(f"{count:4d}  {base:.3e}    {head:.3e}")
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(rp)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    print("parameters equal the hand-written optax.partition's after", TOTAL_STEPS, "steps")
    assert losses[-1] < losses[0], losses
    print("the head's learning rate is 10x the backbone's at every step, on optax's schedule")


if __name__ == "__main__":
    main()
