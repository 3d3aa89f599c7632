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
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

from partspec.diagnostics import Diagnostic, Span, SpecError, did_you_mean
from partspec.language import ast
from partspec.language._gc import no_gc
from partspec.language._optax_table import TABLE
from partspec.language.formatter import format_expr
from partspec.language.vocabulary import LEAF_DTYPES, OPTAX_DTYPES

__all__ = [
    "LEAF_PROPERTIES",
    "CheckedRule",
    "CheckedSpec",
    "DTypeName",
    "LeafInfo",
    "OptaxCall",
    "ScaledSchedule",
    "Unset",
    "Until",
    "capture_value",
    "check_spec",
]

#: dtype names accepted where optax takes a dtype, and those a leaf can have (what
#: ``where dtype == "..."`` may compare with): one vocabulary, in
#: :mod:`partspec.language.vocabulary`.
DTYPES = OPTAX_DTYPES
FROZEN_LABEL = "frozen"
#: The leaf properties a ``where`` condition can use.
LEAF_PROPERTIES = ("ndim", "shape", "size", "dtype")


class DTypeName(str):
    """A leaf's dtype name (``"float32"``): comparing it with an unknown name is an error."""

    __slots__ = ()


@dataclass(frozen=True)
class LeafInfo:
    """What a ``where`` condition may know about a leaf: its shape and dtype name."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Abstract:
    """A value known only by its type: a leaf property while a condition is checked
    without a leaf (``kind`` is ``"int"``, ``"number"`` or ``"bool"``).

    Checking evaluates with these, so that it finds type errors in every part of a
    condition without evaluating values that a guard would skip: ``size > 1 and
    1 / (size - 1) < 0.5`` has no division by zero to report.
    """

    kind: str


class _SampleShape(tuple):
    """The shape used to type-check a condition without a leaf: a list of integers."""

    __slots__ = ()


class _SampleDType(DTypeName):
    """The dtype used to type-check a condition without a leaf: a dtype name, unknown."""

    __slots__ = ()


def capture_value(text: str) -> int | str:
    """The value a capture binds: an integer where the text is all ASCII digits.

    >>> capture_value("11"), capture_value("ln_1")
    (11, 'ln_1')
    """
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return text


@dataclass(frozen=True)
class OptaxCall:
    """A checked call of an allow-listed optax function, with plain argument values."""

    name: str
    kind: str
    args: tuple[Value, ...]
    kwargs: tuple[tuple[str, Value], ...]


@dataclass(frozen=True)
class ScaledSchedule:
    """``factor * schedule``: a learning-rate multiplier that keeps the schedule."""

    factor: float
    schedule: Value


@dataclass(frozen=True)
class Unset:
    """A ``param`` with no value yet (only while checking without values)."""

    name: str


Value = Union[int, float, str, bool, None, tuple, OptaxCall, ScaledSchedule, Unset, "Abstract"]


@dataclass(frozen=True)
class Until:
    """``frozen until at then then``: frozen for the first ``at`` updates, then ``then``."""

    at: int | Unset
    then: OptaxCall | Unset


Action = Union[OptaxCall, Until, Unset, None]


@dataclass(frozen=True)
class CheckedRule:
    """A rule with its label and evaluated action (``None`` for ``frozen``).

    Attributes:
      captures: the captured names the action uses: each distinct binding of them is
        its own label (``label[i=3]``), made by :meth:`CheckedSpec.bind`.
      where_captures: whether the ``where`` condition uses captured names.
    """

    index: int
    rule: ast.Rule
    label: str
    action: Action
    captures: tuple[str, ...] = ()
    where_captures: bool = False


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

    @property
    def complete(self) -> bool:
        """Whether every ``param`` has a value (so the spec can be compiled)."""
        return not any(isinstance(v, Unset) for v in self.values.values())

    @property
    def dynamic(self) -> bool:
        """Whether a leaf's rule or label can depend on more than its path's DFA state."""
        return any(r.rule.where is not None or r.captures for r in self.rules)

    def _evaluator(self) -> _Checker:
        """The evaluator of this spec's names: stateless, so threads may share it
        (each call passes the captures and the leaf in a :class:`_Scope`)."""
        ev: _Checker | None = self.__dict__.get("_ev")
        if ev is None:
            ev = _Checker(self.spec, None, False, self.counts)
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
        rule = self.rules[index].rule
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
            result = ev.eval(rule.where, _Scope(captures, leaf))
            ev._want_bool(result, rule.where, "a `where` condition")
        except _Fail as f:
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
            action = ev.action(cr.rule, _Scope(used, None))
        except _Fail as f:
            raise SpecError([self.spec.attach(_for_leaf(f.diag, path, None, used))]) from None
        suffix = ", ".join(f"{n}={_show_capture(v)}" for n, v in used.items())
        got = (f"{cr.label}[{suffix}]", action)
        memo[key] = got
        return got

    def with_counts(self, counts: Mapping[str, int]) -> CheckedSpec:
        """The spec checked again with ``count(name)`` known (from a parameter tree)."""
        return _Checker(self.spec, self.inputs, self.inputs is not None, counts).run()


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
    if any(isinstance(v, str) for v in captures.values()) and diag.code == "E403":
        hint = (
            "a capture is an integer only where its text is all digits: keep these paths "
            "out of the rule with `except`, or give them a rule of their own above it"
        )
    return dataclasses.replace(diag, message=f"for `{path}`{where}: {diag.message}", hint=hint)


class _Scope(NamedTuple):
    """What an expression is evaluated with besides the spec's names: a rule's captures
    (name -> value, :class:`Unset` while checking without a tree) and, in a `where`
    condition, the leaf it looks at (``None`` elsewhere)."""

    captures: Mapping[str, Value]
    leaf: LeafInfo | None


_TOP = _Scope({}, None)


class _Fail(Exception):
    def __init__(self, diag: Diagnostic):
        self.diag = diag


def _diag(
    code: str, message: str, span: Span, hint: str | None = None, label: str | None = None
) -> _Fail:
    return _Fail(Diagnostic.at(code, message, span, hint=hint, label=label))


def type_name(v: Value) -> str:
    """How a value's type is named in messages."""
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "none"
    if isinstance(v, tuple):
        return "a list"
    if isinstance(v, ScaledSchedule):
        return "a schedule"
    if isinstance(v, OptaxCall):
        return {"schedule": "a schedule", "optimizer": "an optimizer"}.get(v.kind, "a transform")
    if isinstance(v, Abstract):
        return {"int": "an integer", "number": "a number"}.get(v.kind, "a boolean")
    return "an unset param"


