"""partspec.jax.partition: optax.partition's updates, with a single optimizer's state layout."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partspec.jax.optimizers import frozen, frozen_until
from partspec.jax.partition import (
    GroupState,
    Leaves,
    label_states,
    lockstep_keys,
    partition,
    with_label_states,
)

#: Label actions: same-shaped ones (adam at two rates, frozen_until at two steps) share
#: a group; clip_by_global_norm checks each label still sees only its own leaves.
ACTIONS: dict[str, Any] = {
    "adam1": lambda: optax.adam(1e-2),
    "adam2": lambda: optax.adam(3e-3, b1=0.8),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "sgdm": lambda: optax.sgd(0.1, momentum=0.9),
    "sgdm2": lambda: optax.sgd(0.05, momentum=0.5, nesterov=True),
    "clip": lambda: optax.chain(optax.clip_by_global_norm(0.01), optax.sgd(1.0)),
    "frozen": frozen,
    "until1": lambda: frozen_until(1, optax.adam(1e-2)),
    "until2": lambda: frozen_until(2, optax.adam(2e-2)),
    "until2b": lambda: frozen_until(2, optax.adam(5e-3)),
    # A counter that reads the gradients: never shared, whatever the other labels do.
    "finite": lambda: optax.apply_if_finite(optax.adam(1e-2), 2),
    "finite2": lambda: optax.apply_if_finite(optax.adam(3e-2), 2),
    # Noise keys: shared from the same seed, not from another.
    "noise0": lambda: optax.chain(optax.add_noise(0.1, 0.5, 0), optax.sgd(0.1)),
    "noise0b": lambda: optax.chain(optax.add_noise(0.1, 0.5, 0), optax.sgd(0.3)),
    "noise1": lambda: optax.chain(optax.add_noise(0.1, 0.5, 1), optax.sgd(0.1)),
    "sched": lambda: optax.adam(optax.linear_schedule(1e-2, 0.0, 4)),
    # Two schedules of one shape in one group: under jit, each label's scalar work must
    # round as optax.partition's does.
    "cos": lambda: optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 9)),
    "cos10": lambda: optax.adam(
        lambda c: 10 * optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 9)(c)
    ),
}


@st.composite
def labelled_trees(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A nested dict of small float arrays and a label for each leaf."""
    n = draw(st.integers(1, 8))
    labels = draw(st.lists(st.sampled_from(sorted(ACTIONS)), min_size=n, max_size=n))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    params: dict[str, Any] = {}
    label_tree: dict[str, Any] = {}
    for i, lab in enumerate(labels):
        depth = draw(st.integers(0, 2))
        path = [f"m{draw(st.integers(0, 2))}" for _ in range(depth)] + [f"w{i}"]
        node, lnode = params, label_tree
        for seg in path[:-1]:
            node = node.setdefault(seg, {})
            lnode = lnode.setdefault(seg, {})
        shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        node[path[-1]] = jnp.asarray(rng.normal(size=shape), jnp.float32)
        lnode[path[-1]] = lab
    return params, label_tree


def _run(tx: optax.GradientTransformation, params: Any, steps: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    state = tx.init(params)
    out = []
    for _ in range(steps):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out


@settings(max_examples=60)  # a jit compile of two partitions per example
@given(labelled_trees(), st.integers(0, 1000))
def test_updates_equal_optax_partition_bit_for_bit(tree: Any, seed: int) -> None:
    params, labels = tree
    used = set(jax.tree_util.tree_leaves(labels))
    transforms = {lab: ACTIONS[lab]() for lab in sorted(used)}
    ours = _run(partition(transforms, lambda _: labels), params, 8, seed)
    theirs = _run(optax.partition(transforms, lambda _: labels), params, 8, seed)
    for a, b in zip(ours, theirs):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
            assert np.signbit(np.asarray(x)).tolist() == np.signbit(np.asarray(y)).tolist()


@settings(max_examples=60)
@given(labelled_trees(), st.integers(0, 1000))
def test_init_and_update_in_one_jit_equal_optax_partition_bit_for_bit(tree: Any, seed: int) -> None:
    """A first step jitted with its init (a TrainState made inside the step): the counts
    are constants to XLA, which folds each label's scalar work at compile time. With
    stacked counts split behind an optimization barrier it could not, and the head's
    first Adam step differed from optax.partition's in the last bit."""
    params, labels = tree
    used = set(jax.tree_util.tree_leaves(labels))
    transforms = {lab: ACTIONS[lab]() for lab in sorted(used)}
    rng = np.random.default_rng(seed)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)

    @jax.jit
    def first(grads: Any) -> Any:
        out = []
        for tx in (partition(transforms, lambda _: labels), optax.partition(transforms, labels)):
            updates, _ = tx.update(grads, tx.init(params), params)
            out.append(updates)
        return out

    ours, theirs = first(grads)
    for x, y in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@settings(max_examples=60)
