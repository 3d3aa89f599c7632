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
