"""The compile stage: a checked spec plus a parameter tree give labels and optax.

This is the only module that imports JAX and optax.

>>> import jax, jax.numpy as jnp, optax, partspec
>>> params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
>>> plan = partspec.compile("backbone/** -> frozen\\nhead/* -> sgd(0.5)", params)
>>> plan.labels
{'backbone': {'w': 'frozen'}, 'head': {'w': 'sgd(0.5)'}}
>>> grads = jax.tree.map(jnp.ones_like, params)
>>> updates, _ = plan.tx.update(grads, plan.tx.init(params), params)
>>> optax.apply_updates(params, updates)["head"]["w"]
Array([0.5, 0.5], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

from partspec import ast
from partspec._optax_table import TABLE
from partspec.checker import CheckedSpec, OptaxCall, ScaledSchedule, Unset, Value, check_spec
from partspec.coverage import matcher_for, rule_diagnostics
from partspec.errors import Diagnostic, SpecError, SpecWarning
from partspec.matcher import Matcher
from partspec.parser import parse
from partspec.tree import label_tree, leaf_segments

__all__ = ["Plan", "compile", "frozen", "optimizer"]


def frozen() -> optax.GradientTransformation:
    """The ``frozen`` action: updates of ``-0.0`` and no state.

    ``p + (-0.0)`` is ``p`` bit for bit for every float ``p`` (including ``-0.0``,
    which ``+0.0`` would flip), so frozen leaves stay bit-identical through
    ``optax.apply_updates`` whatever their gradients are (NaN and inf included).
    """

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params

        def zero(u: Any) -> Any:
            if jnp.issubdtype(u.dtype, jnp.inexact):
                return jnp.full_like(u, -0.0)
            return jnp.zeros_like(u)

        return jax.tree.map(zero, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


@dataclass(frozen=True)
class Plan:
    """A spec compiled against one parameter structure.

    Attributes:
      spec: the spec.
      checked: the checked spec (names, labels, evaluated actions).
      labels: the label tree: same structure and container types as the params.
      transforms: label -> ``optax.GradientTransformation``, for every label in use.
      tx: ``optax.partition(transforms, labels)``, ready for ``init``/``update``.
      diagnostics: warnings (rules that match nothing or are shadowed).
      frozen_labels: labels whose action is ``frozen``.
    """

    spec: ast.Spec
    checked: CheckedSpec
    labels: Any
    transforms: dict[str, optax.GradientTransformation]
    tx: optax.GradientTransformationExtraArgs
    diagnostics: tuple[Diagnostic, ...] = ()
    frozen_labels: frozenset[str] = field(default_factory=frozenset)

    def init(self, params: Any) -> optax.OptState:
        """``tx.init(params)``, with the state sharded like the parameters.

        When ``params`` carry shardings (a leaf is a ``jax.Array`` or a
        ``jax.ShapeDtypeStruct`` with a ``NamedSharding``, or with any sharding over
        several devices), the state is made by ``jax.jit(tx.init, out_shardings=...)``:
        every state leaf that mirrors a parameter (Adam's ``mu`` and ``nu``, momentum)
        gets that parameter's sharding, and the others (step counts, noise keys, mirrors
        of unsharded parameters, and mirrors shaped unlike their parameter, such as
        Adafactor's factored moments) are replicated over the mesh of the first
        ``NamedSharding``; see docs/sharding.md. ``jax.jit(tx.init)``
        alone puts all of it on one device. ``ShapeDtypeStruct`` leaves are never
        materialised: the state is made from their shapes, as ``tx.init`` does.

        Otherwise (single-device arrays, NumPy arrays, numbers, or tracers: inside
        ``jax.jit`` or ``jax.eval_shape``) this is exactly ``tx.init(params)``.
        Frozen leaves own no state either way.
        """
        out_shardings = _state_shardings(self.tx, params)
        if out_shardings is None:
            return self.tx.init(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        abstract = {i: x for i, x in enumerate(leaves) if isinstance(x, jax.ShapeDtypeStruct)}
        if not abstract:
            return jax.jit(self.tx.init, out_shardings=out_shardings)(params)
        concrete = [None if i in abstract else x for i, x in enumerate(leaves)]

        def init_from(concrete: list[Any]) -> optax.OptState:
            merged = [abstract.get(i, x) for i, x in enumerate(concrete)]
            return self.tx.init(jax.tree_util.tree_unflatten(treedef, merged))

        return jax.jit(init_from, out_shardings=out_shardings)(concrete)

    def trainable_mask(self) -> Any:
        """A tree of booleans: ``True`` where a leaf is trained."""
        return jax.tree.map(lambda lab: lab not in self.frozen_labels, self.labels)

    def split(self, params: Any) -> tuple[Any, Any]:
        """``(trainable, frozen)``: two trees shaped like ``params``, ``None`` for the other part.

        As Haiku's ``partition``: take gradients with respect to ``trainable`` only and
        put the parameters back together with :meth:`merge`.

        >>> import jax.numpy as jnp, partspec
        >>> params = {"a": jnp.zeros(1), "b": jnp.ones(1)}
        >>> plan = partspec.compile("a -> frozen; b -> sgd(0.1)", params)
        >>> plan.split(params)
        ({'a': None, 'b': Array([1.], dtype=float32)}, {'a': Array([0.], dtype=float32), 'b': None})
        """
        fl = self.frozen_labels
        trainable = jax.tree.map(lambda lab, p: None if lab in fl else p, self.labels, params)
        frozen_part = jax.tree.map(lambda lab, p: p if lab in fl else None, self.labels, params)
        return trainable, frozen_part

    def merge(self, trainable: Any, frozen: Any) -> Any:
        """The inverse of :meth:`split`."""
        return jax.tree.map(
            lambda a, b: b if a is None else a, trainable, frozen, is_leaf=lambda x: x is None
        )

    @property
    def trainable_tx(self) -> optax.GradientTransformationExtraArgs:
        """The optimizer for the ``trainable`` half of :meth:`split` alone."""
        trainable_labels, _ = self.split(self.labels)
        used = {k: v for k, v in self.transforms.items() if k not in self.frozen_labels}
        return optax.partition(used, lambda _: trainable_labels)


def _sharding_of(leaf: Any) -> jax.sharding.Sharding | None:
    """The sharding a parameter leaf was placed with, or ``None`` for the default placement.

    ``None`` for single-device arrays (``SingleDeviceSharding``), NumPy arrays, numbers,
    tracers (their ``.sharding`` raises ``AttributeError``) and shardings over an
    abstract mesh, which ``jax.jit`` cannot place outputs on.
    """
    if not isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return None
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        return sharding if isinstance(sharding.mesh, jax.sharding.Mesh) else None
    if isinstance(sharding, jax.sharding.Sharding) and len(sharding.device_set) > 1:
        return sharding
    return None


def _state_shardings(tx: optax.GradientTransformation, params: Any) -> Any:
    """``out_shardings`` for ``jax.jit(tx.init)``, or ``None`` when no parameter is sharded.

    ``optax.tree_map_params`` finds the parts of the state that mirror the parameter tree
    (it runs ``tx.init`` on a placeholder; ``optax.partition`` and ``optax.masked`` pass
    it through). With ``is_leaf`` always true it hands each mirror over whole, so the
    mapping below walks the *parameters* and maps each one's part of the mirror: a
    ``MaskedNode`` (a leaf another group owns, no leaves), an array shaped like the
    parameter (its sharding) or anything else (replicated).
    """
    shardings = [_sharding_of(x) for x in jax.tree_util.tree_leaves(params)]
    if all(s is None for s in shardings):
        return None
    named = [s for s in shardings if isinstance(s, jax.sharding.NamedSharding)]
    # ``None`` in ``out_shardings`` replicates over the computation's devices.
    replicated = (
        jax.sharding.NamedSharding(named[0].mesh, jax.sharding.PartitionSpec()) if named else None
    )

    def for_param(param: Any, part: Any) -> Any:
        sharding = _sharding_of(param)

        def for_leaf(leaf: jax.ShapeDtypeStruct) -> Any:
            if sharding is not None and tuple(leaf.shape) == tuple(param.shape):
                return sharding
            return replicated

        return jax.tree_util.tree_map(for_leaf, part)

    def for_mirror(mirror: Any, params: Any) -> Any:
        return jax.tree_util.tree_map(for_param, params, mirror)

    return optax.tree_map_params(
        tx,
        for_mirror,
        jax.eval_shape(tx.init, params),
        params,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda _: True,
    )


def _labeler(matcher: Matcher, rule_labels: list[str], known: Any) -> Callable[[Any], Any]:
    """A labelling function for ``optax.partition``, cached per tree structure.

    A function rather than a label tree, for two reasons: optax treats any callable
    label argument as a function (an Equinox label tree is a callable module), and
    NNX passes ``Variable``-wrapped parameters to ``init`` but plain arrays to
    ``update``: both trees have the same paths, so both get the right labels.
    """
    cache: dict[Any, Any] = {jax.tree_util.tree_structure(known): known}

    def labels_for(tree: Any) -> Any:
        treedef = jax.tree_util.tree_structure(tree)
        labels = cache.get(treedef)
        if labels is None:
            labels, label_of = label_tree(matcher, rule_labels, tree)
            if any(lab is None for lab in label_of.values()):
                raise ValueError(
                    "partspec: the tree given to the optimizer has leaves that no rule covers; "
                    "was it compiled for a different parameter structure?"
                )
            cache[treedef] = labels
        return labels

    return labels_for


def _is_array_like(leaf: Any) -> bool:
    """An array, NumPy scalar or ``jax.ShapeDtypeStruct``: something with a shape and a dtype."""
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def _build(value: Value, param_types: tuple[str, ...] | None = None) -> Any:
    if isinstance(value, OptaxCall):
        entry = TABLE[value.name]
        types = {p["name"]: p["types"] for p in entry["params"]}
        positional = [p for p in entry["params"] if p["kind"] in ("pos", "varargs")]
        args = []
        for i, a in enumerate(value.args):
            p = positional[min(i, len(positional) - 1)]
            args.append(_build(a, p["types"]))
        kwargs = {k: _build(v, types.get(k)) for k, v in value.kwargs}
        return getattr(optax, value.name)(*args, **kwargs)
    if isinstance(value, ScaledSchedule):
        inner = _build(value.schedule)
        factor = value.factor
        return lambda count: factor * inner(count)
    if isinstance(value, tuple):
        inner_types = None
        if param_types:
            inner_types = tuple(t[5:-1] for t in param_types if t.startswith("list["))
        return [_build(v, inner_types) for v in value]
    if isinstance(value, str) and param_types and "dtype" in param_types:
        return jnp.dtype(value)
    return value


def compile(
    spec: ast.Spec | str,
    params: Any,
    /,
    *,
    strict: bool = False,
    values: Mapping[str, Any] | None = None,
    **kwvalues: Any,
) -> Plan:
    """Compile a spec against a parameter tree.

    Args:
      spec: a :class:`~partspec.ast.Spec` or rule text.
      params: any pytree; leaves may be arrays, NumPy arrays or
        ``jax.ShapeDtypeStruct`` (labels need only the structure).
      strict: make warnings (unused or shadowed rules) errors.
      values: values for the spec's ``param`` declarations, as a mapping (needed for
        params named ``strict`` or ``values``).
      **kwvalues: the same, as keyword arguments (``lr=1e-3``).

    Returns:
      A :class:`Plan` with ``labels``, ``transforms`` and ``tx``.

    Raises:
      SpecError: bad spec, an unknown or missing ``param``, or leaves no rule covers.
    """
    if isinstance(spec, str):
        spec = parse(spec)
    elif not isinstance(spec, ast.Spec):
        raise TypeError(f"spec must be a partspec.Spec or str, not {type(spec).__name__}")
    checked = check_spec(spec, {**(values or {}), **kwvalues})
    matcher = matcher_for(checked)
    rule_labels = [r.label for r in checked.rules]
    labels, label_of = label_tree(matcher, rule_labels, params)
    uncovered: list[tuple[tuple[str, ...], Any]] = []

    def uncovered_paths() -> list[str]:
        uncovered.extend((s, leaf) for s, leaf in leaf_segments(params) if not matcher.match(s))
        return ["/".join(seg) for seg, _ in uncovered]

    errors, warns = rule_diagnostics(checked, matcher, label_of, uncovered_paths)
    # A whole Equinox module has leaves that are not parameters (activation functions,
    # Dropout's `p`): say so, rather than only suggest rules for them.
    kinds = sorted({type(leaf).__name__ for _, leaf in uncovered if not _is_array_like(leaf)})
    if kinds:
        errors[0] = dataclasses.replace(
            errors[0],
            hint=f"some uncovered leaves are not arrays ({', '.join(kinds)}): for an "
            "Equinox module, compile against `eqx.filter(model, eqx.is_array)`; otherwise "
            "add rules for them, or a catch-all as the last rule: `** -> frozen`",
        )
    if strict:
        errors += [dataclasses.replace(w, severity="error") for w in warns]
    if errors:
        raise SpecError(errors)
    for w in warns:
        warnings.warn(w.render(), SpecWarning, stacklevel=3)
    used = {lab for lab in label_of.values() if lab is not None}
    transforms: dict[str, optax.GradientTransformation] = {}
    frozen_labels = set()
    for cr in checked.rules:
        if cr.label not in used or cr.label in transforms:
            continue
        if cr.action is None:
            transforms[cr.label] = frozen()
            frozen_labels.add(cr.label)
            continue
        assert not isinstance(cr.action, Unset)
        try:
            transforms[cr.label] = _build(cr.action)
        except (TypeError, ValueError) as exc:
            span = cr.rule.action.span
            raise SpecError(
                [
                    Diagnostic.at(
                        "E408",
                        f"optax rejected `{cr.label}`: {exc}",
                        span,
                        hint="check the arguments against optax's docs",
                    ).with_source(spec.source, spec.filename)
                ]
            ) from None
    tx = optax.partition(transforms, _labeler(matcher, rule_labels, labels))
    return Plan(spec, checked, labels, transforms, tx, tuple(warns), frozenset(frozen_labels))


def optimizer(spec: ast.Spec | str, params: Any, /, **values: Any) -> optax.GradientTransformation:
    """``compile(spec, params, **values).tx``."""
    return compile(spec, params, **values).tx
