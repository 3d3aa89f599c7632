"""Orbax checkpoints of train states whose optimizer comes from a spec (docs/checkpoints.md).

The optimizer state of a spec is a partspec ``PartitionState`` of label groups. These tests
pin down what Orbax does with it: a round trip is bit-identical; a label named with `as`
survives an edit of its learning rate, and the restored Adam moments are used; an edit
that changes the state's structure makes Orbax raise, and ``partspec.tools.diff`` predicts it
without a checkpoint (a leaf that loses its state included); a change Orbax accepts
silently (a dtype change) is flagged by ``partspec.tools.diff`` all the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax.training import train_state

import partspec
from partspec.jax.partition import GroupState, PartitionState, PerLabel
from partspec.tools.diff import diff


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        x = nn.relu(nn.Dense(8, name="backbone")(x))
        return nn.Dense(3, name="head")(x)


MODEL = Classifier()
X = jax.random.normal(jax.random.PRNGKey(1), (32, 5))
Y = jnp.arange(32) % 3


def init_params() -> Any:
    return MODEL.init(jax.random.PRNGKey(0), X[:1])["params"]


PARAMS = init_params()
SHAPES = jax.eval_shape(init_params)  # the structure: what diff() and restore targets need


def create(tx: optax.GradientTransformation) -> train_state.TrainState:
    return train_state.TrainState.create(apply_fn=MODEL.apply, params=PARAMS, tx=tx)


def tx_of(spec: str) -> optax.GradientTransformation:
    return partspec.compile(spec, PARAMS).tx


@jax.jit
def step(state: train_state.TrainState) -> train_state.TrainState:
    def loss_fn(p: Any) -> Any:
        logits = state.apply_fn({"params": p}, X)
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))


def train(state: train_state.TrainState, n: int) -> train_state.TrainState:
    for _ in range(n):
        state = step(state)
    return state


def bits(tree: Any) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


def save(directory: Path, state: train_state.TrainState) -> None:
    with ocp.CheckpointManager(directory) as mngr:
        mngr.save(int(state.step), args=ocp.args.StandardSave(state))
        mngr.wait_until_finished()


def restore(directory: Path, abstract: Any) -> Any:
    with ocp.CheckpointManager(directory) as mngr:
        return mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(abstract))


FROZEN_ADAM = "backbone/** -> frozen\nhead/** -> adam(1e-3)"
NAMED = "backbone/** -> frozen\nhead/** -> adam(1e-3) as head"
NAMED_EDITED = "backbone/** -> frozen\nhead/** -> adam(1e-4) as head"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``saved(spec)``: (checkpoint directory, the state saved) after 5 steps under ``spec``."""
    cache: dict[str, tuple[Path, train_state.TrainState]] = {}

    def get(spec: str) -> tuple[Path, train_state.TrainState]:
        if spec not in cache:
            state = train(create(tx_of(spec)), 5)
            directory = tmp_path_factory.mktemp("ckpt") / "run"
            save(directory, state)
            cache[spec] = (directory, state)
        return cache[spec]

    return get


# ---------------------------------------------------------------- (a) round trip


def test_train_state_round_trip_is_bit_identical(saved: Any) -> None:
    spec = "backbone/** -> sgd(0.1, momentum=0.9)\nhead/** -> adam(1e-3) as head"
    directory, state = saved(spec)
    tx = tx_of(spec)  # a fresh compile of the same spec, as a restarted job would do
    abstract = jax.eval_shape(lambda: create(tx))
    assert isinstance(abstract.params["head"]["kernel"], jax.ShapeDtypeStruct)
    restored = restore(directory, abstract)
    assert isinstance(restored, train_state.TrainState) and restored.tx is tx
    assert int(restored.step) == int(state.step) == 5
    assert bits(restored.params) == bits(state.params)
    assert bits(restored.opt_state) == bits(state.opt_state)
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(state.opt_state)
    assert sorted(restored.opt_state.groups) == ["head", "sgd(0.1, momentum=0.9)"]
    # Training goes on exactly as if it had never stopped.
    assert bits(train(restored, 3).params) == bits(train(state, 3).params)


def test_plain_dict_round_trip_with_standard_checkpointer(tmp_path: Path) -> None:
    plan = partspec.compile(FROZEN_ADAM, PARAMS)
    state = train(create(plan.tx), 2)
    item = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "dict", item)
        ckpt.wait_until_finished()
        abstract = {
            "params": SHAPES,
            "opt_state": jax.eval_shape(plan.tx.init, SHAPES),
            "step": jax.ShapeDtypeStruct((), jnp.int32),
        }
        restored = ckpt.restore(tmp_path / "dict", abstract)
    assert bits(restored) == bits(item)
    assert isinstance(restored["opt_state"], PartitionState)
    # Frozen leaves have no optimizer state, in memory or on disk.
    assert restored["opt_state"].groups["frozen"] == GroupState(("frozen",), optax.EmptyState())


