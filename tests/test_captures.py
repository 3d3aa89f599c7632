"""Named captures ``<name>``: extraction, per-binding labels, ``count``, errors, training."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.core import FrozenDict
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.jax.tree import leaf_paths
from partspec.language import ast
from partspec.language.formatter import format_expr
from partspec.language.values import Unset
from partspec.matching.captures import extract_captures
from partspec.matching.globs import compile_patterns
from tests import strategies as S


def _pattern(text: str) -> ast.Pattern:
    return partspec.parse_syntax(f"{text} -> frozen").rules[0].patterns[0]


def labels_by_path(plan: partspec.Plan) -> dict[str, str]:
    return dict(leaf_paths(plan.labels))


def by_path(tree: object) -> dict[str, np.ndarray]:
    return {p: np.asarray(x) for p, x in leaf_paths(tree)}


def _error(text: str) -> partspec.Diagnostic:
    with pytest.raises(partspec.SpecError) as info:
        partspec.parse(text)
    return info.value.diagnostics[0]


# ---------------------------------------------------------------- 1. extraction


def _check_extraction(pattern: ast.Pattern, path: tuple[str, ...]) -> None:
    want = S.naive_captures(pattern, path)
    got = extract_captures(pattern, path)
    shown = (partspec.format_pattern(pattern), path)
    # The reference and the DFA matcher (which coverage uses) agree on matching.
    assert (want is not None) == S.naive_match(pattern, path), shown
    assert (want is not None) == bool(compile_patterns([pattern]).match(path)), shown
    assert got == want, shown
    if want is not None:
        assert set(got) == {n.name for n in pattern.nodes if isinstance(n, ast.Capture)}
        assert all(v and "/" not in v for v in got.values())


@given(st.data())
def test_extraction_agrees_with_naive_backtracking_reference(data: st.DataObject) -> None:
    pattern = data.draw(S.capture_patterns())
    _check_extraction(pattern, data.draw(S.paths_for(pattern)))


_TREES = S.param_trees(leaves=st.just(0.0), max_leaves=6)


@given(st.data())
def test_extraction_on_real_tree_paths_agrees_with_reference(data: st.DataObject) -> None:
    tree = data.draw(_TREES)
    segs = [s for s, _ in partspec.jax.tree.leaf_segments(tree)]
    names = tuple(data.draw(st.lists(st.sampled_from(S.CAPTURE_NAMES), max_size=3, unique=True)))
    pattern = data.draw(st.sampled_from(segs).flatmap(lambda p: S.capture_patterns_for(p, names)))
    for path in segs:
        _check_extraction(pattern, path)


@pytest.mark.parametrize(
    ("pattern", "path"),
    [("a/**/b", "a/bb"), ("l/<i>/**/w", "l/x1/b"), ("0/**/0", "0/00")],
)
def test_extraction_of_a_path_that_does_not_match_is_none(pattern: str, path: str) -> None:
    p = _pattern(pattern)
    assert not compile_patterns([p]).match(path.split("/"))
    assert extract_captures(p, path.split("/")) is None


def test_captures_come_from_the_pattern_that_matches() -> None:
    params = {"l": {"x1": {"b": jnp.zeros(2)}, "2": {"w": jnp.zeros(2)}}}
    plan = partspec.compile("l/<i>/**/w, l/x<i>/** -> sgd(0.1 * (i + 1)) as s", params)
    assert labels_by_path(plan) == {"l/x1/b": "s[i=1]", "l/2/w": "s[i=2]"}


@pytest.mark.parametrize(
    ("pattern", "path", "want"),
    [
        # Every wildcard takes as little as it can, left to right.
        ("<a>_<b>", "x_y_z", {"a": "x", "b": "y_z"}),
        ("<a>_*_<b>", "x_y_z_w", {"a": "x", "b": "z_w"}),
        ("*_<b>", "x_y_z", {"b": "y_z"}),
        ("*<i>", "abc", {"i": "abc"}),
        ("<i>*", "abc", {"i": "a"}),
        ("**/layer_<i>/**", "enc/layer_3/layer_4/w", {"i": "3"}),
        ("**/<name>", "a/b/c", {"name": "c"}),
        ("<top>/**", "a/b/c", {"top": "a"}),
        ("**/<x>/**", "a/b/c", {"x": "a"}),
        ("h_{1..12}<i>", "h_123", {"i": "23"}),
        ("{a,ab}<i>", "abc", {"i": "bc"}),
        (
            "encoder/layer/<i>/<kind>/kernel",
            "encoder/layer/11/attention/kernel",
            {"i": "11", "kind": "attention"},
        ),
        # A key with a `/` in it (Haiku's `mlp/~/linear_1`) separates segments too.
        ("mlp/~/linear_<i>/<p>", "mlp/~/linear_1/w", {"i": "1", "p": "w"}),
        # Non-empty, and never across a `/`.
        ("layer_<i>", "layer_", None),
        ("a/<i>", "a/b/c", None),
        ("<i>", "", None),
    ],
)
def test_extraction_examples(pattern: str, path: str, want: dict[str, str] | None) -> None:
    p = _pattern(pattern)
    assert extract_captures(p, path.split("/")) == want
    assert bool(compile_patterns([p]).match(path.split("/"))) == (want is not None)


def test_keys_with_slashes_are_matched_as_segments() -> None:
    p = _pattern("mlp/~/linear_<i>/<p>")
    assert extract_captures(p, ["mlp/~/linear_0", "b"]) == {"i": "0", "p": "b"}


# ---------------------------------------------------------------- 2. labels and learning rates

N_LAYERS = 12
DECAY = "encoder/layer/<i>/** -> adamw(1e-3 * 0.75 ** (11 - i))"
DECAY_BASE = "adamw(0.001 * 0.75 ** (11 - i))"


def _bert(n: int = N_LAYERS) -> dict:
    """A BERT-shaped tree (Flax BERT keys its layers "0", "1", ...), all zeros."""
    layer = {
        "attention": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)},
        "output": {"kernel": jnp.zeros((2, 2))},
    }
    return {
        "embeddings": {"word": jnp.zeros((4, 2))},
        "encoder": {"layer": {str(i): jax.tree.map(jnp.copy, layer) for i in range(n)}},
        "pooler": {"kernel": jnp.zeros((2, 2))},
    }


def _one_update(plan: partspec.Plan, params: object, grads: object | None = None) -> dict:
    grads = jax.tree.map(jnp.ones_like, params) if grads is None else grads
    state = plan.tx.init(params)
    updates, _ = jax.jit(plan.tx.update)(grads, state, params)
    return by_path(updates)


def _layer_of(path: str) -> int | None:
    parts = path.split("/")
    return int(parts[2]) if parts[:2] == ["encoder", "layer"] else None


def test_layerwise_decay_gives_one_label_per_layer_with_its_learning_rate() -> None:
    params = _bert()
    plan = partspec.compile(f"embeddings/** -> frozen\n{DECAY}\n** -> adamw(1e-3)", params)
    labels = labels_by_path(plan)
    for path, label in labels.items():
        i = _layer_of(path)
        if i is not None:
            assert label == f"{DECAY_BASE}[i={i}]", path
    layer_labels = {lab for p, lab in labels.items() if _layer_of(p) is not None}
    assert len(layer_labels) == N_LAYERS
    assert set(plan.transforms) == layer_labels | {"frozen", "adamw(0.001)"}
    assert plan.frozen_labels == {"frozen"}

    # Adam's first step with zero params (so weight decay adds nothing) is -lr per element.
    updates = _one_update(plan, params)
    for path, u in updates.items():
        i = _layer_of(path)
        if i is not None:
            np.testing.assert_allclose(u, -1e-3 * 0.75 ** (11 - i), rtol=1e-5, err_msg=path)
    np.testing.assert_allclose(updates["pooler/kernel"], -1e-3, rtol=1e-5)
    assert np.all(updates["embeddings/word"] == 0)


def test_as_name_labels_each_binding() -> None:
    plan = partspec.compile(f"{DECAY} as ld\n** -> frozen", _bert())
    labels = labels_by_path(plan)
    assert labels["encoder/layer/3/attention/kernel"] == "ld[i=3]"
    assert labels["encoder/layer/11/output/kernel"] == "ld[i=11]"
    assert set(plan.transforms) == {f"ld[i={i}]" for i in range(N_LAYERS)} | {"frozen"}


COUNTED = """\
let depth = count(i)
embeddings/** -> frozen
encoder/layer/<i>/** -> adamw(1e-3 * 0.75 ** (depth - 1 - i)) as ld
** -> adamw(1e-3)
"""


def test_count_equals_the_hand_typed_number_of_layers() -> None:
    params = _bert()
    counted = partspec.compile(COUNTED, params)
    typed = partspec.compile(COUNTED.replace("depth - 1 - i", "11 - i"), params)
    assert counted.labels == typed.labels
    assert labels_by_path(counted)["encoder/layer/7/output/kernel"] == "ld[i=7]"
    assert counted.checked.values["depth"] == N_LAYERS
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    a, b = _one_update(counted, params, grads), _one_update(typed, params, grads)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)


def test_count_follows_the_tree() -> None:
    params = _bert(6)
    plan = partspec.compile(COUNTED, params)
    assert plan.checked.values["depth"] == 6
    updates = _one_update(plan, params)
    np.testing.assert_allclose(updates["encoder/layer/5/output/kernel"], -1e-3, rtol=1e-5)
    np.testing.assert_allclose(updates["encoder/layer/0/output/kernel"], -1e-3 * 0.75**5, rtol=1e-5)


def test_count_is_unknown_when_checking_without_a_tree() -> None:
    checked = partspec.check(COUNTED)
    assert isinstance(checked.values["depth"], Unset)
    assert [r.label for r in checked.rules] == ["frozen", "ld", "adamw(0.001)"]


def test_count_counts_values_on_leaves_owned_by_rules_that_capture() -> None:
    params = {
        "encoder": {"layer": {str(i): {"w": jnp.zeros(2)} for i in range(N_LAYERS)}},
        "decoder": {"5": {"w": jnp.zeros(2)}, "20": {"w": jnp.zeros(2)}},
        "head": {"7": {"w": jnp.zeros(2)}},
    }
    spec = """\
let n = count(i)
encoder/layer/{0..3}/** -> frozen
encoder/layer/<i>/** -> sgd(0.1 * n)
decoder/<i>/** -> frozen
head/<k>/** -> frozen
"""
    # Layers 0-3 belong to a rule without captures; decoder/5 repeats layer 5; head/7
    # binds a different name: i takes the values 4..11 and 20.
    plan = partspec.compile(spec, params)
    assert plan.checked.values["n"] == 9
    updates = _one_update(plan, params)
    np.testing.assert_allclose(updates["encoder/layer/4/w"], -0.9, rtol=1e-6)


def test_count_skips_leaves_that_fail_the_where_condition() -> None:
    params = {"l": [jnp.zeros((2, 2)), jnp.zeros(2), jnp.zeros((2, 2))], "m": jnp.zeros(2)}
    spec = "let n = count(i)\nl/<i> where ndim == 2 -> sgd(0.1 * n * (i + 1))\n** -> frozen"
    plan = partspec.compile(spec, params)
    assert plan.checked.values["n"] == 2
    assert labels_by_path(plan) == {
        "l/0": "sgd(0.1 * n * (i + 1))[i=0]",
        "l/1": "frozen",
        "l/2": "sgd(0.1 * n * (i + 1))[i=2]",
        "m": "frozen",
    }


def test_count_is_zero_when_no_leaf_binds_the_capture() -> None:
    params = {"m": jnp.zeros(2)}
    with pytest.warns(partspec.SpecWarning, match="W601"):  # `l/<i>` matches nothing
        plan = partspec.compile(
            "let n = count(i)\nl/<i> -> sgd(0.1)\n** -> sgd(0.1 * (n + 1))", params
        )
    assert plan.checked.values["n"] == 0
    assert labels_by_path(plan) == {"m": "sgd(0.1 * (n + 1))"}


def test_count_with_where_on_python_number_leaves() -> None:
    params = {"l": [1.0, 2.0, jnp.zeros(2)]}
    spec = "let n = count(i)\nl/<i> where ndim == 0 -> sgd(0.1 * n)\n** -> frozen"
    plan = partspec.compile(spec, params)
    assert plan.checked.values["n"] == 2
    assert labels_by_path(plan) == {"l/0": "sgd(0.1 * n)", "l/1": "sgd(0.1 * n)", "l/2": "frozen"}


def test_where_rule_whose_action_ignores_its_capture() -> None:
    params = {"l": [jnp.zeros((2, 2)), jnp.zeros(2)]}
    plan = partspec.compile("l/<i> where ndim == 2 -> sgd(0.1)\n** -> frozen", params)
    assert labels_by_path(plan) == {"l/0": "sgd(0.1)", "l/1": "frozen"}


def test_count_of_a_name_no_pattern_captures_suggests_the_right_one() -> None:
    d = _error("let depth = count(j)\nencoder/layer/<i>/** -> adamw(1e-3 * depth)")
    assert (d.code, d.line, d.column) == ("E301", 1, 19)
    assert "`j`" in d.message
    assert d.hint is not None and "`i`" in d.hint


@pytest.mark.parametrize("call", ["count(i, i)", "count()", "count(2)", "count(i=1)"])
def test_count_takes_exactly_one_capture_name(call: str) -> None:
    d = _error(f"let depth = {call}\nlayer/<i>/** -> frozen")
    assert (d.code, d.line, d.column) == ("E404", 1, 13)


def test_a_capture_the_action_does_not_use_gives_one_shared_label() -> None:
    params = {"blocks": {"ln_1": {"w": jnp.zeros(2)}, "mlp": {"w": jnp.zeros(2)}}}
    plan = partspec.compile("blocks/<name>/** -> sgd(0.1)", params)
    assert set(labels_by_path(plan).values()) == {"sgd(0.1)"}
    assert list(plan.transforms) == ["sgd(0.1)"]
    named = partspec.compile("blocks/<name>/** -> sgd(0.1) as x", params)
    assert set(labels_by_path(named).values()) == {"x"}


def test_string_captures_give_json_quoted_labels() -> None:
    params = {"blocks": {"ln_1": {"w": jnp.zeros(2)}, "mlp": {"w": jnp.zeros(2)}, 'a"b': 0.0}}
    plan = partspec.compile('blocks/<name>/** -> sgd(0.1, nesterov=name == "ln_1") as x', params)
    assert labels_by_path(plan) == {
        "blocks/ln_1/w": 'x[name="ln_1"]',
        "blocks/mlp/w": 'x[name="mlp"]',
        'blocks/a"b': 'x[name="a\\"b"]',
    }
    # Without `as`, the base is the action's canonical text.
    plan = partspec.compile("blocks/<name>/** -> sgd(0.1, nesterov=name == none)", params)
    assert labels_by_path(plan)["blocks/mlp/w"] == 'sgd(0.1, nesterov=name == none)[name="mlp"]'


def test_digit_captures_are_integers_in_labels() -> None:
    params = {"blocks": {"3": 0.0, "x3": 0.0, "07": 0.0, "\u0663": 0.0}}
    plan = partspec.compile("blocks/<k> -> sgd(0.1, nesterov=k == none) as s", params)
    labels = labels_by_path(plan)
    assert labels["blocks/3"] == "s[k=3]"
    assert labels["blocks/x3"] == 's[k="x3"]'
    assert labels["blocks/07"] == "s[k=7]"  # all ASCII digits: the integer 7
    # A digit, but not an ASCII one: text, JSON-quoted.
    assert labels["blocks/\u0663"].startswith("s[k=") and labels["blocks/\u0663"].endswith("]")
    assert json.loads(labels["blocks/\u0663"][4:-1]) == "\u0663"


def test_non_numeric_capture_in_arithmetic_names_the_path_and_value() -> None:
    params = {"enc": {"layer": {"1": {"w": jnp.zeros(2)}, "foo": {"w": jnp.zeros(2)}}}}
    text = "enc/layer/<i>/** -> sgd(0.1 * i)"
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(text, params)
    (d,) = info.value.diagnostics
    assert d.code == "E415"
    assert d.message.startswith('for `enc/layer/foo/w` (i = "foo"): cannot apply')
    assert (d.line, d.column) == (1, text.index("0.1 * i") + 1)
    assert d.hint is not None and "a rule of their own above it" in d.hint
    # The fix the hint suggests: a rule for the other paths above this one.
    plan = partspec.compile("enc/layer/foo/** -> frozen\n" + text, params)
    assert labels_by_path(plan) == {
        "enc/layer/1/w": "sgd(0.1 * i)[i=1]",
        "enc/layer/foo/w": "frozen",
    }


def test_non_numeric_capture_compared_with_a_number_in_where_names_the_path() -> None:
    params = {"layer": {"2": {"w": jnp.zeros(2)}, "foo": {"w": jnp.zeros(2)}}}
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("layer/<i>/** where i < 6 -> frozen\n** -> sgd(0.1)", params)
    d = info.value.diagnostics[0]
    assert d.code == "E418"
    assert d.message.startswith('for `layer/foo/w` (i = "foo"')


def _sgd_lr_of(update: np.ndarray, grad: float) -> float:
    return float(-(update / grad).mean())


@pytest.mark.parametrize(
    "container",
    [list, tuple, lambda xs: FrozenDict({str(i): x for i, x in enumerate(xs)})],
    ids=["list", "tuple", "FrozenDict"],
)
def test_lists_tuples_and_frozendicts_bind_their_indices(container: Any) -> None:
    layers = container([{"w": jnp.zeros(2), "b": jnp.zeros(1)} for _ in range(3)])
    params = {"layers": layers, "head": {"w": jnp.zeros(2)}}
    plan = partspec.compile("layers/<i>/** -> sgd(0.1 * (i + 1))\n** -> frozen", params)
    assert jax.tree.structure(plan.labels) == jax.tree.structure(params)
    labels = labels_by_path(plan)
    for i in range(3):
        assert labels[f"layers/{i}/w"] == labels[f"layers/{i}/b"] == f"sgd(0.1 * (i + 1))[i={i}]"
    grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
    updates = _one_update(plan, params, grads)
    for i in range(3):
        assert _sgd_lr_of(updates[f"layers/{i}/w"], 2.0) == pytest.approx(0.1 * (i + 1))


class _Stack(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(2, 2, rngs=rngs) for _ in range(3)])
        self.head = nnx.Linear(2, 1, rngs=rngs)


def test_nnx_state_binds_layer_indices() -> None:
    model = _Stack(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    plan = partspec.compile("layers/<i>/** -> sgd(0.1 * (i + 1)) as s\n** -> frozen", params)
    assert jax.tree.structure(plan.labels) == jax.tree.structure(params)
    labels = labels_by_path(plan)
    assert labels["layers/2/kernel"] == labels["layers/2/bias"] == "s[i=2]"
    assert labels["head/kernel"] == "frozen"
    # nnx.Optimizer passes Variable-wrapped params to init and plain arrays to update.
    optimizer = nnx.Optimizer(model, plan.tx, wrt=nnx.Param)
    before = by_path(nnx.state(model, nnx.Param))
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    after = by_path(nnx.state(model, nnx.Param))
    for i in range(3):
        moved = after[f"layers/{i}/kernel"] - before[f"layers/{i}/kernel"]
        np.testing.assert_allclose(moved, -0.1 * (i + 1), rtol=1e-5)
    np.testing.assert_array_equal(after["head/kernel"], before["head/kernel"])


def test_two_patterns_of_one_rule_capture_the_same_name() -> None:
    params = {
        "encoder": {f"layer_{i}": {"w": jnp.zeros(2)} for i in range(3)},
        "decoder": {f"block_{i}": {"w": jnp.zeros(2)} for i in range(3)},
    }
    spec = "encoder/layer_<i>/**, decoder/block_<i>/** -> sgd(0.01 * (i + 1)) as s"
    plan = partspec.compile(spec, params)
    labels = labels_by_path(plan)
    for i in range(3):
        assert labels[f"encoder/layer_{i}/w"] == labels[f"decoder/block_{i}/w"] == f"s[i={i}]"
    assert set(plan.transforms) == {"s[i=0]", "s[i=1]", "s[i=2]"}
    # One group, one optimizer state per binding, shared by both subtrees.
    assert set(plan.label_states(plan.tx.init(params))) == set(plan.transforms)


def test_first_match_wins_between_rules_with_and_without_captures() -> None:
    params = _bert(4)
    plan = partspec.compile(
        "encoder/layer/0/** -> frozen\nencoder/layer/<i>/** -> sgd(0.1 * i)\n** -> frozen", params
    )
    labels = labels_by_path(plan)
    assert labels["encoder/layer/0/output/kernel"] == "frozen"
    assert labels["encoder/layer/1/output/kernel"] == "sgd(0.1 * i)[i=1]"
    assert "sgd(0.1 * i)[i=0]" not in plan.transforms
    # A capture rule first takes every layer: the later, narrower rule is shadowed.
    with pytest.warns(partspec.SpecWarning, match="W602"):
        plan = partspec.compile(
            "encoder/layer/<i>/** -> sgd(0.1 * (i + 1))\nencoder/layer/0/** -> frozen\n"
            "** -> frozen",
            params,
        )
    assert labels_by_path(plan)["encoder/layer/0/output/kernel"] == "sgd(0.1 * (i + 1))[i=0]"


def test_where_on_a_capture_freezes_the_first_layers() -> None:
    params = _bert()
    plan = partspec.compile(
        "encoder/layer/<i>/** where i < 6 -> frozen\n** -> sgd(0.5) as rest", params
    )
    labels = labels_by_path(plan)
    for path, label in labels.items():
        i = _layer_of(path)
        assert label == ("frozen" if i is not None and i < 6 else "rest"), path
    updates = _one_update(plan, params)
    assert np.all(updates["encoder/layer/5/output/kernel"] == 0)
    np.testing.assert_allclose(updates["encoder/layer/6/output/kernel"], -0.5)


def test_labels_for_another_tree_with_the_same_paths() -> None:
    params = _bert(3)
    plan = partspec.compile(f"{DECAY} as ld\n** -> frozen", params)
    shapes = jax.eval_shape(lambda: params)
    assert plan.labels_for(shapes) == plan.labels


# ---------------------------------------------------------------- 3. errors and formatting


@pytest.mark.parametrize(
    ("text", "code", "line", "column"),
    [
        ("a/<>/b -> frozen", "E204", 1, 3),
        ("a/<1x>/b -> frozen", "E204", 1, 3),
        ("a/<i-j>/b -> frozen", "E204", 1, 3),
        ("a/<as>/b -> frozen", "E204", 1, 3),
        ("a/<where>/b -> frozen", "E204", 1, 3),
        ("a/<_x> -> frozen", "E204", 1, 3),
        ("<i>/<i> -> frozen", "E204", 1, 5),
        ("a/<i>_<i> -> frozen", "E204", 1, 7),
        ("a/{<i>,b} -> frozen", "E204", 1, 4),
        ("a/{x,{b<i>}} -> frozen", "E204", 1, 8),
        ("a/** except <i>/b -> frozen", "E204", 1, 13),
        ("head/** -> frozen\na/** except b, x/<i> -> frozen", "E204", 2, 16),
        ("a/<i>, b/<j> -> frozen", "E204", 1, 8),
        ("a/<i>, b -> frozen", "E204", 1, 8),
        ("a, b/<i> -> frozen", "E204", 1, 4),
    ],
)
def test_capture_syntax_errors_point_at_the_capture(
    text: str, code: str, line: int, column: int
) -> None:
    d = _error(text)
    assert (d.code, d.line, d.column) == (code, line, column), d.message


@pytest.mark.parametrize(
    ("text", "name", "what"),
    [
        ("let lr = 1e-3\nhead/** -> frozen\nenc/<lr>/** -> sgd(0.1)", "lr", "line 1"),
        ("param steps\nenc/x_<steps>/** -> frozen", "steps", "line 1"),
        ("enc/<adam>/** -> frozen", "adam", "function"),
        ("enc/<count>/** -> frozen", "count", "function"),
        ("enc/<ndim>/** -> frozen", "ndim", "leaf property"),
        ("enc/<shape>/** -> frozen", "shape", "leaf property"),
        ("enc/<size>/** -> frozen", "size", "leaf property"),
        ("a/<dtype>, b/<dtype> -> frozen", "dtype", "leaf property"),
    ],
)
def test_capture_names_that_hide_other_names_are_errors(text: str, name: str, what: str) -> None:
    d = _error(text)
    assert d.code == "E302"
    assert f"<{name}>" in d.message and what in d.message
    # The caret covers the capture.
    src = text.splitlines()[d.line - 1]
    col = src.index(f"<{name}>") + 1
    assert d.column <= col < d.end_column, (d.line, d.column, d.end_column)


def test_a_let_below_the_rule_does_not_clash_with_its_capture() -> None:
    params = {"a": [0.0, 0.0]}
    plan = partspec.compile("a/<i> -> sgd(0.1 * (i + 1))\nlet i = 5", params)
    assert labels_by_path(plan) == {
        "a/0": "sgd(0.1 * (i + 1))[i=0]",
        "a/1": "sgd(0.1 * (i + 1))[i=1]",
    }


def test_format_round_trips_capture_rules() -> None:
    messy = (
        "let depth=count(i)  # layers\n"
        "encoder/layer/<i>/**,decoder/block_<i>/** except **/bias->"
        "adamw(1e-3*0.75**(depth-1-i))  as ld\n"
        "x_<a>_<b>->frozen\n"
    )
    text = partspec.format(messy)
    assert text == (
        "let depth = count(i)  # layers\n"
        "encoder/layer/<i>/**, decoder/block_<i>/** except **/bias -> "
        "adamw(1e-3 * 0.75 ** (depth - 1 - i)) as ld\n"
        "x_<a>_<b> -> frozen\n"
    )
    assert partspec.parse(text) == partspec.parse(messy)
    assert partspec.format(text) == text


