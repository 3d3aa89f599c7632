"""Model surgery: select, replace, transfer and reset_state (partspec.tools.surgery)."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import FrozenDict, freeze
from hypothesis import assume, given
from hypothesis import strategies as st

import partspec
from partspec.jax.tree import leaf_paths
from partspec.language.formatter import format_pattern
from partspec.language.parser import parse_syntax
from tests import strategies as S

ROOT = Path(__file__).resolve().parent.parent


def bits(x):
    return np.asarray(x).tobytes()


def tree_bits(tree):
    return [bits(x) for x in jax.tree.leaves(tree)]


def codes(err: pytest.ExceptionInfo[partspec.SpecError]) -> list[str]:
    return [d.code for d in err.value.diagnostics]


@pytest.fixture
def params():
    return {
        "backbone": {
            "layers": [
                {"kernel": jnp.full((3, 2), 1.0), "bias": jnp.full(2, 2.0)},
                {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full(2, 4.0)},
            ],
            "ln": {"scale": jnp.ones(2)},
        },
        "head": {"kernel": jnp.full((2, 4), 5.0), "bias": jnp.zeros(4)},
    }


SPEC = """
backbone/layers/0/** -> frozen
backbone/**          -> sgd(0.1, momentum=0.9) as backbone
head/**              -> chain(clip_by_global_norm(1.0), adam(1e-2)) as head
"""


def trained(plan, params, steps=3):
    state = plan.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    for _ in range(steps):
        updates, state = plan.tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


# ---------------------------------------------------------------- select


def test_select_nested_dicts_and_lists(params):
    got = partspec.select("backbone/layers/*/kernel", params)
    assert list(got) == ["backbone/layers/0/kernel", "backbone/layers/1/kernel"]
    assert got["backbone/layers/1/kernel"] is params["backbone"]["layers"][1]["kernel"]
    assert list(partspec.select("**/bias", params)) == [
        "backbone/layers/0/bias",
        "backbone/layers/1/bias",
        "head/bias",
    ]


def test_select_full_language(params):
    assert list(partspec.select("backbone/** except **/layers/{0..0}/**", params)) == [
        "backbone/layers/1/bias",
        "backbone/layers/1/kernel",
        "backbone/ln/scale",
    ]
    assert list(partspec.select("head/{kernel,bias}, backbone/ln/*", params)) == [
        "backbone/ln/scale",
        "head/bias",
        "head/kernel",
    ]
    assert list(partspec.select("**/?ias", params))[-1] == "head/bias"
    assert partspec.select("nothing/**", params) == {}


def test_select_frozendict_tuples_namedtuples_and_root():
    Pair = namedtuple("Pair", ["left", "right"])
    tree = freeze({"a": (np.zeros(1), Pair(np.ones(1), None)), "b c": {"d": 1.0}})
    assert list(partspec.select("a/**", tree)) == ["a/0", "a/1/left"]
    assert partspec.select('"b c"/d', tree) == {"b c/d": 1.0}
    leaf = np.zeros(3)
    assert partspec.select("**", leaf) == {"": leaf}
    assert partspec.select('""', leaf) == {"": leaf}
    assert partspec.select("x", leaf) == {}


def test_select_haiku_keys_and_nnx():
    from flax import nnx

    haiku = {"mlp/~/linear_0": {"w": np.zeros(1), "b": np.zeros(1)}}
    assert list(partspec.select("mlp/*/linear_0/w", haiku)) == ["mlp/~/linear_0/w"]

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.backbone = nnx.Linear(2, 3, rngs=rngs)
            self.head = nnx.Linear(3, 1, rngs=rngs)

    state = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    got = partspec.select("head/*", state)
    assert list(got) == ["head/bias", "head/kernel"]
    assert got["head/kernel"].shape == (3, 1)


