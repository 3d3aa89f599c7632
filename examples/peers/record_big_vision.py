"""Record big_vision's ``optax.make`` on its ``test_make_multi`` configuration: each
parameter's learning rate, weight decay and schedule, and the updates of 10 steps.

``tests/test_peers.py`` reads the table; it never imports big_vision. To record it again,
with a checkout of https://github.com/google-research/big_vision (recorded at commit
0127fb6b) and its light dependencies beside partspec's JAX install::

    pip install --target /tmp/bvdeps absl-py einops ml_collections
    PYTHONPATH=/tmp/bvdeps:/path/to/big_vision python examples/peers/record_big_vision.py \\
        > examples/peers/big_vision_make_multi.json

``big_vision.utils`` imports TensorFlow for file access that ``optax.make`` never uses: it
is stubbed here.
"""

from __future__ import annotations

import json
import sys
import types

for name in ("tensorflow", "tensorflow.io", "tensorflow.io.gfile"):
    sys.modules.setdefault(name, types.ModuleType(name))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from big_vision import optax as bv_optax  # noqa: E402

# The configuration of big_vision/optax_test.py, test_make_multi.
LRB, LR1, LR2 = 0.01, 2.0, 0.5
WDB, WD1, WD2 = 1e-3, 10.0, 0.1
MULT1, MULT2 = 1.0, 0.1
TOTAL_STEPS = 10


def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.lr = LRB
    c.lr_mults = [("Dense_0/.*", LR1), ("Dense_1/.*", LR2)]
    c.wd = WDB
    c.wd_mults = [(".*/kernel", WD1), (".*/bias", WD2)]
    c.schedule = [
        ("Dense_0/.*", dict(decay_type="linear", mult=MULT1, linear_end=MULT1)),
        ("Dense_[12]/.*", dict(decay_type="linear", mult=MULT2)),
        (".*", None),
    ]
    c.optax_name = "scale"
    c.grad_clip_norm = 1.0
    c.optax = ml_collections.ConfigDict()
    c.optax.step_size = 0.5
    return c


def main() -> None:
    params = {
        f"Dense_{i}": {"kernel": 3.0 * i + 1, "bias": 3.0 * i + 2, "other": 3.0 * i + 3}
        for i in range(4)
    }
    params = jax.tree.map(jnp.array, params)
    tx, (sched1, sched2) = bv_optax.make(
        config(), params, sched_kw=dict(global_batch_size=1, total_steps=TOTAL_STEPS)
    )
    # Which schedule, lr multiplier and wd multiplier each leaf gets, read off big_vision's
    # own mask trees (the same regexes make() applies).
    names = [n for n, _ in bv_optax.u.tree_flatten_with_names(params)[0]]
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    steps = []
    for _ in range(TOTAL_STEPS):
        updates, state = tx.update(grads, state, params)
        flat = bv_optax.u.tree_flatten_with_names(updates)[0]
        steps.append({n: float(v) for n, v in flat})
    masks = {}
    for key, pairs in (("lr_mult", config().lr_mults), ("wd_mult", config().wd_mults)):
        trees = bv_optax.u.make_mask_trees(params, [p for p, _ in pairs])
        for (_, mult), tree in zip(pairs, trees):
            for n, hit in bv_optax.u.tree_flatten_with_names(tree)[0]:
                if hit:
                    masks.setdefault(n, {}).setdefault(key, mult)
    frozen = bv_optax.replace_frozen(config().schedule, params, True)
    frozen = dict(bv_optax.u.tree_flatten_with_names(jax.tree.map(lambda x: x is True, frozen))[0])
    table = {}
    for n in names:
        got = masks.get(n, {})
        table[n] = {
            "frozen": bool(frozen[n]),
            "lr": LRB * got.get("lr_mult", 1.0),
            "wd": WDB * got["wd_mult"] if "wd_mult" in got else 0.0,
        }
    print(
        json.dumps(
            {
                "peer": "big_vision 0127fb6b (optax.make, optax_test.py test_make_multi)",
                "schedules": {
                    "sched1": [float(sched1(s)) for s in range(TOTAL_STEPS)],
                    "sched2": [float(sched2(s)) for s in range(TOTAL_STEPS)],
                },
                "params": {n: float(v) for n, v in bv_optax.u.tree_flatten_with_names(params)[0]},
                "table": table,
                "updates": steps,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
