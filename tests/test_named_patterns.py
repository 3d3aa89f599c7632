"""Named patterns: ``let @name = pattern, ...`` defined once, ``@name`` used in rules."""

from __future__ import annotations

import numpy as np
import pytest

import partspec
from partspec.diagnostics import SpecError
from partspec.language.parser import parse_syntax

PARAMS = {
    "cls_token": np.zeros(2, np.float32),
    "pos_embed": np.zeros(2, np.float32),
    "patch_embed": {"w": np.zeros((2, 2), np.float32)},
    "head": {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)},
    "@x": {"a": np.zeros(1, np.float32)},
}

SPEC = """\
let @embed = {cls_token,pos_embed}, patch_embed/**  # the embeddings
"@x"/**                       -> frozen
**                            -> adamw(1e-3)
@embed                        with lr * 0.1
@embed, head/** except @embed with weight_decay = 0
"""


def test_a_named_pattern_matches_as_its_patterns_would() -> None:
    first, rest = SPEC.split("\n", 1)
    embed = "{cls_token,pos_embed}, patch_embed/**"
    written_out = first + "\n" + rest.replace("@embed", embed)
    named = partspec.compile(SPEC, PARAMS, strict=True)
    plain = partspec.compile(written_out, PARAMS, strict=True)
    assert named.labels == plain.labels
    assert named.labels["patch_embed"]["w"] == "adamw(0.001)[lr*0.1]"
    assert named.labels["head"]["w"] == "adamw(0.001)[weight_decay=0]"
    assert named.labels["@x"]["a"] == "frozen"


def test_format_writes_the_name_back_and_round_trips() -> None:
    spec = parse_syntax(SPEC)
    text = partspec.format(spec)
    assert text == SPEC
    assert parse_syntax(text) == spec


def test_a_named_pattern_may_use_another_and_captures() -> None:
    text = "let @blocks = blocks/<i>/**\nlet @all = @blocks\n@all -> sgd(0.1 * i)\n"
    spec = parse_syntax(text)
    assert partspec.format(spec) == text
    plan = partspec.compile(text, {"blocks": {"0": np.zeros(1), "2": np.zeros(1)}})
    assert plan.labels == {"blocks": {"0": "sgd(0.1 * i)[i=0]", "2": "sgd(0.1 * i)[i=2]"}}


@pytest.mark.parametrize(
    ("text", "code", "message", "hint"),
    [
        ("@nope -> frozen", "E301", "undefined pattern `@nope`", "let @nope = ..."),
        (
            "let @emb = x\n@embd -> frozen",
            "E301",
            "undefined pattern `@embd`",
            "did you mean `@emb`?",
        ),
        ("@a -> frozen\nlet @a = x", "E301", "undefined pattern `@a`", "above its first use"),
        ("let @a = x\nlet @a = y", "E302", "pattern `@a` is already defined on line 1", None),
        ("let @_a = x", "E303", "may not start with `_`", None),
        ("let @a = <i>/x, y", "E204", "capture different names", None),
        ("let @a = x\n@a/** -> frozen", "E100", "unexpected", None),
    ],
)
def test_misuse_is_an_error_with_a_position(
    text: str, code: str, message: str, hint: str | None
) -> None:
    with pytest.raises(SpecError) as info:
        partspec.parse(text)
    diag = info.value.diagnostics[0]
    assert diag.code == code and message in diag.message, str(info.value)
    assert diag.line >= 1 and diag.column >= 1
    if hint is not None:
        assert hint in (diag.hint or "")


def test_a_segment_starting_with_at_is_quoted_by_format() -> None:
    spec = parse_syntax('"@x"/** -> frozen')
    assert partspec.format(spec) == '"@x"/** -> frozen\n'


# ---------------------------------------------------------------- across includes

BASE = """\
let @norms = **/{ln,norm}*/*
let @blocks = blocks/<i>/**
"""
TREE = {
    "blocks": {"0": {"w": np.zeros(2), "ln": {"scale": np.zeros(2)}}},
    "head": {"w": np.zeros(2)},
}


def _files(tmp_path, top: str) -> str:
    (tmp_path / "base.pspec").write_text(BASE)
    (tmp_path / "top.pspec").write_text(top)
    return str(tmp_path / "top.pspec")


def test_a_name_defined_in_an_included_file_is_usable_below_the_include(tmp_path) -> None:
    top = (
        'include "base.pspec"\n@norms  -> adam(1e-3)\n@blocks -> sgd(0.1 * i)\n**      -> frozen\n'
    )
    path = _files(tmp_path, top)
    spec = partspec.load(path)
    written_out = partspec.parse(
        "**/{ln,norm}*/* -> adam(1e-3)\nblocks/<i>/** -> sgd(0.1 * i)\n** -> frozen\n"
    )
    assert partspec.compile(spec, TREE).labels == partspec.compile(written_out, TREE).labels
    assert [p.ref for r in spec.rules for p in r.patterns] == ["norms", "blocks", None]
    # The file itself formats with the names as written (nothing to expand there).
    assert partspec.format(parse_syntax(top)) == top


def test_a_name_used_above_the_include_that_defines_it_is_undefined(tmp_path) -> None:
    path = _files(tmp_path, '@norms -> frozen\ninclude "base.pspec"\n** -> frozen\n')
    with pytest.raises(SpecError) as info:
        partspec.load(path)
    d = info.value.diagnostics[0]
    assert (d.code, d.line, d.column) == ("E301", 1, 1)


@pytest.mark.parametrize(
    ("top", "code", "line", "message"),
    [
        ('include "base.pspec"\n@nroms -> frozen\n', "E301", 2, "did you mean `@norms`?"),
        ('include "base.pspec"\nlet @norms = x/**\n', "E302", 2, "already defined on line 1"),
        ('include "base.pspec"\n@blocks, head/** -> frozen\n', "E204", 2, "capture different"),
        ('include "base.pspec"\n** except @blocks -> frozen\n', "E204", 2, "`except`"),
    ],
)
def test_misuse_across_files_is_an_error_in_the_using_file(
    tmp_path, top: str, code: str, line: int, message: str
) -> None:
    path = _files(tmp_path, top)
    with pytest.raises(SpecError) as info:
        partspec.load(path)
    d = info.value.diagnostics[0]
    assert (d.code, d.line, d.filename) == (code, line, path)
    assert message in d.message + (d.hint or "")
    assert d.source_line == top.splitlines()[line - 1]