def test_select_optimizer_state_paths(params):
    plan = partspec.compile(SPEC, params)
    _, state = trained(plan, params)
    paths = list(partspec.select("**", state))
    assert paths == [
        "groups/backbone/inner/0/trace/backbone/layers/1/bias",
        "groups/backbone/inner/0/trace/backbone/layers/1/kernel",
        "groups/backbone/inner/0/trace/backbone/ln/scale",
        "groups/head/inner/1/0/count",
        "groups/head/inner/1/0/mu/head/bias",
        "groups/head/inner/1/0/mu/head/kernel",
        "groups/head/inner/1/0/nu/head/bias",
        "groups/head/inner/1/0/nu/head/kernel",
    ]
    # MaskedNode placeholders (other labels' parameters) and the frozen label have no leaves.
    assert list(partspec.select("**/mu/**", state)) == [
        "groups/head/inner/1/0/mu/head/bias",
        "groups/head/inner/1/0/mu/head/kernel",
    ]
    assert list(partspec.select("**/mu/head/**", state)) == list(partspec.select("**/mu/**", state))
    assert partspec.select("groups/frozen/**", state) == {}
    mu = partspec.select("**/mu/head/kernel", state)
    assert (
        mu["groups/head/inner/1/0/mu/head/kernel"]
        is (plan.label_states(state)["head"][1][0].mu["head"]["kernel"])
    )


def test_select_default_labels_need_quotes_or_stars(params):
    small = {"w": jnp.ones(2)}
    state = partspec.compile("w -> adam(1e-3)", small).init(small)
    want = ["groups/adam(0.001)/inner/0/count"]
    assert list(partspec.select('groups/"adam(0.001)"/**/count', state)) == want
    assert list(partspec.select("groups/adam*/**/count", state)) == want


def test_select_train_state(params):
    from flax.training import train_state

    plan = partspec.compile(SPEC, params)
    ts = train_state.TrainState.create(apply_fn=None, params=params, tx=plan.tx)
    assert list(partspec.select("step, params/head/*", ts)) == [
        "step",
        "params/head/bias",
        "params/head/kernel",
    ]
    assert len(partspec.select("opt_state/**/mu/**", ts)) == 2


def test_select_bad_patterns():
    with pytest.raises(partspec.SpecError) as err:
        partspec.select("a**b", {"a": 1.0})
    assert codes(err) == ["E201"]
    assert err.value.diagnostics[0].source_line == "a**b"
    assert err.value.diagnostics[0].filename == "<pattern>"
    with pytest.raises(partspec.SpecError) as err:
        partspec.select("my key", {"a": 1.0})
    assert codes(err) == ["E104"]
    for bad in ["a -> sgd(0.1) #", "a\nb", "", "a;b", "a\\"]:
        with pytest.raises(partspec.SpecError):
            partspec.select(bad, {"a": 1.0})
    with pytest.raises(TypeError):
        partspec.select(["a"], {"a": 1.0})  # type: ignore[arg-type]


def test_select_duplicate_paths():
    tree = {"a/b": 1.0, "a": {"b": 2.0}}
    with pytest.raises(partspec.SpecError) as err:
        partspec.select("a/**", tree)
    assert codes(err) == ["E704"]
    assert "`a/b`" in str(err.value)
    assert partspec.select("a/c", tree) == {}


# ---------------------------------------------------------------- replace


def test_replace_keeps_structure_and_untouched_leaves(params):
    new = partspec.replace("backbone/layers/*/kernel", params, lambda x: x * 0)
    assert jax.tree.structure(new) == jax.tree.structure(params)
    assert not np.any(new["backbone"]["layers"][0]["kernel"])
    assert new["backbone"]["layers"][0]["bias"] is params["backbone"]["layers"][0]["bias"]
    assert new["head"]["kernel"] is params["head"]["kernel"]
    assert params["backbone"]["layers"][0]["kernel"][0, 0] == 1.0  # the input is unchanged


def test_replace_container_types():
    Pair = namedtuple("Pair", ["left", "right"])
    tree = freeze({"a": [1.0, Pair(2.0, 3.0)], "b": (4.0,)})
    new = partspec.replace("a/**", tree, lambda x: -x)
    assert isinstance(new, FrozenDict)
    assert isinstance(new["a"], list) and isinstance(new["a"][1], Pair)
    assert new["a"] == [-1.0, Pair(-2.0, -3.0)] and new["b"] == (4.0,)


