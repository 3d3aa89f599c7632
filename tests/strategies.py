"""Shared Hypothesis strategies: parameter trees, glob ASTs, specs, and a naive matcher."""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import numpy as np
from hypothesis import strategies as st

from partspec.language import ast

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


def _derived_segment(seg: str) -> st.SearchStrategy[tuple[ast.GlobNode, ...]]:
    """Pattern segments that often match the key ``seg``."""
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


def patterns_for(path: tuple[str, ...]) -> st.SearchStrategy[ast.Pattern]:
    """Patterns derived from a real path, so that they often (not always) match it."""
    seg_strategy = _derived_segment
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


@functools.cache  # strategies are built once: building one is slow
def exprs(
    names: tuple[str, ...] = NAMES, *, conditions: bool = True
) -> st.SearchStrategy[ast.Expr]:
    """Syntactically valid expressions (not necessarily well typed).

    With ``conditions``, also comparisons, ``and``/``or``/``not`` and indexing, nested in
    any way (the formatter adds the parentheses the grammar needs).
    """
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

    def extend_conditions(inner: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
        return st.one_of(
            extend(inner),
            st.builds(ast.Compare, st.sampled_from([*_ORDER_OPS, "in"]), inner, inner),
            st.builds(ast.BoolOp, st.sampled_from(["and", "or"]), inner, inner),
            st.builds(ast.Not, inner),
            st.builds(ast.Index, inner, inner),
        )

    return st.recursive(base, extend_conditions if conditions else extend, max_leaves=8)


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


def valid_actions() -> st.SearchStrategy[ast.Action]:
    from partspec.language.parser import parse_syntax

    def to_ast(text: str) -> ast.Action:
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


def _only_globstars(nodes: list[ast.GlobNode]) -> bool:
    """``**``, ``**/**``, ...: whole ``**`` segments and nothing else."""
    return len(nodes) % 2 == 1 and all(
        isinstance(x, ast.GlobStar) if k % 2 == 0 else isinstance(x, ast.Sep)
        for k, x in enumerate(nodes)
    )


def _m(nodes: list[ast.GlobNode], s: list[str | None], j: int, first: bool = False) -> bool:
    if not nodes:
        return j == len(s)
    n, rest = nodes[0], nodes[1:]
    if isinstance(n, ast.Sep) and not first and _only_globstars(rest):
        # "a/**" (or "a/**/**"): nothing more, or a separator and then anything.
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
    if isinstance(n, ast.Capture):  # `?*`: one character or more inside a segment
        return j < len(s) and s[j] is not _SEP and _m([ast.Star(), *rest], s, j + 1)
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


# ---------------------------------------------------------------- segment-level reference


def segment_match(pattern: ast.Pattern, path: tuple[str, ...]) -> bool:
    """A second reference, written from the design's wording at the level of segments.

    The path is split into segments (a ``/`` inside a key separates too); the pattern is
    expanded into its brace alternatives and split at its separators; a ``**`` segment
    takes zero or more whole segments, any other pattern segment one segment, matched
    with a regular expression. Unlike :func:`naive_match`, nothing here treats ``/**``
    or ``**/`` specially, so it catches what a special case gets wrong (``a/**/**``).
    """
    segs = "/".join(path).split("/")
    return any(_segments_match(_split(nodes), segs) for nodes in _expand(pattern.nodes))


_STAR_SEGMENT = "**"


def _expand(nodes: tuple[ast.GlobNode, ...]) -> list[tuple[ast.GlobNode, ...]]:
    """Every way of choosing one branch of each ``{...}``."""
    if not nodes:
        return [()]
    first, rest = nodes[0], _expand(nodes[1:])
    if isinstance(first, ast.Alt):
        return [b + r for branch in first.branches for b in _expand(branch) for r in rest]
    return [(first, *r) for r in rest]


def _split(nodes: tuple[ast.GlobNode, ...]) -> list[Any]:
    """The pattern's segments: ``**`` or a regular expression for one segment."""
    parts: list[list[str]] = [[]]
    kinds: list[list[ast.GlobNode]] = [[]]
    for n in nodes:
        if isinstance(n, ast.Sep):
            parts.append([])
            kinds.append([])
        elif isinstance(n, ast.Lit):
            pieces = n.text.split("/")
            parts[-1].append(re.escape(pieces[0]))
            for piece in pieces[1:]:  # a quoted "/" separates segments too
                parts.append([re.escape(piece)])
                kinds.append([n])
            kinds[-1].append(n)
        else:
            parts[-1].append("" if isinstance(n, ast.GlobStar) else _regex(n))
            kinds[-1].append(n)
    out: list[Any] = []
    for part, kind in zip(parts, kinds):
        if len(kind) == 1 and isinstance(kind[0], ast.GlobStar):
            out.append(_STAR_SEGMENT)
        else:
            out.append(re.compile("".join(part), re.DOTALL))
    return out


def _regex(n: ast.GlobNode) -> str:
    if isinstance(n, ast.Star):
        return ".*"
    if isinstance(n, ast.QMark):
        return "."
    if isinstance(n, ast.Capture):
        return ".+"
    if isinstance(n, ast.CharClass):
        body = "".join(
            re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in n.ranges
        )
        return f"[{'^' if n.negated else ''}{body}]"
    if isinstance(n, ast.Range):
        return "(?:" + "|".join(str(v) for v in range(n.lo, n.hi + 1)) + ")"
    raise AssertionError(n)  # GlobStar is a whole segment, Alt was expanded


def _segments_match(psegs: list[Any], segs: list[str]) -> bool:
    @functools.cache
    def rec(i: int, j: int) -> bool:
        if i == len(psegs):
            return j == len(segs)
        if psegs[i] is _STAR_SEGMENT:
            return any(rec(i + 1, k) for k in range(j, len(segs) + 1))
        return j < len(segs) and bool(psegs[i].fullmatch(segs[j])) and rec(i + 1, j + 1)

    return rec(0, 0)


#: Patterns that are mostly ``**`` segments: runs such as ``a/**/**``, ``**/**/b``.
globstar_patterns = st.lists(
    st.one_of(st.just((ast.GlobStar(),)), st.just((ast.GlobStar(),)), segments),
    min_size=1,
    max_size=5,
).map(_join_segments)


# ---------------------------------------------------------------- captures

#: Capture names the strategies use (valid names that clash with nothing in PRELUDE).
CAPTURE_NAMES = ("i", "j", "name")


@st.composite
def capture_patterns(
    draw: st.DrawFn, names: tuple[str, ...] | None = None, base: Any = None
) -> ast.Pattern:
    """A pattern with one capture per name, each a segment of its own or inside one.

    Captures are never inside ``{...}`` and never share a segment with ``**`` (the parser
    forbids both). Without ``names``, one to three distinct names are drawn.
    """
    if names is None:
        names = tuple(
            draw(st.lists(st.sampled_from(CAPTURE_NAMES), min_size=1, max_size=3, unique=True))
        )
    segs = [list(s) for s in draw(st.lists(base or segments, min_size=1, max_size=3))]
    for name in names:
        cap = ast.Capture(name)
        inside = [i for i, s in enumerate(segs) if s != [ast.GlobStar()]]
        if inside and draw(st.booleans()):
            i = draw(st.sampled_from(inside))
            segs[i].insert(draw(st.integers(0, len(segs[i]))), cap)
        else:
            segs.insert(draw(st.integers(0, len(segs))), [cap])
    return _join_segments([tuple(s) for s in segs])


@st.composite
def capture_patterns_for(
    draw: st.DrawFn, path: tuple[str, ...], names: tuple[str, ...] = ("k",)
) -> ast.Pattern:
    """Patterns derived from a real path (as :func:`patterns_for`) with a capture per name.

    A capture takes the place of a whole key, or of all but its first or last character.
    """
    segs = [list(draw(_derived_segment(s))) for s in path]
    free = list(range(len(segs)))
    for name in names:
        cap = ast.Capture(name)
        if not free:
            segs.insert(draw(st.integers(0, len(segs))), [cap])
            continue
        i = draw(st.sampled_from(free))
        free.remove(i)
        seg = path[i]
        options: list[list[ast.GlobNode]] = [[cap]]
        if len(seg) > 1:
            options += [[ast.Lit(seg[0]), cap], [cap, ast.Lit(seg[-1])]]
        segs[i] = draw(st.sampled_from(options))
    return _join_segments([tuple(s) for s in segs])


#: Characters that fill wildcards in derived paths: they repeat the literals' characters,
#: so that a wildcard often could have stopped earlier (the ambiguity captures resolve).
_FILL = "ab_1x0"
_CLASS_POOL = sorted(set(_CLASS_CHARS + _FILL + "z#é"))


@st.composite
def _matching_text(draw: st.DrawFn, nodes: tuple[ast.GlobNode, ...]) -> str:
    out: list[str] = []
    for n in nodes:
        if isinstance(n, ast.Lit):
            out.append(n.text)
        elif isinstance(n, ast.Sep):
            out.append("/")
        elif isinstance(n, ast.Star):
            out.append(draw(st.text(_FILL, max_size=3)))
        elif isinstance(n, ast.Capture):
            out.append(draw(st.text(_FILL, min_size=1, max_size=3)))
        elif isinstance(n, ast.QMark):
            out.append(draw(st.sampled_from(_FILL)))
        elif isinstance(n, ast.CharClass):
            ok = [c for c in _CLASS_POOL if any(lo <= c <= hi for lo, hi in n.ranges) != n.negated]
            out.append(draw(st.sampled_from(ok)) if ok else "z")
        elif isinstance(n, ast.Range):
            out.append(str(draw(st.sampled_from([n.lo, n.hi, (n.lo + n.hi) // 2]))))
        elif isinstance(n, ast.Alt):
            out.append(draw(_matching_text(draw(st.sampled_from(n.branches)))))
        else:
            assert isinstance(n, ast.GlobStar)
            segs = draw(st.lists(st.text(_FILL, max_size=3), max_size=2))
            out.append("/".join(segs))
    return "".join(out)


def paths_for(pattern: ast.Pattern) -> st.SearchStrategy[tuple[str, ...]]:
    """Paths that usually match ``pattern`` (its wildcards filled in), sometimes nearly."""

    def mutate(path: tuple[str, ...], where: int, what: str) -> tuple[str, ...]:
        text = "/".join(path)
        where %= len(text) + 1
        return tuple((text[:where] + what + text[where + 1 :]).split("/"))

    derived = _matching_text(pattern.nodes).map(lambda t: tuple(t.split("/")))
    return st.one_of(
        derived,
        derived,
        st.builds(mutate, derived, st.integers(0, 20), st.sampled_from(["", "a", "/", "1"])),
        st.lists(keys, max_size=4).map(tuple),
    )


def naive_captures(pattern: ast.Pattern, path: tuple[str, ...]) -> dict[str, str] | None:
    """What each capture binds on ``path`` (``None`` if no match), by plain backtracking.

    Alternatives are tried in priority order, the documented one: every wildcard
    (``*``, ``**``, a capture) first takes as little as it can, from left to right;
    ``{a,b}`` tries its branches in order. The first full match's bindings win.
    """
    return _c(list(pattern.nodes), _symbols(path), 0, {}, first=True)


def _symbols(path: tuple[str, ...]) -> list[str | None]:
    syms: list[str | None] = []
    for i, seg in enumerate(path):
        if i:
            syms.append(_SEP)
        syms.extend(_SEP if c == "/" else c for c in seg)
    return syms


def _c(
    nodes: list[ast.GlobNode],
    s: list[str | None],
    j: int,
    caps: dict[str, str],
    first: bool = False,
) -> dict[str, str] | None:
    if not nodes:
        return dict(caps) if j == len(s) else None
    n, rest = nodes[0], nodes[1:]

    def then(k: int, more: dict[str, str] | None = None) -> dict[str, str] | None:
        return _c(rest, s, k, {**caps, **more} if more else caps)

    if isinstance(n, ast.Sep) and not first and _only_globstars(rest):
        # "a/**" (or "a/**/**"): nothing more, or a separator and then anything.
        return dict(caps) if j == len(s) or s[j] is _SEP else None
    if isinstance(n, ast.GlobStar):
        if rest and isinstance(rest[0], ast.Sep):
            starts = [j] + [k + 1 for k in range(j, len(s)) if s[k] is _SEP]
            for k in starts:  # fewest "segment/" groups first
                got = _c(rest[1:], s, k, caps)
                if got is not None:
                    return got
            return None
        for k in range(j, len(s) + 1):
            got = then(k)
            if got is not None:
                return got
        return None
    if isinstance(n, ast.Lit):
        want = [_SEP if c == "/" else c for c in n.text]
        return then(j + len(want)) if s[j : j + len(want)] == want else None
    if isinstance(n, (ast.Star, ast.Capture)):
        k = j if isinstance(n, ast.Star) else j + 1
        if k > len(s) or any(c is _SEP for c in s[j:k]):
            return None
        while True:
            bound = (
                {n.name: "".join(str(c) for c in s[j:k])} if isinstance(n, ast.Capture) else None
            )
            got = then(k, bound)
            if got is not None:
                return got
            if k >= len(s) or s[k] is _SEP:
                return None
            k += 1
    if isinstance(n, ast.QMark):
        return then(j + 1) if j < len(s) and s[j] is not _SEP else None
    if isinstance(n, ast.CharClass):
        if j >= len(s) or s[j] is _SEP:
            return None
        c = s[j]
        assert c is not None
        hit = any(lo <= c <= hi for lo, hi in n.ranges)
        return then(j + 1) if hit != n.negated else None
    if isinstance(n, ast.Sep):
        return then(j + 1) if j < len(s) and s[j] is _SEP else None
    if isinstance(n, ast.Range):
        k = j
        while k < len(s) and s[k] is not _SEP and str(s[k]) in "0123456789":
            k += 1  # the shortest number first
            text = "".join(str(c) for c in s[j:k])
            if (text == "0" or not text.startswith("0")) and n.lo <= int(text) <= n.hi:
                got = then(k)
                if got is not None:
                    return got
        return None
    if isinstance(n, ast.Alt):
        for b in n.branches:
            got = _c(list(b) + rest, s, j, caps)
            if got is not None:
                return got
        return None
    raise AssertionError(n)


def capture_value(text: str) -> int | str:
    """The documented value of a capture: an integer when the text is all ASCII digits."""
    return int(text) if text and all(c in "0123456789" for c in text) else text


def bound_label(base: str, bindings: dict[str, int | str]) -> str:
    """The documented label of one binding: ``base[i=3]``, strings JSON-quoted."""
    import json

    shown = ", ".join(
        f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in bindings.items()
    )
    return f"{base}[{shown}]"


# ---------------------------------------------------------------- leaves with shapes, conditions

LEAF_DTYPES = ("float32", "bfloat16", "float16", "int32")


@functools.cache
def shaped_leaves() -> st.SearchStrategy[Any]:
    """Leaves of assorted shapes and dtypes: ShapeDtypeStructs, NumPy arrays, Python scalars."""
    import jax
    import jax.numpy as jnp

    shapes = st.lists(st.integers(1, 3), max_size=3).map(tuple)
    dtypes = st.sampled_from(LEAF_DTYPES).map(jnp.dtype)
    return st.one_of(
        st.builds(jax.ShapeDtypeStruct, shapes, dtypes),
        st.builds(lambda s, d: np.zeros(s, d), shapes, dtypes),
        st.sampled_from([1.0, 3, True]),
    )


def naive_leaf_info(leaf: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype name of a leaf, as documented (Python scalars get JAX's defaults)."""
    if isinstance(leaf, bool):
        return (), "bool"
    if isinstance(leaf, int):
        return (), "int32"
    if isinstance(leaf, float):
        return (), "float32"
    return tuple(leaf.shape), np.dtype(leaf.dtype).name


def _num(v: int) -> ast.Expr:
    return ast.Neg(ast.Num(-v)) if v < 0 else ast.Num(v)


_ORDER_OPS = ["==", "!=", "<", "<=", ">", ">="]


@functools.cache
def leaf_conditions() -> st.SearchStrategy[ast.Expr]:
    """Well-typed ``where`` conditions on leaf properties that never index out of range.

    Indexing is always guarded by the leaf's rank (``ndim > 1 and shape[1] == 2``), so
    every condition can be evaluated on every leaf.
    """
    name = ast.Name

    def guarded(k: int, op: str, n: int) -> ast.Expr:
        guard = (
            ast.Compare(">", name("ndim"), ast.Num(k))
            if k >= 0
            else ast.Compare(">=", name("ndim"), ast.Num(-k))
        )
        return ast.BoolOp("and", guard, ast.Compare(op, ast.Index(name("shape"), _num(k)), _num(n)))

    ops = st.sampled_from(_ORDER_OPS)
    dtype_strs = st.sampled_from((*LEAF_DTYPES, "bool")).map(ast.Str)
    atoms = st.one_of(
        st.builds(ast.Compare, ops, st.just(name("ndim")), st.integers(0, 3).map(ast.Num)),
        st.builds(ast.Compare, ops, st.just(name("size")), st.integers(0, 9).map(ast.Num)),
        st.builds(
            ast.Compare,
            ops,
            st.builds(
                ast.BinOp,
                st.sampled_from(["+", "-", "*"]),
                st.just(name("size")),
                st.integers(0, 3).map(ast.Num),
            ),
            st.integers(0, 9).map(ast.Num),
        ),
        st.builds(ast.Compare, st.sampled_from(["==", "!="]), st.just(name("dtype")), dtype_strs),
        st.builds(
            lambda xs: ast.Compare("in", name("dtype"), ast.ListExpr(tuple(xs))),
            st.lists(dtype_strs, max_size=3),
        ),
        st.builds(
            lambda xs: ast.Compare("==", name("shape"), ast.ListExpr(tuple(map(ast.Num, xs)))),
            st.lists(st.integers(1, 3), max_size=3),
        ),
        st.builds(guarded, st.sampled_from([0, 1, 2, -1, -2, -3]), ops, st.integers(0, 3)),
        st.booleans().map(ast.Bool),
    )

    def extend(inner: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
        return st.one_of(
            st.builds(ast.BoolOp, st.sampled_from(["and", "or"]), inner, inner),
            st.builds(ast.Not, inner),
        )

    return st.recursive(atoms, extend, max_leaves=4)


def naive_condition(
    e: ast.Expr, shape: tuple[int, ...], dtype: str, captures: dict[str, Any] | None = None
) -> Any:
    """Evaluate a condition as documented: Python's meaning, ``and``/``or`` short-circuit."""
    captures = captures or {}

    def ev(e: ast.Expr) -> Any:
        if isinstance(e, (ast.Num, ast.Str, ast.Bool)):
            return e.value
        if isinstance(e, ast.ListExpr):
            return [ev(x) for x in e.items]
        if isinstance(e, ast.Name):
            if e.id in captures:
                return captures[e.id]
            props = {
                "ndim": len(shape),
                "shape": list(shape),
                "size": int(np.prod(shape, dtype=np.int64)),
                "dtype": dtype,
            }
            return props[e.id]
        if isinstance(e, ast.Neg):
            return -ev(e.operand)
        if isinstance(e, ast.BinOp):
            a, b = ev(e.left), ev(e.right)
            return {"+": a + b, "-": a - b, "*": a * b}[e.op]
        if isinstance(e, ast.Index):
            seq, i = ev(e.value), ev(e.index)
            if not -len(seq) <= i < len(seq):
                raise IndexError(i)
            return seq[i]
        if isinstance(e, ast.Not):
            return not ev(e.operand)
        if isinstance(e, ast.BoolOp):
            left = ev(e.left)
            if left is (e.op == "or"):
                return left
            return ev(e.right)
        if isinstance(e, ast.Compare):
            a, b = ev(e.left), ev(e.right)
            if e.op == "in":
                return a in b
            return {
                "==": a == b,
                "!=": a != b,
                "<": a < b,
                "<=": a <= b,
                ">": a > b,
                ">=": a >= b,
            }[e.op]
        raise AssertionError(e)

    return ev(e)


# ---------------------------------------------------------------- specs with the newer statements

#: Well-typed actions that use the capture ``i`` (valid while checking, where ``i`` is unset).
_CAPTURE_ACTIONS = [
    "sgd(0.1 * (i + 1))",
    "adamw(1e-3 * 0.75 ** (11 - i))",
    "frozen until 100 * (11 - i) then adamw(1e-5)",
]
_UNTIL_ACTIONS = [
    "frozen until 100 then adam(lr)",
    "frozen until steps then sgd(0.1, momentum=0.9)",
    "frozen until 2 * steps + 1 then adamw(learning_rate=lr, weight_decay=0.0)",
]
#: ``global`` transforms that check.
GLOBAL_TRANSFORMS = [
    "clip_by_global_norm(1.0)",
    "clip(0.5)",
    "zero_nans()",
    "chain(clip_by_global_norm(lr * 1000), scale(0.5))",
]


def _action(text: str) -> ast.Action:
    from partspec.language.parser import parse_syntax

    return parse_syntax(f"x -> {text}").rules[0].action


@st.composite
def extended_rules(draw: st.DrawFn, pattern_strategy: Any = None) -> ast.Rule:
    """Rules that check, using captures, ``where`` conditions and ``frozen until``.

    As the parser requires, every pattern of a rule captures the same names, and no
    ``except`` pattern captures anything.
    """
    names = tuple(draw(st.lists(st.sampled_from(("i", "j")), max_size=2, unique=True)))
    if names:
        pats = draw(st.lists(capture_patterns(names), min_size=1, max_size=2))
    else:
        pats = draw(st.lists(pattern_strategy or patterns, min_size=1, max_size=2))
    excepts = draw(st.lists(patterns, max_size=1))
    texts = _VALID_ACTIONS + _UNTIL_ACTIONS + (_CAPTURE_ACTIONS if "i" in names else [])
    action = _action(draw(st.sampled_from(texts)))
    where = draw(st.one_of(st.none(), leaf_conditions()))
    if names and draw(st.booleans()):
        uses = ast.Compare("<", ast.Name(names[0]), ast.Num(6))
        where = uses if where is None else ast.BoolOp("and", uses, where)
    label = draw(st.one_of(st.none(), st.sampled_from(["head", "body", "tail_1"])))
    return ast.Rule(tuple(pats), tuple(excepts), action, label, where=where)


@functools.cache
def global_statements() -> st.SearchStrategy[ast.Global]:
    return st.sampled_from(GLOBAL_TRANSFORMS).map(lambda t: ast.Global(_action(t)))  # type: ignore[arg-type]


def _syntax_left_side(
    draw: st.DrawFn,
) -> tuple[tuple[str, ...], tuple[ast.Pattern, ...], tuple[ast.Pattern, ...], ast.Expr | None]:
    """The left side of a `->` or `with` rule: captured names, patterns (some `(?i)`),
    `except` patterns and a `where` condition over the names and leaf properties."""
    names = tuple(draw(st.lists(st.sampled_from(CAPTURE_NAMES), max_size=2, unique=True)))
    if names:
        pats = draw(st.lists(capture_patterns(names), min_size=1, max_size=2))
    else:
        pats = draw(st.lists(patterns, min_size=1, max_size=2))
    excepts = draw(st.lists(patterns, max_size=2))
    pats = [dataclasses.replace(p, nocase=draw(st.booleans())) for p in pats]
    in_scope = NAMES + names + ("ndim", "shape", "size", "dtype")
    where = draw(st.one_of(st.none(), exprs(in_scope)))
    return names, tuple(pats), tuple(excepts), where


@st.composite
def syntax_rules(draw: st.DrawFn) -> ast.Rule:
    """Rules the parser can produce, not necessarily well typed."""
    names, pats, excepts, where = _syntax_left_side(draw)
    action = draw(
        st.one_of(
            st.just(ast.Frozen()),
            st.builds(ast.FrozenUntil, exprs(NAMES + names), exprs(NAMES + names)),
            exprs(NAMES + names),
        )
    )
    label = draw(st.one_of(st.none(), st.sampled_from(["head", "ld", "x_1"])))
    return ast.Rule(pats, excepts, action, label, where=where)


@st.composite
def syntax_with_rules(draw: st.DrawFn) -> ast.WithRule:
    """``with`` rules the parser can produce, not necessarily well typed."""
    names, pats, excepts, where = _syntax_left_side(draw)
    settings = draw(
        st.lists(
            st.sampled_from(["lr", "weight_decay", "b1", "momentum"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    values = [draw(exprs(NAMES + names)) for _ in settings]
    return ast.WithRule(
        pats,
        excepts,
        tuple(ast.Setting(n, v) for n, v in zip(settings, values)),
        where=where,
    )


@functools.cache
def syntax_specs() -> st.SearchStrategy[ast.Spec]:
    """Specs of every kind of statement, includes too, as the parser could produce them."""
    statement = st.one_of(
        syntax_rules(),
        syntax_with_rules(),
        st.builds(ast.Let, st.sampled_from(NAMES), exprs()),
        st.builds(ast.Param, st.sampled_from(NAMES), st.one_of(st.none(), exprs())),
        st.builds(ast.Global, exprs()),
        st.builds(ast.Include, st.text(_LIT_CHARS + "/\n\t", max_size=8)),
    )
    return st.lists(statement, min_size=1, max_size=5).map(lambda s: ast.Spec(tuple(s)))


_CALL_PIECES = ["clip(1.0)", "sgd(0.1)", "adam(lr)", "add_decayed_weights(1e-4)"]


@st.composite
def commented_specs(draw: st.DrawFn) -> str:
    """Spec text with comments everywhere a comment may go: own lines, trailing, and
    inside statements written over several lines."""
    n = 0

    def comment() -> str:
        nonlocal n
        n += 1
        return f"# c{n} " + draw(st.text("ab #->", max_size=4))

    lines = ["let lr = 1e-3"]
    for i in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            lines.append(comment())
        if draw(st.booleans()):
            lines.append("")
        args = draw(st.lists(st.sampled_from(_CALL_PIECES), min_size=1, max_size=3))
        if draw(st.booleans()):  # one line
            text = f"r{i}/** -> chain({', '.join(args)})"
            lines.append(text + (f"  {comment()}" if draw(st.booleans()) else ""))
            continue
        parts = [f"r{i}/** -> chain("]
        for j, arg in enumerate(args):
            end = ")" if j == len(args) - 1 else ","
            parts.append(f"    {arg}{end}")
        for k in range(len(parts)):
            if draw(st.booleans()):
                parts[k] += f"  {comment()}"
        for k in reversed(range(1, len(parts))):
            if draw(st.booleans()):
                parts.insert(k, f"    {comment()}")  # a comment line inside the call
        lines += parts
    return "\n".join(lines) + "\n"