_TYPE_WORDS = {
    "number": "a number",
    "int": "an integer",
    "bool": "a boolean (`true`/`false`)",
    "str": "a string",
    "none": "`none`",
    "schedule": "a schedule",
    "transform": "an optimizer or transform",
    "dtype": 'a dtype name such as "bfloat16"',
    "list[int]": "a list of integers",
    "list[schedule]": "a list of schedules",
}


def _is_number(v: Value) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_schedule(v: Value) -> bool:
    return isinstance(v, ScaledSchedule) or (isinstance(v, OptaxCall) and v.kind == "schedule")


def _is_transform(v: Value) -> bool:
    return isinstance(v, OptaxCall) and v.kind != "schedule"


def _coerce(types: tuple[str, ...], v: Value) -> tuple[bool, Value]:
    """Whether ``v`` fits one of ``types``, and the value to pass (ints made exact)."""
    if isinstance(v, Unset):
        return True, v
    for t in types:
        if t == "number" and _is_number(v):
            return True, v
        if t == "int" and _is_number(v):
            if isinstance(v, int):
                return True, v
            assert isinstance(v, float)
            if v.is_integer():
                return True, int(v)
        if t == "bool" and isinstance(v, bool):
            return True, v
        if t == "str" and isinstance(v, str):
            return True, v
        if t == "none" and v is None:
            return True, v
        if t == "dtype" and isinstance(v, str) and v in DTYPES:
            return True, v
        if t == "schedule" and _is_schedule(v):
            return True, v
        if t == "transform" and _is_transform(v):
            return True, v
        if t.startswith("list[") and isinstance(v, tuple):
            inner = (t[5:-1],)
            fixed = [_coerce(inner, item) for item in v]
            if all(ok for ok, _ in fixed):
                return True, tuple(x for _, x in fixed)
    return False, v