def test_replace_with_path():
    tree = {"x": {"a": 1.0, "b": 2.0}, "y": [3.0]}
    seen = []

    def fn(path, leaf):
        seen.append(path)
        return f"{path}:{leaf}"

    new = partspec.replace("x/*, y/0", tree, fn, with_path=True)
    assert new == {"x": {"a": "x/a:1.0", "b": "x/b:2.0"}, "y": ["y/0:3.0"]}
    assert seen == ["x/a", "x/b", "y/0"]


def test_replace_nnx_state():
    from flax import nnx

    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    new = partspec.replace("bias", state, lambda b: b + 1)
    assert type(new) is type(state)
    nnx.update(model, new)
    assert np.all(np.asarray(model.bias[...]) == 1.0)


def test_replace_matching_nothing_is_an_error(params):
    with pytest.raises(partspec.SpecError) as err:
        partspec.replace("haed/**", params, lambda x: x)
    assert codes(err) == ["E701"]
    text = str(err.value)
    assert "`haed/**` matches no leaf of the tree" in text
    assert "backbone/layers/0/bias" in text  # the hint lists some real paths
    assert isinstance(err.value, ValueError)


def test_replace_optimizer_state_then_update(params):
    plan = partspec.compile(SPEC, params)
    params, state = trained(plan, params)
    zeroed = partspec.replace("**/mu/head/kernel", state, jnp.zeros_like)
    mu = plan.label_states(zeroed)["head"][1][0].mu
    assert not np.any(mu["head"]["kernel"]) and np.any(mu["head"]["bias"])
    assert jax.tree.structure(zeroed) == jax.tree.structure(state)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(plan.tx.update)(grads, zeroed, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


# ---------------------------------------------------------------- reset_state


def test_reset_label(params):
    plan = partspec.compile(SPEC, params)
    params, state = trained(plan, params)
    new = partspec.reset_state(plan, state, params, label="head")
    assert jax.tree.structure(new) == jax.tree.structure(state)
    head = partspec.select("groups/head/**", new)
    assert len(head) == 5 and all(not np.any(v) for v in head.values())
    # It is exactly what a fresh init gives for the label...
    fresh = plan.label_states(plan.init(params))["head"]
    assert tree_bits(plan.label_states(new)["head"]) == tree_bits(fresh)
    assert jax.tree.structure(plan.label_states(new)["head"]) == jax.tree.structure(fresh)
    # ... and every other label's state is the same arrays.
    kept = partspec.select("** except groups/head/**", state)
    assert kept and partspec.select("** except groups/head/**", new).keys() == kept.keys()
    for path, leaf in partspec.select("** except groups/head/**", new).items():
        assert leaf is kept[path]


def test_reset_label_then_training_continues(params):
    plan = partspec.compile(SPEC, params)
    params, state = trained(plan, params)
    state = partspec.reset_state(plan, state, params, label="backbone")
    assert not any(np.any(v) for v in partspec.select("**/trace/**", state).values())
    step = jax.jit(plan.tx.update)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    for _ in range(2):
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
    assert np.any(partspec.select("**/trace/backbone/ln/scale", state).popitem()[1])


def test_reset_pattern_resets_only_mirrors(params):
    plan = partspec.compile(SPEC, params)
    params, state = trained(plan, params)
    new = partspec.reset_state(plan, state, params, pattern="head/kernel, backbone/ln/**")
    old_leaves = partspec.select("**", state)
    new_leaves = partspec.select("**", new)
    assert list(old_leaves) == list(new_leaves)
    reset = {
        "groups/head/inner/1/0/mu/head/kernel",
        "groups/head/inner/1/0/nu/head/kernel",
        "groups/backbone/inner/0/trace/backbone/ln/scale",
    }
    for path, leaf in new_leaves.items():
        if path in reset:
            assert not np.any(leaf), path
            assert np.any(old_leaves[path]), path
        else:
            assert leaf is old_leaves[path], path  # bit-identical: the same array
    # Adam's count is shared by the label: kept.
    assert int(plan.label_states(new)["head"][1][0].count) == 3


def test_reset_pattern_then_training_continues(params):
    plan = partspec.compile(SPEC, params)
    params, state = trained(plan, params)
    state = partspec.reset_state(plan, state, params, pattern="head/**")
    assert not any(np.any(v) for v in partspec.select("**/{mu,nu}/**", state).values())
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    updates, state = jax.jit(plan.tx.update)(grads, state, params)
    assert np.any(updates["head"]["kernel"])
    assert int(plan.label_states(state)["head"][1][0].count) == 4


def test_reset_pattern_on_frozen_only_changes_nothing(params):
    plan = partspec.compile(SPEC, params)
    params, state = trained(plan, params)
    new = partspec.reset_state(plan, state, params, pattern="backbone/layers/0/**")
    assert all(a is b for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True))


