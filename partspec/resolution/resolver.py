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
from partspec.diagnostics import Annotation, Diagnostic, SpecError
from partspec.language import ast
from partspec.language.checker import CheckedSpec
from partspec.language.values import Action, LeafInfo, Value, capture_value
from partspec.matching.captures import capture_keys, extract_captures
from partspec.matching.globs import Matcher, compile_rules
from partspec.resolution.settings import SettingError, apply_settings

__all__ = ["DYNAMIC", "Resolver", "matcher_for"]


@functools.lru_cache(maxsize=64)
def _matcher(
    rules: tuple[tuple[tuple[ast.Pattern, ...], tuple[ast.Pattern, ...]], ...], owners: int
) -> Matcher:
    return compile_rules(rules, owners)


register_lru(
    "resolution.matchers",
    _matcher,
    owner=__name__,
    what="a compiled matcher per rule set (with the DFA states it has built)",
)


def matcher_for(checked: CheckedSpec) -> Matcher:
    """The (cached) matcher of a checked spec's rules: the ``->`` rules, which own
    leaves, then the ``with`` rules (numbered as :meth:`CheckedSpec.rule_at` does)."""
    sides = [(r.rule.patterns, r.rule.excepts) for r in checked.rules]
    sides += [(r.rule.patterns, r.rule.excepts) for r in checked.with_rules]
    return _matcher(tuple(sides), len(checked.rules))


