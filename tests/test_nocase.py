"""Case-insensitive patterns, ``(?i)``: ASCII letters match either case."""

from __future__ import annotations

import dataclasses
import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.diagnostics import SpecError
from partspec.language import ast
from partspec.language.parser import parse_syntax
from partspec.matching.captures import extract_captures
from partspec.matching.globs import compile_patterns
from tests import strategies as S

_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _lowered(nodes: tuple[ast.GlobNode, ...]) -> tuple[ast.GlobNode, ...]:
    """The reference: lower-case the pattern's letters (a class as the set of its
    characters, lower-cased), to be matched against a lower-cased path."""
    out: list[ast.GlobNode] = []
    for n in nodes:
        if isinstance(n, ast.Lit):
            out.append(ast.Lit(n.text.translate(_LOWER)))
        elif isinstance(n, ast.CharClass):
            chars = {chr(c) for lo, hi in n.ranges for c in range(ord(lo), ord(hi) + 1)}
            low = sorted({c.translate(_LOWER) for c in chars})
            out.append(ast.CharClass(n.negated, tuple((c, c) for c in low)))
        elif isinstance(n, ast.Alt):
            out.append(ast.Alt(tuple(_lowered(b) for b in n.branches)))
        else:
            out.append(n)
    return tuple(out)


def _scramble(data: st.DataObject, text: str) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.swapcase() if f else c for c, f in zip(text, flips))


def _scramble_nodes(
    data: st.DataObject, nodes: tuple[ast.GlobNode, ...]
) -> tuple[ast.GlobNode, ...]:
    out: list[ast.GlobNode] = []
    for n in nodes:
        if isinstance(n, ast.Lit):
            out.append(ast.Lit(_scramble(data, n.text)))
        elif isinstance(n, ast.Alt):
            out.append(ast.Alt(tuple(_scramble_nodes(data, b) for b in n.branches)))
        else:
            out.append(n)
    return tuple(out)


@given(st.data())
def test_nocase_matcher_agrees_with_the_lowercased_reference(data: st.DataObject) -> None:
    path = tuple(data.draw(st.lists(S.keys, min_size=1, max_size=4)))
    pattern = data.draw(st.one_of(S.patterns, S.patterns_for(path)))
    pattern = dataclasses.replace(pattern, nodes=_scramble_nodes(data, pattern.nodes), nocase=True)
    path = tuple(_scramble(data, k) for k in path)
    want = S.naive_match(
        ast.Pattern(_lowered(pattern.nodes)), tuple(k.translate(_LOWER) for k in path)
    )
    assert bool(compile_patterns([pattern]).match(path)) == want


@given(st.data())
def test_without_nocase_case_still_matters(data: st.DataObject) -> None:
    path = tuple(data.draw(st.lists(S.keys, min_size=1, max_size=4)))
    pattern = data.draw(S.patterns_for(path))
    upper = tuple(k.upper() for k in path)
    assert bool(compile_patterns([pattern]).match(upper)) == S.naive_match(pattern, upper)


PARAMS = {
    "bert": {
        "LayerNorm": {"weight": np.zeros(2, np.float32), "bias": np.zeros(2, np.float32)},
        "layer_3": {"dense": {"weight": np.zeros((2, 2), np.float32)}},
        "Layer_4": {"dense": {"weight": np.zeros((2, 2), np.float32)}},
    }
}


def test_hugging_face_layer_norms_without_spelling_each_case() -> None:
    text = "(?i)**/layernorm/** -> frozen\n(?i)**/layer_<i>/** -> sgd(0.1 * i)\n"
    plan = partspec.compile(text, PARAMS, strict=True)
    assert plan.labels["bert"]["LayerNorm"] == {"weight": "frozen", "bias": "frozen"}
    assert plan.labels["bert"]["layer_3"]["dense"]["weight"] == "sgd(0.1 * i)[i=3]"
    assert plan.labels["bert"]["Layer_4"]["dense"]["weight"] == "sgd(0.1 * i)[i=4]"


def test_captures_keep_the_path_s_own_text() -> None:
    pattern = parse_syntax("(?i)**/LAYER_<i>/<name> -> frozen").rules[0].patterns[0]
    assert extract_captures(pattern, ("bert", "layer_3", "Dense")) == {"i": "3", "name": "Dense"}


def test_format_round_trips_the_flag() -> None:
    text = "(?i)a/B, c -> frozen\n"
    spec = parse_syntax(text)
    assert spec.rules[0].patterns[0].nocase and not spec.rules[0].patterns[1].nocase
    assert partspec.format(spec) == text
    assert parse_syntax(text) == spec
    assert parse_syntax("a/B -> frozen") != spec


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("a/(?i)b -> frozen", "E100", "`(?i)` goes before the whole pattern"),
        ("(?i) a -> frozen", "E104", "whitespace inside a pattern"),
    ],
)
def test_misplaced_flag_is_an_error_with_a_position(text: str, code: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        partspec.parse(text)
    diag = info.value.diagnostics[0]
    assert (diag.code, diag.line) == (code, 1) and message in diag.message