def test_reset_state_inside_wrappers(params):
    from flax.training import train_state

    plan = partspec.compile(SPEC, params)
    ts = train_state.TrainState.create(apply_fn=None, params=params, tx=plan.tx)
    grads = jax.tree.map(jnp.ones_like, params)
    ts = ts.apply_gradients(grads=grads)
    new = partspec.reset_state(plan, ts, ts.params, label="head")
    assert isinstance(new, train_state.TrainState)
    assert not any(np.any(v) for v in partspec.select("opt_state/**/mu/**", new).values())
    assert all(
        a is b for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ts.params), strict=True)
    )

    # plan.tx inside optax.MultiSteps: only the partition's state is reset.
    tx = optax.MultiSteps(plan.tx, every_k_schedule=2)
    state = tx.init(params)
    for _ in range(2):
        _, state = tx.update(grads, state, params)
    new = partspec.reset_state(plan, state, params, pattern="head/bias")
    assert not np.any(partspec.select("**/mu/head/bias", new).popitem()[1])
    assert np.any(partspec.select("**/mu/head/kernel", new).popitem()[1])
    assert new.gradient_step is state.gradient_step


def test_reset_state_nnx():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.backbone = nnx.Linear(2, 3, rngs=rngs)
            self.head = nnx.Linear(3, 1, rngs=rngs)

    params = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    plan = partspec.compile("backbone/** -> sgd(0.1, momentum=0.9)\nhead/** -> adam(0.1)", params)
    state = plan.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = plan.tx.update(grads, state, params)
    new = partspec.reset_state(plan, state, params, pattern="head/kernel")
    got = partspec.select("**/{mu,trace}/**", new)
    assert not np.any(got["groups/adam(0.1)/inner/0/mu/head/kernel"])
    assert np.any(got["groups/adam(0.1)/inner/0/mu/head/bias"])
    assert np.any(got["groups/sgd(0.1, momentum=0.9)/inner/0/trace/backbone/kernel"])
    new = partspec.reset_state(plan, state, params, label="adam(0.1)")
    assert tree_bits(plan.label_states(new)["adam(0.1)"]) == tree_bits(
        plan.label_states(plan.init(params))["adam(0.1)"]
    )
    plan.tx.update(grads, new, params)


def test_reset_state_errors(params):
    plan = partspec.compile(SPEC, params)
    state = plan.init(params)
    with pytest.raises(TypeError, match="exactly one"):
        partspec.reset_state(plan, state, params)
    with pytest.raises(TypeError, match="exactly one"):
        partspec.reset_state(plan, state, params, label="head", pattern="head/**")
    with pytest.raises(partspec.SpecError) as err:
        partspec.reset_state(plan, state, params, label="haed")
    assert codes(err) == ["E705"]
    assert err.value.diagnostics[0].hint == "did you mean `head`?"
    with pytest.raises(partspec.SpecError) as err:
        partspec.reset_state(plan, state, params, pattern="neck/**")
    assert codes(err) == ["E701"]
    assert "matches no parameter" in str(err.value)
    with pytest.raises(partspec.SpecError) as err:
        partspec.reset_state(plan, optax.adam(0.1).init(params), params, label="head")
    assert codes(err) == ["E705"]
    other = partspec.compile("** -> sgd(0.1)", params)
    with pytest.raises(partspec.SpecError) as err:
        partspec.reset_state(other, state, params, label="sgd(0.1)")
    assert codes(err) == ["E705"]
    with pytest.raises(TypeError):
        partspec.reset_state(plan.tx, state, params, label="head")  # type: ignore[arg-type]
    with pytest.raises(partspec.SpecError) as err:  # parameters of another model
        partspec.reset_state(plan, state, {**params, "extra": jnp.zeros(1)}, label="head")
    assert codes(err) == ["E705"]


