"""partspec under JAX SPMD: labels and optimizer state for parameters sharded over a mesh.

JAX fixes its device count when it initialises, so the sharded checks run in one
subprocess with 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
that reports what it saw as JSON; the tests below assert on that report. The worker
records facts rather than asserting them, so one broken behaviour fails one test.

The model: a frozen two-layer backbone and a trained adapter and head, with kernels
sharded over ``model`` or ``("data", "model")`` of a ``(4, 2)`` mesh and biases and norms
replicated; the spec gives the kernels ``adamw`` and the rest ``adam``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import partspec

ROOT = Path(__file__).resolve().parent.parent
FLAGS = "--xla_force_host_platform_device_count=8"

WORKER = r'''
import json, sys, traceback, warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import partspec
from partspec.language._optax_table import TABLE

warnings.simplefilter("ignore")  # optax's own deprecation warnings (noisy_sgd's key)
report = {"devices": jax.device_count(), "jax": jax.__version__, "optax": optax.__version__}


def section(fn):
    try:
        report[fn.__name__] = fn()
    except Exception:
        report[fn.__name__] = {"error": traceback.format_exc()}
    return fn


def keystr(path):
    return jax.tree_util.keystr(path)


mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
REPL = NamedSharding(mesh, P())


def init_fn(key):
    keys = iter(jax.random.split(key, 8))

    def dense(i, o):
        return {"kernel": jax.random.normal(next(keys), (i, o)) / np.sqrt(i), "bias": jnp.zeros(o)}

    return {
        "backbone": {
            "layers_0": dense(16, 32),
            "layers_1": dense(32, 32),
            "norm": {"scale": jnp.ones(32)},
        },
        "adapter": dense(32, 32),
        "head": dense(32, 8),
    }


SPECS = {
    "backbone": {
        "layers_0": {"kernel": P("data", "model"), "bias": P()},
        "layers_1": {"kernel": P(None, "model"), "bias": P()},
        "norm": {"scale": P()},
    },
    "adapter": {"kernel": P("data", "model"), "bias": P()},
    "head": {"kernel": P("model", None), "bias": P()},
}
SPEC = """
backbone/** -> frozen
**/kernel   -> adamw(1e-2, weight_decay=1e-4) as decay
**          -> adam(1e-2) as no_decay
"""
SHARDINGS = jax.tree.map(lambda s: NamedSharding(mesh, s), SPECS)
abstract = jax.eval_shape(init_fn, jax.random.key(0))
plan = partspec.compile(SPEC, abstract)
make_params = jax.jit(init_fn, out_shardings=SHARDINGS)


def expected_shardings(state, param_shardings, replicated):
    """Each state leaf's sharding, read off its path, independently of partspec: the leaf at
    `...mu['head']['kernel']` has head/kernel's sharding; the others (counts) are replicated."""

    def expect(path, leaf):
        names = [getattr(k, "name", None) for k in path]
        for i, name in enumerate(names):
            if name in ("mu", "nu"):
                node = param_shardings
                for k in path[i + 1 :]:
                    node = node[k.key]
                return node
        return replicated

    return jax.tree_util.tree_map_with_path(expect, state)


def mismatches(tree, expected, equivalent=False):
    """Leaves whose sharding is not the expected one (with `equivalent`, not even in another
    spelling: P(None) for P())."""
    bad = []
    pairs = zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(expected), strict=True)
    for (path, leaf), want in pairs:
        if equivalent:
            same = leaf.sharding.is_equivalent_to(want, leaf.ndim)
        else:
            same = leaf.sharding == want
        if not same:
            bad.append(f"{keystr(path)}: {leaf.sharding} != {want}")
    return bad


def describe(tree):
    def one(s):
        # The spec as a tuple: its repr differs between JAX releases (P(...) or
        # PartitionSpec(...)), and the minimum-versions CI run uses an older one.
        spec = getattr(s, "spec", None)
        return f"{type(s).__name__} {len(s.device_set)} {'' if spec is None else tuple(spec)}"

    return {keystr(p): one(x.sharding) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@section
def abstract_labels():
    return {"leaf_types": sorted({type(x).__name__ for x in jax.tree.leaves(abstract)}),
            "labels": plan.labels}


@section
def baseline():
    params = make_params(jax.random.key(0))
    return describe(jax.jit(plan.tx.init)(params))


@section
def plan_init():
    params = make_params(jax.random.key(0))
    state = plan.init(params)
    plain = plan.tx.init(params)
    return {
        "mismatches": mismatches(state, expected_shardings(state, SHARDINGS, REPL)),
        "shardings": describe(state),
        "same_structure_as_tx_init": jax.tree.structure(state) == jax.tree.structure(plain),
        "same_values_as_tx_init": all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(plain), strict=True)
        ),
    }


