"""The checker's allow-list table matches the installed optax."""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from typing import Any

import jax.numpy as jnp
import optax
import pytest

import partspec
from partspec.language._optax_table import OPTAX_VERSION, TABLE
from partspec.language._tablegen import DEPRECATED, DEPRECATED_KEYWORDS, generate

SAME_OPTAX = optax.__version__ == OPTAX_VERSION
#: The minimum-versions CI run uses an older optax than the table was generated from.
needs_table_optax = pytest.mark.skipif(
    not SAME_OPTAX,
    reason=f"the table is from optax {OPTAX_VERSION}, installed is {optax.__version__}: "
    "names it lacks compile to E410 (test_an_older_optax_*)",
)


@needs_table_optax
def test_table_matches_installed_optax() -> None:
    assert generate() == TABLE, (
        f"the allow-list table was generated from optax {OPTAX_VERSION}; installed is "
        f"{optax.__version__}. Regenerate: python -m partspec.language._tablegen "
        "> partspec/language/_optax_table.py"
    )


@needs_table_optax
def test_every_allow_listed_name_is_a_real_optax_function() -> None:
    for name in TABLE:
        assert callable(getattr(optax, name)), name


OPTIMIZERS = sorted(n for n, e in TABLE.items() if e["kind"] == "optimizer")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_compiles_and_updates(name: str) -> None:
    params = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
    if not hasattr(optax, name):  # an older optax: a clear error, not an AttributeError
        with pytest.raises(partspec.SpecError, match="E410"):
            partspec.compile(f"** -> {name}(1e-3)", params)
        return
    plan = partspec.compile(f"** -> {name}(1e-3)", params)
    assert plan.labels == {"w": f"{name}(0.001)", "b": f"{name}(0.001)"}
    state = plan.tx.init(params)
    grads = {"w": jnp.full((4, 4), 0.5), "b": jnp.full(4, 0.5)}
    updates, _ = plan.tx.update(grads, state, params)
    direct, _ = getattr(optax, name)(1e-3).update(
        grads, getattr(optax, name)(1e-3).init(params), params
    )
    for k in params:
        assert jnp.allclose(updates[k], direct[k]), name


SCHEDULES = {
    "constant_schedule(0.1)": optax.constant_schedule(0.1),
    "linear_schedule(0.0, 1.0, 10)": optax.linear_schedule(0.0, 1.0, 10),
    "cosine_decay_schedule(1.0, 100)": optax.cosine_decay_schedule(1.0, 100),
    "warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)": optax.warmup_cosine_decay_schedule(
        0.0, 1.0, 10, 100
    ),
    "exponential_decay(1.0, 10, 0.5)": optax.exponential_decay(1.0, 10, 0.5),
    "join_schedules([constant_schedule(1.0), constant_schedule(2.0)], [5])": optax.join_schedules(
        [optax.constant_schedule(1.0), optax.constant_schedule(2.0)], [5]
    ),
}


@pytest.mark.parametrize("text", sorted(SCHEDULES))
def test_schedules_and_multipliers_equal_optax(text: str) -> None:
    plan = partspec.compile(
        f"let s = {text}\na -> sgd(s) as base\nb -> sgd(3 * s / 2) as fast",
        {"a": jnp.ones(1), "b": jnp.ones(1)},
    )
    ref = SCHEDULES[text]
    for step in (0, 1, 5, 9, 50):
        base, fast = plan.transforms["base"], plan.transforms["fast"]
        for tx, mult in ((base, 1.0), (fast, 1.5)):
            state = tx.init(jnp.ones(1))
            for _ in range(step):
                _, state = tx.update(jnp.ones(1), state)
            upd, _ = tx.update(jnp.ones(1), state)
            assert jnp.allclose(-upd, mult * ref(step)), (text, step)


def test_dtype_arguments_reach_optax_as_dtypes() -> None:
    params = {"w": jnp.ones(3)}
    plan = partspec.compile('** -> adam(1e-3, mu_dtype="bfloat16")', params)
    state = plan.tx.init(params)
    mu = plan.label_states(state)['adam(0.001, mu_dtype="bfloat16")'][0].mu["w"]
    assert mu.dtype == jnp.bfloat16