def test_reset_pattern_unknown_mirror_is_a_clear_error(params):
    """An optimizer that keeps one flat buffer for all its leaves: no parameter owns a
    part of it that reset_state could tell apart."""
    import dataclasses

    from partspec.jax.partition import partition

    plan = partspec.compile(SPEC, params)

    def init(p):
        return (jnp.concatenate([x.ravel() for x in jax.tree.leaves(p)]),)

    transforms = {
        **plan.transforms,
        "head": optax.GradientTransformation(init, lambda u, s, p=None: (u, s)),
    }
    plan = dataclasses.replace(
        plan, transforms=transforms, tx=partition(transforms, plan.labels_for)
    )
    state = plan.tx.init(params)
    with pytest.raises(partspec.SpecError) as err:
        partspec.reset_state(plan, state, params, pattern="head/**")
    assert codes(err) == ["E705"]
    assert "mirrors no parameter" in err.value.diagnostics[0].message
    assert "label='head'" in err.value.diagnostics[0].hint
    # The whole label still resets.
    fresh = partspec.reset_state(plan, state, params, label="head")
    assert tree_bits(plan.label_states(fresh)["head"]) == tree_bits(init({"head": params["head"]}))


# ---------------------------------------------------------------- transfer


@pytest.fixture
def pretrained():
    return {
        "encoder": {"kernel": jnp.full((3, 2), 7.0), "bias": jnp.full(2, 8.0)},
        "classifier": {"kernel": jnp.full((2, 10), 9.0), "bias": jnp.zeros(10)},
    }


@pytest.fixture
def model():
    return freeze(
        {
            "backbone": {"encoder": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}},
            "neck": {"w": jnp.zeros(2)},
            "head": {"kernel": jnp.zeros((2, 4)), "bias": jnp.zeros(4)},
        }
    )


def test_transfer_with_rename(pretrained, model):
    new, report = partspec.transfer(
        pretrained, model, "backbone/**, neck/**", rename=("encoder/", "backbone/encoder/")
    )
    assert isinstance(new, FrozenDict)
    assert new["backbone"]["encoder"]["kernel"] is pretrained["encoder"]["kernel"]
    assert new["head"]["kernel"] is model["head"]["kernel"]
    assert report.copied == (
        ("encoder/bias", "backbone/encoder/bias"),
        ("encoder/kernel", "backbone/encoder/kernel"),
    )
    assert report.missing == ("neck/w",)
    assert report.skipped == ("head/bias", "head/kernel")
    assert report.not_filled == ("neck/w", "head/bias", "head/kernel")
    assert report.unused == ("classifier/bias", "classifier/kernel")
    assert report.values == 8
    text = str(report)
    assert text.splitlines()[0] == (
        "copied 2 leaves (8 values); not filled: 1 missing, 2 outside the pattern; "
        "unused in the source: 2"
    )
    assert "  encoder/kernel -> backbone/encoder/kernel" in text
    assert "missing (selected, not in the source; kept their values):\n  neck/w" in text
    assert "unused (in the source, not copied):\n  classifier/bias\n  classifier/kernel" in text


def test_transfer_rename_forms(pretrained, model):
    pairs = [("classifier/", "dropped/"), ("encoder/", "backbone/encoder/")]
    _, by_pairs = partspec.transfer(pretrained, model, rename=pairs)
    assert [d for _, d in by_pairs.copied] == ["backbone/encoder/bias", "backbone/encoder/kernel"]
    _, prefix_all = partspec.transfer(
        {"encoder": pretrained["encoder"]}, model, rename=("", "backbone/")
    )
    assert len(prefix_all.copied) == 2 and prefix_all.unused == ()

    def fn(path):
        return None if path.startswith("classifier/") else "backbone/" + path

    _, by_fn = partspec.transfer(pretrained, model, rename=fn)
    assert len(by_fn.copied) == 2
    assert by_fn.unused == ("classifier/bias", "classifier/kernel")  # left out by rename
    with pytest.raises(TypeError):
        partspec.transfer(pretrained, model, rename=[("a", "b", "c")])  # type: ignore[list-item]


