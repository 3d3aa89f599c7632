"""The compiled plan: labels, transforms, warnings, params, split and merge."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import partspec

PARAMS = {
    "backbone": {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
    "head": {"kernel": jnp.ones((2, 1)), "bias": jnp.ones(1)},
}


def test_labels_are_readable_action_texts_and_as_names() -> None:
    plan = partspec.compile(
        "backbone/** -> frozen\nhead/kernel -> adam(5e-3)\nhead/bias -> sgd(0.1) as bias", PARAMS
    )
    assert plan.labels == {
        "backbone": {"dense": {"kernel": "frozen", "bias": "frozen"}},
        "head": {"kernel": "adam(0.005)", "bias": "bias"},
    }
    assert set(plan.transforms) == {"frozen", "adam(0.005)", "bias"}
    assert plan.frozen_labels == {"frozen"}


def test_editing_a_number_changes_the_label_so_old_state_does_not_restore() -> None:
    old = partspec.compile("backbone/** -> frozen\nhead/** -> adam(1e-3)", PARAMS)
    new = partspec.compile("backbone/** -> frozen\nhead/** -> adam(1e-4)", PARAMS)
    old_state, new_state = old.tx.init(PARAMS), new.tx.init(PARAMS)
    assert set(old.label_states(old_state)) != set(new.label_states(new_state))
    assert jax.tree.structure(old_state) != jax.tree.structure(new_state)


def test_named_labels_survive_an_edited_learning_rate() -> None:
    old = partspec.compile("backbone/** -> frozen\nhead/** -> adam(1e-3) as head", PARAMS)
    new = partspec.compile("backbone/** -> frozen\nhead/** -> adam(1e-4) as head", PARAMS)
    assert jax.tree.structure(old.tx.init(PARAMS)) == jax.tree.structure(new.tx.init(PARAMS))


def test_identical_actions_share_one_label_and_one_state() -> None:
    plan = partspec.compile(
        "backbone/** -> sgd(0.1, momentum=0.9)\nhead/** -> sgd(0.1, momentum=0.9)", PARAMS
    )
    assert set(jax.tree.leaves(plan.labels)) == {"sgd(0.1, momentum=0.9)"}
    assert list(plan.label_states(plan.tx.init(PARAMS))) == ["sgd(0.1, momentum=0.9)"]


def test_frozen_rule_may_be_named() -> None:
    plan = partspec.compile("backbone/** -> frozen as pretrained\n** -> sgd(1.0)", PARAMS)
    assert plan.frozen_labels == {"pretrained"}
    trainable, frozen = plan.split(PARAMS)
    assert trainable["backbone"]["dense"]["kernel"] is None
    assert frozen["head"]["kernel"] is None


def test_params_are_set_from_python_and_type_checked() -> None:
    spec = partspec.parse("param lr = 1e-3\nparam momentum\n** -> sgd(lr, momentum=momentum)")
    plan = spec.compile(PARAMS, lr=0.5, momentum=0.0)
    assert plan.checked.values == {"lr": 0.5, "momentum": 0.0}
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = plan.tx.update(grads, plan.tx.init(PARAMS), PARAMS)
    assert jnp.all(updates["head"]["kernel"] == -0.5)
    with pytest.raises(partspec.SpecError) as info:
        spec.compile(PARAMS, lr="fast", momentum=0.0)
    assert info.value.diagnostics[0].code == "E416"
    with pytest.raises(partspec.SpecError) as info:
        spec.compile(PARAMS, lr=0.1)
    assert info.value.diagnostics[0].code == "E305"
    # numpy and jax scalars are numbers too
    assert spec.compile(PARAMS, lr=np.float32(0.25), momentum=np.int64(0)).checked.values[
        "lr"
    ] == pytest.approx(0.25)


def test_unused_and_shadowed_rules_warn_and_strict_makes_them_errors() -> None:
    text = "** -> sgd(0.1)\nhead/** -> adam(1e-3)\nnothing/** -> frozen"
    with pytest.warns(partspec.SpecWarning) as record:
        plan = partspec.compile(text, PARAMS)
    messages = [str(w.message) for w in record]
    assert any("W602" in m and "line 1" in m for m in messages)
    assert any("W601" in m and "nothing/**" in m for m in messages)
    assert [d.code for d in plan.diagnostics] == ["W602", "W601"]
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(text, PARAMS, strict=True)
    assert [d.code for d in info.value.diagnostics] == ["W602", "W601"]


def test_clean_spec_emits_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        partspec.compile("backbone/** -> frozen\n** -> adam(1e-3)", PARAMS)


def test_optimizer_is_the_plans_tx() -> None:
    tx = partspec.optimizer("** -> sgd(1.0)", PARAMS)
    state = tx.init(PARAMS)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS)
    assert jnp.all(optax.apply_updates(PARAMS, updates)["head"]["bias"] == 0.0)


def test_split_merge_round_trip_and_grad_of_trainable_only() -> None:
    plan = partspec.compile("backbone/** -> frozen\n** -> sgd(0.1)", PARAMS)
    trainable, frozen = plan.split(PARAMS)
    assert jax.tree.leaves(plan.merge(trainable, frozen)) == jax.tree.leaves(PARAMS)
    assert len(jax.tree.leaves(trainable)) == 2 and len(jax.tree.leaves(frozen)) == 2

    def loss(t: dict) -> jax.Array:
        p = plan.merge(t, frozen)
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    grads = jax.grad(loss)(trainable)
    assert jax.tree.structure(grads) == jax.tree.structure(trainable)
    state = plan.trainable_tx.init(trainable)
    updates, _ = plan.trainable_tx.update(grads, state, trainable)
    new = optax.apply_updates(trainable, updates)
    assert jnp.allclose(new["head"]["kernel"], 1.0 - 0.1 * 2.0)


def test_optax_errors_at_build_time_are_spec_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("momentum must be in [0, 1)")

    monkeypatch.setattr(optax, "sgd", broken)
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("** -> sgd(0.1, momentum=2.0)", PARAMS)
    (diag,) = info.value.diagnostics
    assert diag.code == "E408" and "momentum must be in [0, 1)" in diag.message
    assert (diag.line, diag.column) == (1, 7)


def test_spec_and_text_are_accepted_everywhere() -> None:
    spec = partspec.parse("** -> sgd(0.1)")
    assert (
        partspec.compile(spec, PARAMS).labels == partspec.compile("** -> sgd(0.1)", PARAMS).labels
    )
    with pytest.raises(TypeError):
        partspec.compile(42, PARAMS)  # type: ignore[arg-type]


def test_check_accepts_some_values_and_leaves_the_rest_unset() -> None:
    checked = partspec.check("param lr\nparam wd = 0.1\n** -> adamw(lr, weight_decay=wd)", wd=0.2)
    assert checked.values["wd"] == 0.2 and not checked.complete


def test_zero_dimensional_arrays_are_param_values() -> None:
    plan = partspec.compile("param lr\n** -> sgd(lr)", PARAMS, lr=jnp.array(0.5))
    assert plan.checked.values["lr"] == 0.5


def test_strict_turns_warnings_into_errors() -> None:
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile("** -> sgd(0.1)\nhead/** -> frozen", PARAMS, strict=True)
    assert [(d.code, d.severity) for d in info.value.diagnostics] == [("W602", "error")]


def test_params_named_like_compile_keywords_are_set_through_values() -> None:
    spec = partspec.parse(
        "param strict = 0.1\nparam values = 0.9\n** -> sgd(strict, momentum=values)"
    )
    plan = partspec.compile(spec, PARAMS, values={"strict": 0.5, "values": 0.0})
    assert plan.checked.values == {"strict": 0.5, "values": 0.0}
    assert spec.compile(PARAMS, values={"strict": 0.25}).checked.values["strict"] == 0.25
    # the mapping and keyword arguments combine
    mixed = partspec.compile(
        partspec.parse("param lr = 0.1\nparam strict = 0.0\n** -> sgd(lr, momentum=strict)"),
        PARAMS,
        values={"strict": 0.5},
        lr=0.2,
    )
    assert mixed.checked.values == {"lr": 0.2, "strict": 0.5}
    with pytest.raises(partspec.SpecError) as info:
        partspec.compile(spec, PARAMS, values={"strcit": 0.5})
    assert info.value.diagnostics[0].code == "E304"