def loss_fn(p, x, y):
    h = x
    for name in ("layers_0", "layers_1"):
        h = jnp.tanh(h @ p["backbone"][name]["kernel"] + p["backbone"][name]["bias"])
    h = h * p["backbone"]["norm"]["scale"]
    h = h + jnp.tanh(h @ p["adapter"]["kernel"] + p["adapter"]["bias"])
    return jnp.mean((h @ p["head"]["kernel"] + p["head"]["bias"] - y) ** 2)


def step(p, s, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
    updates, s = plan.tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss


def train(with_out_shardings):
    batch = NamedSharding(mesh, P("data", None))
    x = jax.device_put(jax.random.normal(jax.random.key(1), (64, 16)), batch)
    y = jax.device_put(jax.random.normal(jax.random.key(2), (64, 8)), batch)
    params = make_params(jax.random.key(0))
    state = plan.init(params)
    state_shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
    expected = expected_shardings(state, SHARDINGS, REPL)
    if with_out_shardings:
        out_shardings = (SHARDINGS, state_shardings, REPL)
        jitted = jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)
    else:
        jitted = jax.jit(step, donate_argnums=(0, 1))

    def host_bytes(tree):
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return {keystr(k): np.asarray(v).tobytes() for k, v in leaves}

    before = host_bytes(params)
    losses = []
    for _ in range(3):
        params, state, loss = jitted(params, state, x, y)
        losses.append(float(loss))
    after = host_bytes(params)
    return {
        "losses": losses,
        "state_mismatches": mismatches(state, expected),
        "state_not_equivalent": mismatches(state, expected, equivalent=True),
        "param_mismatches": mismatches(params, SHARDINGS),
        "changed": sorted(k for k in before if before[k] != after[k]),
        "counts": [
            int(v) for p, v in jax.tree_util.tree_leaves_with_path(state) if "count" in keystr(p)
        ],
    }


@section
def train_with_out_shardings():
    return train(True)


@section
def train_without_out_shardings():
    return train(False)


@section
def mixed():
    # One leaf per kind: a (4, 2)-mesh shard, a shard over a second (8,) mesh of the same
    # devices, a plain uncommitted array, a NumPy array and a Python float.
    fsdp = Mesh(np.array(jax.devices()), ("fsdp",))
    params = {
        "a": jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("data", "model"))),
        "b": jnp.ones((8, 4)),
        "c": np.ones((8, 4), np.float32),
        "d": jax.device_put(jnp.ones((16, 2)), NamedSharding(fsdp, P("fsdp"))),
        "e": 1.0,
    }
    mplan = partspec.compile("** -> adam(1e-2)", params)
    state = mplan.init(params)
    want = {"a": params["a"].sharding, "b": REPL, "c": REPL, "d": params["d"].sharding, "e": REPL}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, new_state = jax.jit(mplan.tx.update)(grads, state, params)
    return {"mismatches": mismatches(state, expected_shardings(state, want, REPL)),
            "update_ok": bool(jnp.all(jnp.isfinite(updates["a"])))}


@section
def shape_dtype_structs():
    # Sharded abstract params: the state is made from the shapes, never the values.
    sds = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, SHARDINGS
    )
    state = plan.init(sds)
    # And a mix: an abstract (frozen) backbone and concrete trained leaves.
    params = make_params(jax.random.key(0))
    half = dict(params, backbone=sds["backbone"])
    state_half = plan.init(half)
    return {
        "leaf_types": sorted({type(x).__name__ for x in jax.tree.leaves(state)}),
        "mismatches": mismatches(state, expected_shardings(state, SHARDINGS, REPL)),
        "mixed_mismatches": mismatches(state_half, expected_shardings(state_half, SHARDINGS, REPL)),
    }


@section
def traced():
    # Inside eval_shape or jit the leaves are tracers and plan.init is tx.init.
    params = make_params(jax.random.key(0))
    shapes = jax.eval_shape(plan.init, params)
    ref = jax.eval_shape(plan.tx.init, params)
    return {"eval_shape_equal": jax.tree.map(lambda a: (a.shape, a.dtype), shapes)
            == jax.tree.map(lambda a: (a.shape, a.dtype), ref),
            "jit_ok": len(jax.tree.leaves(jax.jit(plan.init)(params))) == len(jax.tree.leaves(ref))}


