"""Paths are the same whatever the container or leaf type (design: Paths)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

import partspec
from partspec.jax.tree import leaf_paths

SPEC = """
backbone/**          -> frozen
head/{kernel,bias}   -> adam(1e-3)
layers/{0..1}/kernel -> sgd(0.1)
**                   -> sgd(0.01) as rest
"""


def _labels_by_path(tree: object) -> dict[str, str]:
    plan = partspec.compile(SPEC, tree)
    paths = [p for p, _ in leaf_paths(tree)]
    return dict(zip(paths, jax.tree.leaves(plan.labels), strict=True))


EXPECTED = {
    "backbone/dense/kernel": "frozen",
    "head/kernel": "adam(0.001)",
    "head/bias": "adam(0.001)",
    "layers/0/kernel": "sgd(0.1)",
    "layers/1/bias": "rest",
}


def _nested(leaf: object) -> dict[str, object]:
    return {
        "backbone": {"dense": {"kernel": leaf}},
        "head": {"kernel": leaf, "bias": leaf},
        "layers": [{"kernel": leaf}, {"bias": leaf}],
    }


@pytest.mark.parametrize(
    "leaf",
    [jnp.zeros(2), np.zeros(2, np.float32), jax.ShapeDtypeStruct((2,), jnp.float32), 0.0],
    ids=["jax", "numpy", "shape_dtype_struct", "python_float"],
)
def test_leaf_type_does_not_change_labels(leaf: object) -> None:
    assert _labels_by_path(_nested(leaf)) == EXPECTED


def test_frozen_dict_and_tuples() -> None:
    from flax.core import FrozenDict

    tree = FrozenDict(
        backbone={"dense": {"kernel": jnp.zeros(1)}},
        head=FrozenDict(kernel=jnp.zeros(1), bias=jnp.zeros(1)),
        layers=({"kernel": jnp.zeros(1)}, {"bias": jnp.zeros(1)}),
    )
    plan = partspec.compile(SPEC, tree)
    assert type(plan.labels) is FrozenDict
    assert type(plan.labels["head"]) is FrozenDict
    assert type(plan.labels["layers"]) is tuple
    assert _labels_by_path(tree) == EXPECTED


def test_dataclasses_and_named_tuples_use_attribute_names() -> None:
    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Head:
        kernel: jax.Array
        bias: jax.Array

    class Model(NamedTuple):
        backbone: dict
        head: Head
        layers: list

    tree = Model(
        {"dense": {"kernel": jnp.zeros(1)}},
        Head(jnp.zeros(1), jnp.zeros(1)),
        [{"kernel": jnp.zeros(1)}, {"bias": jnp.zeros(1)}],
    )
    plan = partspec.compile(SPEC, tree)
    assert isinstance(plan.labels, Model) and isinstance(plan.labels.head, Head)
    assert _labels_by_path(tree) == EXPECTED


def test_nnx_state_paths_skip_variables() -> None:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.kernel = nnx.Param(jnp.zeros(2))

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.backbone = nnx.Linear(2, 2, rngs=rngs)
            self.head = nnx.Linear(2, 1, rngs=rngs)

    state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    paths = [p for p, _ in leaf_paths(state)]
    assert paths == ["backbone/bias", "backbone/kernel", "head/bias", "head/kernel"]
    plan = partspec.compile("backbone/** -> frozen\nhead/* -> adam(1e-3)", state)
    assert jax.tree.structure(plan.labels) == jax.tree.structure(state)
    assert jax.tree.leaves(plan.labels) == ["frozen", "frozen", "adam(0.001)", "adam(0.001)"]


def test_equinox_module_attributes() -> None:
    import equinox as eqx

    class Net(eqx.Module):
        backbone: eqx.nn.Linear
        head: eqx.nn.Linear

    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    net = Net(eqx.nn.Linear(2, 2, key=key1), eqx.nn.Linear(2, 1, key=key2))
    params = eqx.filter(net, eqx.is_array)
    assert [p for p, _ in leaf_paths(params)] == [
        "backbone/weight",
        "backbone/bias",
        "head/weight",
        "head/bias",
    ]
    plan = partspec.compile("backbone/** -> frozen\nhead/* -> sgd(0.1)", params)
    assert jax.tree.leaves(plan.labels) == ["frozen", "frozen", "sgd(0.1)", "sgd(0.1)"]
    # The label tree is itself a callable module: optax must not mistake it for a function.
    state = plan.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = plan.tx.update(grads, state, params)
    assert jnp.all(updates.backbone.weight == 0) and jnp.all(updates.head.weight == -0.1)


def test_haiku_module_names_span_segments() -> None:
    tree = {"mlp/~/linear_1": {"w": jnp.zeros(1), "b": jnp.zeros(1)}}
    assert [p for p, _ in leaf_paths(tree)] == ["mlp/~/linear_1/b", "mlp/~/linear_1/w"]
    plan = partspec.compile("mlp/~/linear_1/w -> frozen\n** -> sgd(0.1)", tree)
    assert plan.labels == {"mlp/~/linear_1": {"w": "frozen", "b": "sgd(0.1)"}}


def test_a_single_array_is_the_empty_path() -> None:
    plan = partspec.compile("** -> sgd(0.1)", jnp.zeros(3))
    assert plan.labels == "sgd(0.1)"


def test_params_from_eval_shape_need_no_memory() -> None:
    import flax.linen as nn

    model = nn.Dense(4)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3))))
    plan = partspec.compile("params/kernel -> frozen\n** -> adam(1e-3)", shapes)
    assert plan.labels == {"params": {"kernel": "frozen", "bias": "adam(0.001)"}}


def test_a_class_registered_as_a_pytree_later_is_a_node_from_then_on() -> None:
    """A type-keyed cache of 'this type is a leaf' went stale when the type was registered."""

    class Pair:
        def __init__(self, a: object, b: object) -> None:
            self.a, self.b = a, b

    tree = {"p": Pair(jnp.ones(2), jnp.ones(3)), "w": jnp.ones(1)}
    before = partspec.compile("** -> sgd(0.1)", tree)
    assert [p for p, _ in leaf_paths(tree)] == ["p", "w"]  # an unregistered class: a leaf
    assert before.labels["p"] == "sgd(0.1)"
    jax.tree_util.register_pytree_with_keys(
        Pair,
        lambda p: (
            ((jax.tree_util.GetAttrKey("a"), p.a), (jax.tree_util.GetAttrKey("b"), p.b)),
            None,
        ),
        lambda _, children: Pair(*children),
    )
    assert [p for p, _ in leaf_paths(tree)] == ["p/a", "p/b", "w"]
    after = partspec.compile("p/a -> frozen\n** -> sgd(0.1)", tree)
    assert (after.labels["p"].a, after.labels["p"].b) == ("frozen", "sgd(0.1)")


def test_the_kind_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from partspec.jax import tree as tree_mod

    monkeypatch.setattr(tree_mod, "MAX_KIND_CACHE", 20)
    classes = [
        jax.tree_util.register_dataclass(
            dataclasses.make_dataclass(f"D{i}", [("x", object)]), data_fields=["x"], meta_fields=[]
        )
        for i in range(50)
    ]
    for cls in classes:
        assert [p for p, _ in leaf_paths({"k": cls(jnp.ones(1))})] == ["k/x"]
    assert len(tree_mod._kind_cache) <= 20


class _Pair(NamedTuple):
    left: object
    right: object


def _mixed_trees() -> object:
    from hypothesis import strategies as st

    from tests.strategies import keys

    def extend(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return st.one_of(
            st.dictionaries(keys, children, max_size=4),
            st.dictionaries(st.integers(-3, 3), children, max_size=3),  # non-str keys
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.tuples(children, children).map(lambda p: _Pair(*p)),
        )

    leaves = st.one_of(st.just(None), st.just(np.zeros(2, np.float32)), st.floats(0, 1))
    return st.recursive(leaves, extend, max_leaves=16)


@given(_mixed_trees())
def test_leaf_segments_are_jax_key_paths_in_jax_order(tree: object) -> None:
    """The inline walk of plain containers (a dict's keys sorted, None empty) gives
    exactly what ``jax.tree_util.tree_flatten_with_path`` does, leaf for leaf."""
    from partspec.jax.tree import key_text, leaf_segments

    expected = [
        (tuple(key_text(k) for k in path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]
    got = leaf_segments(tree)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert all(a is b for (_, a), (_, b) in zip(got, expected))
