"""``with`` rules: settings of whatever optimizer owns a leaf, first match per setting."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import partspec
from partspec.diagnostics import SpecError
from partspec.jax.tree import leaf_segments
from partspec.language import ast
from partspec.language.parser import parse_syntax
from partspec.language.values import OptaxCall, ScaledSchedule, Until
from tests import strategies as S

# ---------------------------------------------------------------- the naive reference

OWNER_ACTIONS = {
    "frozen": None,
    "adamw(0.1, weight_decay=0.5)": ("adamw", 0.1, 0.5),
    "lamb(0.3)": ("lamb", 0.3, None),
    "adamw(0.05)": ("adamw", 0.05, None),
}
FACTORS = [0.5, 2.0, 0.25, 3.0]
DECAYS = [0.0, 0.01, 0.2]


def _action_ast(text: str) -> ast.Action:
    return parse_syntax(f"x -> {text}").rules[0].action


def _reference(
    owners: list[tuple[list[ast.Pattern], str]],
    withs: list[tuple[list[ast.Pattern], dict[str, float]]],
    path: tuple[str, ...],
) -> tuple[str, float, float | None] | None:
    """(optimizer, lr, weight decay or None) of one leaf, by reading the rules in order."""
    owner = next(a for ps, a in owners if any(S.naive_match(p, path) for p in ps))
    spec = OWNER_ACTIONS[owner]
    if spec is None:
        return None
    name, lr, wd = spec
    decided: dict[str, float] = {}
    for ps, settings in withs:
        if any(S.naive_match(p, path) for p in ps):
            for k, v in settings.items():
                decided.setdefault(k, v)
    if "lr" in decided:
        lr = lr * decided["lr"]
    if "weight_decay" in decided:
        wd = decided["weight_decay"]
    return name, lr, wd


def _summary(action: Any) -> tuple[str, float, float | None] | None:
    if action is None:
        return None
    assert isinstance(action, OptaxCall)
    kwargs = dict(action.kwargs)
    lr = action.args[0] if action.args else kwargs["learning_rate"]
    return action.name, lr, kwargs.get("weight_decay")


@given(st.data())
def test_settings_follow_the_first_match_per_setting(data: st.DataObject) -> None:
    """Against a naive reference: the owner is the first matching `->` rule, and each
    setting comes from the first matching `with` rule that names it; the label tree
    mirrors the parameters."""
    tree = data.draw(S.param_trees(leaves=st.just(jax.ShapeDtypeStruct((2,), jnp.float32))))
    paths = [segs for segs, _ in leaf_segments(tree)]
    assume(paths)
    pattern = st.sampled_from(paths).flatmap(S.patterns_for)
    owners = data.draw(
        st.lists(
            st.tuples(
                st.lists(pattern, min_size=1, max_size=2), st.sampled_from(list(OWNER_ACTIONS))
            ),
            max_size=3,
        )
    )
    owners.append(([parse_syntax("** -> frozen").rules[0].patterns[0]], "adamw(0.05)"))
    setting = st.one_of(
        st.fixed_dictionaries({"lr": st.sampled_from(FACTORS)}),
        st.fixed_dictionaries({"weight_decay": st.sampled_from(DECAYS)}),
        st.fixed_dictionaries(
            {"lr": st.sampled_from(FACTORS), "weight_decay": st.sampled_from(DECAYS)}
        ),
    )
    withs = data.draw(
        st.lists(st.tuples(st.lists(pattern, min_size=1, max_size=2), setting), max_size=4)
    )
    statements: list[ast.Statement] = [ast.Rule(tuple(ps), (), _action_ast(a)) for ps, a in owners]
    # `with` rules may stand anywhere: interleave them with the `->` rules.
    for i, (ps, settings) in enumerate(withs):
        at = data.draw(st.integers(0, len(statements)), label=f"position of with rule {i}")
        statements.insert(
            at,
            ast.WithRule(
                tuple(ps), (), tuple(ast.Setting(k, ast.Num(v)) for k, v in settings.items())
            ),
        )
    spec = ast.Spec(tuple(statements))
    in_file_order = [
        (list(st.patterns), {x.name: x.value.value for x in st.settings})
        for st in statements
        if isinstance(st, ast.WithRule)
    ]
    want = [_reference(owners, in_file_order, p) for p in paths]
    if all(w is None for w in want):
        with pytest.raises(SpecError, match="E502"):
            partspec.compile(spec, tree)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        plan = partspec.compile(spec, tree)
    assert jax.tree.structure(plan.labels) == jax.tree.structure(tree)
    got = [_summary(plan.actions[lab]) for lab in jax.tree.leaves(plan.labels)]
    assert got == want
    assert plan.resolution is not None
    assert set(plan.resolution.actions) == set(jax.tree.leaves(plan.labels))
    # Leaves with equal final actions share a label, and different ones never do.
    by_label: dict[str, Any] = {}
    for lab in jax.tree.leaves(plan.labels):
        by_label.setdefault(lab, plan.actions[lab])
    assert len(set(map(repr, by_label.values()))) == len(by_label)


# ---------------------------------------------------------------- what users rely on

PARAMS = {
    "encoder": {
        "layer_0": {"kernel": np.ones((2, 2), np.float32), "bias": np.ones(2, np.float32)},
        "layer_1": {"kernel": np.ones((2, 2), np.float32), "bias": np.ones(2, np.float32)},
    },
    "head": {"kernel": np.ones((2, 2), np.float32), "bias": np.ones(2, np.float32)},
}


def step(plan: partspec.Plan, params: Any) -> Any:
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = plan.tx.update(grads, plan.init(params), params)
    return jax.tree.map(lambda u: np.asarray(u), updates)


def test_a_multiplier_scales_the_rate_the_optimizer_uses() -> None:
    plan = partspec.compile("** -> sgd(0.1)\nencoder/layer_<i>/** with lr * 0.5 ** (1 - i)", PARAMS)
    u = step(plan, PARAMS)
    np.testing.assert_array_equal(u["head"]["bias"], -0.1 * np.ones(2, np.float32))
    np.testing.assert_array_equal(u["encoder"]["layer_1"]["bias"], -0.1 * np.ones(2, np.float32))
    np.testing.assert_array_equal(
        u["encoder"]["layer_0"]["bias"], np.float32(-0.1 * 0.5) * np.ones(2, np.float32)
    )
    assert plan.labels["encoder"]["layer_0"]["bias"] == "sgd(0.1)[lr*0.5]"
    assert plan.labels["encoder"]["layer_1"]["bias"] == "sgd(0.1)[lr*1.0]"


def test_settings_from_different_rules_combine() -> None:
    text = """\
