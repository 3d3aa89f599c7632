"""Labelling a spec that uses ``count(...)`` in one walk over the leaves.

``count(i)`` is known only once every leaf has been seen, and a label can depend on it
(a ``with`` setting computed from it names the label). Which rule owns a leaf, and the
values its captures bind, do not depend on counts (a ``where`` condition cannot use
``count``). So one walk decides ownership and records the bindings; a leaf whose label
may depend on a count gets a :class:`Deferred` placeholder instead, one per distinct
outcome (final state, shape and dtype, the leading path keys its captures read); and
:meth:`CountingPass.finish` checks the spec again with the counts and gives every
placeholder its label. The leaves are walked once, the outcomes resolved once each.

>>> import partspec
>>> checked = partspec.check(
...     "let n = count(i)\\nhead/** -> sgd(0.1) as head\\n"
...     "blocks/<i>/** -> sgd(0.1) as b\\nblocks/<i>/** with lr * 0.5 ** (n - i)"
... )
>>> counting = CountingPass(checked)
>>> m = counting.resolver.matcher
>>> paths = [("blocks", "0", "w"), ("blocks", "1", "w"), ("head", "w")]
>>> got = [counting.leaf(m.state(p), None, p) for p in paths]
>>> got
[Deferred('blocks/0/w' -> None), Deferred('blocks/1/w' -> None), 'head']
>>> final = counting.finish()
>>> final.checked.counts, [d.label for d in got[:2]]
({'i': 2}, ['b[lr*0.25]', 'b[lr*0.5]'])
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from partspec.language.checker import CheckedSpec
from partspec.language.values import LeafInfo
from partspec.resolution.resolver import DYNAMIC, Resolver, matcher_for

__all__ = ["CountingPass", "Deferred"]

#: How a final state's leaves are labelled in the counting walk.
_DIRECT, _PER_STATE, _KEYED, _BIND, _KEYED_COUNT = 0, 1, 2, 3, 4


class Deferred:
    """A leaf's label that waits for the counts: :attr:`label` once
    :meth:`CountingPass.finish` has run. Leaves with the same outcome share one."""

    __slots__ = ("f", "info", "label", "owner", "segments")

    def __init__(self, f: int, info: LeafInfo | None, segments: Sequence[str]):
        self.f, self.info, self.segments = f, info, segments
        self.label: str | None = None
        self.owner = -1

    def __repr__(self) -> str:
        return f"Deferred({'/'.join(self.segments)!r} -> {self.label!r})"


class CountingPass:
    """One walk over a counted spec's leaves (see the module docstring).

    Call :meth:`leaf` for every leaf, in order, with its final matcher state; then
    :meth:`finish`. A leaf's label is final at once (a ``str``, or ``None`` when no rule
    covers it) where it cannot depend on a count, else a :class:`Deferred`.

    Attributes:
      resolver: the resolver of the spec without counts: ownership, bindings, counts.
      direct: final state -> its label, for states whose label is final during the walk
        (a fast path for walkers: ``direct.get(f)``).
      final: after :meth:`finish` (or while it runs), the resolver of the spec checked
        with the counts: what coverage, labels in use and explain read.
    """

    def __init__(self, checked: CheckedSpec):
        self.resolver = Resolver(checked, matcher_for(checked))
        self.direct: dict[int, str | None] = {}
        self.final: Resolver | None = None
        # In walk order: a state seen for the first time, or a new placeholder; the
        # final resolver replays them in this order, so labels come in first-use order.
        self._events: list[int | Deferred] = []
        self._modes: dict[int, tuple[int, int | None]] = {}
        self._deferred: dict[Hashable, Deferred] = {}
        self._static: dict[int, str | None] = {}
        self._bound: set[Hashable] = set()
        # Per counting state, the rules whose captures its leaves add (``None``: a
        # condition decides); the (rule, leading keys) already added.
        self._counters: dict[int, list[tuple[int, int | None]] | None] = {}
        self._counted: set[Hashable] = set()

    def _mode(self, f: int) -> tuple[int, int | None]:
        r = self.resolver
        self._events.append(f)
        lab = r.static(f)
        withs = lab is not None and lab is not DYNAMIC and r.has_withs(f)
        if lab is DYNAMIC or (withs and r.counts_at(f)):
            # Resolved now only to count; the final resolver decides the label.
            mode: tuple[int, int | None] = (
                _KEYED_COUNT if r.counts_at(f) else _KEYED,
                r.path_lead(f),
            )
        elif r.counts_at(f):
            # The label is the path's; the captures only add to a count.
            mode = (_BIND, r.path_lead(f))
            self._static[f] = lab
        elif withs:
            mode = (_PER_STATE, 0)  # a setting may be computed from a count
        else:
            mode = (_DIRECT, 0)
            self.direct[f] = lab
        if mode[0] in (_KEYED_COUNT, _BIND):
            self._counters[f] = r.path_counters(f)
        self._modes[f] = mode
        return mode

    def _count(
        self, f: int, info: LeafInfo | Callable[[], LeafInfo | None] | None, segments: Any
    ) -> None:
        """Add a leaf's captures to the counts."""
        counters = self._counters[f]
        if counters is None:  # a condition decides: resolve the leaf
            info = info() if callable(info) else info
            self.resolver.resolve(f, info, segments, count_only=True)
            return
        seen = self._counted
        for r, lead in counters:
            key = (r, tuple(segments[:lead])) if lead is not None else None
            if key is None or key not in seen:
                self.resolver.record_captures(r, segments)
                seen.add(key)

    def lead(self, f: int) -> int | None:
        """How many leading keys of a leaf's path, with its shape and dtype, decide
        what :meth:`leaf` gives at final state ``f`` (``None``: the whole path may)."""
        mode = self._modes.get(f)
        if mode is None:
            mode = self._mode(f)
        return mode[1]

    def leaf(
        self,
        f: int,
        info: LeafInfo | Callable[[], LeafInfo | None] | None,
        segments: Sequence[str],
    ) -> str | Deferred | None:
        """The label of one leaf at final state ``f``, or its placeholder.

        ``info`` is the leaf's shape and dtype (or a function giving them, called only
        when needed); ``segments`` is the leaf's path.

        Raises:
          SpecError: a condition or capture fails on this leaf.
        """
        mode = self._modes.get(f)
        if mode is None:
            mode = self._mode(f)
        kind, lead = mode
        if kind == _DIRECT:
            return self.direct[f]
        if kind == _PER_STATE:
            key: Hashable = f
        elif lead is None:
            key = None
        else:
            info = info() if callable(info) else info
            key = (f, info, tuple(segments[:lead]))
        if kind == _BIND:
            if key is None or key not in self._bound:
                self._count(f, info, segments)
                self._bound.add(key)
            return self._static[f]
        got = self._deferred.get(key) if key is not None else None
        if got is None:
            if callable(info):
                info = info()
            if kind == _KEYED_COUNT:
                self._count(f, info, segments)
            got = Deferred(f, info, tuple(segments))
            self._events.append(got)
            if key is not None:
                self._deferred[key] = got
        return got

    def finish(self) -> Resolver | None:
        """Check the spec again with the counts and label every placeholder.

        Returns the final resolver (also :attr:`final`), or ``None`` when the counts
        change a label given during the walk or the patterns themselves: the caller
        then labels the leaves again with ``self.final``'s spec.

        Raises:
          SpecError: some leaf's settings are not valid with the counts; the caller
            names the leaf (``self.final.locate``).
        """
        first = self.resolver
        checked = first.checked.with_counts(first.counts())
        matcher = matcher_for(checked)
        final = self.final = Resolver(checked, matcher)
        if matcher is not first.matcher:
            return None
        given = {**self.direct, **self._static}
        for ev in self._events:
            if ev.__class__ is int:
                lab = final.static(ev)
                if ev in given and lab != given[ev]:
                    return None
                continue
            d: Any = ev
            lab = final.static(d.f)
            if lab is DYNAMIC:
                d.owner, d.label = final.resolve(d.f, d.info, d.segments)
            else:
                d.owner, d.label = matcher.owner(d.f), lab
        return final