def test_float_with_integer_value_is_accepted_where_optax_wants_an_int() -> None:
    checked = partspec.check("** -> sgd(linear_schedule(0.0, 1.0, 1e4))")
    sched = checked.rules[0].action.args[0]
    assert sched.args[2] == 10000 and isinstance(sched.args[2], int)
    with pytest.raises(partspec.SpecError) as info:
        partspec.check("** -> sgd(linear_schedule(0.0, 1.0, 10.5))")
    assert info.value.diagnostics[0].code == "E403"


def _minimal_args(name: str) -> list[Any]:
    args: list[Any] = []
    for p in TABLE[name]["params"]:
        if not p["required"]:
            continue
        types = p["types"] or ()
        if "transform" in types:
            args.append(optax.sgd(0.1))
        elif "list[schedule]" in types:
            args.append([optax.constant_schedule(1.0)])
        elif "list[int]" in types:
            args.append([])
        elif "int" in types and "number" not in types:
            args.append(1)
        else:
            args.append(0.1)
    return args


@needs_table_optax
@pytest.mark.parametrize("name", sorted(TABLE))
def test_deprecations_agree_with_the_installed_optax(name: str) -> None:
    """A function optax deprecates (it warns when called) is marked deprecated, and a
    keyword its signature marks `# deprecated` is too: checking warns about both (W603)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(TypeError, ValueError):
            getattr(optax, name)(*_minimal_args(name))
    warned = any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert warned == (name in DEPRECATED), name
    fn = getattr(optax, name)
    source = inspect.getsource(getattr(fn, "func", fn)).split('"""')[0]  # nadam: a partial
    marked = {
        line.split(":")[0].strip()
        for line in source.splitlines()
        if "# deprecated" in line.lower() and ":" in line
    }
    assert marked == {kw for fn, kw in DEPRECATED_KEYWORDS if fn == name}, name


def test_deprecated_functions_and_keywords_warn_where_they_are_used(tmp_path: Any) -> None:
    from partspec.tools.cli import main

    text = "a -> optimistic_adam(1e-3)\nb -> noisy_sgd(0.1, seed=3)\nc -> sgd(0.1)\n"
    with pytest.warns(partspec.SpecWarning) as record:
        checked = partspec.check(text)
    assert [(d.code, d.line, d.column) for d in checked.warnings] == [
        ("W603", 1, 6),
        ("W603", 2, 21),
    ]
    assert "optimistic_adam_v2" in (checked.warnings[0].hint or "")
    assert len(record) == 2
    path = tmp_path / "d.pspec"
    path.write_text(text)
    assert main(["check", str(path)], out=io.StringIO()) == 0
    assert main(["check", "--strict", str(path)], out=io.StringIO()) == 1
    params = {"a": jnp.ones(2), "b": jnp.ones(2), "c": jnp.ones(2)}
    with pytest.warns(partspec.SpecWarning, match="W603"):
        partspec.compile(text, params)


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("** -> adam(1e-3)", "adam"),
        ("global clip_by_global_norm(1.0)\n** -> sgd(0.1)", "clip_by_global_norm"),
    ],
)
def test_an_older_optax_without_a_function_fails_clearly(
    text: str, missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table may be newer than the installed optax: say so, never an AttributeError."""
    monkeypatch.delattr(optax, missing)
    with pytest.raises(partspec.SpecError) as err:
        partspec.compile(text, {"w": jnp.ones(2)})
    (d,) = err.value.diagnostics
    assert d.code == "E410" and f"has no `{missing}`" in d.message
    assert OPTAX_VERSION in d.message and d.line >= 1


def test_an_older_optax_without_a_keyword_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    real = optax.adamw

    def adamw(learning_rate: Any, b1: Any = 0.9) -> Any:  # no weight_decay: an older optax
        return real(learning_rate, b1=b1)

    monkeypatch.setattr(optax, "adamw", adamw)
    with pytest.raises(partspec.SpecError) as err:
        partspec.compile("** -> adamw(1e-3, weight_decay=0.1)", {"w": jnp.ones(2)})
    (d,) = err.value.diagnostics
    assert d.code == "E410" and "no argument `weight_decay`" in d.message
