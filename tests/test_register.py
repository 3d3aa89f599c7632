"""User extensions: ``partspec.register`` and ``pspec --plugin`` / ``[tool.partspec]``."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import partspec
from partspec.diagnostics import SpecError
from partspec.language.registry import is_registered, unregister
from partspec.tools.cli import main


def big_vision_rsqrt(timescale: float = 10_000.0, shift: float = 0.0) -> Any:
    """big_vision's ``rsqrt`` decay (``utils.create_learning_rate_schedule``): the rate
    over ``sqrt((step + shift) / timescale)``, with ``shift = timescale - warmup``."""
    return lambda count: 1.0 / jnp.sqrt((count + shift) / timescale)


@pytest.fixture
def rsqrt() -> Iterator[None]:
    unregister("rsqrt")  # a docs example may have registered its own
    partspec.register("rsqrt", big_vision_rsqrt, kind="schedule")
    yield
    unregister("rsqrt")


PARAMS = {"body": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}


def test_a_registered_schedule_with_a_multiplier_matches_the_hand_written_one(rsqrt: None) -> None:
    spec = """\
** -> sgd(0.1 * rsqrt(timescale=100, shift=90))
head/** with lr * 10
"""
    plan = partspec.compile(spec, PARAMS, strict=True)
    body = optax.sgd(lambda c: 0.1 * big_vision_rsqrt(100.0, 90.0)(c))
    head = optax.sgd(lambda c: 10.0 * (0.1 * big_vision_rsqrt(100.0, 90.0)(c)))
    state, bs, hs = plan.init(PARAMS), body.init(PARAMS["body"]), head.init(PARAMS["head"])
    for step in range(5):
        grads = jax.tree.map(lambda p, s=step: jnp.full_like(p, s + 1.0), PARAMS)
        updates, state = plan.tx.update(grads, state, PARAMS)
        want_body, bs = body.update(grads["body"], bs)
        want_head, hs = head.update(grads["head"], hs)
        np.testing.assert_array_equal(updates["body"]["w"], want_body["w"])
        np.testing.assert_allclose(updates["head"]["w"], want_head["w"], rtol=1e-6)


def test_registered_optimizers_and_transforms_are_called_like_optax() -> None:
    def momentum_sgd(learning_rate: float, beta: float = 0.9) -> optax.GradientTransformation:
        return optax.sgd(learning_rate, momentum=beta)

    partspec.register("momentum_sgd", momentum_sgd)
    partspec.register("halve", lambda: optax.scale(0.5), kind="transform")
    try:
        plan = partspec.compile("** -> chain(halve(), momentum_sgd(0.1, beta=0.5))", PARAMS)
        grads = jax.tree.map(jnp.ones_like, PARAMS)
        updates, _ = plan.tx.update(grads, plan.init(PARAMS), PARAMS)
        np.testing.assert_allclose(updates["body"]["w"], -0.05 * np.ones(3), rtol=1e-6)
        with pytest.raises(SpecError) as info:
            partspec.check('** -> momentum_sgd(0.1, beta="x")')
        assert info.value.diagnostics[0].code == "E403"
        with pytest.raises(SpecError, match="has no argument `betta`") as info:
            partspec.check("** -> momentum_sgd(0.1, betta=0.5)")
        assert info.value.diagnostics[0].hint == "did you mean `beta`?"
        with pytest.raises(SpecError, match="needs argument `learning_rate`"):
            partspec.check("** -> momentum_sgd()")
        # `with` settings reach a registered optimizer's keywords too.
        plan = partspec.compile("** -> momentum_sgd(0.1)\nhead/** with beta = 0.0, lr * 2", PARAMS)
        assert plan.labels["head"]["w"] == "momentum_sgd(0.1)[lr*2, beta=0.0]"
    finally:
        unregister("momentum_sgd")
        unregister("halve")


def test_unregistered_names_stay_errors() -> None:
    unregister("rsqrt")
    assert not is_registered("rsqrt")
    with pytest.raises(SpecError) as info:
        partspec.check("** -> sgd(rsqrt(timescale=100))")
    diag = info.value.diagnostics[0]
    assert diag.code == "E401" and "partspec.register" in (diag.hint or "")


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("adam", "optimizer", "is an optax function"),
        ("where", "optimizer", "a word of the language"),
        ("max", "schedule", "a word of the language"),
        ("_private", "optimizer", "not a name a spec can call"),
        ("a-b", "optimizer", "not a name a spec can call"),
        ("fine", "metric", "kind must be one of"),
    ],
)
def test_register_refuses_names_a_spec_cannot_use(name: str, kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partspec.register(name, lambda: optax.identity(), kind=kind)


def test_registering_a_name_twice_needs_replace() -> None:
    partspec.register("twice", lambda: optax.identity(), kind="transform")
    try:
        with pytest.raises(ValueError, match="registered already"):
            partspec.register("twice", lambda: optax.scale(2.0), kind="transform")
        partspec.register("twice", lambda: optax.scale(2.0), kind="transform", replace=True)
    finally:
        unregister("twice")


# ---------------------------------------------------------------- pspec


_names = itertools.count()

PLUGIN = """
import jax.numpy as jnp
import partspec

def rsqrt(timescale: float = 10_000.0, shift: float = 0.0):
    return lambda count: 1.0 / jnp.sqrt((count + shift) / timescale)

partspec.register("rsqrt", rsqrt, kind="schedule", replace=True)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A project directory with a plugin module (a fresh name per test) and a spec."""
    module = f"pspec_plugin_{next(_names)}_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(PLUGIN)
    (tmp_path / "spec.pspec").write_text("** -> sgd(0.1 * rsqrt(timescale=100))\n")
    (tmp_path / ".git").mkdir()  # the project's root: pyproject.toml is not looked up above
    monkeypatch.chdir(tmp_path)
    unregister("rsqrt")
    yield tmp_path, module
    unregister("rsqrt")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_pspec_check_without_the_plugin_reports_the_unknown_name(project: Any) -> None:
    code, out = run("check", "spec.pspec", "--format", "concise")
    assert code == 1 and "E401 unknown function `rsqrt`" in out


def test_pspec_check_with_plugin_imports_it_first(project: Any) -> None:
    _, module = project
    assert run("check", "spec.pspec", "--plugin", module)[0] == 0


def test_pyproject_names_the_plugins(project: Any) -> None:
    root, module = project
    (root / "pyproject.toml").write_text(f'[tool.partspec]\nplugins = ["{module}"]\n')
    assert run("check", "spec.pspec")[0] == 0


def test_a_plugin_that_cannot_be_imported_is_a_usage_error(
    project: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("check", "spec.pspec", "--plugin", "no_such_module_anywhere")
    assert code == 2
    assert "cannot import plugin `no_such_module_anywhere`" in capsys.readouterr().err


def test_a_bad_tool_partspec_table_is_a_usage_error(
    project: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = project
    (root / "pyproject.toml").write_text('[tool.partspec]\nplugins = "one"\n')
    assert run("check", "spec.pspec")[0] == 2
    assert "must be a list of module names" in capsys.readouterr().err