_SAMPLE_LEAF = LeafInfo(_SampleShape(), _SampleDType("float32"))
_INT, _NUMBER, _BOOL = Abstract("int"), Abstract("number"), Abstract("bool")


def _numeric(v: Value) -> bool:
    """A number, or a value known to be one."""
    return _is_number(v) or (isinstance(v, Abstract) and v.kind != "bool")


def _abstract(*values: Value) -> bool:
    return any(isinstance(v, (Abstract, _SampleDType)) for v in values)


class _Checker:
    def __init__(
        self,
        spec: ast.Spec,
        values: Mapping[str, Any] | None,
        require: bool,
        counts: Mapping[str, int] | None = None,
    ):
        self.spec = spec
        self.inputs = values
        self.given = dict(values or {})
        self.require_values = require
        self.counts = counts
        self.counted: set[str] = set()
        self.counted_lets: set[str] = set()
        self.env: dict[str, Value] = {}
        self.defined_at: dict[str, str] = {}
        self.errors: list[Diagnostic] = []
        # An action's text -> the checked action, while ``env`` stays the same: specs
        # repeat a few actions over many rules. The canonical text fixes the AST
        # (``parse(format(x)) == x``), so equal texts check to equal actions.
        self.action_memo: dict[str, Action] = {}
        # Warnings are collected by run() only: an evaluator kept to bind captures later
        # (CheckedSpec._evaluator) evaluates the same calls again and must not collect.
        self.collecting = False
        self.warnings: list[Diagnostic] = []

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
        label_source: dict[str, tuple[str, int]] = {}
        globals_: list[OptaxCall | Unset] = []
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
                    self.env[stmt.name] = self.eval(stmt.value)
                    if self._count_use(stmt.value) is not None:
                        self.counted_lets.add(stmt.name)
                elif isinstance(stmt, ast.Param):
                    self._define(stmt.name, stmt.name_span, stmt.span.line)
                    self.env[stmt.name] = self._param(stmt)
                else:
                    rules.append(self._rule(stmt, len(rules), actions, label_source))
            except _Fail as f:
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
        )

    def _global(self, stmt: ast.Global) -> OptaxCall | Unset:
        value = self.eval(stmt.value)
        if isinstance(value, Unset):
            return value
        if not _is_transform(value):
            raise _diag(
                "E403",
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
        if name in TABLE or name in _BUILTINS:
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
                        "E403",
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
        label_source: dict[str, tuple[str, int]],
    ) -> CheckedRule:
        names = rule.captures
        for name in names:
            if name in self.env or name in TABLE or name in _BUILTINS or name in LEAF_PROPERTIES:
                what = (
                    "a leaf property"
                    if name in LEAF_PROPERTIES
                    else "a function"
                    if name in TABLE or name in _BUILTINS
                    else f"defined on {self.defined_at[name]}"
                )
                raise _diag(
                    "E302",
                    f"capture `<{name}>` hides the name `{name}` ({what})",
                    rule.patterns[0].span,
                    hint="choose another capture name",
                )
        uses = _names_in(rule.action) if names else set()
        captures = tuple(n for n in names if n in uses)
        where_captures = (
            bool(names) and rule.where is not None and bool(set(names) & _names_in(rule.where))
        )
        # The canonical text of the action, cached on the (immutable) rule: specs are
        # checked again at every compile.
        text = rule.__dict__.get("_action_text")
        if text is None:
            text = format_expr(rule.action)
            object.__setattr__(rule, "_action_text", text)
        if names or rule.where is not None:
            # While checking, captures have no values yet (each is unset), and a
            # condition sees a leaf whose properties are known only by type.
            unset = {n: Unset(f"<{n}>") for n in names}
            if rule.where is not None:
                self._no_count(rule.where)
                cond = self.eval(rule.where, _Scope(unset, _SAMPLE_LEAF))
                self._want_bool(cond, rule.where, "a `where` condition")
            action = self.action(rule, _Scope(unset, None))
        else:
            memo = self.action_memo
            action = memo[text] if text in memo else self.action(rule)
            memo[text] = action
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
            raise _diag(
                "E407",
                f"label `{label}` names two different actions: "
                f"`{label_source[label][0]}` (line {label_source[label][1]}) and `{text}`",
                where,
                hint="give each action its own label",
            )
        label_source.setdefault(label, (text, rule.span.line))
        actions.setdefault(label, action)
        return CheckedRule(index, rule, label, action, captures, where_captures)

    def action(self, rule: ast.Rule, sc: _Scope = _TOP) -> Action:
        """Evaluate a rule's action (with the captures in scope)."""
        act = rule.action
        if isinstance(act, ast.Frozen):
            return None
        if isinstance(act, ast.FrozenUntil):
            at = self.eval(act.until, sc)
            if not isinstance(at, Unset):
                ok, fixed = _coerce(("int",), at)
                if not ok or not isinstance(fixed, int) or fixed < 0:
                    shown = f" `{at}`" if _is_number(at) else ""
                    raise _diag(
                        "E403",
                        "`until` takes a number of updates (a non-negative integer), got "
                        f"{type_name(at)}{shown}",
                        act.until.span,
                    )
                if fixed > _MAX_STEP:
                    raise _diag(
                        "E403",
                        f"`until {fixed}` is beyond the step counter's range (at most "
                        f"{_MAX_STEP:,} updates, as optax counts in int32)",
                        act.until.span,
                    )
                at = fixed
            then = self._optimizer(act.then, sc)
            return Until(at, then)
        return self._optimizer(act, sc)

    def _optimizer(self, e: ast.Expr, sc: _Scope) -> OptaxCall | Unset:
        value = self.eval(e, sc)
        if isinstance(value, Unset):
            return value
        if not _is_transform(value):
            hint = None
            if _is_schedule(value):
                hint = "pass the schedule as a learning rate, for example `adam(schedule)`"
            raise _diag(
                "E403",
                f"a rule's action must be `frozen` or an optimizer, got {type_name(value)}",
                e.span,
                hint=hint,
            )
        assert isinstance(value, OptaxCall)
        return value

    def _no_count(self, where: ast.Expr) -> None:
        """A condition decides which rule owns a leaf, so it cannot use ``count()``,
        which counts over the leaves the rules own."""
        node = self._count_use(where)
        if node is not None:
            raise _diag(
                "E403",
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

    def _want_bool(self, v: Value, e: ast.Expr, what: str) -> None:
        if not isinstance(v, (bool, Unset)) and v != _BOOL:
            raise _diag(
                "E403",
                f"{what} must be true or false, got {type_name(v)}",
                e.span,
                hint='compare it: `ndim == 1`, `dtype == "float32"`, `shape[-1] > 256`',
            )

    # -- expressions
    def eval(self, e: ast.Expr, sc: _Scope = _TOP) -> Value:
        if isinstance(e, (ast.Num, ast.Str, ast.Bool)):
            return e.value
        if isinstance(e, ast.NoneLit):
            return None
        if isinstance(e, ast.ListExpr):
            return tuple(self.eval(i, sc) for i in e.items)
        if isinstance(e, ast.Name):
            return self._name(e, sc)
        if isinstance(e, ast.Neg):
            v = self.eval(e.operand, sc)
            return self._arith("*", -1, v, e)
        if isinstance(e, ast.BinOp):
            return self._arith(e.op, self.eval(e.left, sc), self.eval(e.right, sc), e)
        if isinstance(e, ast.Call):
            return self._call(e, sc)
        if isinstance(e, ast.Compare):
            return self._compare(e, sc)
        if isinstance(e, ast.BoolOp):
            left = self.eval(e.left, sc)
            self._want_bool(left, e.left, f"the left side of `{e.op}`")
            if left is (e.op == "or"):
                return left  # short-circuit: `ndim > 1 and shape[1] == 3` is safe
            right = self.eval(e.right, sc)
            self._want_bool(right, e.right, f"the right side of `{e.op}`")
            if isinstance(left, Unset) or isinstance(right, Unset):
                return left if isinstance(left, Unset) else right
            return _BOOL if _abstract(left, right) else right
        if isinstance(e, ast.Not):
            v = self.eval(e.operand, sc)
            self._want_bool(v, e.operand, "the operand of `not`")
            return v if isinstance(v, (Unset, Abstract)) else not v
        if isinstance(e, ast.Index):
            return self._index(e, sc)
        raise AssertionError(e)  # pragma: no cover

    def _index(self, e: ast.Index, sc: _Scope) -> Value:
        seq = self.eval(e.value, sc)
        idx = self.eval(e.index, sc)
        if isinstance(seq, Unset) or isinstance(idx, Unset):
            return seq if isinstance(seq, Unset) else idx
        if not isinstance(seq, tuple):
            raise _diag("E403", f"cannot index {type_name(seq)}", e.value.span)
        if idx != _INT and (not isinstance(idx, int) or isinstance(idx, bool)):
            raise _diag(
                "E403", f"a list index must be an integer, got {type_name(idx)}", e.index.span
            )
        if isinstance(seq, _SampleShape):
            return _INT  # an item of a shape: an integer, whichever it is
        if isinstance(idx, Abstract):
            kinds = {_kind(v) for v in seq}
            return (
                _INT
                if kinds == {"number"} and all(isinstance(v, int) for v in seq)
                else Unset("an item")
            )
        if not -len(seq) <= idx < len(seq):
            raise _diag(
                "E406",
                f"index {idx} is out of range for a list of {len(seq)} item"
                + ("s" if len(seq) != 1 else ""),
                e.span,
                hint="guard it with `and`: `ndim >= 2 and shape[1] == 768`",
            )
        item: Value = seq[idx]
        return item

    def _compare(self, e: ast.Compare, sc: _Scope) -> Value:
        a = self.eval(e.left, sc)
        b = self.eval(e.right, sc)
        if isinstance(a, Unset) or isinstance(b, Unset):
            return a if isinstance(a, Unset) else b
        if e.op == "in":
            if not isinstance(b, tuple):
                raise _diag(
                    "E403",
                    f"the right side of `in` must be a list, got {type_name(b)}",
                    e.right.span,
                    hint='for example `dtype in ["bfloat16", "float16"]`',
                )
            for item, span in zip(b, _item_spans(e.right)):
                self._comparable(a, item, e.left.span, span)
            if _abstract(a, *b) or isinstance(b, _SampleShape):
                return _BOOL
            return any(_equal(a, item) for item in b)
        self._comparable(a, b, e.left.span, e.right.span)
        if e.op in ("==", "!=") and (_abstract(a, b) or _SampleShape in (type(a), type(b))):
            return _BOOL
        if e.op == "==":
            return _equal(a, b)
        if e.op == "!=":
            return not _equal(a, b)
        if not (_numeric(a) and _numeric(b)):
            raise _diag(
                "E403",
                f"`{e.op}` compares numbers, got {type_name(a)} and {type_name(b)}",
                e.span,
            )
        if _abstract(a, b):
            return _BOOL
        assert isinstance(a, (int, float)) and isinstance(b, (int, float))
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[e.op]

    def _comparable(self, a: Value, b: Value, a_span: Span, b_span: Span) -> None:
        for x, y, span in ((a, b, b_span), (b, a, a_span)):
            if isinstance(x, DTypeName) and isinstance(y, str) and y not in LEAF_DTYPES:
                raise _diag(
                    "E403",
                    f'unknown dtype "{y}"',
                    span,
                    hint=did_you_mean(y, LEAF_DTYPES)
                    or "dtype names are NumPy's: "
                    + ", ".join(f'"{d}"' for d in sorted(LEAF_DTYPES)),
                )
        kinds = {_kind(a), _kind(b)}
        if len(kinds) > 1 and "none" not in kinds:
            raise _diag(
                "E403",
                f"cannot compare {type_name(a)} with {type_name(b)}",
                a_span.to(b_span),
                hint='shape is a list (`shape == [768]`), dtype a string (`dtype == "float32"`)'
                if any(isinstance(x, (tuple, DTypeName)) for x in (a, b))
                else "a capture is an integer where its text is all digits, else a string",
            )

    def _name(self, e: ast.Name, sc: _Scope) -> Value:
        if e.id in sc.captures:
            return sc.captures[e.id]
        if e.id in LEAF_PROPERTIES:
            leaf = sc.leaf
            if leaf is None:
                raise _diag(
                    "E301",
                    f"`{e.id}` is a property of a leaf, known only in `where` conditions",
                    e.span,
                    hint=f"select leaves by it: `** where {e.id} ... -> ...`",
                )
            sample = isinstance(leaf.shape, _SampleShape)
            if e.id == "shape":
                return leaf.shape
            if e.id == "ndim":
                return _INT if sample else len(leaf.shape)
            if e.id == "size":
                return _INT if sample else math.prod(leaf.shape)
            return leaf.dtype if sample else DTypeName(leaf.dtype)
        if e.id in self.env:
            return self.env[e.id]
        later = [
            s
            for s in self.spec.statements
            if isinstance(s, (ast.Let, ast.Param)) and s.name == e.id
        ]
        if later:
            raise _diag(
                "E301",
                f"`{e.id}` is used before it is defined (line {later[0].span.line})",
                e.span,
                hint="move the `let`/`param` above its first use",
            )
        if e.id in _BUILTINS:
            raise _diag(
                "E301",
                f"`{e.id}` is a built-in function, not a value",
                e.span,
                hint=f"call it with a capture's name: `{e.id}(i)`",
            )
        if e.id in TABLE:
            raise _diag(
                "E301",
                f"`{e.id}` is an optax function, not a value",
                e.span,
                hint=f"call it: `{e.id}(...)`",
            )
        lowered = {"True": "true", "False": "false", "None": "none"}
        hint = (
            f"write `{lowered[e.id]}`"
            if e.id in lowered
            else did_you_mean(
                e.id,
                [
                    *self.env,
                    *sc.captures,
                    *(LEAF_PROPERTIES if sc.leaf is not None else ()),
                    "true",
                    "false",
                    "none",
                ],
            )
        )
        if hint is None:
            hint = f"define it first: `let {e.id} = ...` or `param {e.id} = ...`"
        raise _diag("E301", f"undefined name `{e.id}`", e.span, hint=hint, label="not defined")

    def _arith(self, op: str, a: Value, b: Value, e: ast.Expr) -> Value:
        if isinstance(a, Unset) or isinstance(b, Unset):
            return a if isinstance(a, Unset) else b
        if _abstract(a, b) and _numeric(a) and _numeric(b):
            # Known by type only: the result's type, never a value error.
            ints = all(v == _INT or isinstance(v, int) for v in (a, b))
            return _INT if ints and op in ("+", "-", "*") else _NUMBER
        if _is_number(a) and _is_number(b):
            assert isinstance(a, (int, float)) and isinstance(b, (int, float))
            return _number_op(op, a, b, e.span)
        if op == "*" and _is_number(a) and _is_schedule(b):
            assert isinstance(a, (int, float))
            return _scale(float(a), b)
        if op in ("*", "/") and _is_schedule(a) and _is_number(b):
            assert isinstance(b, (int, float))
            if op == "/" and b == 0:
                raise _diag("E406", "division by zero", e.span)
            return _scale(float(b) if op == "*" else 1.0 / float(b), a)
        raise _diag(
            "E403",
            f"cannot apply `{op}` to {type_name(a)} and {type_name(b)}",
            e.span,
            hint="arithmetic works on numbers; a schedule can only be multiplied or "
            "divided by a number",
        )

    def _call(self, e: ast.Call, sc: _Scope) -> Value:
        if e.func in _BUILTINS:
            return self._count(e)
        entry = TABLE.get(e.func)
        if entry is None:
            hint = did_you_mean(e.func, TABLE)
            raise _diag(
                "E401",
                f"unknown optimizer `{e.func}`"
                if not e.func.startswith("_")
                else f"`{e.func}` is not allowed",
                e.func_span,
                hint=hint or "see docs/language.md for the allow-listed optax functions",
                label="not an allow-listed optax function",
            )
        params = entry["params"]
        if self.collecting:
            self._deprecated(e, entry)
        positional = [p for p in params if p["kind"] == "pos"]
        varargs = next((p for p in params if p["kind"] == "varargs"), None)
        bound: dict[str, tuple[Value, Span]] = {}
        extra: list[Value] = []
        for i, arg in enumerate(e.args):
            v = self.eval(arg, sc)
            if i < len(positional):
                bound[positional[i]["name"]] = (v, arg.span)
            elif varargs is not None:
                extra.append(self._check_type(e.func, varargs, v, arg.span))
            else:
                raise _diag(
                    "E405",
                    f"`{e.func}` takes at most {len(positional)} positional "
                    f"argument{'s' if len(positional) != 1 else ''}, got {len(e.args)}",
                    arg.span,
                    hint="pass the others by keyword",
                )
        names = {p["name"]: p for p in params if p["kind"] in ("pos", "kw")}
        for kw in e.kwargs:
            if kw.name not in names:
                hint = did_you_mean(kw.name, names) or (
                    f"`{e.func}` takes " + (", ".join(f"`{n}`" for n in names) or "no arguments")
                )
                raise _diag("E402", f"`{e.func}` has no argument `{kw.name}`", kw.span, hint=hint)
            if kw.name in bound:
                raise _diag("E405", f"argument `{kw.name}` of `{e.func}` is given twice", kw.span)
            bound[kw.name] = (self.eval(kw.value, sc), kw.span)
        if varargs is not None and not extra and not positional:
            raise _diag(
                "E404",
                f"`{e.func}` needs at least one optimizer or transform",
                e.span,
                hint=f"for example `{e.func}(clip_by_global_norm(1.0), adam(1e-3))`",
            )
        args: list[Value] = []
        kwargs: list[tuple[str, Value]] = []
        for p in params:
            if p["kind"] == "varargs":
                args.extend(extra)
                continue
            if p["name"] not in bound:
                if p["required"]:
                    raise _diag(
                        "E404",
                        f"`{e.func}` needs argument `{p['name']}`",
                        e.span,
                        hint=f"add `{p['name']}=...`",
                    )
                continue
            v, span = bound[p["name"]]
            v = self._check_type(e.func, p, v, span)
            if p["kind"] == "pos" and len(kwargs) == 0 and p in positional[: len(e.args)]:
                args.append(v)
            else:
                kwargs.append((p["name"], v))
        return OptaxCall(e.func, entry["kind"], tuple(args), tuple(kwargs))

    def _deprecated(self, e: ast.Call, entry: dict[str, Any]) -> None:
        """W603 for a call of a function, or a keyword, that optax has deprecated."""
        if "deprecated" in entry:
            self.warnings.append(
                Diagnostic.at(
                    "W603",
                    f"`{e.func}` is deprecated in optax",
                    e.func_span,
                    severity="warning",
                    hint=entry["deprecated"],
                )
            )
        deprecated = {p["name"]: p["deprecated"] for p in entry["params"] if "deprecated" in p}
        for kw in e.kwargs:
            if kw.name in deprecated:
                self.warnings.append(
                    Diagnostic.at(
                        "W603",
                        f"argument `{kw.name}` of `{e.func}` is deprecated in optax",
                        kw.span,
                        severity="warning",
                        hint=deprecated[kw.name],
                    )
                )

    def _count(self, e: ast.Call) -> Value:
        arg = e.args[0] if len(e.args) == 1 and not e.kwargs else None
        if not isinstance(arg, ast.Name):
            raise _diag(
                "E404",
                "`count` takes the name of one capture: `count(i)`",
                e.span,
                hint="for example `let depth = count(i)` with a rule `layer/<i>/** -> ...`",
            )
        bound = {n for r in self.spec.rules for n in r.captures}
        if arg.id not in bound:
            raise _diag(
                "E301",
                f"no pattern captures `{arg.id}`",
                arg.span,
                hint=did_you_mean(arg.id, bound)
                or f"capture it in a rule's pattern: `layer/<{arg.id}>/** -> ...`",
            )
        self.counted.add(arg.id)
        if self.counts is not None and arg.id in self.counts:
            return self.counts[arg.id]
        return Unset(f"count({arg.id})")

    def _check_type(self, func: str, p: dict[str, Any], v: Value, span: Span) -> Value:
        types = p["types"]
        if types is None:
            raise _diag(
                "E403",
                f"argument `{p['name']}` of `{func}` cannot be set from a spec "
                "(optax expects a Python function or pytree there)",
                span,
                hint="select leaves with patterns and `except` instead of masks",
            )
        ok, fixed = _coerce(types, v)
        if not ok:
            want = " or ".join(_TYPE_WORDS[t] for t in types)
            shown = f" `{v}`" if isinstance(v, (int, float, str)) else ""
            raise _diag(
                "E403",
                f"argument `{p['name']}` of `{func}` must be {want}, got {type_name(v)}{shown}",
                span,
                label="wrong type",
            )
        return fixed


_BAD: Any = object()
#: The largest update number optax's int32 step counters reach.
_MAX_STEP = 2**31 - 1
#: Functions of the language itself (not optax).
_BUILTINS = frozenset({"count"})


def _kind(v: Value) -> str:
    if isinstance(v, Abstract):
        return "bool" if v.kind == "bool" else "number"
    if _is_number(v):
        return "number"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, str):
        return "str"
    if isinstance(v, tuple):
        return "list"
    if v is None:
        return "none"
    return "other"