def test_transfer_same_paths_without_rename(model):
    src = {"head": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones(4)}}
    new, report = partspec.transfer(src, model)
    assert float(new["head"]["kernel"].sum()) == 8.0
    assert report.missing == ("backbone/encoder/bias", "backbone/encoder/kernel", "neck/w")
    assert report.skipped == ()


def test_transfer_shape_mismatch(pretrained, model):
    with pytest.raises(partspec.SpecError) as err:
        partspec.transfer(pretrained, model, "head/**", rename=("classifier/", "head/"))
    assert codes(err) == ["E702", "E702"]
    text = str(err.value)
    assert "`head/bias` (from `classifier/bias`): shapes differ: source float32[10], " in text
    assert "destination float32[4]" in text
    assert "source float32[2,10], destination float32[2,4]" in text
    assert isinstance(err.value, ValueError)


def test_transfer_dtype_mismatch(model):
    src = {"neck": {"w": jnp.ones(2, jnp.bfloat16)}}
    with pytest.raises(partspec.SpecError) as err:
        partspec.transfer(src, model)
    assert codes(err) == ["E702"]
    assert err.value.diagnostics[0].message == (
        "`neck/w`: dtypes differ: source bfloat16[2], destination float32[2]"
    )
    src = {"neck": {"w": np.ones(3, np.int32)}}
    with pytest.raises(partspec.SpecError, match="shapes and dtypes differ"):
        partspec.transfer(src, model)
    # NumPy and JAX arrays of one shape and dtype are interchangeable.
    new, _ = partspec.transfer({"neck": {"w": np.ones(2, np.float32)}}, model)
    assert isinstance(new["neck"]["w"], np.ndarray)


def test_transfer_errors(pretrained, model):
    with pytest.raises(partspec.SpecError) as err:
        partspec.transfer(pretrained, model)  # paths do not line up without rename
    assert codes(err) == ["E703"]
    assert "nothing to copy" in str(err.value)
    assert "source paths: classifier/bias" in str(err.value)
    with pytest.raises(partspec.SpecError) as err:
        partspec.transfer(pretrained, model, "tail/**")
    assert codes(err) == ["E701"]
    with pytest.raises(partspec.SpecError) as err:
        partspec.transfer(pretrained, model, rename=lambda p: "neck/w")
    assert codes(err) == ["E704"]
    with pytest.raises(partspec.SpecError) as err:
        partspec.transfer(
            pretrained,
            model,
            "backbone/**, neck/**",
            rename=("encoder/", "backbone/encoder/"),
            strict=True,
        )
    assert codes(err) == ["E703"]
    notes = err.value.diagnostics[0].notes
    assert "missing: neck/w" in notes and "unused: classifier/kernel" in notes
    # strict passes when everything lines up.
    _, report = partspec.transfer(
        {"encoder": pretrained["encoder"]},
        model,
        "backbone/**",
        rename=("", "backbone/"),
        strict=True,
    )
    assert len(report.copied) == 2


def test_transfer_into_abstract_tree(pretrained, model):
    abstract = jax.eval_shape(lambda: model)
    new, _ = partspec.transfer(pretrained, abstract, rename=("encoder/", "backbone/encoder/"))
    assert new["backbone"]["encoder"]["kernel"] is pretrained["encoder"]["kernel"]
    assert isinstance(new["head"]["kernel"], jax.ShapeDtypeStruct)


# ---------------------------------------------------------------- properties


def pattern_text(pattern):
    """``(text, parsed AST)``; skips derived ASTs that no text spells (empty segments).

    The parsed AST can differ from ``pattern`` in form (``{,zz}`` for ``{"",zz}``), so
    the reference matcher is run on what the text means.
    """
    text = format_pattern(pattern)
    try:
        (parsed,) = parse_syntax(f"{text} -> frozen").rules[0].patterns
    except partspec.SpecError:
        assume(False)
    return text, parsed


@given(S.param_trees(max_leaves=8), S.patterns)
def test_select_agrees_with_naive_filter(tree, pattern):
    text = format_pattern(pattern)
    assert parse_syntax(f"{text} -> frozen").rules[0].patterns == (pattern,)  # no skipping
    want = [(p, leaf) for p, leaf in leaf_paths(tree) if S.naive_match(pattern, (p,))]
    if len({p for p, _ in want}) < len(want):
        with pytest.raises(partspec.SpecError) as err:
            partspec.select(text, tree)
        assert codes(err) == ["E704"]
        return
    got = partspec.select(text, tree)
    assert list(got) == [p for p, _ in want]
    assert all(got[p] is leaf for p, leaf in want)


