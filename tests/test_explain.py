"""``partspec.tools.explain``: counts, bytes and optimizer state per rule and label, rendering."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import partspec
from partspec.tools import explain as explain_mod
from partspec.tools.explain import (
    explain,
    human_bytes,
    optimizer_state_bytes,
    render_json,
    render_text,
)
from partspec.tools.manifest import Leaf, TreeInputError, leaves_to_shape_tree

# A transfer-learning classifier: a pretrained backbone and a new head.
LEAVES = [
    Leaf(("backbone", "conv1", "kernel"), (3, 3, 3, 16), "float32"),  # 432
    Leaf(("backbone", "conv1", "bias"), (16,), "float32"),  # 16
    Leaf(("backbone", "ln", "scale"), (16,), "float32"),  # 16
    Leaf(("backbone", "ln", "bias"), (16,), "float32"),  # 16
    Leaf(("backbone", "dense", "kernel"), (16, 32), "float32"),  # 512
    Leaf(("backbone", "dense", "bias"), (32,), "float32"),  # 32
    Leaf(("head", "kernel"), (32, 10), "float32"),  # 320
    Leaf(("head", "bias"), (10,), "float32"),  # 10
    Leaf(("head", "ln", "scale"), (32,), "bfloat16"),  # 32, 64 bytes
]

SPEC = """\
# transfer learning
param lr = 1e-3

backbone/** -> frozen
head/ln/*   -> sgd(0.1)
head/* except head/bias -> adam(lr)
head/bias   -> adam(lr)
**/bias     -> sgd(0.5)
extra/**    -> frozen
"""


def _report(**kw: Any) -> dict[str, Any]:
    return explain(partspec.parse(SPEC, filename="transfer.pspec"), LEAVES, **kw)


def _sds_tree(leaves: list[Leaf]) -> Any:
    return leaves_to_shape_tree(leaves)


def _state_truth(spec: str, leaves: list[Leaf], **values: Any) -> dict[str, int]:
    """Optimizer-state bytes per label straight from optax: eval_shape of the partition."""
    tree = _sds_tree(leaves)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        plan = partspec.compile(spec, tree, **values)
    states = jax.eval_shape(lambda t: plan.label_states(plan.tx.init(t)), tree)
    return {
        lab: sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(inner))
        for lab, inner in states.items()
    }


# ------------------------------------------------------------------ counts


def test_rules_in_file_order_with_exact_counts() -> None:
    rules = _report(values={"lr": 0.01})["rules"]
    got = [
        (r["line"], r["pattern"], r["label"], r["action"], r["leaves"], r["parameters"], r["bytes"])
        for r in rules
    ]
    assert got == [
        (4, "backbone/**", "frozen", "frozen", 6, 1024, 4096),
        (5, "head/ln/*", "sgd(0.1)", "sgd(0.1)", 1, 32, 64),
        (6, "head/* except head/bias", "adam(lr)", "adam(lr)", 1, 320, 1280),
        (7, "head/bias", "adam(lr)", "adam(lr)", 1, 10, 40),
        (8, "**/bias", "sgd(0.5)", "sgd(0.5)", 0, 0, 0),
        (9, "extra/**", "frozen", "frozen", 0, 0, 0),
    ]
    assert rules[2]["patterns"] == ["head/*"] and rules[2]["excepts"] == ["head/bias"]
    assert [r["frozen"] for r in rules] == [True, False, False, False, False, True]
    assert [r["index"] for r in rules] == list(range(6))


def test_status_ok_shadowed_unused() -> None:
    report = _report()
    status = [(r["line"], r["status"], r["shadowed_by"]) for r in report["rules"]]
    assert status == [
        (4, "ok", []),
        (5, "ok", []),
        (6, "ok", []),
        (7, "ok", []),
        (8, "shadowed", [4, 7]),  # backbone biases go to line 4, head/bias to line 7
        (9, "unused", []),
    ]
    diags = [(d["code"], d["severity"], d["line"]) for d in report["diagnostics"]]
    assert diags == [("W602", "warning", 8), ("W601", "warning", 9)]
    assert "lines 4, 7" in report["diagnostics"][0]["message"]


