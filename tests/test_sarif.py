"""``pspec check --format sarif``: valid SARIF 2.1.0 that says what the JSON format says.

The schema is the one Microsoft's SARIF Multitool ships (``tests/js``), read with
``jsonschema``; GitHub code scanning accepts what it accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partspec.diagnostics import Annotation, Diagnostic
from partspec.diagnostics.render import code_url, json_text, sarif
from partspec.tools.cli import main
from tests.js_tools import node_module

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the test extra)")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads(
        node_module("@microsoft/sarif-multitool-linux/sarif-2.1.0.json").read_text("utf-8")
    )
    return jsonschema.Draft202012Validator(schema)


def _valid(validator: Any, text: str) -> dict[str, Any]:
    log = json.loads(text)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(log)]
    assert not errors, errors
    return log


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


SPEC = """\
let lr = 1e-3
backbone/** -> frozen
backbone/** -> adam(lr)
head/* -> adam(lr)
"""


def test_a_check_with_errors_is_a_valid_log_with_the_json_formats_facts(
    validator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my spec ü.pspec").write_text(SPEC + "other/** -> sgd(0.1)\n")
    tree = {
        "backbone": {"w": {"shape": [2, 2], "dtype": "float32"}},
        "extra": {"b": {"shape": [3], "dtype": "float32"}},
    }
    (tmp_path / "t.json").write_text(json.dumps(tree))
    args = ["check", "my spec ü.pspec", "--tree", "t.json"]
    code, out = _run(tmp_path, capsys, *args, "--format", "sarif")
    code_json, out_json = _run(tmp_path, capsys, *args, "--format", "json")
    assert code == code_json == 1
    log = _valid(validator, out)
    (run,) = log["runs"]
    diags = json.loads(out_json)["diagnostics"]
    assert [r["ruleId"] for r in run["results"]] == [d["code"] for d in diags]
    for r, d in zip(run["results"], diags):
        assert r["level"] == d["severity"]
        assert r["message"]["text"].startswith(d["message"])
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "my%20spec%20%C3%BC.pspec"
        if d["line"] is None:
            assert "region" not in loc
        else:
            assert (loc["region"]["startLine"], loc["region"]["startColumn"]) == (
                d["line"],
                d["column"],
            )
        rule = run["tool"]["driver"]["rules"][r["ruleIndex"]]
        assert rule["id"] == r["ruleId"] and rule["helpUri"] == d["url"] == code_url(d["code"])


def test_a_clean_check_is_a_valid_log_with_no_results(
    validator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ROOT / "examples" / "vit_finetune.pspec"
    code, out = _run(tmp_path, capsys, "check", str(spec), "--format", "sarif")
    assert code == 0
    assert _valid(validator, out)["runs"][0]["results"] == []


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
pos = st.integers(0, 10**6)


@st.composite
def diagnostics(draw: st.DrawFn) -> Diagnostic:
    line = draw(st.integers(0, 10**6))
    return Diagnostic(
        code=draw(st.from_regex(r"\A[EW][0-9]{3}\Z")),
        severity=draw(st.sampled_from(["error", "warning"])),
        message=draw(text),
        line=line,
        column=draw(pos) if line else 0,
        end_line=draw(pos) if line else 0,
        end_column=draw(pos) if line else 0,
        filename=draw(st.none() | text),
        hint=draw(st.none() | text),
        notes=tuple(draw(st.lists(text, max_size=2))),
        annotations=tuple(
            Annotation(
                draw(st.integers(1, 99)),
                draw(st.integers(1, 99)),
                0,
                0,
                draw(text),
                draw(st.none() | text),
            )
            for _ in range(draw(st.integers(0, 2)))
        ),
    )


@given(st.lists(diagnostics(), max_size=4))
def test_any_diagnostics_render_as_a_valid_log(diags: list[Diagnostic]) -> None:
    # jsonschema is slow to build: one validator for every example.
    validator = _VALIDATOR.get("v")
    if validator is None:
        schema = node_module("@microsoft/sarif-multitool-linux/sarif-2.1.0.json")
        validator = _VALIDATOR["v"] = jsonschema.Draft202012Validator(
            json.loads(schema.read_text("utf-8"))
        )
    log = _valid(validator, sarif(diags))
    results = log["runs"][0]["results"]
    assert len(results) == len(diags) == len(json.loads(json_text(diags))["diagnostics"])
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert [rules[r["ruleIndex"]]["id"] for r in results] == [d.code for d in diags]


_VALIDATOR: dict[str, Any] = {}