@given(st.data())
def test_select_agrees_on_derived_patterns(data):
    tree = data.draw(S.param_trees(max_leaves=8))
    paths = leaf_paths(tree)
    path = data.draw(st.sampled_from(paths))[0]
    segs = tuple(path.split("/")) if path else ()
    text, pattern = pattern_text(data.draw(S.patterns_for(segs)))
    text_ex, excluded = pattern_text(data.draw(S.patterns_for(segs)))
    text = f"{text} except {text_ex}"
    want = [
        p for p, _ in paths if S.naive_match(pattern, (p,)) and not S.naive_match(excluded, (p,))
    ]
    if len(set(want)) < len(want):
        return
    assert list(partspec.select(text, tree)) == want


@given(S.param_trees(max_leaves=8))
def test_replace_identity_is_equal(tree):
    new = partspec.replace("**", tree, lambda x: x)
    assert jax.tree.structure(new) == jax.tree.structure(tree)
    assert all(a is b for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(tree), strict=True))
    new = partspec.replace("**", tree, lambda path, x: x, with_path=True)
    assert jax.tree.structure(new) == jax.tree.structure(tree)


@given(st.data())
def test_replace_changes_exactly_the_selected_leaves(data):
    tree = data.draw(S.param_trees(max_leaves=8))
    path = data.draw(st.sampled_from(leaf_paths(tree)))[0]
    pattern, ast_pattern = pattern_text(
        data.draw(S.patterns_for(tuple(path.split("/")) if path else ()))
    )
    matched = {p for p, _ in leaf_paths(tree) if S.naive_match(ast_pattern, (p,))}
    if not matched:
        with pytest.raises(partspec.SpecError):
            partspec.replace(pattern, tree, lambda x: x)
        return
    new = partspec.replace(pattern, tree, lambda p, x: f"new:{p}", with_path=True)
    for (p, old), (q, leaf) in zip(leaf_paths(tree), leaf_paths(new), strict=True):
        assert p == q
        assert leaf == f"new:{p}" if p in matched else leaf is old


# ---------------------------------------------------------------- package and docs


def test_surgery_names_are_lazy():
    code = (
        "import sys, partspec\n"
        "assert 'jax' not in sys.modules\n"
        "assert {'select', 'replace', 'transfer', 'reset_state', 'TransferReport'} "
        "<= set(partspec.__all__)\n"
        "assert 'jax' not in sys.modules\n"
        "partspec.select\n"
        "assert 'jax' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    import partspec.tools.surgery

    assert partspec.select is partspec.tools.surgery.select
    assert partspec.TransferReport is partspec.tools.surgery.TransferReport


def test_docs_examples_run():
    text = (ROOT / "docs" / "surgery.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 5
    printed = []
    for i, block in enumerate(blocks):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"docs/surgery.md block {i}", "exec"), {})
        printed.append(out.getvalue())
    # The report the transfer example prints is the one the page shows.
    shown = re.search(r"prints\n\n```text\n(.*?)```", text, re.DOTALL)
    assert shown is not None
    assert shown.group(1) in printed


# ---------------------------------------------------------------- where clauses


WHERE_TREE = {
    "a": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3), "scale": jnp.ones(3, jnp.bfloat16)},
    "b": {"kernel": jnp.ones((3, 3))},
}


def test_select_and_replace_honour_where() -> None:
    """`replace('a/** where ndim > 1', ...)` zeroed 1-D leaves: the clause was ignored."""
    assert sorted(partspec.select("** where ndim > 1", WHERE_TREE)) == ["a/kernel", "b/kernel"]
    assert sorted(partspec.select('a/** where dtype == "bfloat16"', WHERE_TREE)) == ["a/scale"]
    new = partspec.replace("a/** where ndim > 1", WHERE_TREE, jnp.zeros_like)
    assert float(new["a"]["kernel"].sum()) == 0.0
    assert float(new["a"]["bias"].sum()) == 3.0  # 1-D: untouched
    assert new["a"]["bias"] is WHERE_TREE["a"]["bias"]
    with pytest.raises(partspec.SpecError) as err:
        partspec.replace("a/** where ndim > 5", WHERE_TREE, jnp.zeros_like)
    assert err.value.diagnostics[0].code == "E701"


