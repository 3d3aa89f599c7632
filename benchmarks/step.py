"""Training-step benchmark: a spec's optimizer against one hand-written ``optax.adamw``.

The hand-written baseline is what big_vision and timm do for layer-wise decay: one
AdamW whose learning rate is a per-leaf tree (``scale_by_adam``, decoupled weight
decay, then each leaf scaled by its own ``-lr``). The spec gives the same leaves the
same learning rates through labels, so the two compute the same updates; what differs
is how the optimizer is assembled. For each tree and label count it measures, in one
process:

* ``step``: a jitted ``update`` + ``apply_updates`` call, median wall time per call
  (host dispatch included; the arrays are small, so host overhead shows);
* ``host``: the time for the jitted call to return before its result is ready (the
  Python and pytree work on the host; asynchronous dispatch);
* ``compile``: ``jax.jit(step).lower(...).compile()`` wall time (tracing included),
  best of ``--compiles``;

the two optimizers' compiles and calls alternate, so that drift hits both alike.
* ``state``: optimizer-state bytes and pytree nodes (leaves and containers).

Usage::

    python benchmarks/step.py                   # GPT-like (48, 96 layers), ViT-like trees
    python benchmarks/step.py --labels 10 100   # fewer label counts
    python benchmarks/step.py --check           # exit 1 if a target is missed

Targets (``--check``): step and compile at most 1.05x the baseline at every label
count, state bytes equal, nodes at most 2x. Report only in CI.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

if importlib.util.find_spec("partspec") is None:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import partspec

WIDTH = 64  # small arrays: the benchmark is about the host, not the FLOPs
TARGET_STEP = TARGET_COMPILE = 1.05
TARGET_NODES = 2.0


# ------------------------------------------------------------------ trees


def gpt_tree(layers: int = 48, width: int = WIDTH) -> dict[str, Any]:
    """A GPT-2-like parameter tree: embeddings, ``h/layer_{i}/...``, a final norm."""

    def dense(i: int, o: int) -> dict[str, Any]:
        return {"kernel": jnp.full((i, o), 0.01), "bias": jnp.zeros(o)}

    def norm() -> dict[str, Any]:
        return {"scale": jnp.ones(width), "bias": jnp.zeros(width)}

    block = lambda: {  # noqa: E731
        "ln_1": norm(),
        "attn": {"c_attn": dense(width, 3 * width), "c_proj": dense(width, width)},
        "ln_2": norm(),
        "mlp": {"c_fc": dense(width, 4 * width), "c_proj": dense(4 * width, width)},
    }
    return {
        "wte": jnp.full((512, width), 0.02),
        "wpe": jnp.full((128, width), 0.01),
        "h": {f"layer_{i}": block() for i in range(layers)},
        "ln_f": norm(),
    }


def vit_tree(layers: int = 12, width: int = WIDTH) -> dict[str, Any]:
    """A ViT-like tree: patch embedding, class token, ``encoder/block_{i}``, a head."""

    def dense(i: int, o: int) -> dict[str, Any]:
        return {"kernel": jnp.full((i, o), 0.01), "bias": jnp.zeros(o)}

    def norm() -> dict[str, Any]:
        return {"scale": jnp.ones(width), "bias": jnp.zeros(width)}

    block = lambda: {  # noqa: E731
        "ln_1": norm(),
        "attn": {k: dense(width, width) for k in ("query", "key", "value", "out")},
        "ln_2": norm(),
        "mlp": {"fc1": dense(width, 4 * width), "fc2": dense(4 * width, width)},
    }
    return {
        "embedding": dense(48, width),
        "cls": jnp.zeros((1, 1, width)),
        "pos_embedding": jnp.zeros((1, 65, width)),
        "encoder": {f"block_{i}": block() for i in range(layers)},
        "encoder_norm": norm(),
        "head": dense(width, 10),
    }


TREES: dict[str, Callable[[], dict[str, Any]]] = {
    "gpt48": gpt_tree,
    "vit12": vit_tree,
    "gpt96": lambda: gpt_tree(96),  # enough leaves for 1,000 labels
}


# ------------------------------------------------------------------ the spec and the baseline


def _paths(tree: Any) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ["/".join(str(k.key) for k in path) for path, _ in flat]


def spec_and_rates(tree: Any, n_labels: int) -> tuple[str, list[float]]:
    """A spec giving the leaves ``n_labels`` learning rates, and each leaf's rate.

    Leaf ``j`` (in tree order) gets band ``j * n_labels // n_leaves``, rate ``1e-3 *
    0.97 ** band``: contiguous bands, as layer-wise decay makes. One rule per leaf
    (explicit paths), all ``adamw`` with the same weight decay.
    """
    paths = _paths(tree)
    n = len(paths)
    if n_labels > n:
        raise SystemExit(f"{n_labels} labels need at least as many leaves; the tree has {n}")
    rates, lines = [], ["param base = 1e-3"]
    for j, path in enumerate(paths):
        band = j * n_labels // n
        rates.append(1e-3 * 0.97**band)
        lines.append(f"{path} -> adamw(base * 0.97 ** {band}, weight_decay=0.05)")
    return "\n".join(lines) + "\n", rates


def baseline(tree: Any, rates: list[float]) -> optax.GradientTransformation:
    """One AdamW with a per-leaf learning-rate tree (big_vision's and timm's way)."""
    lr_tree = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), rates)

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return jax.tree.map(lambda g, lr: -lr * g, updates, lr_tree), state

    per_leaf_lr = optax.GradientTransformation(lambda p: optax.EmptyState(), update)
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(0.05), per_leaf_lr)


# ------------------------------------------------------------------ measuring


class Row(NamedTuple):
    step_ms: float
    host_ms: float
    compile_s: float
    state_bytes: int
    nodes: int


def _nodes(tree: Any) -> int:
    return int(jax.tree_util.tree_structure(tree).num_nodes)


def _bytes(tree: Any) -> int:
    return sum(int(np.asarray(x).nbytes) for x in jax.tree_util.tree_leaves(tree))


def measure(
    txs: Sequence[optax.GradientTransformation], params: Any, repeat: int, compiles: int
) -> list[Row]:
    """One :class:`Row` per optimizer. Compiles alternate between them (best of
    ``compiles`` each), and so do the timed calls, so that the machine's drift over the
    run (another process, frequency scaling) falls on both sides alike."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    def make_step(tx: optax.GradientTransformation) -> Callable[[Any, Any], tuple[Any, Any]]:
        # A new function each time, so that no trace of an earlier one is reused.
        def step(params: Any, state: Any) -> tuple[Any, Any]:
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return step

    states = [tx.init(params) for tx in txs]
    compile_s = [float("inf")] * len(txs)
    for _ in range(compiles):
        for i, (tx, state) in enumerate(zip(txs, states)):
            t0 = time.perf_counter()
            compiled = jax.jit(make_step(tx)).lower(params, state).compile()
            compile_s[i] = min(compile_s[i], time.perf_counter() - t0)
            del compiled
    fns = [jax.jit(make_step(tx)) for tx in txs]
    # Warm-up (and each one's compile).
    carry = [jax.block_until_ready(fn(params, state)) for fn, state in zip(fns, states)]
    steps: list[list[float]] = [[] for _ in txs]
    hosts: list[list[float]] = [[] for _ in txs]
    gc.disable()
    try:
        for _ in range(repeat):
            for i, fn in enumerate(fns):
                p, s = carry[i]
                t0 = time.perf_counter()
                out = fn(p, s)
                t1 = time.perf_counter()
                carry[i] = jax.block_until_ready(out)
                t2 = time.perf_counter()
                hosts[i].append(t1 - t0)
                steps[i].append(t2 - t0)
    finally:
        gc.enable()
    return [
        Row(
            statistics.median(steps[i]) * 1e3,
            statistics.median(hosts[i]) * 1e3,
            compile_s[i],
            _bytes(states[i]),
            _nodes(states[i]),
        )
        for i in range(len(txs))
    ]