# ---------------------------------------------------------------- (b) named labels


def test_named_label_survives_a_learning_rate_edit(saved: Any) -> None:
    directory, state = saved(NAMED)
    report = diff(NAMED, NAMED_EDITED, SHAPES)
    assert report.restorable and report.kept == ("frozen", "head")

    new_tx = tx_of(NAMED_EDITED)
    restored = restore(directory, jax.eval_shape(lambda: create(new_tx)))
    assert bits(restored.opt_state) == bits(state.opt_state)
    adam = restored.opt_state.groups["head"].inner[0]
    assert int(adam.count) == 5

    # Training continues from the saved moments, at the new learning rate.
    resumed = step(restored)
    assert int(resumed.opt_state.groups["head"].inner[0].count) == 6
    assert bits(resumed.params) == bits(step(state.replace(tx=new_tx)).params)
    fresh = step(create(new_tx).replace(params=restored.params, step=restored.step))
    assert bits(resumed.params["head"]) != bits(fresh.params["head"])  # moments were used
    # Adam's update is linear in the learning rate: 1e-4 moves the head 10x less than 1e-3.
    old_rate = step(restored.replace(tx=tx_of(NAMED)))
    delta_new = resumed.params["head"]["kernel"] - restored.params["head"]["kernel"]
    delta_old = old_rate.params["head"]["kernel"] - restored.params["head"]["kernel"]
    np.testing.assert_allclose(10 * delta_new, delta_old, rtol=1e-3, atol=1e-9)
    # The backbone is frozen: bit-identical throughout.
    assert bits(resumed.params["backbone"]) == bits(PARAMS["backbone"])


# ---------------------------------------------------------------- (c) structure changes

#: (old spec, new spec, what changes): every edit here makes Orbax raise.
BREAKING = [
    pytest.param(FROZEN_ADAM, "backbone/** -> frozen\nhead/** -> adam(1e-4)", id="unnamed-lr"),
    pytest.param(
        "backbone/** -> frozen\nhead/** -> sgd(0.1)",
        "backbone/** -> frozen\nhead/** -> adam(1e-3)",
        id="sgd-to-adam",
    ),
    pytest.param(
        "backbone/** -> frozen\nhead/** -> sgd(0.1, momentum=0.9) as head",
        NAMED,
        id="named-sgd-to-adam",
    ),
    pytest.param(FROZEN_ADAM, "** -> adam(1e-3)", id="frozen-to-trainable"),
    pytest.param(
        "backbone/** -> frozen\nhead/bias -> frozen\nhead/** -> adam(1e-3) as head",
        NAMED,
        id="one-frozen-leaf-to-trainable",
    ),
    pytest.param(NAMED, "backbone/** -> frozen\nhead/** -> adamw(1e-3) as head", id="adamw"),
    pytest.param(
        "backbone/** -> adam(1e-3)\nhead/** -> adam(1e-3)",
        "backbone/** -> adam(1e-3)\nhead/** -> adam(1e-3) as head",
        id="split-group",
    ),
]


@pytest.mark.parametrize(("old", "new"), BREAKING)
def test_structure_change_is_predicted_and_orbax_raises(saved: Any, old: str, new: str) -> None:
    report = diff(old, new, SHAPES)
    assert not report.restorable
    involved = {*report.added, *report.removed, *report.changed}
    involved |= {r.old for r in report.renamed} | {r.new for r in report.renamed}
    assert involved

    directory, _ = saved(old)
    with pytest.raises(ValueError) as info:
        restore(directory, jax.eval_shape(lambda: create(tx_of(new))))
    message = str(info.value)
    # Orbax names a mismatched key path; the label in it is one diff() reported.
    assert "mismatch" in message or "do not match" in message, message
    # (a group of several labels is named by its first label and a digest of them all).
    assert any(f"'{lab}" in message or f".{lab}." in message for lab in involved), (
        involved,
        message,
    )


def test_orbax_messages_for_a_renamed_label(saved: Any) -> None:
    directory, _ = saved(FROZEN_ADAM)
    with pytest.raises(ValueError, match=r"Structure mismatch: Target path .*'adam\(0\.0001\)'"):
        restore(directory, jax.eval_shape(lambda: create(tx_of(FROZEN_ADAM.replace("3", "4")))))


# ---------------------------------------------------------------- silent changes


