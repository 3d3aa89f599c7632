"""Leaf predicates: ``patterns where CONDITION -> action``.

A rule owns a leaf when a pattern matches its path *and* the condition holds on its
shape and dtype (``ndim``, ``shape``, ``size``, ``dtype``); otherwise later rules are
tried. These tests hold the feature to what a user relies on: the "no weight decay on
biases and norm scales" recipe against hand-written optax, every property and operator,
every kind of leaf (arrays, NumPy, ``ShapeDtypeStruct``, Python numbers, manifests and
``pspec check --tree``), precedence and coverage diagnostics, errors with positions,
a naive reference under Hypothesis, and formatting.
"""

from __future__ import annotations

import functools
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.jax.tree import leaf_info, leaf_segments
from partspec.language.parser import parse_syntax
from partspec.language.values import LeafInfo
from partspec.tools.cli import main
from partspec.tools.manifest import Leaf, dump_manifest, load_leaves
from tests.assertions import assert_bitwise_equal, label_paths

BF16 = jnp.bfloat16

ADAM = "adam(0.001)"
ADAMW = "adamw(0.001, weight_decay=0.1)"
NO_DECAY_ON_VECTORS = "** where ndim <= 1 -> adam(1e-3)\n** -> adamw(1e-3, weight_decay=0.1)\n"


def compile_quietly(text: str, params: Any, **values: Any) -> partspec.Plan:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        return partspec.compile(text, params, **values)


def flat_labels(labels: Any) -> dict[str, Any]:
    """``{"a/b": label}`` for a label tree (labels are strings: leaves for JAX)."""
    return {"/".join(segs): lab for segs, lab in leaf_segments(labels)}


def manifest_leaves(tree: Any) -> list[Leaf]:
    return [Leaf(segs, *_info(x)) for segs, x in leaf_segments(tree)]


def _info(x: Any) -> tuple[tuple[int, ...], str]:
    info = leaf_info(x)
    return info.shape, info.dtype


# ---------------------------------------------------------------- 1. weight decay recipe