** -> adamw(1e-3, weight_decay=0.05)
encoder/** with lr * 0.1
** where ndim <= 1 with weight_decay = 0
"""
    plan = partspec.compile(text, PARAMS)
    assert plan.labels["encoder"]["layer_0"]["bias"] == (
        "adamw(0.001, weight_decay=0.05)[lr*0.1, weight_decay=0]"
    )
    action = plan.actions[plan.labels["encoder"]["layer_0"]["bias"]]
    assert action == OptaxCall("adamw", "optimizer", (1e-3 * 0.1,), (("weight_decay", 0),))
    assert plan.labels["head"]["kernel"] == "adamw(0.001, weight_decay=0.05)"


def test_a_multiplier_keeps_a_schedule() -> None:
    text = "** -> sgd(cosine_decay_schedule(1.0, 100))\nhead/** with lr * 10"
    plan = partspec.compile(text, PARAMS)
    action = plan.actions[plan.labels["head"]["kernel"]]
    assert isinstance(action.args[0], ScaledSchedule) and action.args[0].factor == 10.0
    from partspec.jax.rates import rates_at

    rates = rates_at(plan.resolution, [0, 50])
    head = rates[plan.labels["head"]["kernel"]]
    body = rates[plan.labels["encoder"]["layer_0"]["kernel"]]
    np.testing.assert_allclose(np.asarray(head), 10 * np.asarray(body), rtol=1e-6)


def test_learning_rate_may_be_replaced_by_a_schedule() -> None:
    text = "** -> adam(1e-3)\nhead/** with learning_rate = linear_schedule(0, 1e-2, 10)"
    plan = partspec.compile(text, PARAMS)
    action = plan.actions[plan.labels["head"]["kernel"]]
    assert action.args[0].name == "linear_schedule"


def test_frozen_until_takes_settings_for_its_optimizer() -> None:
    text = "** -> frozen until 2 then adamw(1e-3)\nencoder/** with lr * 0.5, weight_decay = 0"
    plan = partspec.compile(text, PARAMS)
    action = plan.actions[plan.labels["encoder"]["layer_0"]["kernel"]]
    assert isinstance(action, Until) and action.at == 2
    assert action.then == OptaxCall("adamw", "optimizer", (5e-4,), (("weight_decay", 0),))


def test_frozen_leaves_take_no_settings_and_stay_frozen() -> None:
    text = "encoder/** -> frozen\n** -> sgd(0.1)\n** with lr * 2"
    plan = partspec.compile(text, PARAMS)
    assert plan.labels["encoder"]["layer_0"]["kernel"] == "frozen"
    u = step(plan, PARAMS)
    assert np.all(u["encoder"]["layer_0"]["kernel"] == 0)


def test_in_a_chain_a_setting_goes_to_the_one_call_that_takes_it() -> None:
    text = (
        "** -> chain(clip_by_global_norm(1.0), adamw(1e-3))\nhead/** with weight_decay = 0, lr * 2"
    )
    plan = partspec.compile(text, PARAMS)
    action = plan.actions[plan.labels["head"]["kernel"]]
    assert action.args[1] == OptaxCall("adamw", "optimizer", (2e-3,), (("weight_decay", 0),))
    assert action.args[0] == OptaxCall("clip_by_global_norm", "transform", (1.0,), ())


def test_labels_are_stable_with_as() -> None:
    text = "** -> adamw(1e-3) as body\nhead/** with lr * 10"
    plan = partspec.compile(text, PARAMS)
    assert plan.labels["head"]["kernel"] == "body[lr*10]"
    assert plan.labels["encoder"]["layer_0"]["kernel"] == "body"


def test_count_counts_the_leaves_with_rules_capture() -> None:
    text = "let depth = count(i)\n** -> sgd(1.0)\nencoder/layer_<i>/** with lr * 0.5 ** (depth - i)"
    plan = partspec.compile(text, PARAMS)
    assert plan.labels["encoder"]["layer_0"]["kernel"] == "sgd(1.0)[lr*0.25]"
    assert plan.labels["encoder"]["layer_1"]["kernel"] == "sgd(1.0)[lr*0.5]"


def test_settings_are_first_match_per_setting() -> None:
    text = """\
** -> adamw(1.0, weight_decay=0.5)
head/bias with weight_decay = 0.1
** where ndim <= 1 with weight_decay = 0, lr * 3
head/** with lr * 2
"""
    plan = partspec.compile(text, PARAMS)
    head_bias = plan.actions[plan.labels["head"]["bias"]]
    assert head_bias == OptaxCall("adamw", "optimizer", (3.0,), (("weight_decay", 0.1),))
    head_kernel = plan.actions[plan.labels["head"]["kernel"]]
    assert head_kernel == OptaxCall("adamw", "optimizer", (2.0,), (("weight_decay", 0.5),))


def test_the_optimizer_is_built_from_the_final_action() -> None:
    text = "** -> adamw(1e-2, weight_decay=0.5)\n** where ndim <= 1 with weight_decay = 0"
    plan = partspec.compile(text, PARAMS)
    grads = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = plan.tx.update(grads, plan.init(PARAMS), PARAMS)
    want_kernel, _ = optax.adamw(1e-2, weight_decay=0.5).update(
        grads["head"]["kernel"],
        optax.adamw(1e-2).init(PARAMS["head"]["kernel"]),
        PARAMS["head"]["kernel"],
    )
    np.testing.assert_array_equal(updates["head"]["kernel"], want_kernel)
    assert np.all(np.asarray(updates["head"]["bias"]) == 0)  # no decay on the bias


# ---------------------------------------------------------------- warnings


def codes(text: str, **values: object) -> list[tuple[str, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        plan = partspec.compile(text, PARAMS, **values)
    return [(d.code, d.line) for d in plan.diagnostics]


def test_unused_and_shadowed_with_rules_warn() -> None:
    text = """\
** -> sgd(0.1)
nothing/** with lr * 2
** with momentum = 0.9
head/** with momentum = 0.5
"""
    assert codes(text) == [("W601", 2), ("W602", 4)]


def test_a_with_rule_on_frozen_leaves_only_warns() -> None:
    plan_codes = codes("head/** -> frozen\n** -> sgd(0.1)\nhead/** with lr * 2")
    assert plan_codes == [("W601", 3)]


def test_a_with_rule_switched_off_by_a_param_is_quiet() -> None:
    text = "param low = false\n** -> sgd(0.1)\nhead/** where low with lr * 0.1"
    assert codes(text) == []
    with pytest.raises(SpecError):
        partspec.compile(
            text.replace("head/** where low", "head/** where ndim > 5"), PARAMS, strict=True
        )


def test_a_partly_shadowed_with_rule_is_not_reported() -> None:
    text = "** -> adamw(0.1)\nhead/** with lr * 2\nhead/** with lr * 3, weight_decay = 0"
    assert codes(text) == []


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "code", "message", "column"),
    [
        ("** -> sgd(0.1)\n** with lr = 2", "E105", "`lr = ...` would replace", 9),
        ("** -> sgd(0.1)\n** with 0.5", "E105", "is `lr * FACTOR` or `NAME = VALUE`", 9),
        ("** -> sgd(0.1)\n** with base * 2", "E105", "is `lr * FACTOR` or `NAME = VALUE`", 9),
        ("** -> sgd(0.1)\n** with lr * 2, lr * 3", "E105", "`lr` is set twice", 17),
        ("** -> sgd(0.1)\n** with momentun = 0.9", "E402", "no optimizer or transform", 9),
        (
            '** -> sgd(0.1)\n** with lr * "x"',
            "E403",
            "multiplies the learning rate by a number",
            14,
        ),
        ("** -> sgd(0.1)\n** with", "E100", "", 8),
    ],
)
def test_misuse_is_an_error_with_a_position(
    text: str, code: str, message: str, column: int
) -> None:
    with pytest.raises(SpecError) as info:
        partspec.parse(text)
    diag = info.value.diagnostics[0]
    assert (diag.code, diag.line, diag.column) == (code, 2, column), str(info.value)
    assert message in diag.message


def test_a_misspelt_setting_gets_a_suggestion() -> None:
    with pytest.raises(SpecError) as info:
        partspec.parse("** -> sgd(0.1)\n** with momentun = 0.9")
    assert info.value.diagnostics[0].hint == "did you mean `momentum`?"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("** -> sgd(0.1)\nhead/** with weight_decay = 0", "for `head/bias`: `sgd` has no argument"),
        (
            "** -> chain(add_decayed_weights(1e-4), adamw(1e-3))\nhead/** with weight_decay = 0",
            "several calls in the owner's action take `weight_decay`",
        ),
        ('** -> sgd(0.1)\nhead/** with momentum = "x"', "cannot be set to a string"),
        ("** -> adafactor()\nhead/** with lr * 2", "`adafactor` is given no learning rate"),
    ],
)
def test_a_setting_that_does_not_fit_the_owner_names_leaf_rule_and_calls(
    text: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        partspec.compile(text, PARAMS)
    diag = info.value.diagnostics[0]
    assert diag.code == "E423" and diag.line == 2
    assert message in diag.message, diag.message
    assert diag.annotations[0].line == 1  # the owner rule


def test_with_rules_check_without_a_tree() -> None:
    checked = partspec.check("** -> sgd(0.1)\nhead/** with lr * 2, momentum = 0.9")
    assert checked.with_rules[0].settings == (("lr", 2), ("momentum", 0.9))


def test_format_aligns_with_rules_and_keeps_comments() -> None:
    text = "** -> adamw(1e-3)  # base\nhead/** with lr*10 # head\n"
    assert partspec.format(partspec.parse(text)) == (
        "**      -> adamw(1e-3)  # base\nhead/** with lr * 10    # head\n"
    )


# ---------------------------------------------------------------- regressions


def test_pspec_check_gives_with_conditions_the_leaf_shapes(tmp_path: Any) -> None:
    """`pspec check --tree` read shapes only when a `->` rule had a `where`: a `with`
    rule's condition then matched nothing, a false W601 (an error under --strict)."""
    import io

    from partspec.tools.cli import main

    spec = tmp_path / "s.pspec"
    spec.write_text("** -> adamw(1e-3)\n** where ndim <= 1 with weight_decay = 0\n")
    tree = tmp_path / "t.json"
    tree.write_text(
        '{"w": {"shape": [2, 2], "dtype": "float32"}, "b": {"shape": [2], "dtype": "float32"}}'
    )
    out = io.StringIO()
    assert main(["check", str(spec), "--tree", str(tree), "--strict"], out=out) == 0, out.getvalue()


def test_a_with_condition_that_cannot_be_evaluated_is_an_error_not_a_miss() -> None:
    """Swallowing it (as for `->` rules after the owner, which only decide shadowing)
    would silently drop the setting."""
    from partspec.resolution import resolve_paths

    checked = partspec.check("** -> sgd(0.1)\n** where ndim <= 1 with momentum = 0.9")
    with pytest.raises(SpecError, match="E409"):
        resolve_paths(checked, [("a",), ("b",)])
    checked = partspec.check("** -> sgd(0.1)\n** where shape[1] > 1 with momentum = 0.9")
    with pytest.raises(SpecError, match="index 1 is out of range"):
        partspec.compile(checked.spec, {"a": np.zeros(2)})
    # On a frozen leaf the settings do not matter.
    frozen = "** -> frozen\n** where shape[1] > 1 with momentum = 0.9"
    assert partspec.compile(frozen, {"a": np.zeros(2)}).labels == {"a": "frozen"}


def test_only_labels_some_leaf_has_get_an_optimizer() -> None:
    """A leaf decided by its path and captures (or a condition) recorded its owner's bare
    label as well as its final one: plans held optimizers, state and explain rows for
    labels no leaf had."""
    params = {"0": np.zeros(2, np.float32), "1": np.zeros((2, 2), np.float32)}
    for text in (
        "<i> -> sgd(0.1 * i)\n** with lr * 2",
        "** where ndim >= 1 -> sgd(0.1)\n** with lr * 2",
        "** -> sgd(0.1)\n** where ndim > 1 with lr * 2, momentum = 0.9",
    ):
        plan = partspec.compile(text, params)
        used = set(jax.tree.leaves(plan.labels))
        assert set(plan.transforms) == used, text
        assert set(plan.resolution.actions) == used, text