def test_labels_counts_bytes_and_optimizer_state() -> None:
    report = _report()
    labels = {lab["label"]: lab for lab in report["labels"]}
    assert list(labels) == ["frozen", "sgd(0.1)", "adam(lr)"]  # order of first rule
    f, s, a = labels["frozen"], labels["sgd(0.1)"], labels["adam(lr)"]
    assert (f["leaves"], f["parameters"], f["bytes"], f["rules"]) == (6, 1024, 4096, [4])
    assert (s["leaves"], s["parameters"], s["bytes"], s["rules"]) == (1, 32, 64, [5])
    assert (a["leaves"], a["parameters"], a["bytes"], a["rules"]) == (2, 330, 1320, [6, 7])
    # frozen: no state; sgd without momentum: two EmptyStates; adam: mu and nu like the
    # params (float32 here) plus one int32 step counter.
    assert f["optimizer_state_bytes"] == 0
    assert s["optimizer_state_bytes"] == 0
    assert a["optimizer_state_bytes"] == 2 * 1320 + 4
    assert [lab["frozen"] for lab in report["labels"]] == [True, False, False]
    assert a["action"] == "adam(lr)"
    # The same figures as optax's own state for the compiled partition.
    truth = _state_truth(SPEC, LEAVES)
    assert {k: v["optimizer_state_bytes"] for k, v in labels.items()} == truth


def test_totals() -> None:
    report = _report()
    assert report["leaves"] == 9
    assert report["parameters"] == 1386
    assert report["bytes"] == 5480
    assert report["totals"] == {
        "parameters": 1386,
        "trainable_parameters": 362,
        "frozen_parameters": 1024,
        "frozen_until_parameters": 0,
        "parameter_bytes": 5480,
        "trainable_parameter_bytes": 1384,
        "frozen_parameter_bytes": 4096,
        "optimizer_state_bytes": 2644,
    }