#: Settled (label, settings) pairs kept per checked spec.
MAX_SETTLED = 4096


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
      bindings: capture name -> values seen on leaves owned by rules that capture it
        (and on leaves that ``with`` rules capturing it match).
      with_sets: the distinct lists of ``with`` rules (matcher numbering) that match
        some trained leaf, in rule order: what their unused and shadowed warnings read.
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
        self.with_sets: set[tuple[int, ...]] = set()
        #: ``with`` rules that match some frozen leaf.
        self.with_frozen: set[int] = set()
        #: final label -> the ``with`` rules (indices into ``checked.with_rules``) that
        #: decided one of its settings.
        self.settings_from: dict[str, set[int]] = {}
        self._failed: set[int] = set()
        self._n = len(checked.rules)
        self._rules: tuple[Any, ...] = (*checked.rules, *checked.with_rules)
        self._labels = [r.label for r in checked.rules]
        # (label, settings) -> the final label and action: the same for every
        # resolver of this checked spec (a spec is compiled again for each structure).
        self._settled: dict[Any, tuple[str, Action]] = checked.__dict__.setdefault("_settled", {})
        self._dynamic = checked.dynamic
        self._needs_path: dict[int, bool] = {}
        self._lead: dict[int, int | None] = {}
        self._memo: dict[Any, tuple[int, str | None]] = {}
        self._count_memo: dict[Any, tuple[int, str | None]] = {}
        self._outcomes: dict[Any, tuple[int, str | None]] = {}
        self._count_outcomes: dict[Any, tuple[int, str | None]] = {}
        self._tests: dict[tuple[int, LeafInfo | None], bool] = {}
        self._counting: dict[int, bool] = {}

    def static(self, f: int) -> Any:
        """The label at final state ``f`` if the path decides it, else :data:`DYNAMIC`."""
        lab = self.label_of.get(f, "")
        if lab != "":
            return lab
        cands = self.matcher.matches(f)
        rules = self._rules
        n = self._n
        owners = cands if not cands or cands[-1] < n else tuple(r for r in cands if r < n)
        if self._dynamic and (
            any(rules[r].rule.where is not None for r in cands)
            or (owners and rules[owners[0]].captures)
            or any(rules[r].captures for r in cands[len(owners) :])
        ):
            lab = DYNAMIC
            self._needs_path[f], self._lead[f] = self._path_use(cands)
        else:
            lab = self._labels[owners[0]] if owners else None
            withs = cands[len(owners) :]
            if lab is not None and withs:
                try:
                    lab, act = self._settle(owners[0], lab, self._rules[owners[0]].action, withs)
                    self.actions.setdefault(lab, act)
                except SpecError:
                    self._failed.add(f)  # locate() reports it with the leaf's path
                    raise
            self.match_sets.add(owners)
            if lab is not None:
                self.owners_by_label.setdefault(lab, set()).add(owners[0])
        self.label_of[f] = lab
        return lab

    def _settle(
        self,
        owner: int,
        label: str,
        action: Action,
        withs: Sequence[int],
        binding: Callable[[int], dict[str, Any]] | None = None,
        path: str = "<leaf>",
    ) -> tuple[str, Action]:
        """The final label and action of a leaf owned by rule ``owner`` (label, action)
        that the ``with`` rules ``withs`` match: for each setting, the first of them that
        names it decides."""
        if action is None:
            self.with_frozen.update(withs)
            return label, action  # frozen leaves take no settings
        self.with_sets.add(tuple(withs))
        decided: dict[str, tuple[int, Value]] = {}
        n = self._n
        for w in withs:
            cw = self._rules[w]
            settings = (
                cw.settings
                if not cw.captures or binding is None
                else self.checked.bind_with(w - n, binding(w), path)
            )
            for name, value in settings:
                if name not in decided:
                    decided[name] = (w, value)
        if not decided:
            return label, action
        items = sorted(decided.items(), key=lambda kv: (kv[0] != "lr", kv[0]))
        key = (label, tuple((name, value) for name, (_, value) in items))
        settled = self._settled
        got = settled.get(key)
        if got is None:
            try:
                got = apply_settings(label, action, [(name, v) for name, (_, v) in items])
            except SettingError as bad:
                raise self._setting_error(owner, decided[bad.name][0], bad, path) from None
            if len(settled) >= MAX_SETTLED:
                settled.clear()
            settled[key] = got
        self.settings_from.setdefault(got[0], set()).update(w - n for w, _ in decided.values())
        return got

    def _setting_error(self, owner: int, w: int, bad: SettingError, path: str) -> SpecError:
        checked = self.checked
        rule = self._rules[w].rule
        setting = next(s for s in rule.settings if s.name == bad.name)
        owner_span = self._rules[owner].rule.span
        diag = Diagnostic.at(
            "E423",
            f"for `{path}`: {bad.message}",
            setting.span,
            hint=bad.hint,
            label="this setting",
            annotations=(Annotation.at(owner_span, "the rule that owns the leaf"),),
        )
        return SpecError([checked.spec.attach(diag)])

    def locate(
        self, segments: Sequence[str], leaf: Callable[[], LeafInfo | None]
    ) -> tuple[int, str | None]:
        """``(owner rule index or -1, label)`` of one leaf, from its path alone.

        ``leaf()`` gives its shape and dtype, asked for only when a condition needs them.
        """
        f = self.matcher.state(segments)
        try:
            lab = self.static(f)
        except SpecError:
            if f in self._failed:  # the same error, naming this leaf
                return self.resolve(f, leaf(), segments)
            raise
        if lab is DYNAMIC:
            return self.resolve(f, leaf(), segments)
        return self.matcher.owner(f), lab

    def _path_use(self, cands: Sequence[int]) -> tuple[bool, int | None]:
        """Whether the rules ``cands`` read a leaf's path (captures), and how many of its
        leading keys decide what they read (``None``: no fixed number)."""
        rules = self._rules
        counted = self.checked.counted
        capturing = [
            r
            for r in cands
            if rules[r].captures
            or rules[r].where_captures
            or counted.intersection(rules[r].rule.captures)
        ]
        leads = [self._rule_lead(r) for r in capturing]
        known = [k for k in leads if k is not None]
        return bool(capturing), None if len(known) < len(leads) else max(known, default=0)

    def _rule_lead(self, r: int) -> int | None:
        """How many leading keys of a path decide what rule ``r``'s patterns capture
        (``None``: no fixed number)."""
        keys = [capture_keys(p) for p in self._rules[r].rule.patterns]
        return None if None in keys else max((k for k in keys if k is not None), default=0)

    def path_lead(self, f: int) -> int | None:
        """How many leading keys of a leaf's path, with its shape and dtype, decide the
        outcome at final state ``f`` (``0``: the path's state alone; ``None``: the whole
        path may matter). The same for the ``count(...)`` bindings recorded there."""
        if self.label_of.get(f, "") is DYNAMIC and not self._needs_path[f]:
            return 0
        lead = self._lead.get(f, -1)
        if lead == -1:
            lead = self._lead[f] = self._path_use(self.matcher.matches(f))[1]
        return lead

    def counts_at(self, f: int) -> bool:
        """Whether a leaf at final state ``f`` may add to some ``count(...)``: a rule whose
        patterns match there captures a counted name (whether it owns the leaf, or the
        ``with`` rule applies, can depend on a ``where`` condition)."""
        counted = self.checked.counted
        if not counted:
            return False
        got = self._counting.get(f)
        if got is None:
            got = self._counting[f] = any(
                counted.intersection(self._rules[r].rule.captures) for r in self.matcher.matches(f)
            )
        return got

    def path_counters(self, f: int) -> list[tuple[int, int | None]] | None:
        """The rules whose captures a leaf at final state ``f`` adds to the counts, when
        its path alone decides them: each with how many leading keys decide its
        captures (``None``: the whole path). ``None`` when a ``where`` condition takes
        part (the owner, or a ``with`` rule that captures a counted name, depends on
        the leaf): :meth:`resolve` with ``count_only`` is then needed.
        """
        counted = self.checked.counted
        rules, n = self._rules, self._n
        cands = self.matcher.matches(f)
        owner = next((r for r in cands if r < n), None)
        if owner is not None and rules[owner].rule.where is not None:
            return None  # which rule owns the leaf depends on the leaf
        reading = [owner] if owner is not None and rules[owner].rule.captures else []
        reading += [w for w in cands if w >= n and counted.intersection(rules[w].rule.captures)]
        if any(rules[r].rule.where is not None for r in reading):
            return None
        return [(r, self._rule_lead(r)) for r in reading]

    def holds(self, r: int, leaf: LeafInfo | None) -> bool:
        """Whether rule ``r``'s ``where`` condition, which uses no capture, holds for a
        leaf of this shape and dtype (remembered per rule and leaf).

        Raises:
          SpecError: the condition cannot be evaluated for this leaf.
        """
        ok = self._tests.get((r, leaf))
        if ok is None:
            ok = self._tests[r, leaf] = self.checked.test(r, leaf, {}, "<leaf>")
        return ok

    def record_captures(self, r: int, segments: Sequence[str]) -> None:
        """Record what rule ``r`` captures on a path it matches, for :meth:`counts`."""
        patterns = self._rules[r].rule.patterns
        single = len(patterns) == 1
        for pattern in patterns:
            texts = extract_captures(pattern, segments, matched=single)
            if texts is not None:
                for name, text in texts.items():
                    self.bindings.setdefault(name, set()).add(capture_value(text))
                return

    def has_withs(self, f: int) -> bool:
        """Whether some ``with`` rule's pattern matches leaves at final state ``f``."""
        cands = self.matcher.matches(f)
        return bool(cands) and cands[-1] >= self._n

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
        self,
        f: int,
        leaf: LeafInfo | None,
        segments: Sequence[str] | None = None,
        *,
        count_only: bool = False,
    ) -> tuple[int, str | None]:
        """``(owner rule index or -1, label)`` for one leaf at state ``f``.

        ``segments`` (the leaf's path) is needed when :meth:`needs_path` says so.
        ``count_only`` decides the owner and records the values of its captures (and
        of the ``with`` rules that match) for :meth:`counts`, but no label: ``(owner,
        None)``.
        """
        memo_key: Any = (f, leaf)
        lead = self._lead.get(f)
        if segments is not None and self._needs_path.get(f, True):
            memo_key = (f, leaf, tuple(segments[:lead])) if lead is not None else None
        memo = self._count_memo if count_only else self._memo
        if memo_key is not None:
            got = memo.get(memo_key)
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
                patterns = rules[r].rule.patterns
                # The matcher matched rule r here: its only pattern matches the path.
                single = len(patterns) == 1
                for pattern in patterns:
                    texts = extract_captures(pattern, segments, matched=single)
                    if texts is not None:
                        got = {k: capture_value(v) for k, v in texts.items()}
                        break
                captured[r] = got
            return got

        matched: list[int] = []
        withs: list[int] = []
        n = self._n
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
                    if r >= n and rules[matched[0]].action is not None:
                        # A `with` rule's condition decides the leaf's settings.
                        raise
                    # Only shadowing depends on rules after the owner: a condition
                    # that cannot be evaluated on this leaf does not match it.
                    ok = False
                if not ok:
                    continue
            if r < n:
                matched.append(r)
            else:
                withs.append(r)
        # The outcome is decided by which rules hold and what their captures bind:
        # leaves at other states, or of other shapes, that agree on these share it.
        reads = [*matched[:1], *withs]
        decided_by = (
            f if not matched and not withs else tuple(matched),
            tuple(withs),
            ()
            if segments is None
            else tuple(tuple(binding(r).items()) if rules[r].rule.captures else () for r in reads),
        )
        outcomes = self._count_outcomes if count_only else self._outcomes
        got = outcomes.get(decided_by)
        if got is not None:
            if memo_key is not None:
                memo[memo_key] = got
            return got
        self.match_sets.add(tuple(matched))
        counted = self.checked.counted
        if segments is not None and counted:
            for w in withs:
                if counted.intersection(rules[w].rule.captures):
                    for name, value in binding(w).items():
                        self.bindings.setdefault(name, set()).add(value)
        if not matched:
            result: tuple[int, str | None] = (-1, None)
        else:
            owner = matched[0]
            cr = rules[owner]
            if segments is not None and cr.rule.captures:
                caps = binding(owner)
                for name, value in caps.items():
                    self.bindings.setdefault(name, set()).add(value)
            if count_only:
                result = (owner, None)
                if memo_key is not None:
                    memo[memo_key] = result
                outcomes[decided_by] = result
                return result
            if cr.captures:
                label, action = checked.bind(owner, binding(owner), path)
            else:
                label, action = cr.label, cr.action
            if withs:
                label, action = self._settle(owner, label, action, withs, binding, path)
            self.actions.setdefault(label, action)
            self.owners_by_label.setdefault(label, set()).add(owner)
            result = (owner, label)
        if memo_key is not None:
            memo[memo_key] = result
        outcomes[decided_by] = result
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
