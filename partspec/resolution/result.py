"""The resolution of a spec over a parameter structure: plain data, computed once.

For every leaf, the rule that owns it and its label; for every label, its evaluated
action (:class:`LabelAction`: an optimizer name with evaluated arguments, schedules as
data, the update that unfreezes it); the ``global`` transforms; and the diagnostics
(uncovered leaves, unused and shadowed rules, deprecated calls). Framework-neutral:
``pspec check``, ``explain``, ``diff``, surgery and the backends (optax, PyTorch) all
read it, none recomputes it.

>>> import partspec
>>> checked = partspec.check("backbone/** -> frozen\\n** -> adam(1e-3)\\nhead/* -> sgd(0.1)")
>>> r = resolve_paths(checked, [("backbone", "w"), ("head", "w")])
>>> r.labels, r.owners, [w.code for w in r.warnings]
(('frozen', 'adam(0.001)'), (0, 1), ['W602'])
>>> r.actions["adam(0.001)"].optimizer.name, r.actions["frozen"].frozen
('adam', True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from partspec.diagnostics import Diagnostic, SpecError
from partspec.language.checker import CheckedSpec
from partspec.language.values import Action, LeafInfo, OptaxCall, Until
from partspec.resolution.counting import CountingPass, Deferred
from partspec.resolution.coverage import integer_leaf_errors, rule_diagnostics
from partspec.resolution.resolver import DYNAMIC, Resolver, matcher_for

__all__ = ["LabelAction", "Resolution", "finish", "resolve_paths"]


@dataclass(frozen=True)
class LabelAction:
    """What one label does, as data a backend builds an optimizer from.

    Attributes:
      label: the label.
      action: ``None`` (``frozen``), an :class:`~partspec.language.values.OptaxCall`
        (an optimizer or transform with evaluated arguments), or an
        :class:`~partspec.language.values.Until` (``frozen until N then ...``).
      rules: the indices of the rules whose leaves get this label.
      with_rules: the indices (into ``checked.with_rules``) of the ``with`` rules that
        decided one of its settings.
    """

    label: str
    action: Action
    rules: tuple[int, ...] = ()
    with_rules: tuple[int, ...] = ()

    @property
    def frozen(self) -> bool:
        """Whether the label's leaves never train."""
        return self.action is None

    @property
    def unfreeze_at(self) -> int | None:
        """The first update that trains a ``frozen until`` label; ``None`` otherwise."""
        if isinstance(self.action, Until) and isinstance(self.action.at, int):
            return self.action.at
        return None

    @property
    def optimizer(self) -> OptaxCall | None:
        """The optimizer (or transform) that trains the label; ``None`` when frozen."""
        act = self.action.then if isinstance(self.action, Until) else self.action
        return act if isinstance(act, OptaxCall) else None