@given(labelled_trees(), st.integers(0, 1000))
def test_labels_share_a_group_exactly_when_their_step_counts_move_in_lockstep(
    tree: Any, seed: int
) -> None:
    params, labels = tree
    used = sorted(set(jax.tree_util.tree_leaves(labels)))
    transforms = {lab: ACTIONS[lab]() for lab in used}
    state = partition(transforms, lambda _: labels).init(params)
    n_leaves = len(jax.tree_util.tree_leaves(params))
    mu_entries = scalars = 0
    for group in state.groups.values():
        assert isinstance(group, GroupState)
        for x in jax.tree_util.tree_leaves(group.inner, is_leaf=lambda x: isinstance(x, Leaves)):
            if isinstance(x, Leaves):
                mu_entries += len(jax.tree_util.tree_leaves(x))
            else:
                scalars += 1
    # No placeholders: at most two mirrors (adam: mu and nu) of each parameter leaf, and
    # each group's counters once.
    assert mu_entries <= 2 * n_leaves
    assert scalars <= sum(
        len(jax.tree_util.tree_leaves(transforms[g.labels[0]].init(Leaves({}))))
        for g in state.groups.values()
    )
    shapes = {
        lab: jax.tree_util.tree_structure(tx.init(Leaves({}))) for lab, tx in transforms.items()
    }
    keys = dict(zip(used, lockstep_keys([transforms[lab] for lab in used], ["float32"])))
    groups_of = {lab: name for name, g in state.groups.items() for lab in g.labels}
    for a in used:
        for b in used:
            share = shapes[a] == shapes[b] and keys[a] is not None and keys[a] == keys[b]
            assert (groups_of[a] == groups_of[b]) == (share or a == b), (a, b)
    # And what sharing claims holds: under optax.partition, each label with its own
    # counters, the counters of one group's labels stay equal, whatever the gradients
    # (some not finite, which apply_if_finite counts).
    rng = np.random.default_rng(seed)
    tx = optax.partition(transforms, labels)
    theirs = tx.init(params)
    for _ in range(3):
        grads = jax.tree.map(
            lambda p: jnp.asarray(
                np.where(rng.random(p.shape) < 0.3, np.nan, rng.normal(size=p.shape)), p.dtype
            ),
            params,
        )
        _, theirs = tx.update(grads, theirs, params)
        for group in state.groups.values():
            counters = [_counters(theirs.inner_states[lab]) for lab in group.labels]
            for other in counters[1:]:
                for x, y in zip(counters[0], other):
                    np.testing.assert_array_equal(x, y)


def _counters(state: Any) -> list[np.ndarray]:
    """A state's leaves that mirror no parameter (under no dict key), keys as data."""
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        if not any(isinstance(k, jax.tree_util.DictKey) for k in path):
            key = jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
            out.append(np.asarray(jax.random.key_data(x) if key else x))
    return out


