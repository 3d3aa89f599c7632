"""Diagnostics as data: a severity enum, a primary span, secondary annotations."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import jax.numpy as jnp
import pytest

import partspec
from partspec.diagnostics import Annotation, Diagnostic, Severity, Span
from partspec.diagnostics.render import RENDERERS, as_json


def test_severity_is_an_enum_that_compares_as_text() -> None:
    d = Diagnostic("E100", "error", "x")
    assert d.severity is Severity.ERROR and d.severity == "error" and d.is_error
    assert Diagnostic.at("W601", "x", Span(1, 1, 1, 2), severity="warning").severity is (
        Severity.WARNING
    )
    with pytest.raises(ValueError):
        Diagnostic("E100", "fatal", "x")


def test_a_shadowed_rule_points_at_the_rules_that_shadow_it() -> None:
    params = {"a": {"w": jnp.ones(1)}, "b": jnp.ones(1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = partspec.compile("a/** -> frozen\n** -> sgd(1.0)\na/w -> adam(1.0)", params)
    (w,) = plan.diagnostics
    assert w.code == "W602" and w.line == 3
    assert [(a.line, a.label, a.source_line) for a in w.annotations] == [
        (1, "takes its parameters first", "a/** -> frozen")
    ]


def test_a_label_conflict_points_at_the_first_use() -> None:
    with pytest.raises(partspec.SpecError) as err:
        partspec.check("a -> sgd(0.1) as x\nb -> adam(0.1) as x")
    (d,) = err.value.diagnostics
    assert (d.code, d.line) == ("E407", 2)
    (a,) = d.annotations
    assert (a.line, a.column, a.source_line) == (1, 18, "a -> sgd(0.1) as x")
    assert "first names `sgd(0.1)`" in a.label


def test_an_include_problem_points_at_the_chain_of_includes(tmp_path: Path) -> None:
    (tmp_path / "a.pspec").write_text('param lr = 1\ninclude "b.pspec"\n')
    (tmp_path / "b.pspec").write_text('include "missing.pspec"\n')
    with pytest.raises(partspec.SpecError) as err:
        partspec.load(tmp_path / "a.pspec")
    (d,) = err.value.diagnostics
    assert d.code == "E802"
    (a,) = d.annotations
    assert (a.file, a.line, a.source_line, a.label) == (
        str(tmp_path / "a.pspec"),
        2,
        'include "b.pspec"',
        "included here",
    )
    assert f" ::: {tmp_path / 'a.pspec'}:2:1" in d.render()


def test_every_format_carries_the_annotations() -> None:
    d = Diagnostic.at(
        "W602",
        "shadowed",
        Span(3, 1, 3, 5),
        severity="warning",
        annotations=(Annotation.at(Span(1, 1, 1, 4), "first"),),
    ).with_source("a/**\nb\nc/**", "s.pspec")
    assert "first" in RENDERERS["full"]([d]) and "first" in RENDERERS["github"]([d])
    assert as_json(d)["related"] == [
        {
            "filename": "s.pspec",
            "line": 1,
            "column": 1,
            "end_line": 1,
            "end_column": 4,
            "message": "first",
        }
    ]
    json.loads(RENDERERS["json"]([d]))


def test_every_code_in_the_source_has_a_documentation_anchor() -> None:
    # The JSON and SARIF outputs link each diagnostic to `language/#CODE`: an anchor in
    # the code table of docs/language.md, which MkDocs publishes as language/.
    from pathlib import Path

    from partspec.diagnostics.render import code_url

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "language.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([EW]\d{3})"></a>`\1`', doc))
    used = {
        code
        for path in (root / "partspec").rglob("*.py")
        for code in re.findall(r'"([EW]\d{3})"', path.read_text(encoding="utf-8"))
    }
    assert used <= anchors, f"codes without a row in docs/language.md: {sorted(used - anchors)}"
    assert {"E001", "E105", "E423", "E901", "W604"} <= used
    assert code_url("E105").endswith("language/#E105")
