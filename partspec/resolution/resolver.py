"""Which rule owns each leaf, and its label: the matcher plus conditions and captures.

:class:`Resolver` decides leaf by leaf, fast: most leaves by their path's matcher
state alone, the others (a ``where`` condition, a capture the action uses) with
their shape, dtype and path. It records every outcome, so that coverage and the
labels in use can be read off afterwards (:mod:`partspec.resolution.result`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from partspec._caches import register_lru
from partspec.diagnostics import SpecError
from partspec.language import ast
from partspec.language.checker import CheckedSpec
from partspec.language.values import Action, LeafInfo, capture_value
from partspec.matching.captures import capture_keys, extract_captures
from partspec.matching.globs import Matcher, compile_rules

__all__ = ["DYNAMIC", "Resolver", "matcher_for"]


@functools.lru_cache(maxsize=64)
def _matcher(rules: tuple[tuple[tuple[ast.Pattern, ...], tuple[ast.Pattern, ...]], ...]) -> Matcher:
    return compile_rules(rules)


register_lru(
    "resolution.matchers",
    _matcher,
    owner=__name__,
    what="a compiled matcher per rule set (with the DFA states it has built)",
)


def matcher_for(checked: CheckedSpec) -> Matcher:
    """The (cached) matcher of a checked spec's rules."""
    return _matcher(tuple((r.rule.patterns, r.rule.excepts) for r in checked.rules))


class _Dynamic:
    def __repr__(self) -> str:
        return "DYNAMIC"


#: What :meth:`Resolver.static` returns for a state whose label needs the leaf or path.
DYNAMIC: Any = _Dynamic()


