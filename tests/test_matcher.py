"""Glob compilation and matching (compiled form and matched sets, as in pathspec)."""

from __future__ import annotations

import pytest

import partspec
from partspec.language import ast
from partspec.matching.globs import compile_patterns, range_classes


def _pattern(text: str) -> ast.Pattern:
    return partspec.parse(f"{text} -> frozen").rules[0].patterns[0]


PATHS = [
    "a",
    "a/b",
    "a/b/c",
    "b",
    "b/a",
    "x/a/b",
    "encoder/layer_0/kernel",
    "encoder/layer_11/kernel",
    "encoder/layer_12/kernel",
    "encoder/layer_05/kernel",
    "mlp/~/linear_1/w",
    "mlp/~/linear_0/b",
    "head/kernel",
    "head/bias",
    "ln_1/scale",
    "my key/w",
    "a*b",
    "layers/0/kernel",
]


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("a", {"a"}),
        ("a/*", {"a/b"}),
        ("a/**", {"a", "a/b", "a/b/c"}),
        ("**/b", {"b", "a/b", "x/a/b", "mlp/~/linear_0/b"}),
        ("a/**/c", {"a/b/c"}),
        ("**/a/**", {"a", "a/b", "a/b/c", "b/a", "x/a/b"}),
        ("encoder/layer_{0..11}/*", {"encoder/layer_0/kernel", "encoder/layer_11/kernel"}),
        ("encoder/layer_?/*", {"encoder/layer_0/kernel"}),
        ("encoder/layer_[1-9]*/*", {"encoder/layer_11/kernel", "encoder/layer_12/kernel"}),
        ("mlp/~/linear_1/**", {"mlp/~/linear_1/w"}),
        ("mlp/~/linear_[!1]/*", {"mlp/~/linear_0/b"}),
        ("{head,ln_*}/*", {"head/kernel", "head/bias", "ln_1/scale"}),
        ("{a/b,b}", {"a/b", "b"}),
        ('"my key"/*', {"my key/w"}),
        ('"a*b"', {"a*b"}),
        ("a\\*b", {"a*b"}),
        ("a*b", {"a*b"}),
        ("layers/{0..3}/kernel", {"layers/0/kernel"}),
        ("**", set(PATHS)),
        ("*", {"a", "b", "a*b"}),
    ],
)
def test_matched_paths(pattern: str, matched: set[str]) -> None:
    m = compile_patterns([_pattern(pattern)])
    assert {p for p in PATHS if m.match(p.split("/"))} == matched


@pytest.mark.parametrize(
    ("pattern", "nodes"),
    [
        ("a/**", (ast.Lit("a"), ast.Sep(), ast.GlobStar())),
        ("x_{0..11}", (ast.Lit("x_"), ast.Range(0, 11))),
        ("[!a-c]?", (ast.CharClass(True, (("a", "c"),)), ast.QMark())),
        ('"a b"c\\*', (ast.Lit("a bc*"),)),
        ("{a,b/c}", (ast.Alt(((ast.Lit("a"),), (ast.Lit("b"), ast.Sep(), ast.Lit("c")))),)),
        ('{"0..2"}', (ast.Alt(((ast.Lit("0..2"),),)),)),
    ],
)
def test_compiled_form(pattern: str, nodes: tuple[ast.GlobNode, ...]) -> None:
    assert _pattern(pattern).nodes == nodes
    assert partspec.format_pattern(_pattern(pattern)) == partspec.format_pattern(ast.Pattern(nodes))


def test_range_classes_cover_exactly_the_range() -> None:
    for lo, hi in [(0, 0), (0, 9), (0, 11), (7, 123), (95, 105), (0, 1000), (999, 1001)]:
        seqs = range_classes(lo, hi)
        covered = set()
        for seq in seqs:
            nums = [""]
            for a, b in seq:
                nums = [n + str(d) for n in nums for d in range(a, b + 1)]
            covered |= {int(n) for n in nums}
            assert all(n == "0" or not n.startswith("0") for n in nums)
        assert covered == set(range(lo, hi + 1)), (lo, hi)


def test_pathological_pattern_is_linear() -> None:
    # 25 `**` segments against a 200-segment path: a backtracking matcher explores
    # C(200, 25) splits; the DFA builds at most one state per symbol.
    pattern = _pattern("/".join(["**"] * 25 + ["z"]))
    m = compile_patterns([pattern])
    path = ["a"] * 200
    assert m.match(path) == ()
    assert m.match([*path, "z"]) == (0,)
    assert m.num_states <= 2 * (len(path) + 2) + 8

    stars = _pattern("*a*a*a*a*a*a*a*a*a*a*b")
    m = compile_patterns([stars])
    assert m.match(["a" * 400]) == ()
    assert m.match(["a" * 400 + "b"]) == (0,)
    assert m.num_states <= 2 * 402


def test_except_removes_leaves_from_a_rule() -> None:
    spec = partspec.parse("backbone/** except **/ln_*/**, **/bias -> frozen\n** -> sgd(1.0)")
    from partspec.matching.globs import compile_rules

    m = compile_rules([(r.patterns, r.excepts) for r in spec.rules])
    assert m.match(["backbone", "dense", "kernel"]) == (0, 1)
    assert m.match(["backbone", "ln_0", "scale"]) == (1,)
    assert m.match(["backbone", "dense", "bias"]) == (1,)
