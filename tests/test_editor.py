"""The editor analysis behind ``pspec lsp`` (:mod:`partspec.tools.editor`): the same
diagnostics as ``pspec check``, hovers, completions and definitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partspec.tools.config import Config
from partspec.tools.editor import analyze, completions, definition, format_text, hover

TREE = {
    f"blocks_{i}": {
        "w": {"shape": [2, 2], "dtype": "float32"},
        "b": {"shape": [2], "dtype": "float32"},
    }
    for i in range(3)
}


@pytest.fixture
def tree(tmp_path: Path) -> Config:
    (tmp_path / "t.json").write_text(json.dumps(TREE))
    return Config(tree=str(tmp_path / "t.json"))


def test_diagnostics_are_pspec_checks(
    tmp_path: Path, tree: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    from partspec.tools.cli import main

    text = "blocks_0/** -> sgd(0.1)\nblocks_9/** -> sgd(0.1)\n"
    spec = tmp_path / "s.pspec"
    spec.write_text(text)
    main(["check", str(spec), "--tree", str(tmp_path / "t.json"), "--format", "json"])
    want = [(d["code"], d["line"]) for d in json.loads(capsys.readouterr().out)["diagnostics"]]
    got = [(d.code, d.line or None) for d in analyze(text, str(spec), tree).diagnostics]
    assert got == want and {c for c, _ in got} == {"E501", "W601"}


def test_a_capture_rules_hover_lists_its_learning_rates(tmp_path: Path, tree: Config) -> None:
    text = "blocks_<i>/** -> sgd(0.1 * 0.5 ** i)\n"
    a = analyze(text, str(tmp_path / "s.pspec"), tree)
    got = hover(a, 1, 3)
    assert got is not None
    assert "owns 6 leaves, 18 parameters" in got
    assert [line for line in got.splitlines() if line.startswith("- ")] == [
        "- learning rate constant 0.1",
        "- learning rate constant 0.05",
        "- learning rate constant 0.025",
    ]


def test_without_a_tree_a_hover_says_how_to_get_one(tmp_path: Path) -> None:
    a = analyze("x/** -> chain(add_decayed_weights(1e-4), sgd(0.1))\n", str(tmp_path / "s.pspec"))
    got = hover(a, 1, 1)
    assert got is not None and "learning rate constant 0.1" in got and "[tool.partspec]" in got


def test_definitions_follow_names_into_included_files(tmp_path: Path) -> None:
    (tmp_path / "base.pspec").write_text("let rate = 0.1\nlet @norm = **/ln/**\n")
    text = 'include "base.pspec"\n@norm -> frozen\n** -> sgd(rate)\n'
    a = analyze(text, str(tmp_path / "top.pspec"))
    assert a.diagnostics == []
    loc = definition(a, 3, 12)
    assert loc is not None
    assert (Path(loc.path), loc.line, loc.column) == (tmp_path / "base.pspec", 1, 5)
    loc = definition(a, 2, 2)
    assert loc is not None and (loc.line, loc.column) == (2, 5)
    assert hover(a, 2, 2) == "**`let @norm`** = `**/ln/**`"
    loc = definition(a, 1, 12)
    assert loc is not None and Path(loc.path) == tmp_path / "base.pspec"


def test_an_included_files_error_shows_at_the_include(tmp_path: Path) -> None:
    (tmp_path / "base.pspec").write_text("x/** -> adma(1)\n")
    a = analyze('include "base.pspec"\n** -> frozen\n', str(tmp_path / "top.pspec"))
    (d,) = a.diagnostics
    assert (d.code, d.line, d.column) == ("E401", 1, 1)
    assert "base.pspec:1:9" in d.message


@pytest.mark.parametrize(
    ("text", "has", "lacks"),
    [
        ("global clip", ["clip_by_global_norm"], ["adam"]),
        ("x/** -> sg", ["sgd"], ["clip_by_global_norm", "max"]),
        ("x/** -> sgd(cos", ["cosine_decay_schedule"], []),
        ("let base = 1\nx/** -> sgd(ba", ["base"], []),
        ("let @norm = **/ln/**\n@n", ["@norm"], ["norm"]),
        ("x/** -> sgd(0.1, mo", ["momentum"], ["b1"]),
        ("x/** -> sgd(0.1, momentum=0.9, ", ["nesterov"], ["momentum"]),
        ("x/** -> adamw(\n  1e-3,\n  weight", ["weight_decay"], []),
        ("x/** -> sgd(max(1, 2), mo", ["momentum"], []),
    ],
)
def test_completion_offers_what_fits_here(text: str, has: list[str], lacks: list[str]) -> None:
    lines = text.split("\n")
    a = analyze(text.rsplit("\n", 1)[0] if "\n" in text else "", "s.pspec")
    got = [c.label for c in completions(text, len(lines), len(lines[-1]) + 1, a)]
    assert set(has) <= set(got), got
    assert not set(lacks) & set(got), got


def test_formatting_is_pspec_fmt_and_leaves_a_broken_buffer_alone() -> None:
    assert format_text("x/**->sgd( 0.1 )  # c\n", "s.pspec") == "x/** -> sgd(0.1)  # c\n"
    assert format_text("x/** -> sgd(", "s.pspec") is None


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=12), st.integers(0, 14))
def test_lsp_positions_count_utf16_units_and_come_back(line: str, col0: int) -> None:
    from partspec.tools.lsp import _column, _utf16

    col = min(col0, len(line)) + 1
    units = _utf16(line, col)
    assert units == len(line[: col - 1].encode("utf-16-le")) // 2
    assert _column(line, units) == col


def test_the_tree_is_read_again_only_when_it_changes(tmp_path: Path, tree: Config) -> None:
    path = Path(tree.tree or "")
    a = analyze("** -> sgd(0.1)\n", str(tmp_path / "s.pspec"), tree)
    b = analyze("** -> sgd(0.2)\n", str(tmp_path / "s.pspec"), tree)
    assert a.leaves is b.leaves and a.leaves is not None and len(a.leaves) == 6
    path.write_text(json.dumps({"only": {"shape": [1], "dtype": "float32"}}))
    c = analyze("** -> sgd(0.1)\n", str(tmp_path / "s.pspec"), tree)
    assert c.leaves is not None and [leaf.path for leaf in c.leaves] == [("only",)]


def test_a_with_rules_hover_counts_the_leaves_whose_settings_it_decides(
    tmp_path: Path, tree: Config
) -> None:
    text = "** -> adamw(1e-3, weight_decay=0.05)\n**/b with weight_decay = 0\nnone/** with lr * 2\n"
    a = analyze(text, str(tmp_path / "s.pspec"), tree)
    got = hover(a, 2, 3)
    assert got is not None and got.startswith("**`with` rule** `weight_decay = 0`")
    assert "decides settings of 3 leaves, 6 parameters" in got
    got = hover(a, 3, 3)
    assert got is not None and "decides nothing" in got