class Resolver:
    """Decides which rule owns each leaf, and its label.

    Most leaves are decided by their path's final matcher state alone (:meth:`static`).
    A ``where`` condition also needs the leaf's shape and dtype, and a rule whose
    action uses a capture also needs the path (:meth:`resolve`). The resolver records
    every outcome it hands out, so that coverage, shadowing and the labels in use can
    be read off afterwards.

    Attributes:
      label_of: final state -> label (``None``: uncovered) for statically decided states,
        or :data:`DYNAMIC`.
      match_sets: the distinct lists of rules matching some leaf (pattern and condition).
      actions: label -> action for every label handed out by :meth:`resolve`.
      bindings: capture name -> values seen on leaves owned by rules that capture it.
    """

    def __init__(self, checked: CheckedSpec, matcher: Matcher | None = None):
        self.checked = checked
        self.matcher = matcher if matcher is not None else matcher_for(checked)
        self.label_of: dict[int, Any] = {}
        self.match_sets: set[tuple[int, ...]] = set()
        self.actions: dict[str, Action] = {}
        self.bindings: dict[str, set[Any]] = {}
        #: label -> the indices of the rules that gave some leaf that label.
        self.owners_by_label: dict[str, set[int]] = {}
        self._rules = checked.rules
        self._labels = [r.label for r in checked.rules]
        self._dynamic = checked.dynamic
        self._needs_path: dict[int, bool] = {}
        self._lead: dict[int, int | None] = {}
        self._memo: dict[Any, tuple[int, str | None]] = {}
        self._tests: dict[tuple[int, LeafInfo | None], bool] = {}

    def static(self, f: int) -> Any:
        """The label at final state ``f`` if the path decides it, else :data:`DYNAMIC`."""
        lab = self.label_of.get(f, "")
        if lab != "":
            return lab
        cands = self.matcher.matches(f)
        rules = self._rules
        if self._dynamic and (
            any(rules[r].rule.where is not None for r in cands)
            or (cands and rules[cands[0]].captures)
        ):
            lab = DYNAMIC
            counted = self.checked.counted
            capturing = [
                r
                for r in cands
                if rules[r].captures
                or rules[r].where_captures
                or counted.intersection(rules[r].rule.captures)
            ]
            self._needs_path[f] = bool(capturing)
            # The result is then decided by the leaf and this many leading keys.
            keys = [capture_keys(p) for r in capturing for p in rules[r].rule.patterns]
            known = [k for k in keys if k is not None]
            self._lead[f] = None if len(known) < len(keys) else max(known, default=0)
        else:
            lab = self._labels[cands[0]] if cands else None
            self.match_sets.add(cands)
            if lab is not None:
                self.owners_by_label.setdefault(lab, set()).add(cands[0])
        self.label_of[f] = lab
        return lab

    def locate(
        self, segments: Sequence[str], leaf: Callable[[], LeafInfo | None]
    ) -> tuple[int, str | None]:
        """``(owner rule index or -1, label)`` of one leaf, from its path alone.

        ``leaf()`` gives its shape and dtype, asked for only when a condition needs them.
        """
        f = self.matcher.state(segments)
        lab = self.static(f)
        if lab is DYNAMIC:
            return self.resolve(f, leaf(), segments)
        return self.matcher.owner(f), lab

    @property
    def may_need_paths(self) -> bool:
        """Whether some leaf's label may need its path (captures)."""
        counted = self.checked.counted
        return any(
            r.captures or r.where_captures or counted.intersection(r.rule.captures)
            for r in self._rules
        )

    def needs_path(self, f: int) -> bool:
        """Whether a leaf at dynamic state ``f`` needs its path to be decided."""
        return self._needs_path[f]

    def resolve(
        self, f: int, leaf: LeafInfo | None, segments: Sequence[str] | None = None
    ) -> tuple[int, str | None]:
        """``(owner rule index or -1, label)`` for one leaf at state ``f``.

        ``segments`` (the leaf's path) is needed when :meth:`needs_path` says so.
        """
        memo_key: Any = (f, leaf)
        lead = self._lead.get(f)
        if segments is not None and self._needs_path.get(f, True):
            memo_key = (f, leaf, tuple(segments[:lead])) if lead is not None else None
        if memo_key is not None:
            got = self._memo.get(memo_key)
            if got is not None:
                return got
        checked, rules = self.checked, self._rules
        path = "/".join(segments) if segments is not None else "<leaf>"
        captured: dict[int, dict[str, Any]] = {}

        def binding(r: int) -> dict[str, Any]:
            got = captured.get(r)
            if got is None:
                got = {}
                assert segments is not None
                for pattern in rules[r].rule.patterns:
                    texts = extract_captures(pattern, segments)
                    if texts is not None:
                        got = {k: capture_value(v) for k, v in texts.items()}
                        break
                captured[r] = got
            return got

        matched: list[int] = []
        for r in self.matcher.matches(f):
            cr = rules[r]
            if cr.rule.where is not None:
                try:
                    if cr.where_captures:
                        ok = checked.test(r, leaf, binding(r), path)
                    else:
                        ok = self._tests.get((r, leaf))  # type: ignore[assignment]
                        if ok is None:
                            ok = self._tests[r, leaf] = checked.test(r, leaf, {}, path)
                except SpecError:
                    if not matched:
                        raise
                    # Only shadowing depends on rules after the owner: a condition
                    # that cannot be evaluated on this leaf does not match it.
                    ok = False
                if not ok:
                    continue
            matched.append(r)
        self.match_sets.add(tuple(matched))
        if not matched:
            result: tuple[int, str | None] = (-1, None)
        else:
            owner = matched[0]
            cr = rules[owner]
            if segments is not None and cr.rule.captures:
                caps = binding(owner)
                for name, value in caps.items():
                    self.bindings.setdefault(name, set()).add(value)
            if cr.captures:
                label, action = checked.bind(owner, binding(owner), path)
            else:
                label, action = cr.label, cr.action
            self.actions.setdefault(label, action)
            self.owners_by_label.setdefault(label, set()).add(owner)
            result = (owner, label)
        if memo_key is not None:
            self._memo[memo_key] = result
        return result

    def used_actions(self) -> dict[str, Action]:
        """label -> action for every label handed out, in rule order for static ones."""
        used = {lab for lab in self.label_of.values() if isinstance(lab, str)}
        out = {lab: a for lab, a in self.checked.actions.items() if lab in used}
        out.update(self.actions)
        return out

    def counts(self) -> Mapping[str, int]:
        """``count(name)``: how many distinct values each capture took."""
        return {name: len(self.bindings.get(name, ())) for name in self.checked.counted}
