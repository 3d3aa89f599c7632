"""One vocabulary: the grammar, the parser, the formatter, the checker and the tree
readers agree with :mod:`partspec.language.vocabulary`."""

from __future__ import annotations

import re

import pytest

import partspec
from partspec.language import ast
from partspec.language.formatter import format_pattern
from partspec.language.parser import grammar_text, parse_syntax
from partspec.language.vocabulary import (
    FROZEN_LABEL,
    KEYWORDS,
    LEAF_DTYPES,
    LEAF_PROPERTIES,
    OPTAX_DTYPES,
)
from partspec.tools import manifest


def test_the_grammars_keywords_are_the_vocabularys() -> None:
    # Every terminal defined as a bare lowercase word is a keyword.
    words = set(re.findall(r'^_?[A-Z]+: "([a-z]+)"$', grammar_text(), flags=re.M))
    assert words == KEYWORDS


@pytest.mark.parametrize("word", sorted(KEYWORDS))
def test_keywords_are_no_names_and_are_quoted_as_segments(word: str) -> None:
    with pytest.raises(partspec.SpecError):
        parse_syntax(f"let {word} = 1")
    text = format_pattern(ast.Pattern((ast.Lit(word), ast.Sep(), ast.GlobStar())))
    assert text == f'"{word}"/**'
    assert parse_syntax(f"{text} -> frozen").rules[0].patterns[0].nodes[0] == ast.Lit(word)


@pytest.mark.parametrize("prop", LEAF_PROPERTIES)
def test_every_leaf_property_is_known_to_conditions_and_only_there(prop: str) -> None:
    partspec.check(f"** where {prop} == {prop} -> frozen")
    with pytest.raises(partspec.SpecError, match="property of a leaf"):
        partspec.check(f"** -> sgd({prop})")


def test_dtype_names() -> None:
    assert set(manifest.SAFETENSORS_DTYPES.values()) <= LEAF_DTYPES
    assert set(manifest._TYPESTR.values()) <= LEAF_DTYPES
    assert manifest.DTYPES == LEAF_DTYPES
    assert OPTAX_DTYPES <= LEAF_DTYPES


def test_frozen_is_the_label_of_frozen_rules_and_reserved() -> None:
    assert partspec.check("a -> frozen").rules[0].label == FROZEN_LABEL
    with pytest.raises(partspec.SpecError, match="keyword"):  # not a name, so never a label
        partspec.check(f"a -> sgd(0.1) as {FROZEN_LABEL}")
