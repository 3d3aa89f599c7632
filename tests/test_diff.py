"""`partspec.tools.diff` and `pspec diff`: does a checkpoint made under one spec restore
under another?

The verdicts are checked against real Orbax restores in tests/test_checkpoints.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import partspec
from partspec.tools.cli import main
from partspec.tools.diff import (
    LAYOUT_NOTE,
    MAX_LISTED,
    DiffReport,
    LeafChange,
    Rename,
    StateDifference,
    diff,
    render_diff,
    render_json,
)
from partspec.tools.manifest import Leaf, dump_manifest

ROOT = Path(__file__).resolve().parent.parent

#: The toy classifier of examples/transfer_learning.py and examples/checkpoint_resume.py.
LEAVES = [
    Leaf(("backbone", "Dense_0", "bias"), (32,), "float32"),
    Leaf(("backbone", "Dense_0", "kernel"), (16, 32), "float32"),
    Leaf(("backbone", "Dense_1", "bias"), (32,), "float32"),
    Leaf(("backbone", "Dense_1", "kernel"), (32, 32), "float32"),
    Leaf(("head", "bias"), (4,), "float32"),
    Leaf(("head", "kernel"), (32, 4), "float32"),
]
HEAD = ["head/bias", "head/kernel"]
BACKBONE = [f"backbone/Dense_{i}/{name}" for i in (0, 1) for name in ("bias", "kernel")]

FROZEN_ADAM = "backbone/** -> frozen\nhead/** -> adam(1e-3)\n"
FROZEN_ADAM_EDITED = "backbone/** -> frozen\nhead/** -> adam(1e-4)\n"
NAMED = "backbone/** -> frozen\nhead/** -> adam(1e-3) as head\n"
NAMED_EDITED = "backbone/** -> frozen\nhead/** -> adam(1e-4) as head\n"


def d(old: str, new: str, **kw: object) -> DiffReport:
    return diff(partspec.parse(old), partspec.parse(new), LEAVES, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- diff()


def test_same_spec_is_restorable():
    r = d(FROZEN_ADAM, FROZEN_ADAM)
    assert r.restorable
    assert r.kept == ("frozen", "adam(0.001)")
    assert (r.added, r.removed, r.renamed, r.changed) == ((), (), (), ())
    assert r.leaf_changes == () and r.state_differences == () and r.action_changes == ()
    assert r.leaves == 6
    assert r.old_labels == r.new_labels == ("frozen", "adam(0.001)")
    assert render_diff(r).startswith("restorable: a checkpoint made under OLD restores under NEW")


def test_named_label_survives_a_learning_rate_edit():
    r = d(NAMED, NAMED_EDITED)
    assert r.restorable
    assert r.old_labels == r.new_labels == ("frozen", "head")
    assert r.kept == ("frozen", "head")
    assert r.renamed == () and r.leaf_changes == ()
    assert r.action_changes == (("head", "adam(0.001)", "adam(0.0001)"),)
    assert "head    state kept: adam(0.001) -> adam(0.0001)" in render_diff(r)


def test_unnamed_learning_rate_edit_renames_the_label():
    r = d(FROZEN_ADAM, FROZEN_ADAM_EDITED)
    assert not r.restorable
    assert r.renamed == (Rename("adam(0.001)", "adam(0.0001)", leaves=2, state_compatible=True),)
    assert r.added == () and r.removed == ()  # a rename, not an addition and a removal
    assert r.kept == ("frozen",) and r.changed == ()
    assert r.leaf_changes == tuple(LeafChange(p, "adam(0.001)", "adam(0.0001)") for p in HEAD)
    assert r.state_differences == ()  # no label both specs have changes


def test_dropping_a_name_is_a_rename_with_advice():
    r = d(NAMED, FROZEN_ADAM)
    assert r.renamed == (Rename("head", "adam(0.001)", 2, True, old_named=True),)
    text = render_diff(r)
    assert "~  head -> adam(0.001)  renamed, same state shape  2 leaves" in text
    assert "name the rule `as head` in NEW to keep the state" in text
    assert "An unnamed rule's label" not in text


def test_naming_a_rule_is_a_rename():
    r = d(FROZEN_ADAM, NAMED)
    assert r.renamed == (Rename("adam(0.001)", "head", 2, True, new_named=True),)
    text = render_diff(r)
    assert "name the rule" not in text  # already named; carrying the state over is the way
    assert "carry the state of the kept labels (and of renamed labels" in text


def test_learning_rate_through_a_param_keeps_the_label():
    spec = "param lr = 1e-3\nbackbone/** -> frozen\nhead/** -> adam(lr)\n"
    r = d(spec, spec, old_values={"lr": 1e-3}, new_values={"lr": 1e-4})
    assert r.restorable and r.kept == ("frozen", "adam(lr)")
    assert r.action_changes == (("adam(lr)", "adam(0.001)", "adam(0.0001)"),)


def test_frozen_to_trainable_is_not_restorable():
    r = d(FROZEN_ADAM, "** -> adam(1e-3)")
    assert not r.restorable
    assert r.removed == ("frozen",) and r.changed == ("adam(0.001)",)
    assert r.kept == () and r.renamed == ()
    assert r.leaf_changes == tuple(LeafChange(p, "frozen", "adam(0.001)") for p in BACKBONE)
    missing = {(x.path, x.kind) for x in r.state_differences}
    for p in BACKBONE:
        for moment in ("mu", "nu"):
            assert (f"0/{moment}/{p}", "only_new") in missing
    assert len(r.state_differences) == 8
    text = render_diff(r)
    assert "label `frozen` is removed; the state of `adam(0.001)` changes" in text
    assert "backbone/Dense_0/kernel  frozen -> adam(0.001)" in text
    assert "expected by NEW, not in the checkpoint" in text


def test_one_leaf_from_frozen_to_a_named_label():
    r = d(NAMED, "backbone/Dense_0/** -> adam(1e-3) as head\nbackbone/** -> frozen\n" + NAMED)
    assert not r.restorable
    assert r.kept == ("frozen",)  # frozen state is empty, whatever leaves it covers
    assert r.changed == ("head",)
    assert {c.path for c in r.leaf_changes} == set(BACKBONE[:2])
    assert {x.kind for x in r.state_differences} == {"only_new"}


def test_trainable_to_frozen_drops_state():
    r = d(NAMED, "backbone/** -> frozen\nhead/bias -> frozen\nhead/** -> adam(1e-3) as head\n")
    assert not r.restorable and r.changed == ("head",)
    assert r.leaf_changes == (LeafChange("head/bias", "head", "frozen"),)
    assert {(x.path, x.kind, x.old, x.new) for x in r.state_differences} == {
        ("0/mu/head/bias", "only_old", "float32[4]", None),
        ("0/nu/head/bias", "only_old", "float32[4]", None),
    }
    assert "note: Orbax restores dtype changes" in render_diff(r)


def test_new_rule_splits_a_group():
    old = "backbone/** -> adam(1e-3)\nhead/** -> adam(1e-3)\n"  # one label, one state
    new = "backbone/** -> adam(1e-3)\nhead/** -> adam(1e-3) as head\n"
    r = d(old, new)
    assert not r.restorable
    assert r.added == ("head",) and r.changed == ("adam(0.001)",) and r.renamed == ()
    assert r.leaf_changes == tuple(LeafChange(p, "adam(0.001)", "head") for p in HEAD)
    assert {x.kind for x in r.state_differences} == {"only_old"}
    assert r.old_counts["adam(0.001)"] == 6 and r.new_counts["adam(0.001)"] == 4
    text = render_diff(r)
    assert "adam(0.001)  state changes  6 -> 4 leaves" in text
    assert "+  head         added" in text


def test_a_split_group_with_stateless_optimizer_keeps_its_state():
    r = d("** -> sgd(0.1)", "head/** -> sgd(0.01)\n** -> sgd(0.1)")
    assert not r.restorable  # a new label, even with an empty state
    assert r.added == ("sgd(0.01)",) and r.kept == ("sgd(0.1)",) and r.changed == ()


def test_optimizer_change_under_a_name_changes_the_state():
    r = d(NAMED, "backbone/** -> frozen\nhead/** -> sgd(0.1, momentum=0.9) as head\n")
    assert not r.restorable and r.changed == ("head",)
    kinds = {(x.path, x.kind) for x in r.state_differences}
    assert ("0/mu/head/kernel", "only_old") in kinds
    assert ("0/trace/head/kernel", "only_new") in kinds
    assert r.action_changes == (("head", "adam(0.001)", "sgd(0.1, momentum=0.9)"),)


def test_same_arrays_different_containers_is_a_structure_change():
    r = d(NAMED, "backbone/** -> frozen\nhead/** -> adamw(1e-3) as head\n")
    assert not r.restorable
    (x,) = r.state_differences
    assert (x.label, x.path, x.kind) == ("head", "", "structure")
    assert x.old is not None and x.new is not None and "ScaleByAdamState" in x.old
    assert x.new.count("EmptyState()") == x.old.count("EmptyState()") + 1


def test_dtype_change_is_reported():
    r = d(NAMED, 'backbone/** -> frozen\nhead/** -> adam(1e-3, mu_dtype="bfloat16") as head\n')
    assert not r.restorable
    assert {(x.path, x.kind, x.old, x.new) for x in r.state_differences} == {
        ("0/mu/head/bias", "dtype", "float32[4]", "bfloat16[4]"),
        ("0/mu/head/kernel", "dtype", "float32[32, 4]", "bfloat16[32, 4]"),
    }


def test_rename_with_a_different_state():
    r = d("** -> sgd(0.1, momentum=0.9)", "** -> adam(1e-3)")
    assert r.renamed == (Rename("sgd(0.1, momentum=0.9)", "adam(0.001)", 6, False),)
    assert "renamed, state changes" in render_diff(r)
    assert "help: `" not in render_diff(r)  # the `as` advice is for compatible renames


def test_params_pytree_gives_the_same_report_as_leaves():
    params = {
        "backbone": {
            "Dense_0": {"bias": jnp.zeros(32), "kernel": jnp.zeros((16, 32))},
            "Dense_1": {"bias": jnp.zeros(32), "kernel": jnp.zeros((32, 32))},
        },
        "head": {"bias": jnp.zeros(4), "kernel": jnp.zeros((32, 4))},
    }
    old, new = partspec.parse(FROZEN_ADAM), partspec.parse("** -> adam(1e-3)")
    from_leaves = diff(old, new, LEAVES)
    assert diff(old, new, params) == from_leaves
    assert diff(old, new, jax.eval_shape(lambda: params)) == from_leaves
    assert diff(FROZEN_ADAM, "** -> adam(1e-3)", LEAVES) == from_leaves  # text is parsed


def test_errors_of_both_specs_are_reported_together():
    with pytest.raises(partspec.SpecError) as info:
        diff(
            partspec.parse("backbone/** -> frozen", filename="old.pspec"),
            partspec.parse("head/** -> frozen", filename="new.pspec"),
            LEAVES,
        )
    codes = [(x.code, x.filename) for x in info.value.diagnostics]
    assert codes == [("E501", "old.pspec"), ("E501", "new.pspec")]


def test_long_lists_are_truncated():
    leaves = [Leaf(("layer", str(i), "w"), (2,), "float32") for i in range(MAX_LISTED + 5)]
    r = diff("** -> adam(1e-3)", "layer/0/w -> adam(1e-3)\n** -> frozen", leaves)
    assert len(r.leaf_changes) == MAX_LISTED + 4
    assert len(r.state_differences) == 2 * (MAX_LISTED + 4)
    text = render_diff(r)
    assert "leaves that change label (24):" in text
    assert "  ... and 4 more" in text
    assert f"state differences ({2 * MAX_LISTED + 8}):" in text
    assert f"  ... and {MAX_LISTED + 8} more" in text
    assert text.count("layer/") == 2 * MAX_LISTED


def test_a_rename_hides_its_leaves_from_the_text():
    leaves = [Leaf(("layer", str(i), "w"), (2,), "float32") for i in range(3)]
    r = diff("** -> frozen", "** -> adam(1e-3) as all", leaves)
    assert r.renamed == (Rename("frozen", "all", 3, False, old_named=False, new_named=True),)
    assert len(r.leaf_changes) == 3
    text = render_diff(r)
    assert "leaves that change label" not in text
    assert "~  frozen -> all  renamed, state changes: frozen -> adam(0.001)  3 leaves" in text
    assert not text.endswith("\n\n")


def test_json_report():
    r = d(FROZEN_ADAM, "** -> adam(1e-3)")
    doc = json.loads(render_json(r))
    assert render_json(r).endswith("}\n")
    assert doc == r.to_json()
    assert set(doc) == {
        "version",
        "old",
        "new",
        "restorable",
        "leaves",
        "labels",
        "renamed",
        "added",
        "removed",
        "kept",
        "changed",
        "leaf_changes",
        "state_differences",
    }
    assert doc["restorable"] is False and doc["version"] == 1
    assert doc["labels"] == [
        {
            "label": "frozen",
            "status": "removed",
            "renamed_to": None,
            "old_action": "frozen",
            "new_action": None,
            "old_leaves": 4,
            "new_leaves": 0,
        },
        {
            "label": "adam(0.001)",
            "status": "changed",
            "renamed_to": None,
            "old_action": "adam(0.001)",
            "new_action": "adam(0.001)",
            "old_leaves": 2,
            "new_leaves": 6,
        },
    ]
    assert doc["leaf_changes"][0] == {
        "path": "backbone/Dense_0/bias",
        "old": "frozen",
        "new": "adam(0.001)",
    }
    assert doc["state_differences"][0] == {
        "label": "adam(0.001)",
        "path": "0/mu/backbone/Dense_0/bias",
        "kind": "only_new",
        "old": None,
        "new": "float32[32]",
    }


def test_json_rename_is_one_row():
    doc = d(FROZEN_ADAM, FROZEN_ADAM_EDITED).to_json()
    assert [(x["label"], x["status"], x["renamed_to"]) for x in doc["labels"]] == [
        ("frozen", "kept", None),
        ("adam(0.001)", "renamed", "adam(0.0001)"),
    ]
    assert doc["labels"][1]["new_action"] == "adam(0.0001)"
    assert doc["renamed"] == [
        {
            "old": "adam(0.001)",
            "new": "adam(0.0001)",
            "leaves": 2,
            "state_compatible": True,
            "old_named": False,
            "new_named": False,
        }
    ]


def test_state_difference_fields():
    x = StateDifference("head", "0/mu/w", "only_old", "float32[2]", None)
    assert (x.label, x.kind) == ("head", "only_old")


# ---------------------------------------------------------------- pspec diff


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "model.tree.json").write_text(dump_manifest(LEAVES), encoding="utf-8")
    (tmp_path / "old.pspec").write_text(FROZEN_ADAM)
    (tmp_path / "new.pspec").write_text(FROZEN_ADAM_EDITED)
    (tmp_path / "named.pspec").write_text(NAMED)
    (tmp_path / "named_edited.pspec").write_text(NAMED_EDITED)
    (tmp_path / "thaw.pspec").write_text("** -> adam(1e-3)\n")
    return tmp_path


def cli(files: Path, old: str, new: str, *rest: str) -> tuple[int, str]:
    os.chdir(files)
    return run("diff", old, new, "--tree", "model.tree.json", *rest)


@pytest.fixture(autouse=True)
def _restore_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def test_cli_restorable_exits_0(files: Path):
    code, text = cli(files, "named.pspec", "named_edited.pspec")
    assert code == 0, text
    assert text == (
        "restorable: a checkpoint made under named.pspec restores under named_edited.pspec "
        "(identical optimizer state: 2 labels, 6 leaves)\n"
        "\n"
        "labels:\n"
        "  =  frozen  state kept                               4 leaves\n"
        "  =  head    state kept: adam(0.001) -> adam(0.0001)  2 leaves\n"
        "\n" + LAYOUT_NOTE + "\n"
    )


def test_cli_unnamed_edit_exits_1_and_says_why(files: Path):
    code, text = cli(files, "old.pspec", "new.pspec")
    assert code == 1, text
    assert text == (
        "not restorable: a checkpoint made under old.pspec does not restore under new.pspec: "
        "`adam(0.001)` is renamed `adam(0.0001)`\n"
        "\n"
        "labels:\n"
        "  =  frozen                       state kept                 4 leaves\n"
        "  ~  adam(0.001) -> adam(0.0001)  renamed, same state shape  2 leaves\n"
        "\n"
        "help: `adam(0.001)` -> `adam(0.0001)`: same leaves, same state shape, new label. "
        "An unnamed rule's label is its action's text, so editing a number in it renames the "
        "state: name the rule (`... as NAME`), or write the number as a `param` or `let`, so "
        "that later edits keep the label\n"
        "help: to resume from an existing checkpoint, restore it under OLD, then carry the state "
        "of the kept labels (and of renamed labels with the same state shape) over to NEW's "
        "freshly initialised state\n" + LAYOUT_NOTE + "\n"
    )


def test_cli_frozen_to_trainable_lists_leaves(files: Path):
    code, text = cli(files, "old.pspec", "thaw.pspec")
    assert code == 1, text
    assert "leaves that change label (4):\n  backbone/Dense_0/bias " in text
    assert "state differences (8):" in text


def test_cli_json(files: Path):
    code, text = cli(files, "old.pspec", "new.pspec", "--format", "json")
    assert code == 1
    doc = json.loads(text)
    assert doc["restorable"] is False
    assert (doc["old"], doc["new"]) == ("old.pspec", "new.pspec")
    assert doc["renamed"][0]["new"] == "adam(0.0001)"
    code, text = cli(files, "named.pspec", "named_edited.pspec", "--format", "json")
    assert code == 0 and json.loads(text)["restorable"] is True


def test_cli_set_goes_to_the_specs_that_declare_it(files: Path):
    (files / "p.pspec").write_text("param lr = 1e-3\nbackbone/** -> frozen\nhead/** -> adam(lr)\n")
    (files / "q.pspec").write_text(
        "param lr = 1e-3\nparam wd\nbackbone/** -> frozen\nhead/** -> adam(lr) as x\n"
        "head/nothing -> adamw(lr, weight_decay=wd)\n"
    )
    code, text = cli(files, "p.pspec", "p.pspec", "--set", "lr=0.01")
    assert code == 0, text
    code, text = cli(files, "p.pspec", "q.pspec", "--set", "lr=0.01", "--set", "wd=0.1")
    assert code == 1, text  # wd only reaches q.pspec; adam(lr) is renamed x
    assert "`adam(lr)` is renamed `x`" in text


def test_cli_unknown_set_is_a_usage_error(files: Path):
    (files / "p.pspec").write_text("param lr = 1e-3\n** -> adam(lr)\n")
    code, text = cli(files, "p.pspec", "p.pspec", "--set", "lrr=0.1")
    assert code == 2
    assert "E304" in text and "did you mean `lr`?" in text


def test_cli_missing_files_exit_2(files: Path):
    code, text = cli(files, "missing.pspec", "also-missing.pspec")
    assert code == 2
    assert "missing.pspec" in text and "also-missing.pspec" in text and "E001" in text
    code, text = cli(files, "old.pspec", "missing.pspec", "--format", "json")
    assert code == 2 and json.loads(text)["diagnostics"][0]["code"] == "E001"


def test_cli_unreadable_tree_exits_2(files: Path, capsys: pytest.CaptureFixture[str]):
    os.chdir(files)
    code, text = run("diff", "old.pspec", "new.pspec", "--tree", "nope.json")
    assert code == 2 and text == ""
    assert capsys.readouterr().err.startswith("pspec: error: cannot read tree: nope.json")


def test_cli_usage_errors_exit_2(files: Path):
    os.chdir(files)
    assert run("diff", "old.pspec", "new.pspec")[0] == 2  # --tree is required
    assert run("diff", "old.pspec", "--tree", "model.tree.json")[0] == 2
    assert (
        run("diff", "old.pspec", "new.pspec", "--tree", "model.tree.json", "--format", "x")[0] == 2
    )
    assert run("diff", "--help")[0] == 0


def test_cli_spec_problems_exit_1(files: Path):
    (files / "typo.pspec").write_text("backbone/** -> frozen\nhead/** -> adma(1e-3)\n")
    (files / "partial.pspec").write_text("backbone/** -> frozen\n")
    code, text = cli(files, "typo.pspec", "partial.pspec")
    assert code == 1
    assert "E401" in text and "E501" in text and "Found 2 errors." in text


def test_cli_example_spec_against_itself():
    code, text = run(
        "diff",
        str(ROOT / "examples/checkpoint_resume.pspec"),
        str(ROOT / "examples/checkpoint_resume.pspec"),
        "--tree",
        str(ROOT / "examples/checkpoint_resume.tree.json"),
    )
    assert code == 0, text


def test_python_m_partspec_diff(files: Path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    args = ["diff", "old.pspec", "new.pspec", "--tree", "model.tree.json"]
    proc = subprocess.run(
        [sys.executable, "-m", "partspec", *args],
        cwd=files,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("not restorable:")


def test_a_slash_in_a_key_beside_the_nested_path_hides_no_difference() -> None:
    """`{"a/b": x}` beside `{"a": {"b": y}}` flattened to one text path: a difference in
    the state of the one was hidden by the other, and diff ended in an AssertionError."""
    tree = {
        "a/b": jax.ShapeDtypeStruct((3,), jnp.float32),
        "a": {"b": jax.ShapeDtypeStruct((4, 4), jnp.float32)},
    }
    old = "** -> adafactor(1e-3) as x"
    new = "** -> adafactor(1e-3, min_dim_size_to_factor=4) as x"  # factors the 4x4 only
    report = diff(old, new, tree)
    assert not report.restorable
    assert report.changed == ("x",)
    assert {d.kind for d in report.state_differences} == {"shape"}
    assert diff(old, old, tree).restorable