def test_lockstep_keys_share_rates_but_not_steps_seeds_or_gradient_counters() -> None:
    keys = lockstep_keys(
        [
            optax.adamw(1e-3, weight_decay=0.1),
            optax.adamw(7e-4, weight_decay=0.3, b1=0.8),
            optax.adamw(optax.cosine_decay_schedule(1e-3, 100), weight_decay=0.1),
            optax.adamw(optax.cosine_decay_schedule(5e-4, 200), weight_decay=0.3, b1=0.8),
            frozen_until(10, optax.adamw(1e-3)),
            frozen_until(20, optax.adamw(1e-3)),
            frozen_until(20, optax.adamw(5e-4, weight_decay=0.3)),
            optax.apply_if_finite(optax.adam(1e-3), 3),
            optax.chain(optax.add_noise(0.1, 0.5, 0), optax.sgd(0.1)),
            optax.chain(optax.add_noise(0.1, 0.5, 1), optax.sgd(0.1)),
        ]
    )
    adamw, adamw2, cosine, cosine2, until10, until20, until20b, finite, seed0, seed1 = keys
    assert adamw == adamw2 is not None
    assert cosine == cosine2 is not None  # a schedule's values are not in its count
    assert until10 != until20
    assert until20 == until20b is not None  # the rate is inside the cond, not in its count
    assert finite is None
    assert seed0 != seed1


def _counter(grow: bool = False, fail: bool = False) -> optax.GradientTransformation:
    """A step counter; ``grow``: its update returns a state of another structure;
    ``fail``: its update cannot be traced on its own."""

    def init(params: Any) -> Any:
        return {"count": jnp.zeros((), jnp.int32)}

    def update(updates: Any, state: Any, params: Any = None) -> Any:
        if fail:
            raise RuntimeError("needs the whole tree")
        new = {"count": state["count"] + 1}
        if grow:
            new["seen"] = state["count"]
        return updates, new

    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("odd", ["grow", "fail"])
def test_lockstep_keys_share_nothing_when_an_update_changes_its_state_or_fails(odd: str) -> None:
    """Two plain counters share a key; with one whose update changes its state's
    structure, or cannot be traced, in the same call, no transformation is keyed."""
    plain = lockstep_keys([_counter(), _counter()])
    assert plain[0] == plain[1] is not None
    odd_one = _counter(grow=odd == "grow", fail=odd == "fail")
    assert lockstep_keys([_counter(), _counter(), odd_one]) == [None, None, None]


def test_a_hundred_adam_labels_have_one_state_like_one_adam() -> None:
    params = {f"layer_{i}": {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)} for i in range(100)}
    labels = {f"layer_{i}": {"w": f"l{i}", "b": f"l{i}"} for i in range(100)}
    transforms = {f"l{i}": optax.adam(1e-3 * 0.9**i) for i in range(100)}
    ours = partition(transforms, lambda _: labels).init(params)
    one = optax.adam(1e-3).init(params)
    theirs = optax.partition(transforms, lambda _: labels).init(params)

    def nodes(t: Any) -> int:
        return int(jax.tree_util.tree_structure(t).num_nodes)

    assert nodes(ours) <= nodes(one) + 3  # PartitionState, its dict, one GroupState
    assert nodes(theirs) > 50 * nodes(one)  # what optax.partition costs
    (group,) = ours.groups.values()
    assert len(group.labels) == 100 and jnp.shape(group.inner[0].count) == ()

    def size(t: Any) -> int:
        return sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(t))

    assert size(ours) == size(one)  # one count, as one Adam has


def test_label_states_are_what_optax_partition_holds_without_placeholders() -> None:
    params = {"a": {"w": jnp.ones(2)}, "b": jnp.ones(3), "c": jnp.ones(1)}
    labels = {"a": {"w": "x"}, "b": "y", "c": "x"}
    transforms = {"x": optax.adam(0.1), "y": optax.adam(0.2)}
    tx = partition(transforms, lambda _: labels)
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    mine = label_states(state, params, lambda _: labels)
    assert set(mine) == {"x", "y"}
    assert mine["x"][0].mu.tree == {
        "a": {"w": pytest.approx(np.full(2, 0.1))},
        "c": 0.1 * jnp.ones(1),
    }
    assert int(mine["y"][0].count) == 1
    # Reset one label: its moments and its count, not the other's.
    fresh = transforms["y"].init(Leaves({"b": jnp.ones(3)}))
    state2 = with_label_states(state, {"y": fresh})
    again = label_states(state2, params, lambda _: labels)
    assert int(again["y"][0].count) == 0 and int(again["x"][0].count) == 1
    np.testing.assert_array_equal(again["y"][0].mu.tree["b"], np.zeros(3))
    np.testing.assert_array_equal(again["x"][0].mu.tree["c"], mine["x"][0].mu.tree["c"])