def test_orbax_casts_a_dtype_change_silently_and_diff_flags_it(saved: Any) -> None:
    new = 'backbone/** -> frozen\nhead/** -> adam(1e-3, mu_dtype="bfloat16") as head'
    report = diff(NAMED, new, SHAPES)
    assert not report.restorable
    assert {x.kind for x in report.state_differences} == {"dtype"}

    directory, state = saved(NAMED)
    restored = restore(directory, jax.eval_shape(lambda: create(tx_of(new))))  # no error
    mu = restored.opt_state.groups["head"].inner[0].mu["head"]["kernel"]
    saved_mu = state.opt_state.groups["head"].inner[0].mu["head"]["kernel"]
    assert mu.dtype == jnp.bfloat16 and saved_mu.dtype == jnp.float32
    assert mu.tobytes() != saved_mu.astype(jnp.float32).tobytes()  # precision is lost


def test_state_no_longer_needed_is_flagged_by_diff_and_orbax_raises(saved: Any) -> None:
    """Under optax.partition a leaf that lost its state restored silently (its saved moments
    dropped into a MaskedNode); with no placeholders in the state, Orbax now raises too."""
    new = "backbone/** -> frozen\nhead/bias -> frozen\nhead/** -> adam(1e-3) as head"
    report = diff(NAMED, new, SHAPES)
    assert not report.restorable
    assert {(x.path, x.kind) for x in report.state_differences} == {
        ("0/mu/head/bias", "only_old"),
        ("0/nu/head/bias", "only_old"),
    }

    directory, _ = saved(NAMED)
    with pytest.raises(ValueError, match=r"head\.bias"):
        restore(directory, jax.eval_shape(lambda: create(tx_of(new))))


# ---------------------------------------------------------------- diff agrees with Orbax

AGREE = [
    (NAMED, NAMED),
    (NAMED, NAMED_EDITED),
    (FROZEN_ADAM, FROZEN_ADAM),
    ("param lr = 1e-3\nbackbone/** -> frozen\nhead/** -> adam(lr)", None),
]


@pytest.mark.parametrize(("old", "new"), AGREE, ids=["same", "named-lr", "unnamed-same", "param"])
def test_restorable_means_orbax_restores_bit_for_bit(saved: Any, old: str, new: str | None) -> None:
    if new is None:  # the same spec, another value for its param
        report = diff(old, old, SHAPES, {"lr": 1e-3}, {"lr": 0.05})
        new_tx = partspec.compile(old, PARAMS, lr=0.05).tx
    else:
        report = diff(old, new, SHAPES)
        new_tx = tx_of(new)
    assert report.restorable
    directory, state = saved(old)
    restored = restore(directory, jax.eval_shape(lambda: create(new_tx)))
    assert bits(restored) == bits(state)


# ---------------------------------------------------------------- carrying state over


def carry_over(
    report: Any, old_plan: Any, old_opt_state: Any, new_plan: Any, new_opt_state: Any
) -> Any:
    """The recipe of docs/checkpoints.md: NEW's fresh state, with OLD's state where it fits."""
    old = old_plan.label_states(old_opt_state)
    carried = {lab: old[lab] for lab in report.kept}
    for rename in report.renamed:
        if rename.state_compatible:
            carried[rename.new] = old[rename.old]
    return new_plan.with_label_states(new_opt_state, carried)


@pytest.mark.parametrize(
    ("old", "new", "carried"),
    [
        (FROZEN_ADAM, "backbone/** -> frozen\nhead/** -> adam(1e-4)", {"adam(0.0001)"}),
        (
            "backbone/** -> sgd(0.1, momentum=0.9) as backbone\nhead/** -> adam(1e-3)",
            "backbone/** -> sgd(0.1, momentum=0.9) as backbone\nhead/** -> adamw(1e-3)",
            {"backbone"},
        ),
    ],
    ids=["compatible-rename", "kept-label"],
)
def test_carry_over_kept_labels_after_a_breaking_edit(
    saved: Any, old: str, new: str, carried: set[str]
) -> None:
    report = diff(old, new, SHAPES)
    assert not report.restorable
    directory, state = saved(old)
    restored = restore(directory, jax.eval_shape(lambda: create(tx_of(old))))  # under OLD
    old_plan, new_plan = partspec.compile(old, PARAMS), partspec.compile(new, PARAMS)
    new_tx = new_plan.tx
    opt_state = carry_over(
        report, old_plan, restored.opt_state, new_plan, new_tx.init(restored.params)
    )
    resumed = restored.replace(tx=new_tx, opt_state=opt_state)
    assert jax.tree.structure(opt_state) == jax.tree.structure(new_tx.init(PARAMS))
    saved_states = old_plan.label_states(state.opt_state)
    for lab, sub in new_plan.label_states(opt_state).items():
        if lab in carried:
            assert jax.tree.leaves(sub), lab
            old_lab = next((r.old for r in report.renamed if r.new == lab), lab)
            assert bits(sub) == bits(saved_states[old_lab])
    trained = step(resumed)  # and training goes on under NEW
    assert bits(trained.params["head"]) != bits(resumed.params["head"])


