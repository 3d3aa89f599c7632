"""The tools around a spec (diff, explain, surgery, sharded init) on the newer language:
captures, ``where``, ``frozen until`` and ``global``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import partspec
from partspec.tools.diff import GLOBAL_LABEL, diff
from partspec.tools.explain import explain
from partspec.tools.manifest import Leaf

LEAVES = [
    Leaf(("backbone", "kernel"), (8, 8), "float32"),
    Leaf(("backbone", "bias"), (8,), "float32"),
    Leaf(("layers", "0", "kernel"), (8, 8), "float32"),
    Leaf(("layers", "0", "bias"), (8,), "float32"),
    Leaf(("layers", "1", "kernel"), (8, 8), "float32"),
    Leaf(("layers", "1", "bias"), (8,), "float32"),
]

SPEC = """\
global clip_by_global_norm(1.0)
backbone/** -> frozen until 10 then sgd(0.01)
layers/<i>/* where ndim == 1 -> sgd(0.1)
layers/<i>/* -> adam(1e-3 * (i + 1)) as layer
"""


def params() -> dict:
    key = jax.random.PRNGKey(0)
    out: dict = {}
    for leaf in LEAVES:
        key, sub = jax.random.split(key)
        node = out
        for seg in leaf.path[:-1]:
            node = node.setdefault(seg, {})
        node[leaf.path[-1]] = jax.random.normal(sub, leaf.shape)
    return out


def test_explain_counts_per_capture_label_and_until_state() -> None:
    report = explain(SPEC, LEAVES)
    labels = {row["label"]: row for row in report["labels"]}
    assert set(labels) == {
        "frozen until 10 then sgd(0.01)",
        "sgd(0.1)",
        "layer[i=0]",
        "layer[i=1]",
    }
    assert labels["layer[i=1]"]["leaves"] == 1
    assert labels["layer[i=1]"]["parameters"] == 64
    assert labels["sgd(0.1)"]["leaves"] == 2
    # Adam: mu and nu (2 x 64 floats) plus its int32 count.
    assert labels["layer[i=0]"]["optimizer_state_bytes"] == 2 * 64 * 4 + 4
    # frozen until: the step counter, and sgd without momentum keeps nothing else.
    assert labels["frozen until 10 then sgd(0.01)"]["optimizer_state_bytes"] == 4
    rules = report["rules"]
    assert [r["leaves"] for r in rules] == [2, 2, 2]


def test_diff_sees_a_global_transform_added_or_dropped() -> None:
    without = SPEC.replace("global clip_by_global_norm(1.0)\n", "")
    report = diff(without, SPEC, LEAVES)
    assert not report.restorable
    assert [d.label for d in report.state_differences] == [GLOBAL_LABEL]
    assert report.kept  # every label keeps its state: only the globals' part differs
    same = diff(SPEC, SPEC, LEAVES)
    assert same.restorable
    # A different clip threshold keeps the state: the checkpoint restores.
    assert diff(SPEC, SPEC.replace("(1.0)", "(2.0)"), LEAVES).restorable


def test_diff_of_capture_labels_named_with_as() -> None:
    edited = SPEC.replace("1e-3 * (i + 1)", "1e-4 * (i + 1)")
    report = diff(SPEC, edited, LEAVES)
    assert report.restorable  # `as layer` keeps the labels: layer[i=0], layer[i=1]
    assert report.old_actions["layer[i=1]"] == "adam(0.002)"
    assert report.new_actions["layer[i=1]"] == "adam(0.0002)"


def test_diff_until_step_change_keeps_state_but_label_text_changes() -> None:
    report = diff(SPEC, SPEC.replace("until 10", "until 20"), LEAVES)
    assert not report.restorable
    assert [(r.old, r.new, r.state_compatible) for r in report.renamed] == [
        ("frozen until 10 then sgd(0.01)", "frozen until 20 then sgd(0.01)", True)
    ]


def test_reset_state_of_one_capture_label_under_a_global_chain() -> None:
    p = params()
    plan = partspec.compile(SPEC, p)
    state = plan.tx.init(p)
    grads = jax.tree.map(jnp.ones_like, p)
    for _ in range(3):
        _, state = plan.tx.update(grads, state, p)
    fresh = partspec.reset_state(plan, state, p, label="layer[i=1]")
    old_inner = plan.label_states(state)
    new_inner = plan.label_states(fresh)
    assert jax.tree.leaves(new_inner["layer[i=1]"])[0] == 0  # Adam's count starts again
    for lab in ("layer[i=0]", "sgd(0.1)"):
        # Kept bit for bit (the two layer labels share a group: their counts are one
        # stacked array, rebuilt with the reset label's entry zeroed).
        for a, b in zip(jax.tree.leaves(old_inner[lab]), jax.tree.leaves(new_inner[lab])):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # The globals' state (the clip is stateless; the gate counts updates) is kept.
    assert jax.tree.leaves(fresh[0]) == jax.tree.leaves(state[0])


def test_partition_state_rejects_other_states() -> None:
    plan = partspec.compile("** -> sgd(0.1)", {"a": jnp.ones(1)})
    with pytest.raises(TypeError, match="not a state made by"):
        plan.partition_state(optax.EmptyState())


def test_sharded_init_with_until_and_globals_keeps_state_on_the_mesh() -> None:
    devices = np.array(jax.devices())
    mesh = jax.sharding.Mesh(devices, ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    p = jax.device_put(params(), sharding)
    plan = partspec.compile(SPEC, p)
    state = plan.init(p)
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf.sharding, jax.sharding.NamedSharding)
        assert leaf.sharding.mesh.shape == mesh.shape
    expected = jax.tree_util.tree_structure(plan.tx.init(params()))
    assert jax.tree_util.tree_structure(state) == expected


def test_explain_reports_when_each_label_starts_training() -> None:
    from partspec.tools.explain import render_text

    report = explain(SPEC, LEAVES)
    starts = {row["label"]: row["unfreeze_at"] for row in report["labels"]}
    assert starts == {
        "frozen until 10 then sgd(0.01)": 10,
        "sgd(0.1)": None,
        "layer[i=0]": None,
        "layer[i=1]": None,
    }
    # The backbone trains later: it counts as trainable, and is reported as waiting.
    assert report["totals"]["frozen_parameters"] == 0
    assert report["totals"]["frozen_until_parameters"] == 8 * 8 + 8
    text = render_text(report)
    assert "trains from" in text
    assert "frozen until update 10: 72 params" in text
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("frozen until 10"))
    assert row.rstrip().endswith("update 10")
    # Without `frozen until`, the table keeps its usual columns.
    plain = render_text(explain(SPEC.replace("frozen until 10 then sgd(0.01)", "frozen"), LEAVES))
    assert "trains from" not in plain and "frozen until update" not in plain
