"""Sharded fine-tuning with partspec under JAX SPMD, on a (4, 2) mesh of 8 devices.

Reproduces the recipe of docs/sharding.md, itself JAX's "Distributed arrays and automatic
parallelization" pattern (shapes from `jax.eval_shape`, parameters born sharded by
`jax.jit(init, out_shardings=...)`, a step jitted with the shardings): the labels are
compiled from the shapes alone; `plan.init` shards the optimizer state like the parameters
(where `jax.jit(tx.init)` puts it all on one device); 20 jitted steps keep every parameter
and state sharding and leave the frozen shards bit-identical. Synthetic data, CPU, a few
seconds. Without 8 devices, the script re-runs itself on 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8).

    python examples/sharded_training.py

`params()` builds the parameters unsharded (no mesh needed), for `pspec tree`:

    pspec tree examples.sharded_training:params -o examples/sharded_training.tree.json
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import partspec

DEVICES = 8
FLAG = f"--xla_force_host_platform_device_count={DEVICES}"
VOCAB, WIDTH, MLP, LAYERS, CLASSES = 64, 32, 64, 4, 8
STEPS = 20

# Sharding rules, first match wins: kernels over `model` (the MLP's also over `data`,
# FSDP-style), biases and norms replicated.
RULES = [
    (r"embed/embedding", P(None, "model")),
    (r"encoder/layers_\d+/mlp/wi/kernel", P("data", "model")),
    (r"encoder/layers_\d+/mlp/wo/kernel", P("model", "data")),
    (r"head/kernel", P("model", None)),
    (r".*", P()),
]


def ensure_devices() -> None:
    """Re-run this script on 8 simulated CPU devices when fewer are visible."""
    if jax.device_count() >= DEVICES:
        return
    if FLAG in os.environ.get("XLA_FLAGS", ""):
        raise SystemExit(f"{DEVICES} devices wanted, {jax.device_count()} found")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FLAG}".strip()
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def init_params(key: jax.Array) -> dict[str, Any]:
    keys = iter(jax.random.split(key, 2 * LAYERS + 2))

    def dense(n_in: int, n_out: int) -> dict[str, jax.Array]:
        w = jax.random.normal(next(keys), (n_in, n_out)) / np.sqrt(n_in)
        return {"kernel": w, "bias": jnp.zeros(n_out)}

    def layer() -> dict[str, Any]:
        return {
            "norm": {"scale": jnp.ones(WIDTH)},
            "mlp": {"wi": dense(WIDTH, MLP), "wo": dense(MLP, WIDTH)},
        }

    return {
        "embed": {"embedding": jax.random.normal(next(keys), (VOCAB, WIDTH))},
        "encoder": {f"layers_{i}": layer() for i in range(LAYERS)},
        "head": dense(WIDTH, CLASSES),
    }


def params() -> dict[str, Any]:
    """The parameters `pspec tree examples.sharded_training:params` records (unsharded)."""
    return init_params(jax.random.PRNGKey(0))


def forward(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
    h = params["embed"]["embedding"][tokens].mean(axis=1)
    for i in range(LAYERS):
        layer = params["encoder"][f"layers_{i}"]
        z = h * layer["norm"]["scale"]
        z = jax.nn.gelu(z @ layer["mlp"]["wi"]["kernel"] + layer["mlp"]["wi"]["bias"])
        h = h + z @ layer["mlp"]["wo"]["kernel"] + layer["mlp"]["wo"]["bias"]
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def loss_fn(params: dict[str, Any], tokens: jax.Array, labels: jax.Array) -> jax.Array:
    logits = forward(params, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def partition_spec(path: tuple[Any, ...]) -> P:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return next(spec for pattern, spec in RULES if re.fullmatch(pattern, name))


def main() -> None:
    ensure_devices()
    mesh = Mesh(np.array(jax.devices()[:DEVICES]).reshape(4, 2), ("data", "model"))
    replicated = NamedSharding(mesh, P())
    print(f"mesh: {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices")

    # 1-2. Shapes only, and the labels from them: no parameter exists yet.
    abstract = jax.eval_shape(init_params, jax.random.PRNGKey(0))
    spec = partspec.load(Path(__file__).with_name("sharded_training.pspec"))
    plan = partspec.compile(spec, abstract, strict=True)
    counts: dict[str, int] = {}
    for label, leaf in zip(jax.tree.leaves(plan.labels), jax.tree.leaves(abstract), strict=True):
        counts[label] = counts.get(label, 0) + leaf.size
    print("parameters per label:", counts)

    # 3-4. A sharding per parameter; the parameters made in their shards.
    shardings = jax.tree_util.tree_map_with_path(
        lambda path, _: NamedSharding(mesh, partition_spec(path)), abstract
    )
    params = jax.jit(init_params, out_shardings=shardings)(jax.random.PRNGKey(0))

    # 5. The optimizer state: plan.init against the plain jit(tx.init).
    baseline = jax.jit(plan.tx.init)(params)
    on_one_device = sum(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(baseline))
    n_leaves = len(jax.tree.leaves(baseline))
    print(f"jax.jit(tx.init): {on_one_device} of {n_leaves} state leaves on one device")
    state = plan.init(params)
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    adamw = state.groups["decay"].inner[0]
    for name in ("wi", "wo"):
        mirrored = adamw.mu["encoder"]["layers_3"]["mlp"][name]["kernel"]
        assert mirrored.sharding == shardings["encoder"]["layers_3"]["mlp"][name]["kernel"]
    assert adamw.count.sharding == replicated
    assert all(isinstance(s, NamedSharding) for s in jax.tree.leaves(state_shardings))
    # Frozen leaves own no state: no moments for the embedding or the frozen layers.
    assert "embed" not in adamw.mu
    assert not any(f"layers_{i}" in adamw.mu["encoder"] for i in (0, 1))
    print("plan.init: every state leaf on the mesh; e.g. layers_3/mlp/wi/kernel's moments:")
    print("   ", adamw.mu["encoder"]["layers_3"]["mlp"]["wi"]["kernel"].sharding.spec)

    # 6. Jitted steps that keep every sharding (out_shardings) and reuse buffers (donation).
    @functools.partial(
        jax.jit,
        donate_argnums=(0, 1),
        out_shardings=(shardings, state_shardings, replicated),
    )
    def step(params: Any, state: Any, tokens: jax.Array, labels: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, labels)
        updates, state = plan.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    tokens = jax.random.randint(jax.random.PRNGKey(1), (128, 6), 0, VOCAB)
    labels = (tokens.sum(axis=1) * 7) % CLASSES
    batch = NamedSharding(mesh, P("data"))
    tokens, labels = jax.device_put(tokens, batch), jax.device_put(labels, batch)

    trainable = jax.tree.leaves(plan.trainable_mask())
    before = [np.asarray(x).tobytes() for x in jax.tree.leaves(params)]  # host copies
    losses = []
    for _ in range(STEPS):
        params, state, loss = step(params, state, tokens, labels)
        losses.append(float(loss))
    print(f"loss: step 1 {losses[0]:.4f}, step {STEPS} {losses[-1]:.4f}")
    assert losses[-1] < losses[0], losses

    assert jax.tree.map(lambda x: x.sharding, params) == shardings
    assert jax.tree.map(lambda x: x.sharding, state) == state_shardings
    after = [np.asarray(x).tobytes() for x in jax.tree.leaves(params)]
    for old, new, trained in zip(before, after, trainable, strict=True):
        assert (old != new) == trained
    print(f"after {STEPS} steps: every sharding unchanged, frozen shards bit-identical")


if __name__ == "__main__":
    main()