# ---------------------------------------------------------------- partspec 0.1's layout


def restore_old_layout(
    tmp_path: Path, old: Any, plan: partspec.Plan, old_tx: Any, *, refused: str
) -> Any:
    """Save ``old`` (a train state of an earlier layout); check that Orbax refuses it
    under today's target (no silent restore), then restore it under ``old_tx``."""
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "old", old)
        ckpt.wait_until_finished()
        with pytest.raises(ValueError, match=refused):
            ckpt.restore(tmp_path / "old", jax.eval_shape(lambda: create(plan.tx)))
        return ckpt.restore(tmp_path / "old", jax.eval_shape(lambda: create(old_tx)))


def test_a_checkpoint_of_the_old_layout_restores_and_upgrades_bit_for_bit(tmp_path: Path) -> None:
    """partspec 0.1 saved optax.partition states; they restore under plan.legacy_tx() and
    convert with plan.upgrade_state, and training goes on as it would have."""
    plan = partspec.compile(NAMED, PARAMS)
    old_tx = plan.legacy_tx()
    old = train(create(old_tx), 3)
    assert isinstance(old.opt_state, optax.PartitionState)
    restored = restore_old_layout(tmp_path, old, plan, old_tx, refused=r"groups|inner_states")
    with pytest.raises(TypeError, match="upgrade_state"):
        plan.partition_state(restored.opt_state)
    upgraded = plan.upgrade_state(restored.opt_state, restored.params)
    assert jax.tree.structure(upgraded) == jax.tree.structure(plan.tx.init(PARAMS))
    head = plan.label_states(upgraded)["head"][0]
    old_head = restored.opt_state.inner_states["head"].inner_state[0]
    assert int(head.count) == 3
    assert bits(head.mu["head"]) == bits(old_head.mu["head"])
    resumed = train(restored.replace(tx=plan.tx, opt_state=upgraded), 2)
    assert bits(resumed.params) == bits(train(old, 2).params)


THREE = (
    "backbone/kernel -> adam(1e-4) as bk\nbackbone/bias -> adam(2e-4) as bb\n"
    "head/** -> adam(1e-3) as head"
)


def test_a_checkpoint_of_the_0_2_layout_restores_and_upgrades_bit_for_bit(tmp_path: Path) -> None:
    """partspec 0.2 kept a step count per label (`.../count/LABEL`); today labels in
    lockstep share one. A 0.2 checkpoint restores under plan.legacy_tx("0.2") and
    converts with plan.upgrade_state: equal counts share again, a count that differs (a
    label reset alone in 0.2) keeps its own group, and training goes on as it would have."""
    plan = partspec.compile(THREE, PARAMS)
    old_tx = plan.legacy_tx("0.2")
    old = train(create(old_tx), 3)
    (group,) = old.opt_state.groups.values()
    count = group.inner[0].count
    assert isinstance(count, PerLabel) and sorted(count.values) == ["bb", "bk", "head"]
    # As if `bb` had been reset alone one step ago: its own count, 1.
    count.values["bb"] = jnp.ones_like(count.values["bb"])
    restored = restore_old_layout(tmp_path, old, plan, old_tx, refused=r"count|[Ss]tructure")
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    with pytest.raises(TypeError, match="upgrade_state"):
        plan.tx.update(grads, restored.opt_state, PARAMS)
    upgraded = plan.upgrade_state(restored.opt_state, restored.params)
    assert sorted(g.labels for g in upgraded.groups.values()) == [("bb",), ("bk", "head")]
    counts = {lab: int(s[0].count) for lab, s in plan.label_states(upgraded).items()}
    assert counts == {"bb": 1, "bk": 3, "head": 3}
    resumed = train(restored.replace(tx=plan.tx, opt_state=upgraded), 2)
    assert bits(resumed.params) == bits(train(restored, 2).params)
    with pytest.raises(ValueError, match=r"'0\.3'"):
        plan.legacy_tx("0.3")


def test_docs_checkpoints_code_blocks_run() -> None:
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "checkpoints.md").read_text(
        encoding="utf-8"
    )
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        if "def carry_over" in block:
            continue  # a recipe whose use is in comments; test_carry_over_* runs it
        exec(compile(block, f"docs/checkpoints.md block {i}", "exec"), {})
