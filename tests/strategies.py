"""Shared Hypothesis strategies: parameter trees, glob ASTs, specs, and a naive matcher."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from partspec import ast

# ---------------------------------------------------------------- parameter trees

#: Key characters: ordinary ones plus glob metacharacters, which must be matched literally.
KEY_CHARS = "abcxyz_019~.-/"
SPECIAL_KEY_CHARS = ' *?{}[],"#;\\'

keys = st.one_of(
    st.text(KEY_CHARS, min_size=1, max_size=5),
    st.text(KEY_CHARS + SPECIAL_KEY_CHARS, min_size=1, max_size=4),
    st.sampled_from(["kernel", "bias", "scale", "backbone", "head", "layer_0", "layer_11", "as"]),
)


def arrays(shape_max: int = 3) -> st.SearchStrategy[np.ndarray]:
    """Small float32 arrays with awkward values: -0.0, NaN, inf, huge and tiny numbers."""
    values = st.one_of(
        st.floats(width=32, allow_nan=True, allow_infinity=True),
        st.sampled_from([-0.0, 0.0, 1.0, -1.0]),
    )
    return st.integers(1, shape_max).flatmap(
        lambda n: st.lists(values, min_size=n, max_size=n).map(
            lambda xs: np.asarray(xs, dtype=np.float32)
        )
    )


def param_trees(leaves: st.SearchStrategy[Any] | None = None, max_leaves: int = 12) -> Any:
    """Nested dicts, FrozenDicts, lists and tuples of leaves (at least one leaf)."""
    from flax.core import FrozenDict

    leaf = leaves if leaves is not None else arrays()

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        dicts = st.dictionaries(keys, children, min_size=1, max_size=4)
        return st.one_of(
            dicts,
            dicts.map(FrozenDict),
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
        )

    return st.recursive(leaf, extend, max_leaves=max_leaves).filter(_has_leaf)


def _has_leaf(tree: Any) -> bool:
    import jax

    return len(jax.tree_util.tree_leaves(tree)) > 0


# ---------------------------------------------------------------- glob ASTs

_LIT_CHARS = "abcxyz_019~.-" + ' *?{}[],"#;\\<>=()' + "é"
_CLASS_CHARS = "abcxyz019_-!^]\\.*"


def _normalise(nodes: list[ast.GlobNode]) -> tuple[ast.GlobNode, ...]:
    """Merge adjacent literals and stars, as the parser does (``**`` is not two ``*``)."""
    out: list[ast.GlobNode] = []
    for n in nodes:
        if isinstance(n, ast.Lit) and out and isinstance(out[-1], ast.Lit):
            out[-1] = ast.Lit(out[-1].text + n.text)
        elif isinstance(n, ast.Star) and out and isinstance(out[-1], ast.Star):
            continue
        else:
            out.append(n)
    return tuple(out)


lits = st.text(_LIT_CHARS, min_size=1, max_size=4).map(ast.Lit)
classes = st.builds(
    lambda neg, rs: ast.CharClass(neg, tuple((min(a, b), max(a, b)) for a, b in rs)),
    st.booleans(),
    st.lists(
        st.tuples(st.sampled_from(_CLASS_CHARS), st.sampled_from(_CLASS_CHARS)).filter(
            lambda r: not (min(r) <= "/" <= max(r))  # a class never spans `/`
        ),
        min_size=1,
        max_size=3,
    ),
)
ranges = st.integers(0, 300).flatmap(
    lambda lo: st.integers(lo, lo + 1200).map(lambda hi: ast.Range(lo, hi))
)
_simple_pieces = st.one_of(lits, st.just(ast.Star()), st.just(ast.QMark()), classes, ranges)


def _branch(pieces: st.SearchStrategy[ast.GlobNode]) -> st.SearchStrategy[tuple[ast.GlobNode, ...]]:
    seg = st.lists(pieces, min_size=0, max_size=3).map(_normalise)

    def join(segs: list[tuple[ast.GlobNode, ...]]) -> tuple[ast.GlobNode, ...]:
        out: list[ast.GlobNode] = []
        for i, s in enumerate(segs):
            if i:
                out.append(ast.Sep())
            out.extend(s)
        return tuple(out)

    return st.lists(seg, min_size=1, max_size=2).map(join)


alts = st.lists(_branch(_simple_pieces), min_size=1, max_size=3).map(lambda bs: ast.Alt(tuple(bs)))
pieces = st.one_of(_simple_pieces, alts)
segments = st.one_of(
    st.just((ast.GlobStar(),)),
    st.lists(pieces, min_size=1, max_size=3).map(_normalise),
)


def _join_segments(segs: list[tuple[ast.GlobNode, ...]]) -> ast.Pattern:
    out: list[ast.GlobNode] = []
    for i, s in enumerate(segs):
        if i:
            out.append(ast.Sep())
        out.extend(s)
    return ast.Pattern(_normalise(out))


patterns = st.lists(segments, min_size=1, max_size=4).map(_join_segments)


def patterns_for(path: tuple[str, ...]) -> st.SearchStrategy[ast.Pattern]:
    """Patterns derived from a real path, so that they often (not always) match it."""

    def seg_strategy(seg: str) -> st.SearchStrategy[tuple[ast.GlobNode, ...]]:
        options: list[st.SearchStrategy[tuple[ast.GlobNode, ...]]] = [
            st.just((ast.Lit(seg),)),
            st.just((ast.Star(),)),
            st.just((ast.GlobStar(),)),
            st.just((ast.Lit(seg[0]), ast.Star())) if len(seg) > 1 else st.just((ast.QMark(),)),
            st.just((ast.Alt(((ast.Lit(seg),), (ast.Lit("zz"),))),)),
        ]
        if seg.isdigit() and (seg == "0" or not seg.startswith("0")):
            options.append(st.just((ast.Range(max(0, int(seg) - 1), int(seg) + 1),)))
        return st.one_of(*options)

    segs = st.tuples(*(seg_strategy(s) for s in path)) if path else st.just(())
    return st.one_of(
        segs.map(lambda t: _join_segments(list(t)) if t else ast.Pattern(())), patterns
    )


# ---------------------------------------------------------------- expressions and specs

NAMES = ("lr", "base", "steps")
numbers = st.one_of(
    st.integers(0, 10**6),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([1e-3, 5e-3, 3e-4, 1e-16, 1e20]),
)


def exprs(names: tuple[str, ...] = NAMES) -> st.SearchStrategy[ast.Expr]:
    """Syntactically valid expressions (not necessarily well typed)."""
    base = st.one_of(
        numbers.map(ast.Num),
        st.text(_LIT_CHARS + "\n\t", max_size=5).map(ast.Str),
        st.booleans().map(ast.Bool),
        st.just(ast.NoneLit()),
        st.sampled_from(names).map(ast.Name),
    )

    def extend(inner: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
        return st.one_of(
            st.builds(ast.BinOp, st.sampled_from(["+", "-", "*", "/", "**"]), inner, inner),
            st.builds(ast.Neg, inner),
            st.lists(inner, max_size=3).map(lambda xs: ast.ListExpr(tuple(xs))),
            st.builds(
                lambda f, a, kw: ast.Call(f, tuple(a), tuple(ast.Keyword(k, v) for k, v in kw)),
                st.sampled_from(["adam", "sgd", "chain", "linear_schedule"]),
                st.lists(inner, max_size=2),
                st.dictionaries(st.sampled_from(["b1", "momentum", "eps"]), inner, max_size=2).map(
                    lambda d: list(d.items())
                ),
            ),
        )

    return st.recursive(base, extend, max_leaves=8)


#: Well-typed actions (label text, AST).
_VALID_ACTIONS = [
    "frozen",
    "sgd(0.1)",
    "adam(lr)",
    "adam(5e-3, b1=0.8)",
    "adamw(learning_rate=lr * 10, weight_decay=0.01)",
    "chain(clip_by_global_norm(1.0), adam(lr))",
    "sgd(2 * linear_schedule(0.0, lr, steps), momentum=0.9)",
    "lion(1e-4)",
]


def valid_actions() -> st.SearchStrategy[ast.Frozen | ast.Expr]:
    from partspec.parser import parse_syntax

    def to_ast(text: str) -> ast.Frozen | ast.Expr:
        return parse_syntax(f"x -> {text}").rules[0].action

    return st.sampled_from(_VALID_ACTIONS).map(to_ast)


PRELUDE = "let lr = 1e-3\nparam steps = 100\n"


def rules(pattern_strategy: st.SearchStrategy[ast.Pattern] = patterns) -> Any:
    return st.builds(
        lambda ps, ex, act, lab: ast.Rule(tuple(ps), tuple(ex), act, lab),
        st.lists(pattern_strategy, min_size=1, max_size=2),
        st.lists(pattern_strategy, max_size=1),
        valid_actions(),
        st.one_of(st.none(), st.sampled_from(["head", "body", "tail_1"])),
    )


# ---------------------------------------------------------------- naive reference matcher

_SEP = None


def naive_match(pattern: ast.Pattern, path: tuple[str, ...]) -> bool:
    """Backtracking reference matcher, written from the documented semantics."""
    syms: list[str | None] = []
    for i, seg in enumerate(path):
        if i:
            syms.append(_SEP)
        syms.extend(_SEP if c == "/" else c for c in seg)  # "/" in a key separates too
    return _m(list(pattern.nodes), syms, 0, first=True)


def _m(nodes: list[ast.GlobNode], s: list[str | None], j: int, first: bool = False) -> bool:
    if not nodes:
        return j == len(s)
    n, rest = nodes[0], nodes[1:]
    if (
        isinstance(n, ast.Sep)
        and not first
        and len(rest) == 1
        and isinstance(rest[0], ast.GlobStar)
    ):
        # "a/**": nothing more, or a separator and then anything.
        return j == len(s) or s[j] is _SEP
    if isinstance(n, ast.GlobStar):
        if rest and isinstance(rest[0], ast.Sep):
            # "**/": zero or more whole "segment/" groups.
            if _m(rest[1:], s, j):
                return True
            return any(s[k] is _SEP and _m(rest[1:], s, k + 1) for k in range(j, len(s)))
        return any(_m(rest, s, k) for k in range(j, len(s) + 1))
    if isinstance(n, ast.Lit):
        end = j + len(n.text)
        want = [_SEP if c == "/" else c for c in n.text]
        return s[j:end] == want and _m(rest, s, end)
    if isinstance(n, ast.Star):
        k = j
        while True:
            if _m(rest, s, k):
                return True
            if k >= len(s) or s[k] is _SEP:
                return False
            k += 1
    if isinstance(n, ast.QMark):
        return j < len(s) and s[j] is not _SEP and _m(rest, s, j + 1)
    if isinstance(n, ast.CharClass):
        if j >= len(s) or s[j] is _SEP:
            return False
        c = s[j]
        assert c is not None
        hit = any(lo <= c <= hi for lo, hi in n.ranges)
        return hit != n.negated and _m(rest, s, j + 1)
    if isinstance(n, ast.Sep):
        return j < len(s) and s[j] is _SEP and _m(rest, s, j + 1)
    if isinstance(n, ast.Range):
        k = j
        while k < len(s) and s[k] is not None and str(s[k]).isdigit() and str(s[k]) in "0123456789":
            k += 1
            text = "".join(str(c) for c in s[j:k])
            if (
                (text == "0" or not text.startswith("0"))
                and n.lo <= int(text) <= n.hi
                and _m(rest, s, k)
            ):
                return True
        return False
    if isinstance(n, ast.Alt):
        return any(_m(list(b) + rest, s, j) for b in n.branches)
    raise AssertionError(n)
