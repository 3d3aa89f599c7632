"""Invariants that hold for every tree and every spec (Hypothesis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

import partspec
from partspec.jax.tree import leaf_segments
from partspec.language import ast
from partspec.language.formatter import format_pattern, format_spec
from partspec.language.parser import parse_syntax
from partspec.matching.globs import compile_patterns, compile_rules
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


@given(
    st.one_of(S.globstar_patterns, S.patterns),
    st.lists(st.sampled_from(["a", "b", "x/y", "0", "11", "ab"]), min_size=0, max_size=4),
)
def test_matcher_agrees_with_the_segment_level_reference(
    pattern: ast.Pattern, path: list[str]
) -> None:
    """Found `a/**/**` not matching `a` (the only class of disagreement in 32,000 specs)."""
    assume(sum(isinstance(n, ast.Alt) for n in pattern.nodes) <= 3)
    m = compile_patterns([pattern])
    assert bool(m.match(path)) == S.segment_match(pattern, tuple(path)), format_pattern(pattern)


@given(st.data())
def test_inserting_globstar_segments_keeps_a_match(data: st.DataObject) -> None:
    """``**`` takes zero or more segments, so a pattern that matches a path still matches
    it (by both the reference and the matcher) with ``**`` segments inserted anywhere."""
    path = tuple(data.draw(st.lists(st.sampled_from(["a", "bc", "0", "x_1"]), max_size=3)))
    segs = [data.draw(S._derived_segment(seg)) for seg in path]
    for _ in range(data.draw(st.integers(1, 3))):
        segs.insert(data.draw(st.integers(0, len(segs))), (ast.GlobStar(),))
    pattern = S._join_segments(segs)
    assume(all(not isinstance(n, ast.Alt) for n in pattern.nodes))
    want = S.segment_match(pattern, path)
    assert bool(compile_patterns([pattern]).match(path)) == want, format_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("a/**/**", "a", True),
        ("a/**/**", "a/b/c", True),
        ("**/**", "a", True),
        ("**/**/b", "b", True),
        ("a/**/**/b", "a/b", True),
        ("a/**/**", "b", False),
    ],
)
def test_runs_of_globstar_segments_match_like_one(pattern: str, path: str, matches: bool) -> None:
    p = partspec.parse_syntax(f"{pattern} -> frozen").rules[0].patterns[0]
    assert bool(compile_patterns([p]).match(path.split("/"))) is matches
    assert S.segment_match(p, tuple(path.split("/"))) is matches


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
    _check_valid_round_trip(rules)


@given(
    st.lists(
        st.one_of(S.extended_rules(), S.extended_rules(), S.global_statements()),
        min_size=1,
        max_size=4,
    )
)
def test_valid_specs_with_captures_conditions_until_and_globals_round_trip(
    statements: list[ast.Rule | ast.Global],
) -> None:
    _check_valid_round_trip(statements)


def _check_valid_round_trip(statements: list[ast.Rule] | list[ast.Rule | ast.Global]) -> None:
    prelude = partspec.parse(S.PRELUDE).statements
    spec = ast.Spec((*prelude, *statements))
    text = format_spec(spec)
    try:
        reparsed = partspec.parse(text)
    except partspec.SpecError as err:
        # The only legitimate failure: two labels naming different actions.
        assert {d.code for d in err.diagnostics} == {"E407"}, str(err)
        return
    assert reparsed == spec
    assert partspec.format(reparsed) == text


@given(S.syntax_specs())
def test_specs_of_every_statement_round_trip_through_format(spec: ast.Spec) -> None:
    # Captures, `where` conditions, `frozen until`, `global` and `include` (left
    # unresolved by parse_syntax), with any nesting of operators.
    text = format_spec(spec)
    assert parse_syntax(text) == spec, text
    assert format_spec(parse_syntax(text)) == text


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


def _first_match_owners(spec: ast.Spec, tree: object) -> list[int | None]:
    checked = partspec.check(spec)
    out: list[int | None] = []
    for segs, _ in leaf_segments(tree):
        owner = None
        for cr in checked.rules:
            if any(S.naive_match(p, segs) for p in cr.rule.patterns) and not any(
                S.naive_match(p, segs) for p in cr.rule.excepts
            ):
                owner = cr.index
                break
        out.append(owner)
    return out


def _first_match_labels(spec: ast.Spec, tree: object) -> list[str | None]:
    checked = partspec.check(spec)
    owners = _first_match_owners(spec, tree)
    return [None if o is None else checked.rules[o].label for o in owners]


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

    checked = partspec.check(spec)
    owners = _first_match_owners(spec, tree)
    frozen = [cr.action is None for cr in checked.rules]
    expected = _expected_error([cr.rule for cr in checked.rules], frozen, owners, tree)
    if expected is not None:
        with pytest.raises(partspec.SpecError) as info:
            partspec.compile(spec, tree)
        assert [d.code for d in info.value.diagnostics][:1] == [expected]
        return
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


# ---------------------------------------------------------------- labels: conditions and captures


def _parse_action(text: str) -> ast.Frozen | ast.FrozenUntil | ast.Expr:
    return parse_syntax(f"x -> {text}").rules[0].action


_GLOBSTAR = ast.Pattern((ast.GlobStar(),))
_CATCH_ALL = ast.Rule((_GLOBSTAR,), (), ast.Frozen(), "rest")


def _compile_quietly(spec: ast.Spec, tree: object) -> partspec.Plan:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)  # unused or shadowed rules
        return partspec.compile(spec, tree)


def _reference_owners(
    rules: list[ast.Rule], tree: object
) -> list[tuple[str, int, dict[str, int | str]] | None]:
    """Per leaf: (label base, rule index, capture values) of the first rule that owns it."""
    out: list[tuple[str, int, dict[str, int | str]] | None] = []
    for segs, leaf in leaf_segments(tree):
        shape, dtype = S.naive_leaf_info(leaf)
        owner = None
        for index, rule in enumerate(rules):
            found = (S.naive_captures(p, segs) for p in rule.patterns)
            texts = next((c for c in found if c is not None), None)
            if texts is None or any(S.naive_match(p, segs) for p in rule.excepts):
                continue
            values = {k: S.capture_value(v) for k, v in texts.items()}
            if rule.where is not None and not S.naive_condition(rule.where, shape, dtype, values):
                continue
            assert rule.label is not None
            owner = (rule.label, index, values)
            break
        out.append(owner)
    return out


def _literal_last(pattern: ast.Pattern) -> bool:
    """Whether the pattern's last segment is literal text (a rule that names its leaves)."""
    seps = [i for i, n in enumerate(pattern.nodes) if isinstance(n, ast.Sep)]
    last = pattern.nodes[(seps[-1] + 1 if seps else 0) :]
    return bool(last) and all(isinstance(n, ast.Lit) for n in last)