@pytest.mark.parametrize(
    "spec",
    [
        # Three Adam labels in lockstep: one group, one count.
        "backbone/** -> adam(1e-4)\nhead/w -> adam(1e-3)\nhead/** -> adam(3e-3)",
        # frozen until at two steps: their counts do not move together.
        "backbone/** -> frozen until 5 then adam(1e-4)\nhead/w -> frozen until 9 then "
        "adam(1e-3)\nhead/** -> sgd(0.1, momentum=0.9)",
        # A global transformation chained before the partition.
        "global clip_by_global_norm(1.0)\nbackbone/** -> adam(1e-4)\nhead/** -> adam(1e-3)",
    ],
)
@pytest.mark.parametrize("direct", [True, False], ids=["one init", "label by label"])
def test_total_state_bytes_are_the_optimizer_states_own(
    spec: str, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each label's row counts its step count; labels of one group share one, and the
    total must be what the optimizer really holds, not the rows' sum. Small trees take
    the groups from one init of the plan; large ones (here forced) from a tree of one
    leaf per label and dtype."""
    if not direct:
        monkeypatch.setattr(explain_mod, "DIRECT_EVAL_MAX_LEAVES", 0)
    leaves = [
        Leaf(("backbone", "a"), (8, 4), "float32"),
        Leaf(("backbone", "b"), (4,), "bfloat16"),
        Leaf(("head", "w"), (4, 3), "float32"),
        Leaf(("head", "b"), (3,), "float32"),
    ]
    report = explain(spec, leaves)
    tree = _sds_tree(leaves)
    plan = partspec.compile(spec, tree)
    state = jax.eval_shape(lambda t: plan.partition_state(plan.tx.init(t)), tree)
    truth = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))
    assert report["totals"]["optimizer_state_bytes"] == truth
    rows = sum(lab["optimizer_state_bytes"] for lab in report["labels"])
    shared = sum(len(g.labels) - 1 for g in state.groups.values())
    assert rows - truth == 4 * shared  # an int32 count per extra label of a group


def test_params_and_values() -> None:
    assert _report()["params"] == {"lr": 0.001}
    report = _report(values={"lr": 0.5})
    assert report["params"] == {"lr": 0.5}
    # The label is the action's text; the value only changes the optimizer.
    assert report["labels"][2]["label"] == "adam(lr)"


# ------------------------------------------------------------------ optimizer state

SMALL = [
    Leaf(("w",), (4, 8), "float32"),  # 128 bytes
    Leaf(("b",), (8,), "float32"),  # 32 bytes
]
P = 160  # parameter bytes of SMALL


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("sgd(0.1)", 0),  # (EmptyState(), EmptyState())
        ("sgd(0.1, momentum=0.9)", P),  # a trace like the params, no counter
        ("adam(1e-3)", 2 * P + 4),  # mu, nu and an int32 count
        ("adamw(1e-3)", 2 * P + 4),  # weight decay adds no state
        ("adam(cosine_decay_schedule(1e-3, 100))", 2 * P + 8),  # the schedule counts steps too
        ('adam(1e-3, mu_dtype="bfloat16")', P // 2 + P + 4),  # mu in bfloat16
        ("lion(1e-3)", P + 4),  # mu only
        ("rmsprop(1e-3)", P),  # nu, no counter
        ("chain(clip_by_global_norm(1.0), adam(1e-3))", 2 * P + 4),
    ],
)
def test_optimizer_state_bytes_per_optimizer(action: str, expected: int) -> None:
    spec = f"** -> {action}"
    report = explain(partspec.parse(spec), SMALL)
    (label,) = report["labels"]
    assert label["optimizer_state_bytes"] == expected
    assert _state_truth(spec, SMALL) == {label["label"]: expected}


def test_float64_params_get_float32_state_without_x64() -> None:
    # Parameter bytes follow the declared dtype; the state is what JAX allocates, and
    # with 64-bit types off (the default) that is float32.
    leaves = [Leaf(("w",), (10,), "float64")]
    report = explain(partspec.parse("** -> adam(1e-3)"), leaves)
    assert report["bytes"] == 80
    expected = 2 * 80 + 4 if jax.config.jax_enable_x64 else 2 * 40 + 4
    assert report["labels"][0]["optimizer_state_bytes"] == expected


def _blocks(n: int) -> list[Leaf]:
    leaves = []
    for i in range(n):
        leaves += [
            Leaf(("layers", str(i), "kernel"), (130, 136), "float32"),
            Leaf(("layers", str(i), "bias"), (136,), "float32"),
            Leaf(("layers", str(i), "ln", "scale"), (8,), "bfloat16"),
        ]
    leaves.append(Leaf(("embed",), (50, 8), "float32"))
    return leaves


BIG_SPEC = """\
layers/{0..9}/** -> frozen
**/ln/* -> adamw(1e-3, weight_decay=0.0)
**/bias -> sgd(0.1, momentum=0.9)
layers/{10..49}/** -> adafactor(1e-3, min_dim_size_to_factor=128)
layers/** -> chain(add_noise(0.1, 0.5, 0), apply_every(2), sm3(1e-3))
embed -> adam(1e-3)
"""


def test_deduplicated_state_matches_eval_shape_of_the_whole_tree() -> None:
    leaves = _blocks(120)  # 361 leaves: above DIRECT_EVAL_MAX_LEAVES, few distinct shapes
    assert len(leaves) > explain_mod.DIRECT_EVAL_MAX_LEAVES
    report = explain(partspec.parse(BIG_SPEC), leaves)
    got = {lab["label"]: lab["optimizer_state_bytes"] for lab in report["labels"]}
    assert got == _state_truth(BIG_SPEC, leaves)
    assert got["frozen"] == 0
    # adafactor factors the (130, 136) kernels (both sides >= 128): a row and a column
    # accumulator in float32 plus a (1,) placeholder for the dense v, per leaf, and one
    # step counter. (Unfactored leaves get the full v and (1,) placeholders instead.)
    assert got["adafactor(0.001, min_dim_size_to_factor=128)"] == 40 * (130 + 136 + 1) * 4 + 4


def test_optimizer_state_bytes_falls_back_when_state_is_not_per_leaf() -> None:
    # optax.flatten ravels every leaf into one vector: nothing to attribute by key.
    leaves = [jax.ShapeDtypeStruct((3, 5), jnp.float32)] * 40 + [
        jax.ShapeDtypeStruct((7,), jnp.float32)
    ] * 20
    tx = optax.flatten(optax.adam(1e-3))
    n = 40 * 15 + 20 * 7
    assert optimizer_state_bytes(tx.init, leaves) == 2 * 4 * n + 4
    assert optimizer_state_bytes(optax.adam(1e-3).init, leaves) == 2 * 4 * n + 4
    assert optimizer_state_bytes(optax.sgd(0.1).init, leaves) == 0
    assert optimizer_state_bytes(optax.adam(1e-3).init, []) == 4


def test_counts_exact_for_a_large_tree() -> None:
    leaves = [Leaf(("l", str(i), "w"), (i % 7 + 1, 3), "bfloat16") for i in range(20_000)]
    report = explain(partspec.parse("l/{0..9999}/** -> frozen\n** -> adam(1e-3)"), leaves)
    trained = [math.prod(leaf.shape) for leaf in leaves[10_000:]]
    (frozen, adam) = report["labels"]
    assert frozen["leaves"] == adam["leaves"] == 10_000
    assert adam["parameters"] == sum(trained)
    assert adam["bytes"] == 2 * sum(trained)
    assert adam["optimizer_state_bytes"] == 2 * 2 * sum(trained) + 4
    assert report["totals"]["parameters"] == sum(math.prod(leaf.shape) for leaf in leaves)


def test_never_allocates() -> None:
    # 4 TiB of parameters: only shapes are ever built.
    leaves = [Leaf(("huge",), (1 << 20, 1 << 20), "float32")]
    report = explain(partspec.parse("** -> sgd(0.1, momentum=0.9)"), leaves)
    assert report["bytes"] == 4 << 40
    assert report["labels"][0]["optimizer_state_bytes"] == 4 << 40
    assert "4.0 TiB" in render_text(report)


# ------------------------------------------------------------------ errors and warnings


def test_uncovered_leaves_raise_spec_error() -> None:
    with pytest.raises(partspec.SpecError) as err:
        explain(partspec.parse("backbone/** -> frozen"), LEAVES)
    assert err.value.diagnostics[0].code == "E501"


def test_missing_param_raises_spec_error() -> None:
    with pytest.raises(partspec.SpecError) as err:
        explain(partspec.parse("param lr\n** -> adam(lr)"), LEAVES)
    assert err.value.diagnostics[0].code == "E305"
    report = explain(partspec.parse("param lr\n** -> adam(lr)"), LEAVES, {"lr": 0.1})
    assert report["params"] == {"lr": 0.1}


def test_bad_tree_raises_tree_input_error() -> None:
    with pytest.raises(TreeInputError):
        explain(partspec.parse("** -> frozen"), [Leaf(("a",), (1,), "float32")] * 2)
    with pytest.raises(TreeInputError):
        explain(partspec.parse("** -> frozen"), [Leaf(("a",), (1,), "not_a_dtype")])


def test_no_warnings_escape() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = _report()
    assert len(report["diagnostics"]) == 2


def test_spec_given_as_text() -> None:
    report = explain("** -> frozen", LEAVES)
    assert report["spec"] is None
    assert report["totals"]["frozen_parameters"] == 1386


# ------------------------------------------------------------------ owners


def test_owners_of_glob_in_input_order() -> None:
    report = _report(leaves_glob="head/**")
    assert report["leaves_glob"] == "head/**"
    assert report["owners"] == [
        {
            "path": "head/kernel",
            "shape": [32, 10],
            "dtype": "float32",
            "parameters": 320,
            "rule": 6,
            "label": "adam(lr)",
        },
        {
            "path": "head/bias",
            "shape": [10],
            "dtype": "float32",
            "parameters": 10,
            "rule": 7,
            "label": "adam(lr)",
        },
        {
            "path": "head/ln/scale",
            "shape": [32],
            "dtype": "bfloat16",
            "parameters": 32,
            "rule": 5,
            "label": "sgd(0.1)",
        },
    ]


def test_owners_glob_with_alternatives_and_except() -> None:
    report = _report(leaves_glob="**/bias, **/ln/* except backbone/**")
    assert [(o["path"], o["rule"]) for o in report["owners"]] == [
        ("head/bias", 7),
        ("head/ln/scale", 5),
    ]
    assert _report(leaves_glob="nothing/**")["owners"] == []
    assert _report()["owners"] is None and _report()["leaves_glob"] is None


@pytest.mark.parametrize("glob", ["a -> frozen; b", "head/[", "x y"])
def test_bad_glob_raises_spec_error(glob: str) -> None:
    with pytest.raises(partspec.SpecError):
        _report(leaves_glob=glob)


# ------------------------------------------------------------------ JSON

TOP_KEYS = [
    "version",
    "spec",
    "leaves",
    "parameters",
    "bytes",
    "params",
    "rules",
    "with_rules",
    "labels",
    "totals",
    "diagnostics",
    "leaves_glob",
    "owners",
    "globals",
    "rates",
]
RULE_KEYS = [
    "index",
    "line",
    "pattern",
    "patterns",
    "excepts",
    "label",
    "action",
    "frozen",
    "leaves",
    "parameters",
    "bytes",
    "status",
    "shadowed_by",
]
LABEL_KEYS = [
    "label",
    "action",
    "frozen",
    "unfreeze_at",
    "rules",
    "with_rules",
    "leaves",
    "parameters",
    "bytes",
    "optimizer_state_bytes",
    "optimizer",
    "learning_rate",
    "schedule",
    "weight_decay",
    "peak_learning_rate",
    "lr_scale",
]
WITH_KEYS = ["index", "line", "pattern", "settings", "leaves", "parameters", "status"]
TOTAL_KEYS = [
    "parameters",
    "trainable_parameters",
    "frozen_parameters",
    "frozen_until_parameters",
    "parameter_bytes",
    "trainable_parameter_bytes",
    "frozen_parameter_bytes",
    "optimizer_state_bytes",
]


def test_json_schema_is_stable() -> None:
    report = _report(leaves_glob="head/*")
    text = render_json(report)
    assert text.endswith("\n")
    doc = json.loads(text)
    assert doc == report
    assert list(doc) == TOP_KEYS
    assert doc["version"] == 1
    assert doc["spec"] == "transfer.pspec"
    for r in doc["rules"]:
        assert list(r) == RULE_KEYS
    for lab in doc["labels"]:
        assert list(lab) == LABEL_KEYS
    assert list(doc["totals"]) == TOTAL_KEYS
    for d in doc["diagnostics"]:
        assert list(d) == ["code", "severity", "message", "line", "hint"]
    for o in doc["owners"]:
        assert list(o) == ["path", "shape", "dtype", "parameters", "rule", "label"]
    # Deterministic: the same input gives the same bytes.
    assert render_json(_report(leaves_glob="head/*")) == text


WITH_SPEC = """\
param lr = 1e-3
param small = false
backbone/** -> frozen
head/**     -> adamw(lr, weight_decay=0.05) as head
**/bias                 with weight_decay = 0.0
head/ln/*               with lr * 2
head/ln/*               with lr * 3
backbone/**             with lr * 5
nothing/**              with lr * 7
head/** where small     with lr * 0.1
"""


def test_with_rules_rows_count_the_leaves_whose_settings_they_decide() -> None:
    report = explain(partspec.parse(WITH_SPEC, filename="w.pspec"), LEAVES)
    rows = {w["line"]: w for w in report["with_rules"]}
    assert [list(w) for w in report["with_rules"]] == [WITH_KEYS] * 6
    # head/bias only: the backbone's biases are frozen and take no settings.
    assert (rows[5]["settings"], rows[5]["leaves"], rows[5]["parameters"]) == (
        ["weight_decay = 0.0"],
        1,
        10,
    )
    assert (rows[6]["settings"], rows[6]["leaves"], rows[6]["parameters"]) == (["lr * 2"], 1, 32)
    assert [rows[n]["status"] for n in (5, 6, 7, 8, 9, 10)] == [
        "ok",
        "ok",
        "shadowed",
        "unused",
        "unused",
        "switched off",
    ]
    labels = {lab["label"]: lab for lab in report["labels"]}
    assert labels["head[weight_decay=0.0]"]["with_rules"] == [5]
    assert labels["head[lr*2]"]["with_rules"] == [6]
    assert labels["head"]["with_rules"] == []
    text = render_text(report, width=200)
    assert "With rules" in text
    assert text.index("With rules") < text.index("Labels")
    assert "head/ln/*  " in text.split("With rules")[1]


def test_no_with_rules_table_without_with_rules() -> None:
    report = _report()
    assert report["with_rules"] == []
    assert "With rules" not in render_text(report, width=200)


def test_schema_documented_in_module_docstring() -> None:
    doc = explain_mod.__doc__ or ""
    for key in TOP_KEYS + RULE_KEYS + WITH_KEYS + LABEL_KEYS + TOTAL_KEYS:
        assert f'"{key}"' in doc, key


# ------------------------------------------------------------------ text

GOLDEN_SPEC = """\
backbone/** -> frozen
head/**     -> adam(1e-3)
**/bias     -> sgd(0.1)
"""
GOLDEN_LEAVES = [
    Leaf(("backbone", "kernel"), (256, 512), "float32"),
    Leaf(("backbone", "bias"), (512,), "float32"),
    Leaf(("head", "kernel"), (512, 10), "bfloat16"),
    Leaf(("head", "bias"), (10,), "float32"),
]
GOLDEN_TEXT = """\
model.pspec: 4 leaves, 136,714 parameters (524.0 KiB)

Rules
  line  pattern      label        action       leaves   params  status
     1  backbone/**  frozen       frozen            2  131,584  ok
     2  head/**      adam(0.001)  adam(0.001)       2    5,130  ok
     3  **/bias      sgd(0.1)     sgd(0.1)          0        0  shadowed (lines 1, 2)

Labels
  label           lr   peak  x top  weight decay  leaves   params      bytes  opt-state bytes
  frozen           -      -      -             -       2  131,584  514.0 KiB              0 B
  adam(0.001)  0.001  0.001      1             -       2    5,130   10.0 KiB         20.1 KiB

trainable: 5,130 params, 3.8% (10.0 KiB) · frozen: 131,584 params (514.0 KiB) · optimizer state: 20.1 KiB

Warnings
  line 3: warning[W602]: rule is shadowed: every parameter it matches is taken by an earlier rule (lines 1, 2)

Leaves matching head/*
  path         shape      dtype     params  line  label
  head/kernel  (512, 10)  bfloat16   5,120     2  adam(0.001)
  head/bias    (10,)      float32       10     2  adam(0.001)
"""  # noqa: E501


def test_render_text_golden() -> None:
    spec = partspec.parse(GOLDEN_SPEC, filename="model.pspec")
    report = explain(spec, GOLDEN_LEAVES, leaves_glob="head/*")
    # 131,584 x 4 + 5,120 x 2 + 10 x 4 = 536,616 bytes = 524.0 KiB in all; adam state:
    # 2 x (10,240 + 40) bytes + 4 = 20,564 bytes = 20.1 KiB. Actions print canonically.
    assert report["bytes"] == 536_616
    assert report["labels"][1]["optimizer_state_bytes"] == 20_564
    assert render_text(report) == GOLDEN_TEXT  # no width: never wrapped (pipes, logs)


def test_render_text_plain_has_rows_and_no_ansi() -> None:
    text = render_text(_report(leaves_glob="nothing/**"))
    assert "\x1b" not in text
    assert text.startswith("transfer.pspec: 9 leaves, 1,386 parameters (5.4 KiB)\n")
    assert "     6  head/* except head/bias  adam(lr)  adam(lr)       1     320  ok" in text
    assert "shadowed (lines 4, 7)" in text
    assert "     9  extra/**" in text and text.rstrip().count("unused") == 1
    # lr 0.001 is a hundredth of the fastest label's (sgd(0.1) at line 5).
    assert "  adam(lr)  0.001  0.001   0.01             -       2     330  1.3 KiB" in text
    assert "trainable: 362 params, 26.1% (1.4 KiB) · frozen: 1,024 params (4.0 KiB)" in text
    assert "line 9: warning[W601]: rule matches no parameter" in text
    assert "Leaves matching nothing/**\n  (no leaf matches)\n" in text
    assert not any(line != line.rstrip() for line in text.splitlines())


def test_render_text_color_uses_rich() -> None:
    pytest.importorskip("rich")
    report = _report(leaves_glob="head/**")
    text = render_text(report, color=True, width=120)
    assert "\x1b[" in text
    for word in ("head/* except head/bias", "adam(lr)", "2.6 KiB", "W601", "head/ln/scale"):
        assert word in text


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30)] == [
        "0 B",
        "1,023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]
    assert human_bytes(2**20 - 1) == "1.0 MiB"  # never "1024.0 KiB"
    assert human_bytes(7 * 2**50) == "7.0 PiB"


def test_itemsizes_follow_numpy() -> None:
    leaves = [
        Leaf(("a",), (3,), "int8"),
        Leaf(("b",), (3,), "float16"),
        Leaf(("c",), (3,), "bool"),
        Leaf(("d",), (3,), "int32"),
    ]
    report = explain(partspec.parse("** -> frozen"), leaves)
    assert (
        report["bytes"]
        == 3 * (1 + 2 + 1 + 4)
        == sum(3 * np.dtype(leaf.dtype).itemsize for leaf in leaves)
    )


def test_labels_show_the_evaluated_action_params_and_arithmetic_done() -> None:
    """The report shows what the optimizer gets, not only the text of the rule."""
    text = (
        "param base = 1e-3\n"
        "backbone/** -> frozen\n"
        "head/* -> adamw(base * 10, weight_decay=base / 10)\n"
    )
    leaves = [Leaf(("backbone", "w"), (2, 2), "float32"), Leaf(("head", "w"), (2,), "float32")]
    labels = {lab["label"]: lab for lab in explain(partspec.parse(text), leaves)["labels"]}
    assert labels["frozen"]["optimizer"] is None
    (head,) = [lab for lab in labels.values() if not lab["frozen"]]
    assert head["action"] == "adamw(base * 10, weight_decay=base / 10)"
    opt = head["optimizer"]
    assert opt["name"] == "adamw"
    assert opt["args"] == [pytest.approx(1e-2)]
    assert opt["kwargs"] == {"weight_decay": pytest.approx(1e-4)}
    labels = explain(partspec.parse(text), leaves, values={"base": 0.5})["labels"]
    assert [lab["optimizer"]["args"] for lab in labels if not lab["frozen"]] == [[5.0]]


def test_a_schedule_is_shown_as_data() -> None:
    text = "** -> adam(0.5 * cosine_decay_schedule(1e-3, 100))"
    report = explain(partspec.parse(text), [Leaf(("w",), (3,), "float32")])
    (lab,) = report["labels"]
    sched = lab["optimizer"]["args"][0]
    assert sched["scale"] == 0.5
    assert sched["schedule"]["name"] == "cosine_decay_schedule"
    assert sched["schedule"]["args"] == [1e-3, 100]
    json.dumps(report)  # plain JSON values all the way down


def test_plain_text_wraps_to_a_width_between_path_segments_only() -> None:
    """On a terminal the tables fit its width: the widest text columns wrap after `/`,
    commas and spaces; a segment (`encoderblock_{6..11}`) is never cut."""
    from partspec.tools.manifest import load_leaves

    root = Path(__file__).resolve().parent.parent
    spec = partspec.load(root / "examples" / "vit_finetune.pspec")
    report = explain(spec, load_leaves(str(root / "examples" / "vit_b16.tree.json")))

    def rules_table(text: str) -> list[str]:
        return text.split("\nRules\n")[1].split("\n\n")[0].splitlines()

    assert max(len(line) for line in rules_table(render_text(report))) > 100
    lines = rules_table(render_text(report, width=100))
    assert max(len(line) for line in lines) <= 100
    start, end = lines[0].index("pattern"), lines[0].index("label")
    cells: list[list[str]] = []
    for line in lines[1:]:
        piece = line[start:end].strip()
        if line[:start].strip():  # a rule's first line (its line number)
            cells.append([piece])
        elif piece:
            cells[-1].append(piece)
    assert any(len(c) > 1 for c in cells)  # something wrapped
    for cell, rule in zip(cells, report["rules"]):
        joined = cell[0]
        for piece in cell[1:]:  # broken only after `/`, or at a space
            joined += piece if joined.endswith("/") else " " + piece
        assert joined == rule["pattern"]
