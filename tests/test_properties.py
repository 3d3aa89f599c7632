"""Invariants that hold for every tree and every spec (Hypothesis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import partspec
from partspec import ast
from partspec.formatter import format_spec
from partspec.matcher import compile_patterns, compile_rules
from partspec.parser import parse_syntax
from partspec.tree import leaf_segments
from tests import strategies as S
from tests.assertions import bits

# ---------------------------------------------------------------- matcher vs reference


@given(S.patterns, st.lists(S.keys, min_size=0, max_size=4))
def test_matcher_agrees_with_naive_reference(pattern: ast.Pattern, path: list[str]) -> None:
    m = compile_patterns([pattern])
    assert bool(m.match(path)) == S.naive_match(pattern, tuple(path))


@given(st.data())
def test_matcher_agrees_on_derived_paths(data: st.DataObject) -> None:
    path = tuple(data.draw(st.lists(S.keys, min_size=1, max_size=4)))
    pattern = data.draw(S.patterns_for(path))
    m = compile_patterns([pattern])
    assert bool(m.match(path)) == S.naive_match(pattern, path)


@given(st.data())
def test_rules_sharing_prefixes_agree_with_naive_reference(data: st.DataObject) -> None:
    prefix = data.draw(st.lists(S.segments, min_size=0, max_size=2))
    suffixes = data.draw(
        st.lists(st.lists(S.segments, min_size=1, max_size=2), min_size=1, max_size=5)
    )
    pats = [S._join_segments(prefix + s) for s in suffixes]
    pats += data.draw(st.lists(S.patterns, max_size=2))
    path = tuple(data.draw(st.lists(S.keys, min_size=0, max_size=4)))
    if data.draw(st.booleans()):
        pats += [data.draw(S.patterns_for(path)) for _ in range(3)]
    m = compile_patterns(pats)
    want = tuple(i for i, p in enumerate(pats) if S.naive_match(p, path))
    assert m.match(path) == want


@given(st.data())
def test_rules_with_excepts_agree_with_naive_reference(data: st.DataObject) -> None:
    path = tuple(data.draw(st.lists(S.keys, min_size=1, max_size=4)))
    pool = [data.draw(S.patterns_for(path)) for _ in range(3)] + data.draw(
        st.lists(S.patterns, min_size=1, max_size=3)
    )
    rules = []
    for _ in range(data.draw(st.integers(1, 4))):
        inc = tuple(data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2)))
        exc = tuple(data.draw(st.lists(st.sampled_from(pool), max_size=1)))
        rules.append((inc, exc))
    m = compile_rules(rules)
    want = tuple(
        i
        for i, (inc, exc) in enumerate(rules)
        if any(S.naive_match(p, path) for p in inc) and not any(S.naive_match(p, path) for p in exc)
    )
    assert m.match(path) == want


# ---------------------------------------------------------------- formatting


@given(st.lists(S.patterns, min_size=1, max_size=3), st.lists(S.patterns, max_size=2))
def test_patterns_round_trip_through_format(
    pats: list[ast.Pattern], exc: list[ast.Pattern]
) -> None:
    rule = ast.Rule(tuple(pats), tuple(exc), ast.Frozen())
    spec = ast.Spec((rule,))
    text = format_spec(spec)
    assert parse_syntax(text) == spec, text


@given(S.exprs())
def test_expressions_round_trip_through_format(expr: ast.Expr) -> None:
    spec = ast.Spec((ast.Let("x", expr),))
    text = format_spec(spec)
    assert parse_syntax(text) == spec, text


@given(st.lists(S.rules(), min_size=1, max_size=4))
def test_valid_specs_round_trip_and_stay_valid(rules: list[ast.Rule]) -> None:
    prelude = partspec.parse(S.PRELUDE).statements
    spec = ast.Spec((*prelude, *rules))
    text = format_spec(spec)
    try:
        reparsed = partspec.parse(text)
    except partspec.SpecError as err:
        # The only legitimate failure: two labels naming different actions.
        assert {d.code for d in err.diagnostics} == {"E407"}, str(err)
        return
    assert reparsed == spec
    assert partspec.format(reparsed) == text


# ---------------------------------------------------------------- robustness


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_spec_error(text: str) -> None:
    try:
        partspec.parse(text)
    except partspec.SpecError as err:
        assert err.diagnostics
        assert all(d.code and d.message for d in err.diagnostics)
        str(err)


_TOKENS = [
    "a",
    "b/",
    "**",
    "*",
    "/",
    "{",
    "}",
    ",",
    "..",
    "0",
    "12",
    "[",
    "]",
    "!",
    "->",
    " -> ",
    "frozen",
    "adam(",
    "sgd",
    "(",
    ")",
    "1e-3",
    "=",
    "let ",
    "param ",
    "x",
    " except ",
    " as ",
    "lr",
    "\n",
    ";",
    "#c\n",
    '"',
    "\\",
    "-",
    "+",
    "**",
    "<i>",
    "chain(",
    "clip_by_global_norm(1.0)",
    ", ",
    "true",
    "none",
    "[1, 2]",
    " ",
]


@settings(max_examples=400)
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join))
def test_token_soup_parses_or_raises_spec_error(text: str) -> None:
    try:
        spec = partspec.parse(text)
    except partspec.SpecError as err:
        assert err.diagnostics
        return
    # Whatever parses, formats to text that parses to the same spec.
    assert partspec.parse(partspec.format(spec)) == spec


# ---------------------------------------------------------------- labels mirror trees


def _first_match_labels(spec: ast.Spec, tree: object) -> list[str | None]:
    checked = partspec.check(spec)
    out: list[str | None] = []
    for segs, _ in leaf_segments(tree):
        owner = None
        for cr in checked.rules:
            if any(S.naive_match(p, segs) for p in cr.rule.patterns) and not any(
                S.naive_match(p, segs) for p in cr.rule.excepts
            ):
                owner = cr.label
                break
        out.append(owner)
    return out


@given(st.data())
def test_label_tree_mirrors_params_and_follows_first_match(data: st.DataObject) -> None:
    tree = data.draw(S.param_trees(leaves=st.just(jax.ShapeDtypeStruct((2,), jnp.float32))))
    paths = [segs for segs, _ in leaf_segments(tree)]
    rules = data.draw(
        st.lists(S.rules(st.sampled_from(paths).flatmap(S.patterns_for)), min_size=1, max_size=4)
    )
    catch_all = partspec.parse("** -> sgd(0.5) as rest").rules[0]
    spec = ast.Spec((*partspec.parse(S.PRELUDE).statements, *rules, catch_all))
    try:
        partspec.check(spec)
    except partspec.SpecError:
        assume(False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        plan = partspec.compile(spec, tree)
    assert jax.tree.structure(plan.labels) == jax.tree.structure(tree)
    if not isinstance(tree, jax.ShapeDtypeStruct):  # a bare leaf gets a bare label
        assert type(plan.labels) is type(tree)
    assert jax.tree.leaves(plan.labels) == _first_match_labels(spec, tree)


@given(S.param_trees(leaves=st.just(np.zeros(2, np.float32))))
def test_uncovered_leaves_are_an_error_listing_them(tree: object) -> None:
    first = leaf_segments(tree)[0][0]
    pattern = "/".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in first)
    if not first:
        pattern = '""'
    spec = f"{pattern} -> frozen"
    uncovered = ["/".join(s) for s, _ in leaf_segments(tree) if s != first]
    if not uncovered:
        partspec.compile(spec, tree)
        return
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(spec, tree)
    (diag,) = info.value.diagnostics
    assert diag.code == "E501"
    listed = [n.removeprefix("not covered: ") for n in diag.notes if n.startswith("not covered")]
    assert listed == [p or "<root>" for p in uncovered][: len(listed)]


# ---------------------------------------------------------------- frozen leaves stay frozen


_TRAIN_ACTIONS = [
    "adam(1e-2)",
    "adamw(1e-2, weight_decay=0.5)",
    "sgd(0.1, momentum=0.9)",
    "chain(clip_by_global_norm(1.0), adamw(1e-2, weight_decay=0.1))",
]


@settings(max_examples=25)
@given(st.data())
def test_frozen_leaves_bit_identical_through_jitted_updates(data: st.DataObject) -> None:
    tree = data.draw(S.param_trees(max_leaves=6))
    segs = [s for s, _ in leaf_segments(tree)]
    frozen_mask = data.draw(st.lists(st.booleans(), min_size=len(segs), max_size=len(segs)))
    action = data.draw(st.sampled_from(_TRAIN_ACTIONS))
    lines = []
    for s, is_frozen in zip(segs, frozen_mask):
        path = "/".join('"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in s) or '""'
        lines.append(f"{path} -> {'frozen' if is_frozen else action}")
    plan = partspec.compile("\n".join(lines), tree)

    params = jax.tree.map(jnp.asarray, tree)
    # Trainable values finite and small enough that a 1e-2 step is representable in
    # float32; frozen ones keep their NaN, inf and -0.0.
    params = jax.tree.map(
        lambda p, lab: p if lab == "frozen" else jnp.clip(jnp.nan_to_num(p), -1e3, 1e3),
        params,
        plan.labels,
    )
    bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    grads = jax.tree.map(
        lambda p, lab: jnp.full_like(p, bad) if lab == "frozen" else jnp.ones_like(p),
        params,
        plan.labels,
    )
    state = plan.tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = plan.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    new = params
    for _ in range(3):
        new, state = step(new, state)
    for old_leaf, new_leaf, lab in zip(
        jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(plan.labels)
    ):
        if lab == "frozen":
            np.testing.assert_array_equal(bits(new_leaf), bits(old_leaf))
        else:
            assert not np.array_equal(np.asarray(new_leaf), np.asarray(old_leaf))

    # Frozen leaves own no optimizer-state arrays: only trainable leaves are mirrored.
    n_trainable = sum(lab != "frozen" for lab in jax.tree.leaves(plan.labels))
    moments = {"adam(1e-2)": 2, "sgd(0.1, momentum=0.9)": 1}.get(action, 2)
    mirrored = [x for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) >= 1]
    assert len(mirrored) == moments * n_trainable


@given(
    st.lists(st.lists(S.keys, min_size=1, max_size=4).map(tuple), min_size=1, max_size=12),
    st.lists(S.patterns, min_size=1, max_size=4),
    st.booleans(),
)
def test_label_paths_agrees_with_matching_each_path(
    paths: list[tuple[str, ...]], pats: list[ast.Pattern], sort: bool
) -> None:
    from partspec.coverage import label_paths

    if sort:  # tree order, where neighbours share prefixes
        paths = sorted(paths)
    rules = [ast.Rule((p,), (), ast.Frozen(), f"r{i}") for i, p in enumerate(pats)]
    checked = partspec.check(ast.Spec(tuple(rules)))
    labels, _, _ = label_paths(checked, paths)
    owners = [next((i for i, p in enumerate(pats) if S.naive_match(p, path)), -1) for path in paths]
    assert labels == [f"r{i}" if i >= 0 else None for i in owners]