@dataclass(frozen=True)
class Resolution:
    """A spec resolved over one parameter structure (see the module docstring).

    Attributes:
      checked: the checked spec (with ``count(...)`` known from these leaves).
      owners: per leaf, in order (of the paths given, or of the pytree's leaves), the
        index of the owning rule (``-1``: uncovered).
      labels: per leaf, its label (``None``: uncovered).
      actions: every label in use -> its :class:`LabelAction`, in rule order.
      globals: the ``global`` transforms, in file order.
      errors: uncovered leaves (``E501``).
      warnings: unused (``W601``) and shadowed (``W602``) rules, deprecated optax
        calls (``W603``).
      match_sets: the distinct lists of rules matching some leaf, in rule order.
      counts: ``count(name)`` of every counted capture.
    """

    checked: CheckedSpec
    actions: Mapping[str, LabelAction]
    globals: tuple[OptaxCall, ...]
    errors: tuple[Diagnostic, ...]
    warnings: tuple[Diagnostic, ...]
    match_sets: frozenset[tuple[int, ...]] = frozenset()
    counts: Mapping[str, int] = field(default_factory=dict)
    #: per leaf (owner, label), or a function computing them on first use: a backend
    #: that walks a pytree to label it has no need of them, and a list of 100,000
    #: paths costs as much as the walk.
    per_leaf: (
        tuple[tuple[int, ...], tuple[str | None, ...]]
        | Callable[[], tuple[tuple[int, ...], tuple[str | None, ...]]]
    ) = field(default=((), ()), repr=False, compare=False)

    @property
    def owners(self) -> tuple[int, ...]:
        """Per leaf, in the structure's leaf order, its rule's index (``-1``: uncovered)."""
        return self._per_leaf()[0]

    @property
    def labels(self) -> tuple[str | None, ...]:
        """Per leaf, in the structure's leaf order, its label (``None``: uncovered)."""
        return self._per_leaf()[1]

    def _per_leaf(self) -> tuple[tuple[int, ...], tuple[str | None, ...]]:
        got = self.per_leaf
        if callable(got):
            got = got()
            object.__setattr__(self, "per_leaf", got)
        return got

    @property
    def frozen_labels(self) -> frozenset[str]:
        """Labels whose leaves never train."""
        return frozenset(lab for lab, a in self.actions.items() if a.frozen)

    @property
    def unfreeze_steps(self) -> dict[str, int]:
        """``frozen until`` label -> the first update that trains it."""
        return {lab: a.unfreeze_at for lab, a in self.actions.items() if a.unfreeze_at is not None}

    def diagnostics(self, *, strict: bool = False) -> list[Diagnostic]:
        """Errors then warnings; with ``strict``, warnings are errors too."""
        warns = list(self.warnings)
        if strict:
            warns = [_as_error(w) for w in warns]
        return list(self.errors) + warns

    def raise_for_errors(self, *, strict: bool = False) -> None:
        """Raise :class:`~partspec.diagnostics.SpecError` if there is an error."""
        found = [d for d in self.diagnostics(strict=strict) if d.severity == "error"]
        if found:
            raise SpecError(found)


def _as_error(d: Diagnostic) -> Diagnostic:
    import dataclasses

    return dataclasses.replace(d, severity="error")


def finish(
    checked: CheckedSpec,
    resolver: Resolver,
    uncovered_paths: Callable[[], list[str]],
    per_leaf: tuple[tuple[int, ...], tuple[str | None, ...]]
    | Callable[[], tuple[tuple[int, ...], tuple[str | None, ...]]],
    all_paths: Callable[[], Sequence[tuple[str, ...]]] | None = None,
    integer_leaves: Iterable[tuple[tuple[str, ...], LeafInfo]] = (),
) -> Resolution:
    """The :class:`Resolution` of the leaves ``resolver`` has decided.

    ``all_paths`` gives every leaf's path, for the hints of rules that match nothing;
    ``integer_leaves`` the leaves of integer or boolean dtype (others are skipped).
    """
    errors, warns = rule_diagnostics(
        checked,
        resolver.match_sets,
        uncovered_paths,
        all_paths,
        resolver.with_sets,
        resolver.with_frozen,
    )
    if not errors:
        errors = integer_leaf_errors(
            checked, integer_leaves, lambda segs, info: resolver.locate(segs, lambda: info)
        )
    rules = resolver.owners_by_label
    withs = resolver.settings_from
    actions = {
        lab: LabelAction(
            lab, act, tuple(sorted(rules.get(lab, ()))), tuple(sorted(withs.get(lab, ())))
        )
        for lab, act in resolver.used_actions().items()
    }
    globals_ = tuple(g for g in checked.globals if isinstance(g, OptaxCall))
    return Resolution(
        checked,
        actions,
        globals_,
        tuple(errors),
        tuple(checked.warnings) + tuple(warns),
        frozenset(resolver.match_sets),
        dict(checked.counts or {}),
        per_leaf,
    )


