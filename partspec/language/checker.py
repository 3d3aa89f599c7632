"""The check stage: names, allow-listed calls, argument types and labels.

Checking evaluates every ``let``, ``param`` and action to a plain value (numbers,
strings, :class:`OptaxCall` descriptions) without importing JAX or optax: the
allow-list and signatures come from a table generated from optax.

>>> import partspec
>>> checked = partspec.check("let lr = 1e-3\\nhead/** -> adam(lr * 10)")
>>> checked.rules[0].label, checked.rules[0].action
('adam(lr * 10)', OptaxCall(name='adam', kind='optimizer', args=(0.01,), kwargs=()))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from partspec.diagnostics import Annotation, Diagnostic, Span, SpecError, did_you_mean
from partspec.language import ast
from partspec.language._gc import no_gc
from partspec.language.evaluator import (
    _BUILTINS,
    Evaluator,
    Fail,
    Scope,
    _diag,
    _names_in,
    _nodes_in,
)
from partspec.language.formatter import format_expr
from partspec.language.functions import FUNCTIONS
from partspec.language.registry import SIGNATURES as TABLE
from partspec.language.values import (
    _BAD,
    _SAMPLE_LEAF,
    Action,
    DTypeName,
    LeafInfo,
    OptaxCall,
    ScaledSchedule,
    Unset,
    Until,
    Value,
    _from_python,
    _is_number,
    _is_transform,
    capture_value,
    type_name,
)
from partspec.language.vocabulary import FROZEN_LABEL, LEAF_PROPERTIES, OPTAX_DTYPES

__all__ = [
    "LEAF_PROPERTIES",
    "CheckedRule",
    "CheckedSpec",
    "CheckedWith",
    "DTypeName",
    "LeafInfo",
    "OptaxCall",
    "ScaledSchedule",
    "Unset",
    "Until",
    "capture_value",
    "check_spec",
]

#: dtype names accepted where optax takes a dtype (see :mod:`partspec.language.vocabulary`).
DTYPES = OPTAX_DTYPES


@dataclass(frozen=True)
class CheckedRule:
    """A rule with its label and evaluated action (``None`` for ``frozen``).

    Attributes:
      captures: the captured names the action uses: each distinct binding of them is
        its own label (``label[i=3]``), made by :meth:`CheckedSpec.bind`.
      where_captures: whether the ``where`` condition uses captured names.
      switched_off: the ``param`` names whose values make the ``where`` condition false
        for every leaf (``where use_head`` with ``use_head = false``): the rule is
        switched off, and matching nothing is then what it is meant to do. Empty for a
        rule that is on.
    """

    index: int
    rule: ast.Rule
    label: str
    action: Action
    captures: tuple[str, ...] = ()
    where_captures: bool = False
    switched_off: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckedWith:
    """A ``with`` rule with its settings evaluated.

    Attributes:
      index: its position among the spec's ``with`` rules.
      settings: ``(name, value)`` per setting in rule order: ``("lr", factor)`` for
        ``lr * factor``, ``(keyword, value)`` otherwise. A value that uses a capture is
        :class:`Unset` here; :meth:`CheckedSpec.bind_with` evaluates it for a binding.
      captures: the captured names the settings use.
      where_captures: whether the ``where`` condition uses captured names.
      switched_off: as for :class:`CheckedRule`.
    """

    index: int
    rule: ast.WithRule
    settings: tuple[tuple[str, Value], ...]
    captures: tuple[str, ...] = ()
    where_captures: bool = False
    switched_off: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The settings it names, in order."""
        return tuple(name for name, _ in self.settings)