def _equal(a: Value, b: Value) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return _kind(a) == _kind(b) and a == b


def _item_spans(e: ast.Expr) -> list[Span]:
    if isinstance(e, ast.ListExpr):
        return [i.span for i in e.items]
    return [e.span] * 10_000  # the list came from a name: point at it


def _nodes_in(node: Any) -> list[Any]:
    """Every AST node under ``node`` (itself included)."""
    out: list[Any] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (tuple, list)):
            stack.extend(n)
        elif dataclasses.is_dataclass(n) and not isinstance(n, Span):
            out.append(n)
            stack.extend(getattr(n, f.name) for f in dataclasses.fields(n) if f.name != "span")
    return out


def _names_in(node: Any) -> set[str]:
    """The names an expression (or action) reads as values (not ``count(i)``'s capture)."""
    nodes = _nodes_in(node)
    counted = {
        id(a) for n in nodes if isinstance(n, ast.Call) and n.func in _BUILTINS for a in n.args
    }
    return {n.id for n in nodes if isinstance(n, ast.Name) and id(n) not in counted}


def _from_python(raw: Any) -> Value:
    if raw is None or isinstance(raw, (bool, int, float, str)):
        if isinstance(raw, float) and not math.isfinite(raw):
            return _BAD
        return raw
    import numbers

    if isinstance(raw, numbers.Integral):  # NumPy integer scalars
        return int(raw)
    if isinstance(raw, numbers.Real):
        return _from_python(float(raw))
    if getattr(raw, "shape", None) == () and hasattr(raw, "item"):  # 0-d NumPy/JAX arrays
        item = raw.item()
        if isinstance(item, (bool, int, float)):
            return _from_python(item)
    return _BAD


def _scale(factor: float, sched: Value) -> Value:
    if isinstance(sched, ScaledSchedule):
        return ScaledSchedule(factor * sched.factor, sched.schedule)
    return ScaledSchedule(factor, sched)


_MAX_EXP_INT = 2**63 - 1


def _number_op(op: str, a: int | float, b: int | float, span: Span) -> int | float:
    try:
        if op == "+":
            r: int | float = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            if b == 0:
                raise _diag("E406", "division by zero", span)
            r = a / b
        else:
            if (
                isinstance(a, int)
                and isinstance(b, int)
                and b >= 0
                and (b <= 64 and abs(a) ** min(b, 64) <= _MAX_EXP_INT if abs(a) > 1 else True)
            ):
                r = a**b
            else:
                if a == 0 and b < 0:
                    raise _diag("E406", "zero raised to a negative power", span)
                r = float(a) ** float(b)
                if isinstance(r, complex):
                    raise _diag("E406", "negative number raised to a fractional power", span)
    except OverflowError:
        raise _diag("E406", "result too large", span) from None
    if isinstance(r, int) and abs(r) > _MAX_EXP_INT:
        r = float(r)
    if isinstance(r, float) and not math.isfinite(r):
        raise _diag("E406", "result too large", span)
    return r


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
