"""examples/layer_decay.pspec gives every leaf timm's layer-decay factor.

The reference re-implements timm's grouping (``timm.models._manipulate.group_with_matcher``
with a ViT ``group_matcher``, then ``param_groups_layer_decay``): parameters are sorted into
layer ids by ordinal; a group whose ordinal ends in ``MATCH_PREV_GROUP`` (99999) joins the
group before it (that is how a ViT's final ``norm`` goes with the last block); unmatched
parameters (the head) get the largest id; each id scales the rate by
``decay ** (layer_max - id)``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

import partspec
from partspec.jax.rates import rates_at
from partspec.language.values import LeafInfo
from partspec.resolution import resolve_paths

ROOT = Path(__file__).resolve().parent.parent
MATCH_PREV_GROUP = (99999,)
#: timm's ViT group_matcher, with this model's names.
GROUP_MATCHER = {
    "stem": r"^embed|^pos_embedding",
    "blocks": [(r"^encoder/layer_(\d+)", None), (r"^encoder/ln_f", MATCH_PREV_GROUP)],
}


def timm_layer_ids(names: list[str]) -> dict[str, int]:
    def ordinal(name: str) -> tuple[int, ...] | None:
        for gi, (_, spec) in enumerate(GROUP_MATCHER.items()):
            rules = [(spec, None)] if isinstance(spec, str) else spec
            for pattern, suffix in rules:
                m = re.match(pattern, name)
                if m:
                    parts = suffix if suffix is not None else tuple(int(g) for g in m.groups())
                    return (gi, *parts)
        return None

    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for name in names:
        key = ordinal(name)
        if key is not None:
            groups[key].append(name)
    ids: dict[str, int] = {}
    lid = -1
    for key in sorted(groups):
        if lid < 0 or key[-1] != MATCH_PREV_GROUP[0]:
            lid += 1
        for name in groups[key]:
            ids[name] = lid
    layer_max = lid + 1  # unmatched parameters (the head) go after every group
    return {name: ids.get(name, layer_max) for name in names}


def test_the_example_gives_timms_factor_on_every_leaf() -> None:
    tree = json.loads((ROOT / "examples" / "layer_decay.tree.json").read_text())
    leaves = tree["leaves"] if isinstance(tree, dict) else tree
    paths = [tuple(leaf["path"]) for leaf in leaves]
    names = ["/".join(p) for p in paths]
    lr, decay = 1e-3, 0.75
    spec = partspec.load(ROOT / "examples" / "layer_decay.pspec")
    checked = partspec.check(spec, lr=lr, decay=decay)
    infos = [LeafInfo(tuple(leaf["shape"]), leaf.get("dtype", "float32")) for leaf in leaves]
    res = resolve_paths(checked, paths, infos)
    rates = rates_at(res, [0])
    ids = timm_layer_ids(names)
    layer_max = max(ids.values())
    assert layer_max == 7 and ids["encoder/ln_f/scale"] == ids["encoder/layer_5/mlp_in/kernel"]
    for name, label in zip(names, res.labels):
        assert label is not None
        want = lr * decay ** (layer_max - ids[name])
        assert rates[label][0] == pytest.approx(want, rel=1e-6), name