def test_paths_into_the_state_read_as_parameter_paths() -> None:
    params = {"enc": {"layer_0": {"kernel": jnp.ones(2)}}}
    tx = partition({"x": optax.adam(0.1)}, lambda t: jax.tree.map(lambda _: "x", t))
    state = tx.init(params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert "['enc']['layer_0']['kernel']" in paths[1]


def test_a_label_without_a_transformation_is_an_error() -> None:
    tx = partition({"x": optax.sgd(0.1)}, lambda t: {"a": "x", "b": "nope"})
    with pytest.raises(ValueError, match="nope"):
        tx.init({"a": jnp.ones(1), "b": jnp.ones(1)})


def test_scheduled_labels_sharing_a_group_round_as_optax_partition_under_jit() -> None:
    """examples/param_groups.py: adam(sched) and adam(10 * sched) share a group. When
    their counts were one stacked array, XLA computed both schedules as one vector
    operation, and some steps differed from optax.partition in the last bit."""
    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 50)
    params = {
        "backbone": {"w": jnp.full((4, 4), 0.3), "b": jnp.zeros(4)},
        "head": {"w": jnp.full((4, 1), 0.1), "b": jnp.zeros(1)},
    }
    labels = {"backbone": {"w": "base", "b": "base"}, "head": {"w": "head", "b": "head"}}
    transforms = {"base": optax.adam(sched), "head": optax.adam(lambda c: 10 * sched(c))}
    ours = _run(partition(transforms, lambda _: labels), params, 30, 0)
    theirs = _run(optax.partition(transforms, labels), params, 30, 0)
    for a, b in zip(ours, theirs):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_label_reset_alone_leaves_its_group_and_trains_as_under_optax_partition() -> None:
    """Labels in lockstep share one count; resetting one of them alone must not give it
    the others' count (Adam's bias correction would be off): it gets a group of its own,
    and its updates stay those of optax.partition with that label's state reset."""
    params = {"a": jnp.full(3, 0.5), "b": jnp.full(2, -0.2), "c": jnp.full(1, 0.1)}
    labels = {"a": "x", "b": "y", "c": "z"}
    transforms = {"x": optax.adam(0.1), "y": optax.adam(0.2), "z": optax.adam(0.3)}
    ours_tx = partition(transforms, lambda _: labels)
    theirs_tx = optax.partition(transforms, labels)
    ours, theirs = ours_tx.init(params), theirs_tx.init(params)
    rng = np.random.default_rng(0)

    def step(ours: Any, theirs: Any) -> tuple[Any, Any]:
        g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        u1, ours = jax.jit(ours_tx.update)(g, ours, params)
        u2, theirs = jax.jit(theirs_tx.update)(g, theirs, params)
        for x, y in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        return ours, theirs

    for _ in range(3):
        ours, theirs = step(ours, theirs)
    assert [g.labels for g in ours.groups.values()] == [("x", "y", "z")]
    fresh = transforms["y"].init(Leaves({"b": jnp.zeros(2)}))
    ours = with_label_states(ours, {"y": fresh})
    inner = dict(theirs.inner_states)
    inner["y"] = inner["y"]._replace(
        inner_state=transforms["y"].init(
            jax.tree.map(lambda p, lab: p if lab == "y" else optax.MaskedNode(), params, labels)
        )
    )
    theirs = optax.PartitionState(inner)
    assert sorted(g.labels for g in ours.groups.values()) == [("x", "z"), ("y",)]
    counts = {
        lab: int(s[0].count) for lab, s in label_states(ours, params, lambda _: labels).items()
    }
    assert counts == {"x": 3, "y": 0, "z": 3}
    for _ in range(3):
        ours, theirs = step(ours, theirs)
    # Every label reset together with the same count: one group again is not needed,
    # but the labels given equal counts stay together.
    all_fresh = {
        lab: transforms[lab].init(
            Leaves({k: jnp.zeros_like(v) for k, v in params.items() if labels[k] == lab})
        )
        for lab in ("x", "z")
    }
    again = with_label_states(ours, all_fresh)
    assert sorted(g.labels for g in again.groups.values()) == [("x", "z"), ("y",)]