@section
def explicit_mesh():
    # jax.make_mesh's default axis types are Explicit here; jit(tx.init) then raises.
    explicit = (jax.sharding.AxisType.Explicit,) * 2
    emesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=explicit)
    shardings = jax.tree.map(lambda s: NamedSharding(emesh, s), SPECS)
    params = jax.device_put(jax.tree.map(np.asarray, make_params(jax.random.key(0))), shardings)
    try:
        jax.jit(plan.tx.init)(params)
        baseline = "ok"
    except Exception as exc:
        baseline = type(exc).__name__
    state = plan.init(params)
    with jax.sharding.set_mesh(emesh):
        grads = jax.tree.map(jnp.ones_like, params)
        _, new_state = jax.jit(plan.tx.update)(grads, state, params)
    repl = NamedSharding(emesh, P())
    return {"baseline": baseline,
            "mismatches": mismatches(state, expected_shardings(state, shardings, repl)),
            # Without out_shardings, jit may respell P() as P(None): equivalent.
            "after_update": mismatches(new_state, expected_shardings(state, shardings, repl), True)}


@section
def every_optimizer():
    # Every allow-listed optimizer, and transforms with unusual state: no state leaf is
    # left off the mesh. Adafactor also takes one jitted update that keeps the shardings.
    params = make_params(jax.random.key(0))
    # (Those the installed optax has: an older one compiles the others to E410.)
    calls = [f"{n}(1e-2)" for n, e in sorted(TABLE.items())
             if e["kind"] == "optimizer" and hasattr(optax, n)]
    calls += ["chain(clip_by_global_norm(1.0), adam(1e-2))", "apply_every(2)", "ema(0.9)",
              "add_noise(0.01, 0.55, 0)", "apply_if_finite(adam(1e-2), 3)", "scale_by_sm3()"]
    updated = {"adafactor(1e-2)"}  # replicated factored moments beside sharded mirrors
    grads = jax.tree.map(jnp.ones_like, params)
    result = {}
    for call in calls:
        try:
            p = partspec.compile(f"backbone/** -> frozen\n** -> {call}", params)
            state = p.init(params)
            bad = [keystr(k) for k, leaf in jax.tree_util.tree_leaves_with_path(state)
                   if not isinstance(leaf.sharding, NamedSharding) or leaf.sharding.mesh != mesh]
            specs = sorted({str(tuple(leaf.sharding.spec)) for leaf in jax.tree.leaves(state)})
            result[call] = {"not_on_mesh": bad, "specs": specs, "after_update": []}
            if call in updated:
                shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
                update = jax.jit(p.tx.update, out_shardings=(SHARDINGS, shardings))
                _, new_state = update(grads, state, params)
                result[call]["after_update"] = mismatches(new_state, shardings)
        except Exception:
            result[call] = {"error": traceback.format_exc()}
    return result


