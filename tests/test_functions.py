"""The number functions ``min max round int floor ceil abs``: Python's results, clear errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.diagnostics import SpecError

numbers = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)

PYTHON = {
    "min": min,
    "max": max,
    "int": int,
    "floor": math.floor,
    "ceil": math.ceil,
    "abs": abs,
    "round": round,
}


def value_of(expr: str, **params: object) -> object:
    decls = "".join(f"param {k}\n" for k in params)
    return partspec.check(f"{decls}let v = {expr}\n** -> sgd(0.1)", **params).values["v"]


@given(st.sampled_from(["int", "floor", "ceil", "abs", "round"]), numbers)
def test_one_argument_functions_agree_with_python(name: str, x: float) -> None:
    got = value_of(f"{name}(x)", x=x)
    want = PYTHON[name](x)
    assert got == want and type(got) is type(want)


@given(st.sampled_from(["min", "max"]), st.lists(numbers, min_size=2, max_size=5))
def test_min_max_agree_with_python(name: str, xs: list[float]) -> None:
    params = {f"x{i}": x for i, x in enumerate(xs)}
    got = value_of(f"{name}({', '.join(params)})", **params)
    want = PYTHON[name](xs)
    assert got == want and type(got) is type(want)


@given(numbers, st.integers(-3, 6))
def test_round_to_digits_agrees_with_python(x: float, digits: int) -> None:
    assert value_of(f"round(x, {digits})", x=x) == round(x, digits)


def test_big_vision_warmup() -> None:
    """big_vision's ``warmup = max(int(0.03 * total), 100)``, in a spec."""
    spec = "param total\nlet warmup = max(int(0.03 * total), 100)\n** -> sgd(0.1)"
    assert partspec.check(spec, total=10_000).values["warmup"] == 300
    assert partspec.check(spec, total=1_000).values["warmup"] == 100


def test_round_halves_to_even_as_python_does() -> None:
    assert [value_of(f"round({x})") for x in (0.5, 1.5, 2.5, -0.5)] == [0, 2, 2, 0]


def test_a_function_in_a_where_condition_is_type_checked() -> None:
    params = {"a": {"kernel": __import__("numpy").zeros((4, 3))}}
    plan = partspec.compile("** where max(shape) > 3 -> sgd(0.1)", params)
    assert plan.labels["a"]["kernel"] == "sgd(0.1)"
    with pytest.raises(SpecError, match="must be a number, got a list"):
        partspec.check("** where max(shape, 1) > 3 -> sgd(0.1)")
    assert value_of("min([3, 1.5, 2])") == 1.5


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (
            "** -> sgd(max(1))",
            "E404",
            "`max` is called as `max(a, b, ...)` or `max(list)`, got 1 argument",
        ),
        ("** -> sgd(int(1, 2))", "E404", "`int` is called as `int(x)`, got 2 arguments"),
        ('** -> sgd(abs("a"))', "E403", "argument 1 of `abs` must be a number, got a string"),
        ("** -> sgd(round(1.5, 0.5))", "E403", "argument 2 of `round` must be an integer"),
        ("** -> sgd(floor(x=1))", "E402", "`floor` takes no keyword arguments"),
        ("let v = max\n** -> sgd(1)", "E301", "`max` is a function, not a value"),
        ("let round = 1\n** -> sgd(1)", "E302", "`round` is the name of a built-in function"),
        ("** -> sgd(mx(1, 2))", "E401", "unknown function `mx`"),
        ("** -> sgd(flor(1.5))", "E401", "unknown function `flor`"),
        ("** -> sgd(cosine_decay_schedul(1, 10))", "E401", "unknown schedule"),
        ("** -> adma(1e-3)", "E401", "unknown optimizer `adma`"),
        ("** -> mystery(1e-3)", "E401", "unknown optimizer `mystery`"),
    ],
)
def test_misuse_is_an_error_with_a_position(text: str, code: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        partspec.check(text)
    diag = info.value.diagnostics[0]
    assert diag.code == code
    assert message in diag.message
    assert diag.line >= 1 and diag.column >= 1


def test_unknown_function_suggests_the_near_one() -> None:
    with pytest.raises(SpecError) as info:
        partspec.check("** -> sgd(mx(1, 2))")
    assert info.value.diagnostics[0].hint == "did you mean `max`?"