class MLP(nn.Module):
    """Dense -> LayerNorm -> Dense: kernels are 2-D, biases and the norm's scale 1-D."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.LayerNorm()(nn.Dense(8)(x))
        return nn.Dense(3)(nn.relu(x))


def _init_mlp() -> Any:
    return MLP().init(jax.random.key(0), jnp.ones((1, 4)))["params"]


@functools.cache
def mlp_params() -> Any:
    return _init_mlp()


def random_grads(params: Any, seed: int) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def run_steps(tx: optax.GradientTransformation, params: Any, grads: list[Any]) -> list[Any]:
    """Apply ``tx`` under ``jax.jit`` once per gradient; the parameters after each step."""

    @jax.jit
    def step(p: Any, state: Any, g: Any) -> tuple[Any, Any]:
        updates, state = tx.update(g, state, p)
        return optax.apply_updates(p, updates), state

    state = tx.init(params)
    out = []
    for g in grads:
        params, state = step(params, state, g)
        out.append(params)
    return out


def by_ndim(params: Any) -> Any:
    return jax.tree.map(lambda x: "no_decay" if x.ndim <= 1 else "decay", params)


def test_biases_and_norm_scales_get_no_weight_decay_labels() -> None:
    plan = partspec.compile(NO_DECAY_ON_VECTORS, mlp_params())
    assert plan.labels == {
        "Dense_0": {"bias": ADAM, "kernel": ADAMW},
        "LayerNorm_0": {"bias": ADAM, "scale": ADAM},
        "Dense_1": {"bias": ADAM, "kernel": ADAMW},
    }
    assert set(plan.transforms) == {ADAM, ADAMW}
    assert plan.diagnostics == ()


def test_weight_decay_recipe_matches_optax_multi_transform_bit_for_bit() -> None:
    params = mlp_params()
    grads = [random_grads(params, seed) for seed in range(4)]
    plan = partspec.compile(NO_DECAY_ON_VECTORS, params)
    reference = optax.multi_transform(
        {"no_decay": optax.adam(1e-3), "decay": optax.adamw(1e-3, weight_decay=0.1)}, by_ndim
    )
    ours, theirs = run_steps(plan.tx, params, grads), run_steps(reference, params, grads)
    for a, b in zip(ours, theirs):  # after one update, and after each of several
        assert_bitwise_equal(a, b)


def test_weight_decay_recipe_matches_adamw_with_a_mask() -> None:
    params = mlp_params()
    grads = [random_grads(params, seed) for seed in range(10, 13)]
    plan = partspec.compile(NO_DECAY_ON_VECTORS, params)
    masked = optax.adamw(
        1e-3, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    )
    for a, b in zip(run_steps(plan.tx, params, grads), run_steps(masked, params, grads)):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
    # ... and differs from decaying everything, so the comparison can tell.
    unmasked = run_steps(optax.adamw(1e-3, weight_decay=0.1), params, grads)[-1]
    assert not np.array_equal(
        unmasked["LayerNorm_0"]["scale"],
        run_steps(plan.tx, params, grads)[-1]["LayerNorm_0"]["scale"],
    )


def test_zero_gradients_decay_kernels_only() -> None:
    params = mlp_params()
    plan = partspec.compile(NO_DECAY_ON_VECTORS, params)
    (after,) = run_steps(plan.tx, params, [jax.tree.map(jnp.zeros_like, params)])
    for name in ("Dense_0", "Dense_1"):
        np.testing.assert_array_equal(after[name]["bias"], params[name]["bias"])
        np.testing.assert_allclose(
            after[name]["kernel"], params[name]["kernel"] * (1 - 1e-3 * 0.1), rtol=1e-6
        )
    np.testing.assert_array_equal(after["LayerNorm_0"]["scale"], params["LayerNorm_0"]["scale"])


def test_gradients_of_another_dtype_keep_the_parameters_labels() -> None:
    """Mixed precision: bfloat16 kernels, float32 gradients; the state still lines up."""
    params = {"w": jnp.ones((2, 2), BF16), "b": jnp.ones(2, jnp.float32)}
    plan = partspec.compile(
        '** where dtype == "bfloat16" -> sgd(0.5) as low\n** -> adam(1e-3) as high', params
    )
    assert plan.labels == {"w": "low", "b": "high"}
    grads = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.ones(2, jnp.float32)}
    assert plan.labels_for(grads) == plan.labels
    updates, _ = jax.jit(plan.tx.update)(grads, plan.tx.init(params), params)
    np.testing.assert_array_equal(updates["w"], np.full((2, 2), -0.5, np.float32))


# ---------------------------------------------------------------- 2. properties and operators

f32, i32 = np.float32, np.int32
TREE = {
    "emb": {"table": np.zeros((10, 4), f32)},  # size 40
    "enc": {
        "kernel": np.zeros((4, 4, 3), f32),  # size 48
        "bias": np.zeros(3, f32),
        "scale": np.zeros(3, BF16),
    },
    "head": {
        "kernel": np.zeros((4, 2), BF16),  # size 8
        "bias": np.zeros(2, f32),
        "step": np.zeros((), i32),
    },
}
ALL = frozenset(flat_labels(TREE))


def selected(condition: str, prelude: str = "", tree: Any = TREE, **values: Any) -> set[str]:
    """The paths that ``** where condition`` takes (the rest fall through to a catch-all)."""
    text = f"{prelude}** where {condition} -> sgd(0.1) as yes\n** -> frozen as no\n"
    try:
        labels = flat_labels(compile_quietly(text, tree, **values).labels)
    except partspec.SpecError as err:
        # Nothing selected: every leaf frozen though rule 1 gives an optimizer (E502).
        assert [d.code for d in err.diagnostics] == ["E502"], err
        return set()
    return {p for p, lab in labels.items() if lab == "yes"}


@pytest.mark.parametrize(
    ("condition", "want"),
    [
        # ndim
        ("ndim == 0", {"head/step"}),
        ("ndim == 1", {"enc/bias", "enc/scale", "head/bias"}),
        ("ndim >= 2", {"emb/table", "enc/kernel", "head/kernel"}),
        ("ndim > 2", {"enc/kernel"}),
        ("ndim != 2", {"enc/kernel", "enc/bias", "enc/scale", "head/bias", "head/step"}),
        ("ndim < 1", {"head/step"}),
        ("ndim + 1 == 2", {"enc/bias", "enc/scale", "head/bias"}),
        # shape: equality, indexing (negative too), membership
        ("shape == [3]", {"enc/bias", "enc/scale"}),
        ("shape == []", {"head/step"}),
        ("shape != [10, 4]", ALL - {"emb/table"}),
        ("shape in [[2], [4, 2]]", {"head/bias", "head/kernel"}),
        ("4 in shape", {"emb/table", "enc/kernel", "head/kernel"}),
        ("ndim >= 1 and shape[0] == 4", {"enc/kernel", "head/kernel"}),
        ("ndim >= 1 and shape[-1] == 3", {"enc/kernel", "enc/bias", "enc/scale"}),
        ("ndim >= 2 and shape[-2] == 4", {"enc/kernel", "head/kernel"}),
        ("ndim == 3 and shape[1] == shape[-2]", {"enc/kernel"}),
        ("ndim >= 2 and shape[0] * shape[1] > 20", {"emb/table"}),
        # size
        ("size > 10", {"emb/table", "enc/kernel"}),
        ("size <= 2", {"head/bias", "head/step"}),
        ("size == 1", {"head/step"}),
        ("size < 8 * 6", ALL - {"enc/kernel"}),
        ("size >= 3 and size < 10", {"enc/bias", "enc/scale", "head/kernel"}),
        # dtype
        ('dtype == "bfloat16"', {"enc/scale", "head/kernel"}),
        ('dtype == "int32"', {"head/step"}),
        ('dtype != "float32"', {"enc/scale", "head/kernel", "head/step"}),
        ('dtype in ["int32", "bfloat16"]', {"enc/scale", "head/kernel", "head/step"}),
        ('dtype in ["float16"]', set()),
        ('dtype == "float32" and ndim == 1', {"enc/bias", "head/bias"}),
        # and / or / not / parentheses (and binds tighter than or; not looser than ==)
        ('not dtype == "float32"', {"enc/scale", "head/kernel", "head/step"}),
        ('ndim == 0 or dtype == "bfloat16"', {"head/step", "enc/scale", "head/kernel"}),
        ("not (ndim == 1 or size > 10)", {"head/kernel", "head/step"}),
        ("not ndim == 1 or size > 10", ALL - {"enc/bias", "enc/scale", "head/bias"}),
        ('(ndim == 1 or ndim == 0) and dtype == "float32"', {"enc/bias", "head/bias"}),
        ('ndim == 1 or ndim == 0 and dtype == "float32"', {"enc/bias", "enc/scale", "head/bias"}),
        ("not not ndim == 0", {"head/step"}),
        ("true", set(ALL)),
        ("false", set()),
        ("(1 < 2) == (ndim == 0)", {"head/step"}),
    ],
)
def test_each_property_and_operator(condition: str, want: set[str]) -> None:
    assert selected(condition) == want


def test_let_and_param_values_inside_conditions() -> None:
    prelude = 'param big = 40\nlet dims = [0, 1]\nlet low = "bfloat16"\n'
    assert selected("size >= big", prelude) == {"emb/table", "enc/kernel"}
    assert selected("size >= big", prelude, big=45) == {"enc/kernel"}
    assert selected("ndim in dims and dtype != low", prelude) == {
        "enc/bias",
        "head/bias",
        "head/step",
    }
    assert selected("ndim >= 1 and shape[-1] == big / 10", prelude) == {"emb/table"}
    # the documented example
    assert selected("size >= big", "param big = 1000\n") == set()
    assert selected("size >= big", "param big = 1000\n", big=48) == {"enc/kernel"}


def test_conditions_with_captures() -> None:
    tree = {"layer": [{"w": np.zeros((2, 2), f32), "b": np.zeros(2, f32)} for _ in range(4)]}
    plan = partspec.compile("layer/<i>/** where i < 2 -> frozen\n** -> sgd(0.1)", tree)
    assert flat_labels(plan.labels) == {
        f"layer/{i}/{k}": "frozen" if i < 2 else "sgd(0.1)" for i in range(4) for k in "wb"
    }
    # a capture and a leaf property together; the action uses the capture too
    plan = partspec.compile(
        "layer/<i>/* where i >= 1 and ndim == 2 -> sgd(0.1 * i)\n** -> frozen", tree
    )
    assert flat_labels(plan.labels) == {
        **{f"layer/{i}/b": "frozen" for i in range(4)},
        "layer/0/w": "frozen",
        **{f"layer/{i}/w": f"sgd(0.1 * i)[i={i}]" for i in range(1, 4)},
    }


def test_a_text_capture_compared_with_a_number_names_the_leaf() -> None:
    tree = {"layer": {"0": {"w": np.zeros(2, f32)}, "foo": {"w": np.zeros(2, f32)}}}
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("layer/<i>/** where i < 2 -> frozen\n** -> sgd(0.1)", tree)
    (d,) = info.value.diagnostics
    assert d.code == "E418"
    assert d.message.startswith('for `layer/foo/w` (i = "foo"; shape [2], dtype float32): ')
    assert "cannot compare a string with an integer" in d.message
    assert d.hint is not None and "except" in d.hint


def test_except_and_several_patterns_with_a_condition() -> None:
    text = (
        "enc/** except enc/bias where ndim == 1 -> adam(1e-3) as vec\n"
        'emb/**, head/** where dtype == "bfloat16" -> sgd(0.1) as low\n'
        "** -> frozen\n"
    )
    assert flat_labels(partspec.compile(text, TREE).labels) == {
        "emb/table": "frozen",
        "enc/kernel": "frozen",
        "enc/bias": "frozen",
        "enc/scale": "vec",
        "head/kernel": "low",
        "head/bias": "frozen",
        "head/step": "frozen",
    }


# ---------------------------------------------------------------- 3. every kind of leaf

KINDS_SPEC = (
    '** where dtype == "int32" -> frozen as ints\n'
    "** where ndim <= 1 -> adam(1e-3) as vec\n"
    '** where dtype == "bfloat16" -> sgd(0.1) as low\n'
    "** where size >= 45 -> adamw(1e-3, weight_decay=0.1) as big\n"
    "** -> sgd(1.0) as rest\n"
)
KINDS_WANT = {
    "emb/table": "rest",
    "enc/kernel": "big",
    "enc/bias": "vec",
    "enc/scale": "vec",
    "head/kernel": "low",
    "head/bias": "vec",
    "head/step": "ints",
}


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda x: x, id="numpy"),
        pytest.param(jnp.asarray, id="jax"),
        pytest.param(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), id="ShapeDtypeStruct"),
    ],
)
def test_arrays_numpy_and_shape_dtype_structs_get_the_same_labels(convert: Any) -> None:
    tree = jax.tree.map(convert, TREE)
    assert flat_labels(partspec.compile(KINDS_SPEC, tree).labels) == KINDS_WANT


def test_manifest_leaves_get_the_same_labels(tmp_path: Path) -> None:
    # through the manifest text, as `pspec tree` writes it
    (tmp_path / "m.json").write_text(dump_manifest(manifest_leaves(TREE)), encoding="utf-8")
    leaves = load_leaves(str(tmp_path / "m.json"))
    assert leaves == manifest_leaves(TREE)
    checked = partspec.check(KINDS_SPEC)
    labels, errors, warns = label_paths(
        checked,
        [leaf.path for leaf in leaves],
        [LeafInfo(leaf.shape, leaf.dtype) for leaf in leaves],
    )
    assert dict(zip(["/".join(leaf.path) for leaf in leaves], labels)) == KINDS_WANT
    assert (errors, warns) == ([], [])


def test_eval_shape_of_a_flax_init_labels_like_the_real_parameters() -> None:
    shapes = jax.eval_shape(_init_mlp)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(shapes))
    plan = partspec.compile(NO_DECAY_ON_VECTORS, shapes)
    assert plan.labels == partspec.compile(NO_DECAY_ON_VECTORS, mlp_params()).labels
    leaves = manifest_leaves(shapes)
    labels, _, _ = label_paths(
        partspec.check(NO_DECAY_ON_VECTORS),
        [leaf.path for leaf in leaves],
        [LeafInfo(leaf.shape, leaf.dtype) for leaf in leaves],
    )
    assert labels == [flat_labels(plan.labels)["/".join(leaf.path)] for leaf in leaves]


def test_python_numbers_have_jax_default_dtypes() -> None:
    tree = {"f": 1.0, "i": 2, "b": True, "a": np.zeros(3, f32)}
    for x in tree.values():
        assert leaf_info(x) == leaf_info(jnp.asarray(x))
    assert leaf_info(1.0) == LeafInfo((), "float32")
    text = (
        '** where dtype == "float32" and ndim == 0 -> sgd(0.1) as scalar\n'
        '** where dtype == "int32" -> frozen as int\n'
        '** where dtype == "bool" -> frozen as flag\n'
        "** -> adam(1e-3) as vec\n"
    )
    want = {"f": "scalar", "i": "int", "b": "flag", "a": "vec"}
    assert partspec.compile(text, tree).labels == want
    assert partspec.compile(text, jax.tree.map(jnp.asarray, tree)).labels == want


def test_nnx_state_gets_labels_and_trains_under_nnx_optimizer() -> None:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.linear = nnx.Linear(4, 8, rngs=rngs)
            self.norm = nnx.LayerNorm(8, rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.norm(self.linear(x))

    model = Block(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    plan = partspec.compile(NO_DECAY_ON_VECTORS, state)
    assert flat_labels(plan.labels) == {
        "linear/bias": ADAM,
        "linear/kernel": ADAMW,
        "norm/bias": ADAM,
        "norm/scale": ADAM,
    }
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
    opt = nnx.Optimizer(model, plan.tx, wrt=nnx.Param)
    opt.update(model, jax.tree.map(jnp.zeros_like, state))
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    np.testing.assert_array_equal(after["linear"]["bias"], before["linear"]["bias"])
    np.testing.assert_array_equal(after["norm"]["scale"], before["norm"]["scale"])
    np.testing.assert_allclose(
        after["linear"]["kernel"], before["linear"]["kernel"] * (1 - 1e-4), rtol=1e-6
    )


# ---------------------------------------------------------------- 3b. pspec check --tree


def pspec(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    path.write_text(dump_manifest(manifest_leaves(TREE)), encoding="utf-8")
    return path


def write_spec(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.pspec"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_cli_strict_check_of_a_covering_spec_exits_zero(tmp_path: Path, manifest: Path) -> None:
    spec = write_spec(tmp_path, KINDS_SPEC)
    assert pspec("check", "--strict", spec, "--tree", str(manifest)) == (
        0,
        "All checks passed (1 spec).\n",
    )


def test_cli_lists_leaves_a_condition_leaves_uncovered(tmp_path: Path, manifest: Path) -> None:
    spec = write_spec(
        tmp_path, 'enc/** where ndim >= 2 -> sgd(0.1)\n** where dtype == "bfloat16" -> frozen\n'
    )
    code, out = pspec("check", "--strict", spec, "--tree", str(manifest), "--format", "json")
    assert code == 1
    (d,) = json.loads(out)["diagnostics"]
    assert d["code"] == "E501" and d["message"].startswith("4 parameter leaves are not covered")
    assert d["notes"] == [
        "not covered: emb/table",
        "not covered: enc/bias",
        "not covered: head/bias",
        "not covered: head/step",
    ]
    code, out = pspec("check", spec, "--tree", str(manifest))
    assert code == 1 and "E501" in out and "not covered: enc/bias" in out


def test_cli_strict_turns_a_condition_that_never_holds_into_an_error(
    tmp_path: Path, manifest: Path
) -> None:
    spec = write_spec(tmp_path, "** where ndim == 4 -> frozen\n**/step -> frozen\n** -> sgd(0.1)\n")
    code, out = pspec("check", spec, "--tree", str(manifest), "--format", "concise")
    assert (code, out.splitlines()[0]) == (0, f"{spec}:1:1: W601 rule matches no parameter")
    code, out = pspec("check", "--strict", spec, "--tree", str(manifest), "--format", "json")
    assert code == 1
    assert [(d["code"], d["severity"], d["line"]) for d in json.loads(out)["diagnostics"]] == [
        ("W601", "error", 1)
    ]


def test_cli_index_error_names_the_leaf(tmp_path: Path, manifest: Path) -> None:
    spec = write_spec(tmp_path, "** where shape[1] == 4 -> frozen\n** -> sgd(0.1)\n")
    assert pspec("check", spec)[0] == 0  # no tree: nothing to index yet
    code, out = pspec("check", spec, "--tree", str(manifest), "--format", "json")
    assert code == 1
    (d,) = json.loads(out)["diagnostics"]
    assert (d["code"], d["line"], d["column"]) == ("E406", 1, 10)
    assert d["message"].startswith("for `enc/bias` (shape [3], dtype float32): index 1")


def test_cli_list_manifest_without_dtypes_defaults_to_float32(tmp_path: Path) -> None:
    tree = tmp_path / "t.json"
    tree.write_text(json.dumps([{"path": "a/w", "shape": [2, 2]}, {"path": "a/b", "shape": [2]}]))
    spec = write_spec(
        tmp_path,
        '** where dtype == "float32" and ndim == 2 -> sgd(0.1)\n** where ndim == 1 -> frozen\n',
    )
    assert pspec("check", "--strict", spec, "--tree", str(tree))[0] == 0


def test_manifest_leaves_always_have_shapes_so_e409_needs_a_shapeless_tree(
    tmp_path: Path,
) -> None:
    # A manifest entry without a shape is a usage error (exit 2): it never reaches E409.
    tree = tmp_path / "t.json"
    tree.write_text(json.dumps([{"path": "a/w"}]))
    spec = write_spec(tmp_path, "** where ndim == 2 -> sgd(0.1)\n** -> frozen\n")
    code, out = pspec("check", spec, "--tree", str(tree))
    assert code == 2 and "E409" not in out
    # Paths alone (no LeafInfo) cannot decide a condition: E409 at the condition.
    checked = partspec.check("let lr = 0.1\n** where ndim == 2 -> sgd(lr)\n** -> frozen")
    with pytest.raises(partspec.SpecError) as info:
        label_paths(checked, [("a", "w")])
    (d,) = info.value.diagnostics
    assert (d.code, d.line, d.column) == ("E409", 2, 10)
    assert "`a/w`" in d.message
    # ... while a spec without conditions needs only paths.
    labels, _, _ = label_paths(partspec.check("a/** -> frozen"), [("a", "w")])
    assert labels == ["frozen"]


# ---------------------------------------------------------------- 4. precedence and diagnostics

SMALL = {"w": np.zeros((2, 3), f32), "b": np.zeros(3, f32), "s": np.zeros((), f32)}


def compile_and_warn(text: str, tree: Any = SMALL) -> tuple[partspec.Plan, list[str]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        plan = partspec.compile(text, tree)
    return plan, [str(w.message) for w in record if issubclass(w.category, partspec.SpecWarning)]


def test_first_match_still_wins_and_failed_conditions_fall_through() -> None:
    plan, warns = compile_and_warn(
        "** where ndim == 1 -> adam(1e-3)\n"
        '** where dtype == "float32" and ndim >= 1 -> sgd(0.1)\n'
        "** -> frozen\n"
    )
    assert plan.labels == {"w": "sgd(0.1)", "b": ADAM, "s": "frozen"}
    assert warns == [] and plan.diagnostics == ()


def test_condition_that_never_holds_warns_w601() -> None:
    plan, warns = compile_and_warn("** where ndim == 5 -> sgd(0.1)\n** -> adam(1e-3)")
    assert [d.code for d in plan.diagnostics] == ["W601"]
    assert (plan.diagnostics[0].line, plan.diagnostics[0].column) == (1, 1)
    assert len(warns) == 1 and "W601" in warns[0] and "** where ndim == 5" in warns[0]
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("** where ndim == 5 -> sgd(0.1)\n** -> adam(1e-3)", SMALL, strict=True)
    assert [(d.code, d.severity) for d in info.value.diagnostics] == [("W601", "error")]


def test_unconditional_rule_before_a_conditional_one_shadows_it() -> None:
    plan, warns = compile_and_warn("** -> sgd(0.1)\n** where ndim == 1 -> adam(1e-3)")
    assert [d.code for d in plan.diagnostics] == ["W602"] and len(warns) == 1
    assert "line 1" in plan.diagnostics[0].message and plan.diagnostics[0].line == 2
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("** -> sgd(0.1)\n** where ndim == 1 -> adam(1e-3)", SMALL, strict=True)
    assert [(d.code, d.severity) for d in info.value.diagnostics] == [("W602", "error")]


def test_conditions_are_accounted_for_in_shadowing() -> None:
    # A condition that holds on some leaves only does not shadow what follows ...
    assert compile_and_warn("** where ndim == 1 -> adam(1e-3)\n** -> sgd(0.1)")[1] == []
    # ... one that holds on every leaf it matches does.
    plan, _ = compile_and_warn("** where ndim >= 0 -> adam(1e-3)\n** -> sgd(0.1)")
    assert [(d.code, d.line) for d in plan.diagnostics] == [("W602", 2)]
    # Two conditions that together take every leaf shadow a later catch-all.
    plan, _ = compile_and_warn(
        "** where ndim <= 1 -> adam(1e-3)\n** where ndim >= 2 -> sgd(0.1)\n** -> frozen"
    )
    assert [(d.code, d.line) for d in plan.diagnostics] == [("W602", 3)]
    assert "lines 1, 2" in plan.diagnostics[0].message


def test_uncovered_leaves_are_listed_by_e501() -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("** where ndim >= 1 -> sgd(0.1)\nw where ndim == 0 -> frozen", SMALL)
    (d,) = info.value.diagnostics
    assert d.code == "E501" and d.message == "1 parameter leaf is not covered by any rule"
    assert d.notes == ("not covered: s",)
    # the same through label_paths
    leaves = manifest_leaves(SMALL)
    labels, errors, warns = label_paths(
        partspec.check("** where ndim >= 1 -> sgd(0.1)\nw where ndim == 0 -> frozen"),
        [leaf.path for leaf in leaves],
        [LeafInfo(leaf.shape, leaf.dtype) for leaf in leaves],
    )
    assert dict(zip(["/".join(leaf.path) for leaf in leaves], labels)) == {
        "w": "sgd(0.1)",
        "b": "sgd(0.1)",
        "s": None,
    }
    assert [e.notes for e in errors] == [("not covered: s",)]
    assert [w.code for w in warns] == ["W601"]


# ---------------------------------------------------------------- 5. errors with positions


def caret_line(column: int, width: int) -> str:
    return "| " + " " * (column - 1) + "^" * width


@pytest.mark.parametrize(
    ("body", "code", "marked", "message"),
    [
        ("** where ndim -> frozen", "E417", "ndim", "a `where` condition must be true or false"),
        ("** where dtype -> frozen", "E417", "dtype", "must be true or false, got a string"),
        ("** where shape == 3 -> frozen", "E418", "shape == 3", "cannot compare a list with"),
        ("** where dtype == 1 -> frozen", "E418", "dtype == 1", "cannot compare a string with"),
        ('** where dtype == "bf16" -> frozen', "E419", '"bf16"', 'unknown dtype "bf16"'),
        ('** where dtype in ["bf16"] -> frozen', "E419", '"bf16"', 'unknown dtype "bf16"'),
        ('** where "a" < 1 -> frozen', "E418", '"a" < 1', "cannot compare a string with"),
        ('** where "a" < "b" -> frozen', "E418", '"a" < "b"', "`<` compares numbers"),
        ("** where shape < [3] -> frozen", "E418", "shape < [3]", "`<` compares numbers"),
        ("** where ndim in 1 -> frozen", "E420", "1", "the right side of `in` must be a list"),
        ('** where dtype in "float32" -> frozen', "E420", '"float32"', "must be a list"),
        ("** where shape in [3] -> frozen", "E418", "shape in [3", "cannot compare a list"),
        ("** where ndim[0] == 1 -> frozen", "E421", "ndim", "cannot index an integer"),
        ("** where shape[0.5] == 1 -> frozen", "E421", "0.5", "a list index must be an integer"),
        ("** where ndim > 1 and 3 -> frozen", "E417", "3", "the right side of `and`"),
        ("** where size or ndim > 1 -> frozen", "E417", "size", "the left side of `or`"),
        ("** where not ndim -> frozen", "E417", "ndim", "the operand of `not`"),
        # type errors are found in both branches, even where `or` would short-circuit
        ("** where ndim == 1 or dtype == 1 -> frozen", "E418", "dtype == 1", "cannot compare"),
        ("let x = ndim", "E301", "ndim", "`ndim` is a property of a leaf"),
        ("** -> sgd(size)", "E301", "size", "`size` is a property of a leaf"),
        ("** where shape[0] -> frozen", "E417", "shape[0]", "true or false, got an integer"),
        ("let size = 1", "E302", "size", "`size` names a property of a leaf"),
        ("param dtype = 1", "E302", "dtype", "`dtype` names a property of a leaf"),
        ("layer/<ndim>/** -> frozen", "E302", "layer/<ndim>/**", "capture `<ndim>` hides"),
    ],
)
def test_errors_have_code_line_column_and_carets(
    body: str, code: str, marked: str, message: str
) -> None:
    text = "# leaf predicates\nlet lr = 1e-3\n" + body + "\n** -> sgd(lr)\n"
    line, column = 3, body.index(marked) + 1
    with pytest.raises(partspec.SpecError) as info:
        partspec.check(text)  # found without a tree and without JAX
    (d,) = info.value.diagnostics
    assert (d.code, d.line, d.column) == (code, line, column), d.render()
    assert message in d.message
    rendered = d.render().splitlines()
    assert f"{line} | {body}" in rendered
    assert caret_line(column, len(marked)) in [r.lstrip() for r in rendered]
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(text, SMALL)
    assert [(e.code, e.line, e.column) for e in info.value.diagnostics] == [(code, line, column)]


def test_unknown_dtype_suggests_the_right_name() -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.check('** where dtype == "bf16" -> frozen')
    assert "bfloat16" in (info.value.diagnostics[0].hint or "")


def test_index_out_of_range_is_found_at_compile_with_the_leafs_shape() -> None:
    text = "** where shape[5] == 1 -> frozen\n** -> sgd(0.1)\n"
    partspec.check(text)  # nothing to index without a tree
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(text, SMALL)
    (d,) = info.value.diagnostics
    assert (d.code, d.line, d.column) == ("E406", 1, 10)
    # The first failing leaf in tree order (JAX sorts dict keys: b, s, w).
    assert d.message.startswith(
        "for `b` (shape [3], dtype float32): index 5 is out of range for a list of 1 item"
    )
    assert caret_line(10, len("shape[5]")) in [r.lstrip() for r in d.render().splitlines()]
    assert "ndim >=" in (d.hint or "")
    # label_paths names the leaf's path
    with pytest.raises(partspec.SpecError) as info:
        label_paths(partspec.check(text), [("enc", "b")], [LeafInfo((3,), "float32")])
    assert info.value.diagnostics[0].message == (
        "for `enc/b` (shape [3], dtype float32): index 5 is out of range for a list of 1 item"
    )


def test_index_out_of_range_at_compile_names_the_leaf_path() -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(
            "** where shape[5] == 1 -> frozen\n** -> sgd(0.1)\n", {"a": {"b": SMALL["b"]}}
        )
    assert info.value.diagnostics[0].message.startswith("for `a/b` (shape [3], dtype float32)")


@pytest.mark.parametrize(
    "condition",
    [
        "ndim >= 2 and shape[1] == 3",
        "ndim < 2 or shape[1] == 3",
        "not (ndim >= 2 and shape[1] == 3)",
        "ndim >= 1 and shape[-1] == 3",
        "ndim == 0 or (ndim >= 2 and shape[-2] == 2) or shape[0] == 3",
    ],
)
def test_guarded_indexing_short_circuits(condition: str) -> None:
    compile_quietly(f"** where {condition} -> sgd(0.1)\n** -> frozen", SMALL)


def test_later_conditions_are_not_evaluated_on_leaves_taken_earlier() -> None:
    plan = compile_quietly(
        "** where ndim < 2 -> adam(1e-3)\n** where shape[1] == 3 -> sgd(0.1)\n** -> frozen",
        SMALL,
    )
    assert plan.labels == {"w": "sgd(0.1)", "b": ADAM, "s": ADAM}


@pytest.mark.parametrize(
    "text",
    [
        "layer/<i>/** where ndim == 2 -> sgd(0.1)\n** -> frozen",
        "let n = count(i)\nlayer/<i>/** where ndim == 2 -> sgd(0.1 * n)\n** -> frozen",
    ],
)
def test_unused_capture_with_a_condition_compiles(text: str) -> None:
    tree = {"layer": [{"w": np.zeros((2, 2), f32), "b": np.zeros(2, f32)} for _ in range(3)]}
    leaves = manifest_leaves(tree)
    want, _, _ = label_paths(
        partspec.check(text),
        [leaf.path for leaf in leaves],
        [LeafInfo(leaf.shape, leaf.dtype) for leaf in leaves],
    )
    plan = compile_quietly(text, tree)
    assert [flat_labels(plan.labels)["/".join(leaf.path)] for leaf in leaves] == want


def test_count_and_conditions_with_python_number_leaves() -> None:
    tree = {"layer": [{"w": np.zeros(2, f32), "s": 1.0} for _ in range(2)]}
    text = "let n = count(i)\nlayer/<i>/* where ndim == 1 -> sgd(0.1 * (n - i))\n** -> frozen"
    plan = partspec.compile(text, tree)
    assert flat_labels(plan.labels) == {
        "layer/0/w": "sgd(0.1 * (n - i))[i=0]",
        "layer/1/w": "sgd(0.1 * (n - i))[i=1]",
        "layer/0/s": "frozen",
        "layer/1/s": "frozen",
    }


def test_misspelt_property_suggests_the_property() -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.check("** where nidm == 1 -> frozen")
    assert "ndim" in (info.value.diagnostics[0].hint or "")


# ---------------------------------------------------------------- 6. Hypothesis vs a reference

DTYPES = {"float32": np.float32, "bfloat16": BF16, "int32": np.int32}
CMP = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

shapes = st.lists(st.integers(0, 3), max_size=3).map(tuple)
ops = st.sampled_from(sorted(CMP))
dtype_names = st.sampled_from(sorted(DTYPES))

# A condition is (text, predicate on (shape, dtype)); compound ones are fully parenthesised.
Cond = tuple[str, Any]


def _dim_atom(i: int, op: str, k: int) -> Cond:
    need = i + 1 if i >= 0 else -i
    return (
        f"ndim >= {need} and shape[{i}] {op} {k}",
        lambda s, d: len(s) >= need and CMP[op](s[i], k),
    )


def _shape_in(options: list[tuple[int, ...]]) -> Cond:
    text = "[" + ", ".join("[" + ", ".join(map(str, o)) + "]" for o in options) + "]"
    return f"shape in {text}", lambda s, d: s in options


atoms: st.SearchStrategy[Cond] = st.one_of(
    st.builds(
        lambda op, k: (f"ndim {op} {k}", lambda s, d: CMP[op](len(s), k)), ops, st.integers(0, 3)
    ),
    st.builds(
        lambda op, k: (f"size {op} {k}", lambda s, d: CMP[op](math.prod(s), k)),
        ops,
        st.integers(0, 12),
    ),
    st.builds(_dim_atom, st.sampled_from([0, 1, 2, -1, -2]), ops, st.integers(0, 3)),
    shapes.map(lambda sh: (f"shape == {list(sh)}", lambda s, d: s == sh)),
    st.lists(shapes, min_size=1, max_size=3).map(_shape_in),
    st.integers(0, 3).map(lambda k: (f"{k} in shape", lambda s, d: k in s)),
    st.builds(
        lambda op, n: (f'dtype {op} "{n}"', lambda s, d: (d == n) == (op == "==")),
        st.sampled_from(["==", "!="]),
        dtype_names,
    ),
    st.lists(dtype_names, min_size=1, max_size=2).map(
        lambda ns: ("dtype in [" + ", ".join(f'"{n}"' for n in ns) + "]", lambda s, d: d in ns)
    ),
    st.booleans().map(lambda b: ("true" if b else "false", lambda s, d: b)),
)


def _extend(inner: st.SearchStrategy[Cond]) -> st.SearchStrategy[Cond]:
    return st.one_of(
        inner.map(lambda c: (f"not ({c[0]})", lambda s, d: not c[1](s, d))),
        st.builds(
            lambda a, b: (f"({a[0]}) and ({b[0]})", lambda s, d: a[1](s, d) and b[1](s, d)),
            inner,
            inner,
        ),
        st.builds(
            lambda a, b: (f"({a[0]}) or ({b[0]})", lambda s, d: a[1](s, d) or b[1](s, d)),
            inner,
            inner,
        ),
    )


conditions: st.SearchStrategy[Cond] = st.recursive(atoms, _extend, max_leaves=4)

#: Patterns with a naive reference.
PATTERNS = {
    "**": lambda p: True,
    "enc/**": lambda p: p[0] == "enc",
    "*/b*": lambda p: len(p) == 2 and p[1].startswith("b"),
    "head/w": lambda p: p == ("head", "w"),
}


@st.composite
def trees(draw: st.DrawFn) -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    tops = draw(st.lists(st.sampled_from(["enc", "head"]), min_size=1, max_size=2, unique=True))
    return {
        top: draw(
            st.dictionaries(
                st.sampled_from(["w", "b", "bias", "scale"]),
                st.tuples(shapes, dtype_names),
                min_size=1,
                max_size=4,
            )
        )
        for top in tops
    }


def reference(
    rules: list[tuple[str, Cond]], leaves: dict[tuple[str, ...], tuple[tuple[int, ...], str]]
) -> tuple[dict[str, str | None], list[tuple[str, int]]]:
    """Labels by first match on pattern and condition; W601/W602 per rule."""
    labels: dict[str, str | None] = {}
    matched: set[int] = set()
    owned: set[int] = set()
    for path, (shape, dtype) in leaves.items():
        hits = [
            j
            for j, (pat, (_, pred)) in enumerate(rules)
            if PATTERNS[pat](path) and pred(shape, dtype)
        ]
        matched.update(hits)
        owned.update(hits[:1])
        labels["/".join(path)] = f"r{hits[0]}" if hits else None
    warns = [
        ("W601" if j not in matched else "W602", j + 1) for j in range(len(rules)) if j not in owned
    ]
    return labels, warns


@given(
    trees(),
    st.lists(st.tuples(st.sampled_from(sorted(PATTERNS)), conditions), min_size=1, max_size=3),
    st.booleans(),
    st.sampled_from(["numpy", "jax.ShapeDtypeStruct"]),
)
def test_labels_agree_with_a_naive_reference(
    spec_tree: dict[str, dict[str, tuple[tuple[int, ...], str]]],
    drawn: list[tuple[str, Cond]],
    catch_all: bool,
    kind: str,
) -> None:
    rules = list(drawn) + ([("**", ("true", lambda s, d: True))] if catch_all else [])
    text = "".join(
        f"{pat} where {cond} -> sgd(0.1) as r{j}\n" for j, (pat, (cond, _)) in enumerate(rules)
    )
    leaves = {(top, k): v for top, sub in spec_tree.items() for k, v in sub.items()}
    want, want_warns = reference(rules, leaves)

    make = (
        (lambda sh, dt: np.zeros(sh, DTYPES[dt]))
        if kind == "numpy"
        else (lambda sh, dt: jax.ShapeDtypeStruct(sh, DTYPES[dt]))
    )
    tree = {top: {k: make(*v) for k, v in sub.items()} for top, sub in spec_tree.items()}

    # manifest leaves, through label_paths (no JAX)
    paths = [segs for segs, _ in leaf_segments(tree)]
    labels, errors, warns = label_paths(
        partspec.check(text), paths, [LeafInfo(*leaves[p]) for p in paths]
    )
    assert dict(zip(["/".join(p) for p in paths], labels)) == want
    assert [(w.code, w.line) for w in warns] == want_warns
    uncovered = [f"not covered: {p}" for p, lab in want.items() if lab is None]
    assert sorted(n for e in errors for n in e.notes) == sorted(uncovered)

    # the compiled plan
    if uncovered:
        with pytest.raises(partspec.SpecError) as info:
            compile_quietly(text, tree)
        assert [d.code for d in info.value.diagnostics] == ["E501"]
        assert sorted(info.value.diagnostics[0].notes) == sorted(uncovered)
    else:
        plan = compile_quietly(text, tree)
        assert flat_labels(plan.labels) == want
        assert [(w.code, w.line) for w in plan.diagnostics] == want_warns


# ---------------------------------------------------------------- 7. formatting


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a/** where not (ndim == 1 or size > 3) -> frozen", None),
        ("a/** where (ndim == 1 or ndim == 2) and size > 1 -> frozen", None),
        (
            "a/** where ndim == 1 or (ndim == 2 and size > 1) -> frozen",
            "a/** where ndim == 1 or ndim == 2 and size > 1 -> frozen",
        ),
        (
            'a/** where (not ndim == 1) and dtype in ["float32", "bfloat16"] -> frozen',
            'a/** where not ndim == 1 and dtype in ["float32", "bfloat16"] -> frozen',
        ),
        ("a/** where not (not ndim == 1) -> frozen", "a/** where not not ndim == 1 -> frozen"),
        (
            "a/** where ndim==2 and(shape[-1]>=768)->adamw(1e-3,weight_decay=0.1)",
            "a/** where ndim == 2 and shape[-1] >= 768 -> adamw(1e-3, weight_decay=0.1)",
        ),
        ("x where (1 < 2) == true -> frozen", None),
        ("x where shape[0 - 1] == 2 * (ndim + 1) -> frozen", None),
        ("x where shape == [1, 2] or shape in [[3], []] -> frozen", None),
        ("layer/<i>/** except layer/0/** where i < 2 and ndim >= 1 -> frozen as f", None),
        ("param big = 1000\n** where size >= big -> sgd(0.1)", None),
    ],
)
def test_format_keeps_conditions_and_needed_parentheses(text: str, canonical: str | None) -> None:
    spec = partspec.parse(text)
    out = partspec.format(spec)
    assert out == (canonical or text) + "\n"
    assert partspec.parse(out) == spec
    assert partspec.format(partspec.parse(out)) == out


@given(conditions, conditions, st.sampled_from(["", " except **/b"]), st.booleans())
def test_conditions_round_trip_through_format(c1: Cond, c2: Cond, exc: str, label: bool) -> None:
    text = f"enc/**{exc} where {c1[0]} -> sgd(0.1){' as lab' if label else ''}\n"
    text += f"** where not ({c2[0]}) -> frozen\n"
    spec = partspec.parse(text)
    out = partspec.format(spec)
    assert partspec.parse(out) == spec
    assert partspec.format(partspec.parse(out)) == out
    assert all(r.where is not None for r in spec.rules)


def test_where_is_kept_on_the_ast() -> None:
    rule = parse_syntax("a/** where ndim >= 2 and shape[-1] == 3 -> frozen").rules[0]
    assert rule.where is not None
    assert partspec.format_expr(rule.where) == "ndim >= 2 and shape[-1] == 3"


# ---------------------------------------------------------------- guards skip what they guard

_GUARDED = [
    "size != {k} and 1 / (size - {k}) < 0.5",
    "size == {k} or {n} / (size - {k}) > 1",
    "ndim > {k} and shape[{k}] == {n}",
    "not (ndim <= {k}) and shape[-{k} - 1] >= {n}",
    "ndim >= {k} + 1 and 10 ** shape[{k}] > {n} and size / shape[{k}] >= 1",
]


@given(
    template=st.sampled_from(_GUARDED),
    k=st.integers(0, 3),
    n=st.integers(0, 4),
    shapes=st.lists(st.lists(st.integers(1, 3), max_size=4).map(tuple), min_size=1, max_size=4),
)
def test_checking_never_evaluates_what_a_guard_skips(
    template: str, k: int, n: int, shapes: list[tuple[int, ...]]
) -> None:
    """`size > 1 and 1 / (size - 1) < 0.5` was E406 "division by zero" at check time:
    checking evaluated both sides on a sample leaf. Now it checks types only, and the
    guard protects every real leaf, as Python's `and`/`or` would."""
    cond = template.format(k=k, n=n)
    text = f"** where {cond} -> sgd(0.2) as picked\n** -> sgd(0.1)"
    partspec.check(text)
    params = {f"p{i}": jax.ShapeDtypeStruct(shape, jnp.float32) for i, shape in enumerate(shapes)}
    plan = partspec.compile(text, params)

    def python(shape: tuple[int, ...]) -> bool:
        env = {"size": math.prod(shape), "ndim": len(shape), "shape": list(shape)}
        return bool(eval(cond, {}, env))  # the same text, as Python

    for key, shape in zip(params, shapes):
        assert (plan.labels[key] == "picked") == python(shape), (cond, shape)


@pytest.mark.parametrize(
    ("cond", "code"),
    [
        ('size > 1 or size + "a" > 1', "E415"),  # a type error behind a guard is still one
        ("ndim > 1 and shape[1.5] == 2", "E421"),
        ('size > 1 and dtype == "float33"', "E419"),
        ("size > 1 and shape == 3", "E418"),
        ("ndim > 0 and 1 / 0 > 1", "E406"),  # constants have values when checking
        ("size > 1 and (size - 1)", "E417"),  # not a boolean
    ],
)
def test_guarded_parts_are_still_type_checked(cond: str, code: str) -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.check(f"** where {cond} -> frozen")
    assert [d.code for d in info.value.diagnostics] == [code]