def resolve_paths(
    checked: CheckedSpec,
    paths: Sequence[Sequence[str]],
    leaves: Sequence[LeafInfo] | None = None,
) -> Resolution:
    """Resolve a spec over leaves given by their paths (a manifest, a state dict).

    ``leaves`` gives each path's shape and dtype, which ``where`` conditions need. A
    spec that uses ``count(name)`` is checked again with the counts found here.

    Raises:
      SpecError: a condition or capture fails on some leaf (the message names it).
    """
    resolver: Resolver | None = None
    if checked.counted:
        counting = CountingPass(checked)
        got = _walk_paths(counting.resolver, paths, leaves, counting)
        assert counting.final is not None
        resolver = counting.final
        if got is not None:
            owners, labels = got
        checked = resolver.checked
    if resolver is None or got is None:
        resolver = Resolver(checked, matcher_for(checked))
        got = _walk_paths(resolver, paths, leaves)
        assert got is not None
        owners, labels = got
    return finish(
        checked,
        resolver,
        lambda: ["/".join(p) for p, lab in zip(paths, labels) if lab is None],
        (tuple(owners), tuple(labels)),
        lambda: [tuple(p) for p in paths],
        () if leaves is None else [(tuple(p), i) for p, i in zip(paths, leaves) if i is not None],
    )


def _leaf_at(leaves: Sequence[LeafInfo] | None, n: int) -> LeafInfo | None:
    return leaves[n] if leaves is not None else None


def _walk_paths(
    resolver: Resolver,
    paths: Sequence[Sequence[str]],
    leaves: Sequence[LeafInfo] | None,
    counting: CountingPass | None = None,
) -> tuple[list[int], list[str | None]] | None:
    """Owner and label of each path, recorded in ``resolver``; through ``counting``
    (whose resolver is ``resolver``) for a spec that uses ``count(...)``, recorded in
    ``counting.final``: ``None`` if the counts change a label given during the walk."""
    matcher = resolver.matcher
    owners: list[int] = []
    labels: list[Any] = []
    # Paths come in tree order, so neighbours share prefixes: keep the state after
    # each segment of the previous path (with its trailing "/") and reuse the common part.
    prev: tuple[str, ...] = ()
    after_sep: list[int] = [matcher.start]  # after_sep[i]: state before segment i
    key, sep = matcher.key, matcher.sep

    def locate_all(r: Resolver) -> None:
        # A condition or setting failed on some leaf: find it again, for the message.
        for n, path in enumerate(paths):
            r.locate(tuple(path), functools.partial(_leaf_at, leaves, n))

    try:
        for n, path in enumerate(paths):
            segs = tuple(path)
            common = 0
            limit = min(len(segs), len(prev)) - 1
            while common < limit and segs[common] == prev[common]:
                common += 1
            del after_sep[common + 1 :]
            s = after_sep[common]
            for i in range(common, len(segs)):
                s = key(s, segs[i])
                if i < len(segs) - 1:
                    s = sep(s)
                    after_sep.append(s)
            prev = segs
            info = leaves[n] if leaves is not None else None
            if counting is not None:
                lab: Any = counting.leaf(s, info, segs)
                owner = s  # the state, for now: the owner once the counts are known
            else:
                lab = resolver.static(s)
                if lab is DYNAMIC:
                    owner, lab = resolver.resolve(s, info, segs)
                else:
                    owner = matcher.owner(s)
            owners.append(owner)
            labels.append(lab)
    except SpecError:
        locate_all(resolver)
        raise
    if counting is None:
        return owners, labels
    try:
        if counting.finish() is None:
            return None
    except SpecError:
        assert counting.final is not None
        locate_all(counting.final)
        raise
    for n, lab in enumerate(labels):
        if lab.__class__ is Deferred:
            owners[n], labels[n] = lab.owner, lab.label
        else:
            owners[n] = matcher.owner(owners[n])
    return owners, labels