def _expected_error(
    rules: list[ast.Rule], frozen: list[bool], owners: list[int | None], tree: object
) -> str | None:
    """The error a spec gives over ``tree`` by the documented rules, from each leaf's
    reference owner: E501 (a leaf uncovered), else E502 (every leaf frozen, yet some rule
    gives an optimizer), else E503 (an integer or boolean array leaf given an optimizer by
    a rule with a wildcard last segment and no condition)."""
    if any(o is None for o in owners):
        return "E501"
    if owners and all(frozen[o] for o in owners if o is not None) and not all(frozen):
        return "E502"
    for (_, leaf), o in zip(leaf_segments(tree), owners):
        assert o is not None
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            continue
        if np.dtype(leaf.dtype).kind not in "iub" or frozen[o]:
            continue
        if rules[o].where is None and not any(_literal_last(p) for p in rules[o].patterns):
            return "E503"
    return None


def _compile_or_expected_error(
    spec: ast.Spec, tree: object, expected: str | None
) -> partspec.Plan | None:
    """The plan, or ``None`` after checking that compiling raises exactly ``expected``."""
    if expected is None:
        return _compile_quietly(spec, tree)
    with pytest.raises(partspec.SpecError) as info:
        _compile_quietly(spec, tree)
    assert [d.code for d in info.value.diagnostics][:1] == [expected], info.value
    return None


#: Trees of leaves with assorted shapes and dtypes (built once: building is slow).
_SHAPED_TREES = S.param_trees(leaves=S.shaped_leaves(), max_leaves=8)
_CONDITIONS = st.one_of(st.none(), S.leaf_conditions())


