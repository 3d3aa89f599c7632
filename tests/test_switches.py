"""Rules switched off by a ``param`` (``where freeze_vit``, big_vision's PaliGemma style)."""

from __future__ import annotations

import numpy as np
import pytest

import partspec
from partspec.diagnostics import SpecError

PARAMS = {
    "img": {"kernel": np.zeros((3, 4), np.float32), "bias": np.zeros(4, np.float32)},
    "llm": {"kernel": np.zeros((4, 4), np.float32)},
}

SPEC = """\
param freeze_vit = false
img/** where freeze_vit -> frozen
** -> adam(1e-3)
"""


def codes(plan: partspec.Plan) -> list[str]:
    return [d.code for d in plan.diagnostics]


def test_a_rule_switched_off_by_a_param_is_not_unused() -> None:
    plan = partspec.compile(SPEC, PARAMS, strict=True)
    assert codes(plan) == []
    assert plan.labels["img"]["kernel"] == "adam(0.001)"


def test_the_same_rule_switched_on_owns_its_leaves() -> None:
    plan = partspec.compile(SPEC, PARAMS, strict=True, freeze_vit=True)
    assert plan.labels["img"] == {"kernel": "frozen", "bias": "frozen"}


@pytest.mark.parametrize(
    "where",
    ["freeze_vit", "not train_vit", "ndim > 1 and freeze_vit", "freeze_vit and ndim > 1"],
)
def test_conditions_false_for_every_leaf_by_params_are_switches(where: str) -> None:
    text = (
        "param freeze_vit = false\nparam train_vit = true\n"
        f"img/** where {where} -> frozen\n** -> adam(1e-3)"
    )
    checked = partspec.check(text)
    assert checked.rules[0].switched_off
    assert codes(partspec.compile(text, PARAMS, strict=True)) == []


def test_a_condition_false_because_of_the_leaves_still_warns() -> None:
    """Only a param can switch a rule off: `ndim > 5` matching nothing is a mistake."""
    text = "img/** where ndim > 5 -> frozen\n** -> adam(1e-3)"
    assert not partspec.check(text).rules[0].switched_off
    with pytest.raises(SpecError, match="W601"):
        partspec.compile(text, PARAMS, strict=True)


def test_leaves_left_uncovered_by_a_switched_off_rule_are_still_an_error() -> None:
    text = "param freeze_vit = false\nimg/** where freeze_vit -> frozen\nllm/** -> adam(1e-3)"
    with pytest.raises(SpecError, match="E501"):
        partspec.compile(text, PARAMS)


def test_a_switch_may_go_through_a_let() -> None:
    text = (
        "param stage = 1\nlet tune_img = stage >= 2\n"
        "img/** where not tune_img -> frozen\n** -> adam(1e-3)"
    )
    assert partspec.check(text, stage=3).rules[0].switched_off == ("stage",)
    assert codes(partspec.compile(text, PARAMS, strict=True, stage=3)) == []


def test_a_literal_false_is_not_a_switch() -> None:
    text = "img/** where false -> frozen\n** -> adam(1e-3)"
    assert not partspec.check(text).rules[0].switched_off
    with pytest.raises(SpecError, match="W601"):
        partspec.compile(text, PARAMS, strict=True)