print(json.dumps(report))
'''


def run_with_8_devices(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), FLAGS]))
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    proc = run_with_8_devices(WORKER)
    assert proc.returncode == 0, f"worker exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section(report: dict[str, Any], name: str) -> Any:
    value = report[name]
    if isinstance(value, dict) and "error" in value:
        pytest.fail(f"{name} raised in the worker:\n{value['error']}")
    return value


def test_the_worker_has_8_devices(report):
    assert report["devices"] == 8


def test_labels_come_from_eval_shape_without_materialising(report):
    got = section(report, "abstract_labels")
    assert got["leaf_types"] == ["ShapeDtypeStruct"]
    frozen = {"kernel": "frozen", "bias": "frozen"}
    assert got["labels"] == {
        "backbone": {"layers_0": frozen, "layers_1": frozen, "norm": {"scale": "frozen"}},
        "adapter": {"kernel": "decay", "bias": "no_decay"},
        "head": {"kernel": "decay", "bias": "no_decay"},
    }


def test_baseline_jit_tx_init_puts_the_state_on_one_device(report):
    # Why Plan.init exists: with optax 0.2.8 and JAX 0.10.2, `jax.jit(tx.init)` of sharded
    # params returns every state leaf (Adam's moments included) on a single device. If this
    # starts failing, JAX or optax now place them themselves: the baseline no longer holds.
    baseline = section(report, "baseline")
    assert baseline, "no state leaves"
    assert set(baseline.values()) == {"SingleDeviceSharding 1 "}, baseline


def test_plan_init_shards_state_like_params_and_replicates_counts(report):
    got = section(report, "plan_init")
    assert got["mismatches"] == []
    shardings = got["shardings"]
    base = ".groups['{}'].inner[0]."
    decay, no_decay = base.format("decay"), base.format("no_decay")
    assert shardings[decay + "mu['adapter']['kernel']"] == "NamedSharding 8 ('data', 'model')"
    assert shardings[decay + "nu['head']['kernel']"] == "NamedSharding 8 ('model', None)"
    assert shardings[no_decay + "mu['head']['bias']"] == "NamedSharding 8 ()"
    assert shardings[decay + "count"] == shardings[no_decay + "count"] == "NamedSharding 8 ()"
    # The same state as tx.init, only placed differently.
    assert got["same_structure_as_tx_init"] and got["same_values_as_tx_init"]


def test_frozen_leaves_own_no_state(report):
    shardings = section(report, "plan_init")["shardings"]
    assert len(shardings) == 10  # 2 counts + mu and nu of 4 trained leaves
    assert not any("backbone" in path for path in shardings)


def test_jitted_steps_keep_shardings_and_frozen_bits(report):
    got = section(report, "train_with_out_shardings")
    assert got["state_mismatches"] == []
    assert got["param_mismatches"] == []
    # Frozen shards are bit-identical after 3 steps; every trained leaf moved.
    assert got["changed"] == [
        "['adapter']['bias']",
        "['adapter']['kernel']",
        "['head']['bias']",
        "['head']['kernel']",
    ]
    assert got["counts"] == [3, 3]
    assert got["losses"][-1] < got["losses"][0]


def test_steps_without_out_shardings_train_the_same(report):
    # Without out_shardings, XLA's sharding propagation picks the outputs' shardings: it
    # may respell or change them (it sharded a replicated bias over `model` with JAX
    # 0.10.2), which the recipe's out_shardings rule out. Frozen bits hold either way.
    got = section(report, "train_without_out_shardings")
    ref = section(report, "train_with_out_shardings")
    assert got["changed"] == ref["changed"]
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5)


def test_mixed_shardings(report):
    got = section(report, "mixed")
    assert got["mismatches"] == []
    assert got["update_ok"]


def test_shape_dtype_structs_with_shardings(report):
    got = section(report, "shape_dtype_structs")
    assert got["leaf_types"] == ["ArrayImpl"]
    assert got["mismatches"] == []
    assert got["mixed_mismatches"] == []


def test_plan_init_under_eval_shape_and_jit(report):
    got = section(report, "traced")
    assert got["eval_shape_equal"]
    assert got["jit_ok"]


def test_explicit_mesh(report):
    got = section(report, "explicit_mesh")
    assert got["baseline"] == "ValueError"  # jit(tx.init) cannot place the state at all
    assert got["mismatches"] == []
    assert got["after_update"] == []


def test_every_optimizer_gets_sharded_state(report):
    got = section(report, "every_optimizer")
    errors = {call: r["error"] for call, r in got.items() if "error" in r}
    assert not errors, errors
    for call, r in got.items():
        assert r["not_on_mesh"] == [], call
        assert r["after_update"] == [], call
    # Mirrors take their parameter's spec; shape-changing state (Adafactor's factored
    # moments, SM3's accumulators) and counts are replicated.
    assert got["adam(1e-2)"]["specs"] == ["('data', 'model')", "('model', None)", "()"]
    assert "()" in got["adafactor(1e-2)"]["specs"]
    assert got["sgd(1e-2)"]["specs"] == []  # plain SGD has no state


def test_unsharded_params_take_the_plain_tx_init_path(monkeypatch):
    # Single-device arrays: no jit, no eval_shape, exactly tx.init's result.
    params = {"backbone": {"w": jnp.ones((2, 2))}, "head": {"w": jnp.ones(2), "b": np.zeros(2)}}
    plan = partspec.compile("backbone/** -> frozen\nhead/** -> adam(1e-2)", params)
    expected = plan.tx.init(params)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("plan.init should not trace unsharded params")

    monkeypatch.setattr(jax, "jit", boom)
    monkeypatch.setattr(jax, "eval_shape", boom)
    state = plan.init(params)
    monkeypatch.undo()
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        assert a.sharding == b.sharding
        np.testing.assert_array_equal(a, b)
    updates, _ = plan.tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert float(optax.apply_updates(params, updates)["backbone"]["w"][0, 0]) == 1.0


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def test_docs_sharding_recipe_runs():
    text = (ROOT / "docs" / "sharding.md").read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert blocks, "docs/sharding.md has no python blocks"
    # The page's blocks are one session, run top to bottom with 8 devices.
    proc = run_with_8_devices("\n".join(blocks))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
