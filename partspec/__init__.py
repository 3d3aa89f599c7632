"""partspec: declarative per-parameter optimizers for JAX.

Rules map globs over parameter paths to optax optimizers; a spec compiles,
against any parameter pytree, into a label tree and an ``optax.partition``.

>>> import jax.numpy as jnp, partspec
>>> params = {"backbone": {"kernel": jnp.zeros((2, 2))}, "head": {"kernel": jnp.zeros(2)}}
>>> plan = partspec.compile('''
...     backbone/** -> frozen
...     head/*      -> adam(5e-3)
... ''', params)
>>> plan.labels
{'backbone': {'kernel': 'frozen'}, 'head': {'kernel': 'adam(0.005)'}}

Parsing and checking never import JAX or optax; only :func:`compile` does.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from partspec._caches import cache_info, clear_caches
from partspec._extras import needs
from partspec._version import __version__
from partspec.diagnostics import Diagnostic, SpecError, SpecWarning
from partspec.language.ast import Spec, register_hook
from partspec.language.checker import CheckedSpec, check_spec
from partspec.language.formatter import format_expr, format_pattern, format_spec
from partspec.language.load import load, parse
from partspec.language.parser import parse_syntax
from partspec.language.registry import register

if TYPE_CHECKING:
    from collections.abc import Mapping

    import optax

    from partspec.jax.plan import Plan
    from partspec.tools.surgery import TransferReport, replace, reset_state, select, transfer


__all__ = [
    "CheckedSpec",
    "Diagnostic",
    "Plan",
    "Spec",
    "SpecError",
    "SpecWarning",
    "TransferReport",
    "__version__",
    "apply_updates",
    "cache_info",
    "check",
    "clear_caches",
    "compile",
    "format",
    "format_expr",
    "format_pattern",
    "load",
    "optimizer",
    "parse",
    "register",
    "replace",
    "reset_state",
    "select",
    "transfer",
]


def check(spec: Spec | str, /, **values: Any) -> CheckedSpec:
    """Check a spec without a parameter tree (and without importing JAX or optax).

    ``param``s without a value are allowed here; values given are type-checked.

    >>> checked = check("param lr = 1e-3\\nparam wd\\n** -> adamw(lr, weight_decay=wd)", lr=0.1)
    >>> checked.values["lr"], checked.complete
    (0.1, False)
    """
    if isinstance(spec, str):
        spec = parse(spec)
    checked = check_spec(spec, values, require=False)
    for w in checked.warnings:  # a deprecated optax function (W603)
        warnings.warn(w.render(), SpecWarning, stacklevel=2)
    return checked


def format(spec: Spec | str) -> str:
    """The canonical text of a spec (comments kept; ``parse(format(s)) == s``).

    Numbers keep their spelling (``1e-3``, ``10_000``); labels use canonical numbers.

    >>> print(format("a/**->frozen;b->sgd(1e-1)"), end="")
    a/** -> frozen
    b    -> sgd(1e-1)
    """
    if isinstance(spec, str):
        spec = parse_syntax(spec)
    return format_spec(spec)


def compile(
    spec: Spec | str,
    params: Any,
    /,
    *,
    strict: bool = False,
    values: Mapping[str, Any] | None = None,
    **kwvalues: Any,
) -> Plan:
    """Compile a spec against a parameter tree; see :func:`partspec.jax.plan.compile`.

    ``param`` values come as keyword arguments (``lr=1e-3``) or as ``values={...}``.
    """
    needs("jax", "partspec.compile")
    from partspec.jax.plan import compile as _compile

    return _compile(spec, params, strict=strict, values=values, **kwvalues)


def apply_updates(params: Any, updates: Any) -> Any:
    """``optax.apply_updates``, bit-exact for frozen leaves on every backend; see
    :func:`partspec.jax.plan.apply_updates`."""
    needs("jax", "partspec.apply_updates")
    from partspec.jax.plan import apply_updates as _apply

    return _apply(params, updates)


register_hook("compile", compile)  # spec.compile(params, ...)


def optimizer(spec: Spec | str, params: Any, /, **values: Any) -> optax.GradientTransformation:
    """The combined ``optax.partition`` transformation of a spec for ``params``."""
    return compile(spec, params, **values).tx


#: Model surgery (partspec.tools.surgery imports JAX and optax, so it is imported on first use).
_SURGERY = frozenset({"TransferReport", "replace", "reset_state", "select", "transfer"})


def __getattr__(name: str) -> Any:
    if name == "Plan":
        needs("jax", "partspec.Plan")
        from partspec.jax.plan import Plan

        return Plan
    if name in _SURGERY:
        needs("jax", f"partspec.{name}")
        from partspec.tools import surgery

        return getattr(surgery, name)
    raise AttributeError(f"module 'partspec' has no attribute {name!r}")