@dataclass(frozen=True)
class CheckedSpec:
    """A spec whose names, calls and types are known to be good.

    Attributes:
      spec: the AST.
      rules: the rules in file order with labels and actions.
      values: the value of every ``let`` and ``param``.
      actions: label -> action (``None`` for frozen), in first-use order.
      warnings: problems that do not stop compiling (``W603``: a deprecated optax
        function or keyword), with positions.
    """

    spec: ast.Spec
    rules: tuple[CheckedRule, ...]
    values: Mapping[str, Value]
    actions: Mapping[str, Action] = field(default_factory=dict)
    globals: tuple[OptaxCall | Unset, ...] = ()
    counted: frozenset[str] = frozenset()
    inputs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    counts: Mapping[str, int] | None = field(default=None, repr=False)
    warnings: tuple[Diagnostic, ...] = field(default=(), repr=False)
    with_rules: tuple[CheckedWith, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every ``param`` has a value (so the spec can be compiled)."""
        return not any(isinstance(v, Unset) for v in self.values.values())

    @property
    def dynamic(self) -> bool:
        """Whether a leaf's rule or label can depend on more than its path's DFA state."""
        return any(r.rule.where is not None or r.captures for r in self.rules) or any(
            r.rule.where is not None or r.captures for r in self.with_rules
        )

    def rule_at(self, index: int) -> CheckedRule | CheckedWith:
        """Rule ``index`` of the matcher's numbering: the ``->`` rules, then the ``with``
        rules (``len(rules) + i`` is ``with_rules[i]``)."""
        n = len(self.rules)
        return self.rules[index] if index < n else self.with_rules[index - n]

    def _evaluator(self) -> Evaluator:
        """The evaluator of this spec's names: stateless, so threads may share it
        (each call passes the captures and the leaf in a :class:`Scope`)."""
        ev: Evaluator | None = self.__dict__.get("_ev")
        if ev is None:
            ev = Evaluator(self.spec, self.counts)
            ev.env = dict(self.values)
            object.__setattr__(self, "_ev", ev)
        return ev

    def test(
        self, index: int, leaf: LeafInfo | None, captures: Mapping[str, Any], path: str
    ) -> bool:
        """Whether rule ``index``'s ``where`` condition holds for a leaf.

        Raises:
          SpecError: the condition cannot be evaluated for this leaf (an index out of
            range, a text capture compared with a number...); the message names the path.
        """
        rule = self.rule_at(index).rule
        if rule.where is None:
            return True
        ev = self._evaluator()
        if leaf is None:
            raise SpecError(
                [
                    self.spec.attach(
                        Diagnostic.at(
                            "E409",
                            f"`where` needs the shape and dtype of `{path}`, which the tree "
                            "does not give",
                            rule.where.span,
                            hint="give a tree with shapes and dtypes (a manifest written by "
                            "`pspec tree`, a checkpoint, or arrays)",
                        )
                    )
                ]
            )
        try:
            result = ev.eval(rule.where, Scope(captures, leaf))
            ev._want_bool(result, rule.where, "a `where` condition")
        except Fail as f:
            raise SpecError([self.spec.attach(_for_leaf(f.diag, path, leaf, captures))]) from None
        return result is True

    def bind(self, index: int, captures: Mapping[str, Any], path: str) -> tuple[str, Action]:
        """The label and action of rule ``index`` for one binding of its captures.

        Raises:
          SpecError: the action is not valid for these values (for example a capture
            that is not a number used in arithmetic); the message names the path.
        """
        cr = self.rules[index]
        if not cr.captures:
            return cr.label, cr.action
        used = {n: captures[n] for n in cr.captures}
        memo: dict[tuple[int, tuple[Any, ...]], tuple[str, Action]] = self.__dict__.setdefault(
            "_bound", {}
        )
        key = (index, tuple(used.values()))
        got = memo.get(key)
        if got is not None:
            return got
        ev = self._evaluator()
        try:
            action = ev.action(cr.rule, Scope(used, None))
        except Fail as f:
            raise SpecError([self.spec.attach(_for_leaf(f.diag, path, None, used))]) from None
        suffix = ", ".join(f"{n}={_show_capture(v)}" for n, v in used.items())
        got = (f"{cr.label}[{suffix}]", action)
        memo[key] = got
        return got

    def bind_with(
        self, index: int, captures: Mapping[str, Any], path: str
    ) -> tuple[tuple[str, Value], ...]:
        """The settings of ``with`` rule ``index`` for one binding of its captures.

        Raises:
          SpecError: a setting is not valid for these values; the message names the path.
        """
        cw = self.with_rules[index]
        if not cw.captures:
            return cw.settings
        used = {n: captures[n] for n in cw.captures}
        memo: dict[tuple[int, tuple[Any, ...]], tuple[tuple[str, Value], ...]]
        memo = self.__dict__.setdefault("_bound_with", {})
        key = (index, tuple(used.values()))
        got = memo.get(key)
        if got is None:
            ev = self._evaluator()
            try:
                got = tuple(
                    (st.name, _setting_value(ev, st, Scope(used, None))) for st in cw.rule.settings
                )
            except Fail as f:
                raise SpecError([self.spec.attach(_for_leaf(f.diag, path, None, used))]) from None
            memo[key] = got
        return got

    def with_counts(self, counts: Mapping[str, int]) -> CheckedSpec:
        """The spec checked again with ``count(name)`` known (from a parameter tree).

        Remembered per counts (a spec is compiled again for every parameter structure
        of one model: NNX state, gradients, abstract trees).
        """
        key = tuple(sorted(counts.items()))
        memo: dict[Any, CheckedSpec] = self.__dict__.setdefault("_with_counts", {})
        got = memo.get(key)
        if got is None:
            got = _Checker(self.spec, self.inputs, self.inputs is not None, counts).run()
            if len(memo) >= 16:
                memo.clear()
            memo[key] = got
        return got


def _where_uses(rule: ast.Rule | ast.WithRule, names: tuple[str, ...]) -> bool:
    """Whether a rule's ``where`` condition reads any of ``names`` (its captures)."""
    return bool(names) and rule.where is not None and bool(set(names) & _names_in(rule.where))


def _setting_value(ev: Evaluator, st: ast.Setting, sc: Scope) -> Value:
    """The value of one setting; ``lr * X`` takes a number."""
    value = ev.eval(st.value, sc)
    if st.scales and not isinstance(value, Unset) and not _is_number(value):
        raise _diag(
            "E403",
            f"`lr * ...` multiplies the learning rate by a number, got {type_name(value)}",
            st.value.span,
            hint="to replace the learning rate (with a schedule, say), write `learning_rate = ...`",
            label="wrong type",
        )
    return value


def _show_capture(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str) else str(v)


def _for_leaf(
    diag: Diagnostic, path: str, leaf: LeafInfo | None, captures: Mapping[str, Any]
) -> Diagnostic:
    """``diag`` with the leaf it was found on named in its message."""
    parts = [f"{n} = {_show_capture(v)}" for n, v in captures.items()]
    if leaf is not None:
        parts.append(f"shape {list(leaf.shape)}, dtype {leaf.dtype}")
    where = f" ({'; '.join(parts)})" if parts else ""
    hint = diag.hint
    if any(isinstance(v, str) for v in captures.values()) and diag.code in ("E415", "E418"):
        hint = (
            "a capture is an integer only where its text is all digits: keep these paths "
            "out of the rule with `except`, or give them a rule of their own above it"
        )
    return dataclasses.replace(diag, message=f"for `{path}`{where}: {diag.message}", hint=hint)


class _Checker(Evaluator):
    """Checks a spec's statements in order, evaluating each with the names before it."""

    def __init__(
        self,
        spec: ast.Spec,
        values: Mapping[str, Any] | None,
        require: bool,
        counts: Mapping[str, int] | None = None,
    ):
        super().__init__(spec, counts)
        self.inputs = values
        self.given = dict(values or {})
        self.require_values = require
        self.counted_lets: set[str] = set()
        #: let or param name -> the params its value depends on.
        self.param_deps: dict[str, set[str]] = {}
        self.defined_at: dict[str, str] = {}
        self.errors: list[Diagnostic] = []
        # An action's text -> the checked action, while ``env`` stays the same: specs
        # repeat a few actions over many rules. The canonical text fixes the AST
        # (``parse(format(x)) == x``), so equal texts check to equal actions.
        self.action_memo: dict[str, Action] = {}

    def run(self) -> CheckedSpec:
        self.collecting = True
        declared = {p.name for p in self.spec.params}
        for name in self.given:
            if name not in declared:
                hint = did_you_mean(name, declared) or (
                    f"declare it in the spec: `param {name} = ...`"
                )
                self.errors.append(
                    Diagnostic(
                        "E304",
                        "error",
                        f"unknown param `{name}`: the spec declares "
                        + (", ".join(f"`{d}`" for d in sorted(declared)) or "no params"),
                        hint=hint,
                    )
                )
        rules: list[CheckedRule] = []
        actions: dict[str, Action] = {}
        label_source: dict[str, tuple[str, Span]] = {}
        globals_: list[OptaxCall | Unset] = []
        withs: list[CheckedWith] = []
        for stmt in self.spec.statements:
            try:
                if isinstance(stmt, (ast.Let, ast.Param)):
                    self.action_memo.clear()
                if isinstance(stmt, ast.Include):
                    raise _diag(
                        "E804",
                        f'`include "{stmt.path}"` is not resolved: a spec given as text has '
                        "no directory to find it in",
                        stmt.span,
                        hint="read the spec with `partspec.load(path)`, or pass "
                        "`base_dir=` to `partspec.parse`",
                    )
                if isinstance(stmt, ast.Global):
                    globals_.append(self._global(stmt))
                elif isinstance(stmt, ast.Let):
                    self._define(stmt.name, stmt.name_span, stmt.span.line)
                    self.param_deps[stmt.name] = self._params_in(stmt.value)
                    self.env[stmt.name] = self.eval(stmt.value)
                    if self._count_use(stmt.value) is not None:
                        self.counted_lets.add(stmt.name)
                elif isinstance(stmt, ast.Param):
                    self._define(stmt.name, stmt.name_span, stmt.span.line)
                    self.param_deps[stmt.name] = {stmt.name}
                    self.env[stmt.name] = self._param(stmt)
                elif isinstance(stmt, ast.WithRule):
                    withs.append(self._with_rule(stmt, len(withs)))
                elif isinstance(stmt, ast.PatternDef):
                    pass  # expanded in the rules that use it by the parser
                else:
                    rules.append(self._rule(stmt, len(rules), actions, label_source))
            except Fail as f:
                self.errors.append(f.diag)
                if isinstance(stmt, (ast.Let, ast.Param)):
                    self.env[stmt.name] = Unset(stmt.name)
        if self.errors:
            raise SpecError([self.spec.attach(d) for d in self.errors])
        return CheckedSpec(
            self.spec,
            tuple(rules),
            dict(self.env),
            actions,
            tuple(globals_),
            frozenset(self.counted),
            self.inputs if self.inputs is not None else {},
            self.counts,
            tuple(self.spec.attach(w) for w in self.warnings),
            tuple(withs),
        )

    def _global(self, stmt: ast.Global) -> OptaxCall | Unset:
        value = self.eval(stmt.value)
        if isinstance(value, Unset):
            return value
        if not _is_transform(value):
            raise _diag(
                "E413",
                f"`global` takes a transform, such as `clip_by_global_norm(1.0)`, got "
                f"{type_name(value)}",
                stmt.value.span,
            )
        assert isinstance(value, OptaxCall)
        return value

    def _define(self, name: str, span: Span, line: int) -> None:
        if name in self.env:
            raise _diag(
                "E302",
                f"`{name}` is already defined on {self.defined_at[name]}",
                span,
                hint="choose another name; names cannot be rebound",
            )
        if name in TABLE or name in _BUILTINS or name in FUNCTIONS:
            raise _diag(
                "E302",
                f"`{name}` is the name of "
                + ("an optax function" if name in TABLE else "a built-in function"),
                span,
                hint="choose another name",
            )
        if name in LEAF_PROPERTIES:
            raise _diag(
                "E302",
                f"`{name}` names a property of a leaf in `where` conditions",
                span,
                hint="choose another name",
            )
        self.defined_at[name] = f"line {line}" if span.file is None else f"{span.file}:{line}"

    def _param(self, stmt: ast.Param) -> Value:
        if stmt.name in self.given:
            raw = self.given[stmt.name]
            value = _from_python(raw)
            if value is _BAD:
                raise _diag(
                    "E304",
                    f"param `{stmt.name}` was given {type(raw).__name__} "
                    f"{raw!r}; params take numbers, strings, booleans or none",
                    stmt.name_span,
                )
            if stmt.default is not None:
                default = self.eval(stmt.default)
                if _is_number(default) and not _is_number(value) and not isinstance(value, Unset):
                    raise _diag(
                        "E416",
                        f"param `{stmt.name}` expects a number (its default is "
                        f"{format_expr(stmt.default)}), got {type_name(value)} {raw!r}",
                        stmt.name_span,
                    )
            return value
        if stmt.default is not None:
            return self.eval(stmt.default)
        if self.require_values:
            raise _diag(
                "E305",
                f"param `{stmt.name}` has no value",
                stmt.name_span,
                hint=f"pass `{stmt.name}=...` to partspec.compile, or give it a default: "
                f"`param {stmt.name} = ...`",
            )
        return Unset(stmt.name)

    def _rule(
        self,
        rule: ast.Rule,
        index: int,
        actions: dict[str, Action],
        label_source: dict[str, tuple[str, Span]],
    ) -> CheckedRule:
        names = rule.captures
        self._check_captures(rule)
        uses = _names_in(rule.action) if names else set()
        captures = tuple(n for n in names if n in uses)
        where_captures = _where_uses(rule, names)
        # The canonical text of the action, cached on the (immutable) rule: specs are
        # checked again at every compile.
        text = rule.__dict__.get("_action_text")
        if text is None:
            text = format_expr(rule.action)
            object.__setattr__(rule, "_action_text", text)
        switched_off: tuple[str, ...] = ()
        if names or rule.where is not None:
            # While checking, captures have no values yet (each is unset), and a
            # condition sees a leaf whose properties are known only by type.
            unset = {n: Unset(f"<{n}>") for n in names}
            switched_off = self._where(rule, unset)
            action = self.action(rule, Scope(unset, None))
        else:
            memo = self.action_memo
            action = memo[text] if text in memo else self.action(rule)
            memo[text] = action
        return self._labelled(
            rule, index, text, action, captures, where_captures, switched_off, actions, label_source
        )

    def _with_rule(self, rule: ast.WithRule, index: int) -> CheckedWith:
        names = rule.captures
        self._check_captures(rule)
        unset = {n: Unset(f"<{n}>") for n in names}
        switched_off = self._where(rule, unset)
        settings = []
        for st in rule.settings:
            if not st.scales:
                self._known_keyword(st)
            settings.append((st.name, _setting_value(self, st, Scope(unset, None))))
        used = set().union(*(_names_in(st.value) for st in rule.settings)) if names else set()
        where_captures = _where_uses(rule, names)
        return CheckedWith(
            index,
            rule,
            tuple(settings),
            tuple(n for n in names if n in used),
            where_captures,
            switched_off,
        )

    def _known_keyword(self, st: ast.Setting) -> None:
        """E402 for a setting that no allow-listed optimizer or transform takes."""
        keywords = {
            p["name"]
            for entry in TABLE.values()
            if entry["kind"] != "schedule"
            for p in entry["params"]
            if p["kind"] in ("pos", "kw")
        }
        if st.name not in keywords:
            raise _diag(
                "E402",
                f"no optimizer or transform has an argument `{st.name}`",
                st.name_span,
                hint=did_you_mean(st.name, keywords)
                or "a setting is `lr * FACTOR` or a keyword of the owner's optimizer call",
                label="unknown setting",
            )

    def _where(self, rule: ast.Rule | ast.WithRule, unset: Mapping[str, Value]) -> tuple[str, ...]:
        """Check a rule's condition; the params that switch it off (see CheckedRule)."""
        if rule.where is None:
            return ()
        self._no_count(rule.where)
        cond = self.eval(rule.where, Scope(unset, _SAMPLE_LEAF))
        self._want_bool(cond, rule.where, "a `where` condition")
        if cond is False:
            # False whatever the leaf: the params it reads (through lets too) switch
            # the rule off. A literal `where false` is not a switch.
            return tuple(sorted(self._params_in(rule.where)))
        return ()

    def _check_captures(self, rule: ast.Rule | ast.WithRule) -> None:
        for name in rule.captures:
            if (
                name in self.env
                or name in TABLE
                or name in _BUILTINS
                or name in FUNCTIONS
                or name in LEAF_PROPERTIES
            ):
                what = (
                    "a leaf property"
                    if name in LEAF_PROPERTIES
                    else "a function"
                    if name in TABLE or name in _BUILTINS or name in FUNCTIONS
                    else f"defined on {self.defined_at[name]}"
                )
                raise _diag(
                    "E302",
                    f"capture `<{name}>` hides the name `{name}` ({what})",
                    rule.patterns[0].span,
                    hint="choose another capture name",
                )

    def _labelled(
        self,
        rule: ast.Rule,
        index: int,
        text: str,
        action: Action,
        captures: tuple[str, ...],
        where_captures: bool,
        switched_off: tuple[str, ...],
        actions: dict[str, Action],
        label_source: dict[str, tuple[str, Span]],
    ) -> CheckedRule:
        label = rule.label or (FROZEN_LABEL if action is None else text)
        where = rule.label_span if rule.label else rule.action.span
        if rule.label == FROZEN_LABEL and action is not None:
            raise _diag(
                "E407",
                "label `frozen` is reserved for frozen rules",
                where,
                hint="choose another label",
            )
        if label in label_source and label_source[label][0] != text:
            other_text, other = label_source[label]
            raise Fail(
                Diagnostic.at(
                    "E407",
                    f"label `{label}` names two different actions: "
                    f"`{other_text}` (line {other.line}) and `{text}`",
                    where,
                    hint="give each action its own label",
                    annotations=(Annotation.at(other, f"`{label}` first names `{other_text}`"),),
                )
            )
        label_source.setdefault(label, (text, where))
        actions.setdefault(label, action)
        return CheckedRule(index, rule, label, action, captures, where_captures, switched_off)

    def _params_in(self, e: ast.Expr) -> set[str]:
        """The ``param`` names ``e`` depends on, directly or through ``let`` names."""
        out: set[str] = set()
        for name in _names_in(e):
            if name in self.param_deps:
                out |= self.param_deps[name]
        return out

    def _no_count(self, where: ast.Expr) -> None:
        """A condition decides which rule owns a leaf, so it cannot use ``count()``,
        which counts over the leaves the rules own."""
        node = self._count_use(where)
        if node is not None:
            raise _diag(
                "E422",
                "a `where` condition cannot use `count(...)`: the count depends on "
                "which leaves the rules own, which the conditions decide",
                node.span,
                hint="compare the capture with a number or a `param` instead",
            )

    def _count_use(self, e: ast.Expr) -> ast.Call | ast.Name | None:
        """The first `count(...)` call in ``e``, or name of a `let` computed from one."""
        for node in _nodes_in(e):
            if isinstance(node, ast.Call) and node.func in _BUILTINS:
                return node
            if isinstance(node, ast.Name) and node.id in self.counted_lets:
                return node
        return None


def check_spec(
    spec: ast.Spec, values: Mapping[str, Any] | None = None, *, require: bool | None = None
) -> CheckedSpec:
    """Check a parsed spec against optional ``param`` values.

    Args:
      spec: the parsed spec.
      values: values for its ``param`` declarations; every name must be declared.
      require: whether every ``param`` must end up with a value (as compiling needs);
        defaults to ``values is not None``.

    Raises:
      SpecError: listing every problem found.
    """
    with no_gc():
        return _Checker(spec, values, values is not None if require is None else require).run()