@given(_SHAPED_TREES)
def test_label_tree_mirrors_params_under_leaf_conditions(tree: object) -> None:
    spec = "** where ndim == 1 -> sgd(0.1)\n** where size > 2 -> adam(1e-3)\n** -> frozen"
    want = []
    for _, leaf in leaf_segments(tree):
        shape, _ = S.naive_leaf_info(leaf)
        size = int(np.prod(shape, dtype=np.int64))
        want.append("sgd(0.1)" if len(shape) == 1 else "adam(0.001)" if size > 2 else "frozen")
    expected = "E502" if all(w == "frozen" for w in want) else None
    plan = _compile_or_expected_error(partspec.parse(spec), tree, expected)
    if plan is None:
        return
    assert jax.tree_util.tree_structure(plan.labels) == jax.tree_util.tree_structure(tree)
    assert jax.tree.leaves(plan.labels) == want


_CONDITION_ACTIONS = ["sgd(0.1)", "adam(1e-3)", "frozen", "frozen until 5 then sgd(0.5)"]


@given(st.data())
def test_label_tree_mirrors_params_under_generated_conditions(data: st.DataObject) -> None:
    tree = data.draw(_SHAPED_TREES)
    paths = [segs for segs, _ in leaf_segments(tree)]
    pattern = st.one_of(st.just(_GLOBSTAR), st.sampled_from(paths).flatmap(S.patterns_for))
    rules = [
        ast.Rule(
            (data.draw(pattern),),
            tuple(data.draw(st.lists(pattern, max_size=1))),
            _parse_action(data.draw(st.sampled_from(_CONDITION_ACTIONS))),
            f"r{n}",
            where=data.draw(_CONDITIONS),
        )
        for n in range(data.draw(st.integers(1, 4)))
    ]
    if data.draw(st.booleans()):
        rules.append(_CATCH_ALL)
    owners = _reference_owners(rules, tree)
    want = [owner[0] if owner else None for owner in owners]
    event("uncovered" if None in want else "covered")
    frozen = [isinstance(r.action, ast.Frozen) for r in rules]
    expected = _expected_error(rules, frozen, [o[1] if o else None for o in owners], tree)
    if expected in ("E502", "E503"):
        event(expected)
        _compile_or_expected_error(ast.Spec(tuple(rules)), tree, expected)
        return
    if None in want:
        with pytest.raises(partspec.SpecError) as info:
            _compile_quietly(ast.Spec(tuple(rules)), tree)
        (diag,) = info.value.diagnostics
        assert diag.code == "E501"
        uncovered = [
            "/".join(s) or "<root>" for (s, _), w in zip(leaf_segments(tree), want) if not w
        ]
        listed = [
            n.removeprefix("not covered: ") for n in diag.notes if n.startswith("not covered")
        ]
        assert listed == uncovered[: len(listed)] and listed
        return
    plan = _compile_quietly(ast.Spec(tuple(rules)), tree)
    assert jax.tree_util.tree_structure(plan.labels) == jax.tree_util.tree_structure(tree)
    assert jax.tree.leaves(plan.labels) == want


#: (action, whether it uses the capture ``k``, whether ``k`` must then be a number).
_CAPTURE_ACTIONS = [
    ("sgd(0.1)", False, False),
    ("frozen", False, False),
    ("sgd(0.1, nesterov=k == none)", True, False),
    ("sgd(0.5 * (k + 1))", True, True),
]