# ---------------------------------------------------------------- 4. training


def _mlp(key: jax.Array) -> dict:
    keys = jax.random.split(key, 3)
    return {"layers": [{"w": 0.5 * jax.random.normal(k, (4, 4)), "b": jnp.zeros(4)} for k in keys]}


def _loss(params: dict, x: jax.Array) -> jax.Array:
    for layer in params["layers"]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return jnp.mean(x**2)


def test_compiled_optimizer_scales_each_layer_by_its_own_learning_rate() -> None:
    params = _mlp(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    plan = partspec.compile("layers/<i>/** -> sgd(0.1 * (i + 1))", params)

    @jax.jit
    def step(params: dict, state: Any) -> tuple[Any, ...]:
        grads = jax.grad(_loss)(params, x)
        updates, state = plan.tx.update(grads, state, params)
        return grads, updates, optax.apply_updates(params, updates), state

    grads, updates, new_params, _ = step(params, plan.tx.init(params))
    for i in range(3):
        lr = np.float32(-(0.1 * (i + 1)))
        for name in ("w", "b"):
            g = np.asarray(grads["layers"][i][name])
            assert np.any(g != 0)
            np.testing.assert_array_equal(np.asarray(updates["layers"][i][name]), lr * g)
    assert _loss(new_params, x) < _loss(params, x)


def test_compiling_does_not_warn_for_capture_rules_that_match() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        partspec.compile(f"{DECAY}\n** -> frozen", _bert(2))


def test_capture_caches_stay_bounded_over_many_specs() -> None:
    """2,000 specs with a capture kept 102 MB: the extractor cache had no bound."""
    import tracemalloc

    from partspec.matching import captures as matcher

    tree = {f"enc{k}": {f"layer_{i}": {"w": jnp.ones(1)} for i in range(3)} for k in range(2)}

    def compile_spec(n: int) -> None:
        # Every spec the same size (`v00400`, not `v400`): a bounded cache that earlier
        # tests filled with smaller entries grows as they are replaced by bigger ones,
        # which measured 1.08 MB in one CI run, not a leak.
        spec = f"enc{n % 2}/layer_<i>/{{w,v{n:05d}}} -> sgd({n % 9 + 1}e-3 * i)\n** -> frozen"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", partspec.SpecWarning)
            partspec.compile(spec, tree)

    partspec.clear_caches()  # filled by this test's specs alone, whatever ran before
    tracemalloc.start()
    try:
        for n in range(400):  # fill every bounded cache
            compile_spec(n)
        before, _ = tracemalloc.get_traced_memory()
        for n in range(400, 1200):
            compile_spec(n)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert matcher._extractor.cache_info().currsize <= matcher.MAX_EXTRACTORS
    assert after - before < 1024 * 1024, f"{after - before:,} bytes kept by 800 more specs"


@pytest.mark.parametrize("action", ["frozen", "sgd(0.1)", "sgd(0.1 * (i + 1))"])
@pytest.mark.parametrize("paths", [True, False])
def test_count_sees_a_capture_the_action_does_not_use(action: str, paths: bool) -> None:
    """count(i) resolves only the leaves whose owner captures `i`: a rule that captures
    `i` without using it (its leaves labelled by their path alone) still counts, and
    leaves an earlier rule takes do not."""
    from partspec.resolution import resolve_paths

    layers = {str(i): {"w": jnp.ones(1)} for i in range(7)}
    tree = {"enc": layers, "head": jnp.ones(1)}
    spec = (
        f"let d = count(i)\nenc/0/** -> frozen\nenc/<i>/** -> {action} as e\n"
        "head -> sgd(0.1 * d) as h"
    )
    if paths:
        flat = [("enc", str(i), "w") for i in range(7)] + [("head",)]
        res = resolve_paths(partspec.check(spec), flat)
        assert res.checked.values["d"] == 6
    else:
        plan = partspec.compile(spec, tree)
        assert plan.checked.values["d"] == 6  # layers 1..6: layer 0 belongs to rule 2


_COUNTED_SPECS = [
    "let n = count(i)\n**/layer_<i>/** -> sgd(0.1 * (n - i))\n** -> frozen",
    "let n = count(i)\n**/layer_<i> where ndim >= 0 -> adam(1e-3 * 0.5 ** i)\n** -> sgd(0.1 * n)",
    "let n = count(i)\nlayer_<i>/** -> sgd(0.1 * (i + 1))\n**/layer_<i>/** -> sgd(n)\n** -> sgd(1)",
]


_LAYERED = st.dictionaries(
    st.sampled_from([f"layer_{i}" for i in range(6)] + ["head", "enc"]),
    st.one_of(st.just(0.0), S.param_trees(leaves=st.just(0.0), max_leaves=3)),
    min_size=1,
    max_size=6,
).flatmap(lambda d: st.sampled_from([d, {"enc": d}, {"enc": d, "layer_9": {"w": 0.0}}]))


@given(tree=_LAYERED, spec=st.sampled_from(_COUNTED_SPECS))
def test_a_counted_spec_labels_its_paths_as_the_tree_walk_labels_the_tree(
    tree: Any, spec: str
) -> None:
    # With `count`, compile labels the paths it already walked to count, in one pass,
    # and builds the label tree from them; the reference walks the tree itself.
    from partspec.jax.plan import matcher_for
    from partspec.jax.tree import label_tree
    from partspec.resolution.resolver import Resolver

    try:
        plan = partspec.compile(spec, tree)
    except partspec.SpecError as err:  # a capture that is not a number, for instance
        assert all(d.code[:2] in ("E4", "E5") for d in err.diagnostics), err
        return
    ref = label_tree(Resolver(plan.checked, matcher_for(plan.checked)), tree)
    assert plan.labels == ref
    assert jax.tree_util.tree_structure(plan.labels) == jax.tree_util.tree_structure(ref)


# ------------------------------------------------ count(): one walk, then the labels

# Counted specs of every kind of rule a count reaches: an action, a `with` setting (which
# names the label), a `frozen` rule that only counts, `where` conditions on the leaf,
# `frozen until`, a capture after `**` (no fixed number of leading keys).
_ONE_WALK_SPECS = [
    "let n = count(i)\nlayer_<i>/** -> adam(1e-3)\nlayer_<i>/** with lr * 0.5 ** (n - i)\n"
    "** -> frozen",
    "let n = count(i)\n** where ndim <= 1 -> sgd(0.1)\n**/layer_<i>/** -> adamw(1e-3 * (n - i))\n"
    "** -> frozen",
    "let n = count(i)\nlayer_<i>/** -> frozen until 10 then sgd(0.1 * n)\n** -> adam(1e-3)",
    "let n = count(i)\nenc/layer_<i>/** -> frozen\n**/layer_<i>/** with lr * n\n** -> sgd(0.1)",
    "let n = count(j)\n** -> adamw(1e-3)\n"
    "**/layer_<j>/** where ndim > 1 with weight_decay = 0.01 * n",
    "let n = count(i)\nlet m = n * 2\nlayer_<i>/** where ndim >= 1 -> sgd(1e-3 * m)\n"
    "layer_<i>/** -> sgd(0.1)\n** with lr * n\n** -> frozen",
    # Captures two keys down: leaves of one layer share an outcome, of two layers not.
    "let n = count(i)\nenc/layer_<i>/** -> sgd(0.1 * (n - i))\n** -> frozen",
    "let n = count(i)\nenc/layer_<i>/** -> frozen\nhead/** -> sgd(0.1 * n)\n** -> adam(1e-3)",
    "let n = count(i)\nenc/layer_<i>/** -> adam(1e-3)\n"
    "enc/layer_<i>/** where ndim > 1 with lr * 0.5 ** (n - i)\n** -> frozen",
]

# Few shapes, so that leaves of different layers share a state, a shape and a dtype.
_FEW_LEAVES = st.sampled_from(
    [
        jax.ShapeDtypeStruct((2, 2), jnp.float32),
        jax.ShapeDtypeStruct((2,), jnp.float32),
        jax.ShapeDtypeStruct((2,), jnp.int32),
        np.zeros((3, 1), np.float32),
        1.0,
    ]
)
_LAYER_BODIES = st.one_of(
    _FEW_LEAVES,
    st.dictionaries(st.sampled_from(["w", "b", "ln"]), _FEW_LEAVES, min_size=1, max_size=3),
    st.dictionaries(
        st.sampled_from(["mlp", "attn"]),
        st.dictionaries(st.sampled_from(["w", "b"]), _FEW_LEAVES, min_size=1, max_size=2),
        min_size=1,
        max_size=2,
    ),
    st.lists(_FEW_LEAVES, min_size=1, max_size=2),
)
_SHAPED_LAYERED = st.dictionaries(
    st.sampled_from([f"layer_{i}" for i in range(6)] + ["head", "enc"]),
    _LAYER_BODIES,
    min_size=1,
    max_size=6,
).flatmap(
    lambda d: st.sampled_from(
        [d, {"enc": d}, {"enc": d, "layer_9": {"w": 0.0}}, {"enc": d, "head": {"w": 1.0}}]
    )
)


def _naive_counts(checked: Any, paths: list[tuple[str, ...]], infos: list[Any]) -> dict[str, int]:
    """count(name) by its definition, leaf by leaf: the distinct values of the capture
    over the leaves whose owner, or a `with` rule matching them, captures it."""
    from partspec.resolution.resolver import Resolver

    resolver = Resolver(checked)
    values: dict[str, set[Any]] = {name: set() for name in checked.counted}
    n = len(checked.rules)
    for segs, info in zip(paths, infos):
        owner, _ = resolver.locate(segs, lambda info=info: info)
        reading = [checked.rules[owner].rule] if owner >= 0 else []
        for w, cw in enumerate(checked.with_rules):
            caps = next(
                (c for p in cw.rule.patterns if (c := S.naive_captures(p, segs)) is not None),
                None,
            )
            if caps is None or any(S.naive_match(p, segs) for p in cw.rule.excepts):
                continue
            bound = {k: S.capture_value(v) for k, v in caps.items()}
            if checked.test(n + w, info, bound, "/".join(segs)):
                reading.append(cw.rule)
        for rule in reading:
            for p in rule.patterns:
                caps = S.naive_captures(p, segs)
                if caps is not None:
                    for name, text in caps.items():
                        if name in values:
                            values[name].add(S.capture_value(text))
                    break
    return {name: len(v) for name, v in values.items()}


@pytest.mark.parametrize("spec", _ONE_WALK_SPECS)
@given(tree=_SHAPED_LAYERED)
def test_count_labels_in_one_walk_as_counting_first_then_labelling_does(
    tree: Any, spec: str
) -> None:
    # compile walks the tree once: it counts, and labels what does not wait for the
    # counts; the rest is labelled once they are known. The reference counts by the
    # definition, checks the spec again with those counts, then labels leaf by leaf.
    # The path walk (manifests, PyTorch) must agree with both.
    from partspec.jax.tree import leaf_info, leaf_segments
    from partspec.resolution import resolve_paths
    from partspec.resolution.resolver import Resolver

    checked = partspec.check(spec)
    leaves = leaf_segments(tree)
    paths = [segs for segs, _ in leaves]
    infos = [leaf_info(x) for _, x in leaves]
    try:
        plan = partspec.compile(spec, tree)
    except partspec.SpecError as err:  # a capture that is not a number, no cover...
        assert all(d.code[:2] in ("E4", "E5") for d in err.diagnostics), err
        with pytest.raises(partspec.SpecError):
            resolve_paths(checked, paths, infos).raise_for_errors()
        return
    counts = _naive_counts(checked, paths, infos)
    assert dict(plan.checked.counts or {}) == counts
    final = Resolver(checked.with_counts(counts))
    want = [final.locate(segs, lambda info=info: info)[1] for segs, info in zip(paths, infos)]
    treedef = jax.tree_util.tree_structure(tree)
    assert plan.labels == jax.tree_util.tree_unflatten(treedef, want)
    assert list(plan.resolution.labels) == want
    by_paths = resolve_paths(checked, paths, infos)
    assert list(by_paths.labels) == want
    assert dict(by_paths.counts) == counts
    assert by_paths.actions == plan.resolution.actions
    assert list(by_paths.owners) == list(plan.resolution.owners)


def test_a_label_the_counts_change_after_the_walk_is_labelled_again(monkeypatch: Any) -> None:
    # The one walk gives a label at once where the counts cannot change it, and checks
    # that after counting; were it ever wrong, the tree is labelled again from scratch
    # rather than trained under a stale label.
    from partspec.resolution import counting, resolve_paths

    spec = (
        "let n = count(i)\nhead/** -> sgd(0.1) as head\nlayer_<i>/** -> sgd(0.1 * (n - i))\n"
        "layer_<i>/** with lr * n"
    )
    tree = {"head": {"w": jnp.ones(2)}, **{f"layer_{i}": {"w": jnp.ones(2)} for i in range(3)}}
    want = partspec.compile(spec, tree).labels
    finish = counting.CountingPass.finish
    calls = []

    def stale(self: Any) -> Any:
        calls.append(finish(self))
        self.direct[next(iter(self.direct))] = "stale"  # as if the counts changed it
        return finish(self)

    monkeypatch.setattr(counting.CountingPass, "finish", stale)
    assert partspec.compile(spec, tree).labels == want
    paths = [tuple(p.split("/")) for p, _ in leaf_paths(tree)]
    assert list(resolve_paths(partspec.check(spec), paths).labels) == jax.tree_util.tree_leaves(
        want
    )
    assert len(calls) == 2


@st.composite
def _counted_specs(draw: st.DrawFn, counted: bool = True) -> str:
    """Random specs that count `i`: rules and `with` rules over layered paths, with and
    without captures, `where` conditions and actions or settings computed from the count.
    With ``counted=False``, the same without ``count``."""
    segment = st.sampled_from(["layer_<i>", "<i>", "enc", "**", "*", "w", "b", "layer_*", "{w,b}"])

    def one_capture(segs: list[str]) -> str:
        text = "/".join(segs)
        first = text.find("<i>")
        return text if first < 0 else text[: first + 3] + text[first + 3 :].replace("<i>", "*")

    pattern = st.lists(segment, min_size=1, max_size=3).map(one_capture)
    lines = ["let n = count(i)", "let m = n + 1"]
    for _ in range(draw(st.integers(1, 4))):
        pat = draw(pattern)
        uses_i = "<i>" in pat
        where = ""
        if draw(st.booleans()):
            where = " where " + format_expr(draw(S.leaf_conditions()))
        if draw(st.integers(0, 2)) == 0:  # a with rule
            values = ["n", "m", "2"] + (["(i + 1)", "(n - i + 1)"] if uses_i else [])
            setting = draw(
                st.sampled_from(
                    [f"lr * {v}" for v in values] + [f"weight_decay = 0.01 * {v}" for v in values]
                )
            )
            lines.append(f"{pat}{where} with {setting}")
        else:
            args = ["0.1", "0.1 * n", "0.01 * m"] + (
                ["0.1 * (i + 1)", "0.1 * (n - i)"] if uses_i else []
            )
            action = draw(
                st.sampled_from(
                    ["frozen", "frozen until 3 then adamw(0.1 * n)"] + [f"adamw({a})" for a in args]
                )
            )
            lines.append(f"{pat}{where} -> {action}")
    if draw(st.booleans()):
        lines.append("** -> adamw(1e-3)")
    if not any("<i>" in line for line in lines):
        lines.append("layer_<i>/** -> adamw(0.1 * (n - i))")
    if not counted:
        lines = [re.sub(r"\bm\b", "6", re.sub(r"\bn\b", "5", line)) for line in lines[2:]]
    return "\n".join(lines)


def _same_outcome(spec: str, tree: Any) -> None:
    from partspec.jax.tree import leaf_info, leaf_segments
    from partspec.resolution import resolve_paths
    from partspec.resolution.resolver import Resolver

    leaves = leaf_segments(tree)
    paths = [segs for segs, _ in leaves]
    infos = [leaf_info(x) for _, x in leaves]
    checked = partspec.check(spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", partspec.SpecWarning)
            plan = partspec.compile(spec, tree)
    except partspec.SpecError as err:
        # A capture that is not a number in arithmetic, a setting the optimizer does
        # not take (E4xx, naming the leaf), leaves no rule covers (E5xx): the path
        # walk finds the same.
        codes = {d.code for d in err.diagnostics}
        assert all(c[:2] in ("E4", "E5") for c in codes), err
        try:
            found = {d.code for d in resolve_paths(checked, paths, infos).errors}
        except partspec.SpecError as again:
            found = {d.code for d in again.diagnostics}
        assert found == codes
        return
    by_paths = resolve_paths(checked, paths, infos)
    counts = _naive_counts(checked, paths, infos)
    assert dict(plan.checked.counts or {}) == counts
    final = Resolver(checked.with_counts(counts))
    want = [final.locate(segs, lambda info=info: info) for segs, info in zip(paths, infos)]
    treedef = jax.tree_util.tree_structure(tree)
    assert plan.labels == jax.tree_util.tree_unflatten(treedef, [lab for _, lab in want])
    assert list(zip(plan.resolution.owners, plan.resolution.labels)) == want
    assert list(zip(by_paths.owners, by_paths.labels)) == want
    assert dict(by_paths.counts) == counts
    assert by_paths.actions == plan.resolution.actions


@given(spec=_counted_specs(), tree=_SHAPED_LAYERED)
def test_random_counted_specs_label_as_counting_by_the_definition_does(
    spec: str, tree: Any
) -> None:
    # Any mix of captures, conditions, `with` settings and counts: the one walk (tree
    # and paths) agrees with counting leaf by leaf, checking again, then labelling.
    _same_outcome(spec, tree)


@given(spec=_counted_specs(counted=False), tree=_SHAPED_LAYERED)
def test_random_capture_specs_label_as_resolving_leaf_by_leaf_does(spec: str, tree: Any) -> None:
    # Without count: the tree walk resolves a leaf whose label needs its path at once,
    # remembering outcomes by state, shape, dtype and the keys its captures read.
    _same_outcome(spec, tree)