@pytest.mark.parametrize("steps", [0, 2])
def test_a_reset_has_the_same_structure_traced_as_run(steps: int) -> None:
    """A checkpoint saved after a reset restores into a target made by the same reset
    under jax.eval_shape: which groups a reset makes must not depend on the values (at
    step 0 the fresh count equals the group's)."""
    params = {"a": jnp.ones(3), "b": jnp.ones(2), "c": jnp.ones(1)}
    labels = {"a": "x", "b": "y", "c": "z"}
    transforms = {lab: optax.adam(0.1 * (i + 1)) for i, lab in enumerate("xyz")}
    tx = partition(transforms, lambda _: labels)

    def reset(state: Any) -> Any:
        return with_label_states(state, {"y": transforms["y"].init(Leaves({"b": jnp.ones(2)}))})

    state = tx.init(params)
    for _ in range(steps):
        _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    run = reset(state)
    traced = jax.eval_shape(reset, state)
    assert jax.tree.structure(run) == jax.tree.structure(traced)
    assert sorted(g.labels for g in run.groups.values()) == [("x", "z"), ("y",)]
    # A state edited in its mirrors only, its count the very array it had, stays put.
    mine = label_states(state, params, lambda _: labels)["y"]
    edited = (mine[0]._replace(mu=Leaves({"b": jnp.zeros(2)})), *mine[1:])
    kept = with_label_states(state, {"y": edited})
    assert [g.labels for g in kept.groups.values()] == [("x", "y", "z")]


@st.composite
def layered_specs(draw: Any) -> tuple[str, dict[str, Any]]:
    """A spec of the shapes recipes use (a rate per layer from a capture, frozen,
    frozen until at a few steps, momentum, a catch-all) over a small layered tree."""
    n = draw(st.integers(1, 4))
    params: dict[str, Any] = {
        "embed": {"w": jnp.full((3, 2), 0.1)},
        "layers": {str(i): {"w": jnp.full((2, 2), 0.2), "b": jnp.zeros(2)} for i in range(n)},
        "head": {"w": jnp.full((2, 3), 0.3), "b": jnp.zeros(3)},
    }
    lr = st.sampled_from(["1e-3", "3e-3", "0.01"])
    pool = [
        f"layers/<i>/** -> adamw({draw(lr)} * 0.9 ** i, weight_decay=0.1)",
        f"layers/<i>/b -> sgd({draw(lr)} * (i + 1), momentum=0.9)",
        f"head/** -> frozen until {draw(st.integers(0, 3))} then adam({draw(lr)})",
        f"head/w -> frozen until {draw(st.integers(0, 3))} then adam({draw(lr)}, b1=0.8)",
        "embed/** -> frozen",
        f"embed/** -> adam({draw(lr)})",
        f"layers/<i>/w -> frozen until {draw(st.integers(0, 3))} then adam({draw(lr)} / (i + 1))",
    ]
    rules = draw(st.lists(st.sampled_from(pool), unique=True, max_size=5))
    return "\n".join([*rules, f"** -> adam({draw(lr)})"]) + "\n", params


@settings(max_examples=25)  # two jit compiles per example: bounded in every profile
@given(layered_specs(), st.integers(0, 1000))
def test_compiled_specs_update_as_the_unfused_per_label_partition(
    case: tuple[str, dict[str, Any]], seed: int
) -> None:
    """Whatever groups and shared counts compile makes, a spec's optimizer updates every
    leaf as optax.partition over the same per-label transformations, bit for bit."""
    import partspec

    text, params = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        plan = partspec.compile(text, params)
    ours = _run(plan.tx, params, 4, seed)
    theirs = _run(optax.partition(plan.transforms, plan.labels), params, 4, seed)
    for a, b in zip(ours, theirs):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
            assert np.signbit(np.asarray(x)).tolist() == np.signbit(np.asarray(y)).tolist()