def same_updates(
    a: optax.GradientTransformation, b: optax.GradientTransformation, params: Any
) -> float:
    """Largest difference between the two optimizers' updates over three steps."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    sa, sb, worst = a.init(params), b.init(params), 0.0
    for _ in range(3):
        ua, sa = a.update(grads, sa, params)
        ub, sb = b.update(grads, sb, params)
        diffs = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), ua, ub)
        worst = max([worst, *jax.tree_util.tree_leaves(diffs)])
    return worst


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", nargs="+", default=list(TREES), choices=list(TREES))
    ap.add_argument("--labels", nargs="+", type=int, default=[10, 100, 1000])
    ap.add_argument("-n", "--repeat", type=int, default=20)
    ap.add_argument("--compiles", type=int, default=2, help="compile time: best of N (default 2)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args(argv)

    missed: list[str] = []
    header = (
        f"{'tree':7} {'labels':>6} {'leaves':>6}  {'step ms':>15}  {'host ms':>15}  "
        f"{'compile s':>15}  {'state nodes':>17}  {'bytes':>5}  max |diff|"
    )
    print(header)
    for name in args.trees:
        params = TREES[name]()
        n_leaves = len(jax.tree_util.tree_leaves(params))
        for n_labels in args.labels:
            if n_labels > n_leaves:
                print(f"{name:7} {n_labels:>6} {n_leaves:>6}  (skipped: more labels than leaves)")
                continue
            text, rates = spec_and_rates(params, n_labels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                plan = partspec.compile(text, params)
            ours_tx, base_tx = plan.tx, baseline(params, rates)
            diff = same_updates(ours_tx, base_tx, params)
            ours, base = measure([ours_tx, base_tx], params, args.repeat, args.compiles)
            r_step = ours.step_ms / base.step_ms
            r_host = ours.host_ms / base.host_ms
            r_comp = ours.compile_s / base.compile_s
            r_nodes = ours.nodes / base.nodes
            print(
                f"{name:7} {n_labels:>6} {n_leaves:>6}  "
                f"{ours.step_ms:6.2f}/{base.step_ms:5.2f} {r_step:4.2f}x  "
                f"{ours.host_ms:6.2f}/{base.host_ms:5.2f} {r_host:4.2f}x  "
                f"{ours.compile_s:5.2f}/{base.compile_s:5.2f} {r_comp:4.2f}x  "
                f"{ours.nodes:7}/{base.nodes:5} {r_nodes:4.1f}x  "
                f"{'same' if ours.state_bytes == base.state_bytes else 'DIFF':>5}  {diff:.1e}"
            )
            where = f"{name} at {n_labels} labels"
            if r_step > TARGET_STEP:
                missed.append(f"{where}: step {r_step:.2f}x > {TARGET_STEP}x")
            if r_comp > TARGET_COMPILE:
                missed.append(f"{where}: compile {r_comp:.2f}x > {TARGET_COMPILE}x")
            if r_nodes > TARGET_NODES:
                missed.append(f"{where}: state nodes {r_nodes:.1f}x > {TARGET_NODES}x")
            if ours.state_bytes != base.state_bytes:
                missed.append(f"{where}: state bytes {ours.state_bytes} != {base.state_bytes}")
    print()
    print("targets: step and compile <= 1.05x, state bytes equal, state nodes <= 2x")
    for m in missed:
        print("  missed:", m)
    if not missed:
        print("  all met")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