@given(st.data())
def test_label_tree_mirrors_params_with_captures(data: st.DataObject) -> None:
    tree = data.draw(_SHAPED_TREES)
    paths = [segs for segs, _ in leaf_segments(tree)]
    rules: list[ast.Rule] = []
    uses: list[tuple[bool, bool]] = []
    for n in range(data.draw(st.integers(1, 4))):
        if data.draw(st.integers(0, 2)):
            pattern = data.draw(
                st.one_of(
                    st.just(partspec.parse_syntax("**/<k> -> frozen").rules[0].patterns[0]),
                    st.sampled_from(paths).flatmap(S.capture_patterns_for),
                )
            )
            action, used, numeric = data.draw(
                st.sampled_from(_CAPTURE_ACTIONS + _CAPTURE_ACTIONS[2:])
            )
        else:
            pattern = data.draw(st.sampled_from(paths).flatmap(S.patterns_for))
            action, used, numeric = data.draw(st.sampled_from(_CAPTURE_ACTIONS[:2]))
        where = data.draw(_CONDITIONS)
        rules.append(ast.Rule((pattern,), (), _parse_action(action), f"s{n}", where=where))
        uses.append((used, numeric))
    rules.append(_CATCH_ALL)
    uses.append((False, False))
    owners = _reference_owners(rules, tree)
    bad = [
        "/".join(segs)
        for (segs, _), owner in zip(leaf_segments(tree), owners)
        if owner and uses[owner[1]][1] and isinstance(owner[2]["k"], str)
    ]
    event("non-numeric capture in arithmetic" if bad else "compiles")
    if bad:
        # A capture that is not all digits, in arithmetic: an error naming such a leaf.
        with pytest.raises(partspec.SpecError) as info:
            _compile_quietly(ast.Spec(tuple(rules)), tree)
        (diag,) = info.value.diagnostics
        assert diag.code == "E415"
        assert any(diag.message.startswith(f"for `{p}` (k = ") for p in bad), diag.message
        return
    frozen = [isinstance(r.action, ast.Frozen) for r in rules]
    expected = _expected_error(rules, frozen, [o[1] if o else None for o in owners], tree)
    plan = _compile_or_expected_error(ast.Spec(tuple(rules)), tree, expected)
    if plan is None:
        event(f"{expected}")
        return
    assert jax.tree_util.tree_structure(plan.labels) == jax.tree_util.tree_structure(tree)
    want = [
        None
        if owner is None
        else S.bound_label(owner[0], {"k": owner[2]["k"]})
        if uses[owner[1]][0]
        else owner[0]
        for owner in owners
    ]
    assert jax.tree.leaves(plan.labels) == want
    assert set(plan.transforms) == set(want)
    event("per-binding labels" if any("[" in w for w in want if w) else "no per-binding labels")


def test_conditions_of_later_rules_do_not_see_leaves_an_earlier_rule_owns() -> None:
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 5))}
    spec = "** where ndim < 2 -> frozen\n** where shape[1] == 5 -> adam(1e-3)\n** -> sgd(0.1)"
    plan = _compile_quietly(partspec.parse(spec), params)
    assert plan.labels == {"a": "frozen", "b": "adam(0.001)"}


def test_condition_errors_name_the_leaf_path() -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("** where shape[1] == 5 -> adam(1e-3)", {"a": {"b": jnp.ones(3)}})
    (diag,) = info.value.diagnostics
    assert diag.code == "E406"
    assert diag.message.startswith("for `a/b` (shape [3], dtype float32): index 1")


def test_uncovered_leaves_beside_python_numbers_under_conditions() -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("** where ndim == 0 -> sgd(0.1)", {"a": 1.0, "b": jnp.ones(2)})
    (diag,) = info.value.diagnostics
    assert diag.code == "E501"
    assert "not covered: b" in diag.notes


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
    from tests.assertions import label_paths

    if sort:  # tree order, where neighbours share prefixes
        paths = sorted(paths)
    rules = [ast.Rule((p,), (), ast.Frozen(), f"r{i}") for i, p in enumerate(pats)]
    checked = partspec.check(ast.Spec(tuple(rules)))
    labels, _, _ = label_paths(checked, paths)
    owners = [next((i for i, p in enumerate(pats) if S.naive_match(p, path)), -1) for path in paths]
    assert labels == [f"r{i}" if i >= 0 else None for i in owners]


# ---------------------------------------------------------------- comments survive fmt


@given(S.commented_specs())
def test_fmt_keeps_every_comment_in_order(text: str) -> None:
    """fmt deleted all but the last comment inside a multi-line statement."""
    before = parse_syntax(text)
    formatted = partspec.format(text)
    after = parse_syntax(formatted)
    assert [c.text for c in after.comments] == [c.text for c in before.comments], formatted
    assert after == before
    assert partspec.format(formatted) == formatted
