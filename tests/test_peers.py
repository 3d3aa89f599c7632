"""partspec's recipes against the peers' own code, leaf for leaf (recorded tables).

The tables in ``examples/peers/`` were recorded by the scripts beside them, running the
peers' code; these tests read them and never import the peers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import partspec
from partspec.language.values import OptaxCall

PEERS = Path(__file__).resolve().parent.parent / "examples" / "peers"


def _tree(table: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a recorded model (dotted names), as zero arrays."""
    tree: dict[str, Any] = {}
    for name, row in table.items():
        *parents, leaf = name.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.zeros(row["shape"], np.float32)
    return tree


def _leaf(tree: Any, name: str) -> Any:
    for p in name.split("."):
        tree = tree[p]
    return tree


def test_timm_vit_b16_layer_decay_leaf_for_leaf() -> None:
    """timm's ``create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05,
    layer_decay=0.75)`` on ViT-B/16: every one of its 152 parameters gets timm's learning
    rate (``lr * lr_scale``, to the bit) and weight decay from the 6-rule spec."""
    recorded = json.loads((PEERS / "timm_vit_b16_layer_decay.json").read_text())
    table = recorded["params"]
    assert len(table) == 152
    tree = _tree(table)
    plan = partspec.compile(partspec.load(PEERS / "timm_vit_b16.pspec"), tree, strict=True)
    lr = 1e-3
    for name, row in table.items():
        action = plan.actions[_leaf(plan.labels, name)]
        assert isinstance(action, OptaxCall) and action.name == "adamw", name
        kwargs = dict(action.kwargs)
        assert action.args[0] == lr * row["lr_scale"], name
        assert kwargs["weight_decay"] == row["weight_decay"], name
    # One label per (rate, decay) pair that timm makes a param group of.
    groups = {(row["lr_scale"], row["weight_decay"]) for row in table.values()}
    assert len({_leaf(plan.labels, n) for n in table}) == len(groups)


def _find(action: Any, name: str) -> OptaxCall:
    return next(c for c in action.args if isinstance(c, OptaxCall) and c.name == name)


def test_big_vision_make_multi_leaf_for_leaf() -> None:
    """big_vision's ``optax.make`` on its ``test_make_multi`` configuration (a schedule
    list with a frozen group, ``lr_mults``, ``wd_mults``, gradient clipping): the 7-rule
    spec gives every leaf big_vision's learning rate and weight decay exactly, freezes
    the same leaves, and follows its 10-step trajectory."""
    import jax
    import jax.numpy as jnp

    recorded = json.loads((PEERS / "big_vision_make_multi.json").read_text())
    params: dict[str, Any] = {}
    for name, value in recorded["params"].items():
        group, leaf = name.split("/")
        params.setdefault(group, {})[leaf] = jnp.asarray(value, jnp.float32)
    spec = partspec.load(PEERS / "big_vision_make_multi.pspec")
    assert len(spec.rules) + len(spec.with_rules) == 7  # big_vision's 3 + 2 + 2 entries
    plan = partspec.compile(spec, params, strict=True)
    for name, row in recorded["table"].items():
        label = _leaf(plan.labels, name.replace("/", "."))
        action = plan.actions[label]
        if row["frozen"]:
            assert action is None, name
            continue
        lr = dict(zip(["learning_rate"], _find(action, "scale_by_learning_rate").args))
        assert lr["learning_rate"] == row["lr"], name
        assert _find(action, "add_decayed_weights").args[0] == row["wd"], name
    state = plan.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for step, want in enumerate(recorded["updates"]):
        updates, state = plan.tx.update(grads, state, params)
        for name, value in want.items():
            group, leaf = name.split("/")
            # Same operations in the same order but for the learning rate times its
            # multiplier (one product here, two scalings there) and optax's linear
            # schedule against big_vision's: float32 rounding apart.
            np.testing.assert_allclose(
                float(updates[group][leaf]), value, rtol=2e-6, atol=0, err_msg=f"{name} @ {step}"
            )