@given(
    st.sampled_from(
        ["ndim > 1", "ndim <= 1", "size >= 3 and shape[-1] == 3", 'dtype != "float32"']
    ),
    st.sampled_from(["**", "a/**", "*/kernel", "** except b/**"]),
)
def test_select_equals_the_rule_it_would_be(cond: str, pattern: str) -> None:
    """A selector selects exactly the leaves a rule with that left side would own."""
    spec = f"{pattern} where {cond} -> sgd(0.1) as picked\n** -> frozen"
    try:
        plan = partspec.compile(spec, WHERE_TREE)
    except partspec.SpecError as err:  # nothing picked, so nothing trains (E502)
        assert [d.code for d in err.diagnostics] == ["E502"], err
        owned: set[str] = set()
    else:
        owned = {p for p, lab in leaf_paths(plan.labels) if lab == "picked"}
    assert set(partspec.select(f"{pattern} where {cond}", WHERE_TREE)) == owned


def test_transfer_and_reset_state_honour_where() -> None:
    src = jax.tree.map(lambda x: x * 7, WHERE_TREE)
    new, report = partspec.transfer(src, WHERE_TREE, "** where ndim > 1")
    assert sorted(dst for _, dst in report.copied) == ["a/kernel", "b/kernel"]
    assert float(new["a"]["bias"][0]) == 1.0 and float(new["a"]["kernel"][0, 0]) == 7.0
    plan = partspec.compile("** -> adam(0.1)", WHERE_TREE)
    grads = jax.tree.map(jnp.ones_like, WHERE_TREE)
    _, state = plan.tx.update(grads, plan.tx.init(WHERE_TREE), WHERE_TREE)
    state = partspec.reset_state(plan, state, WHERE_TREE, pattern="a/** where ndim == 1")
    mu = partspec.select("**/mu/**", state)
    first = {k.rsplit("/", 1)[1]: float(v.ravel()[0]) for k, v in mu.items() if "/a/" in k}
    assert first == {"bias": 0.0, "kernel": pytest.approx(0.1), "scale": 0.0}


@pytest.mark.parametrize(
    ("pattern", "code"),
    [
        ('** where dtype == "float33"', "E419"),  # an unknown dtype: an error, never ignored
        ('** where ndim == "2"', "E418"),
        ("** where nope > 1", "E301"),
        ("a -> frozen", "E100"),  # a whole rule is not a selector
    ],
)
def test_bad_where_clauses_are_errors(pattern: str, code: str) -> None:
    for call in (
        lambda: partspec.select(pattern, WHERE_TREE),
        lambda: partspec.replace(pattern, WHERE_TREE, jnp.zeros_like),
        lambda: partspec.transfer(WHERE_TREE, WHERE_TREE, pattern),
    ):
        with pytest.raises(partspec.SpecError) as err:
            call()
        (d,) = err.value.diagnostics
        assert d.code == code
        assert d.filename == "<pattern>" and d.source_line == pattern


def test_explain_leaves_honours_where(tmp_path: Path) -> None:
    from partspec.tools.cli import main

    (tmp_path / "s.pspec").write_text("** -> adam(1e-3)\n")
    tree = tmp_path / "t.json"
    tree.write_text(
        '[{"path": "a/kernel", "shape": [2, 3]}, {"path": "a/bias", "shape": [3]},'
        ' {"path": "a/s", "shape": [3], "dtype": "float4_e2m1fn"}]'
    )
    out = io.StringIO()
    args = ["explain", str(tmp_path / "s.pspec"), "--tree", str(tree), "--format", "json"]
    assert main([*args, "--leaves", "** where ndim > 1"], out=out) == 0
    import json

    assert [o["path"] for o in json.loads(out.getvalue())["owners"]] == ["a/kernel"]
    assert main([*args, "--leaves", '** where dtype == "float33"'], out=io.StringIO()) == 2
