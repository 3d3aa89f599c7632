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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from partspec import ast
from partspec._optax_table import TABLE
from partspec.errors import Diagnostic, Span, SpecError, did_you_mean
from partspec.formatter import format_expr

__all__ = ["CheckedRule", "CheckedSpec", "OptaxCall", "ScaledSchedule", "Unset", "check_spec"]

#: dtype names accepted where optax takes a dtype (``mu_dtype="bfloat16"``).
DTYPES = frozenset(
    {
        "bfloat16",
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint32",
    }
)
FROZEN_LABEL = "frozen"


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


Value = Union[int, float, str, bool, None, tuple, OptaxCall, ScaledSchedule, Unset]


@dataclass(frozen=True)
class CheckedRule:
    """A rule with its label and evaluated action (``None`` for ``frozen``)."""

    index: int
    rule: ast.Rule
    label: str
    action: OptaxCall | Unset | None


@dataclass(frozen=True)
class CheckedSpec:
    """A spec whose names, calls and types are known to be good.

    Attributes:
      spec: the AST.
      rules: the rules in file order with labels and actions.
      values: the value of every ``let`` and ``param``.
      actions: label -> action (``None`` for frozen), in first-use order.
    """

    spec: ast.Spec
    rules: tuple[CheckedRule, ...]
    values: Mapping[str, Value]
    actions: Mapping[str, OptaxCall | Unset | None] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every ``param`` has a value (so the spec can be compiled)."""
        return not any(isinstance(v, Unset) for v in self.values.values())


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


class _Checker:
    def __init__(self, spec: ast.Spec, values: Mapping[str, Any] | None, require: bool):
        self.spec = spec
        self.given = dict(values or {})
        self.require_values = require
        self.env: dict[str, Value] = {}
        self.defined_at: dict[str, int] = {}
        self.errors: list[Diagnostic] = []
        # An action's text -> the checked action, while ``env`` stays the same: specs
        # repeat a few actions over many rules. The canonical text fixes the AST
        # (``parse(format(x)) == x``), so equal texts check to equal actions.
        self.action_memo: dict[str, OptaxCall | Unset | None] = {}

    def run(self) -> CheckedSpec:
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
        actions: dict[str, OptaxCall | Unset | None] = {}
        label_source: dict[str, tuple[str, int]] = {}
        for stmt in self.spec.statements:
            try:
                if isinstance(stmt, (ast.Let, ast.Param)):
                    self.action_memo.clear()
                if isinstance(stmt, ast.Let):
                    self._define(stmt.name, stmt.name_span, stmt.span.line)
                    self.env[stmt.name] = self.eval(stmt.value)
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
            raise SpecError(
                [d.with_source(self.spec.source, self.spec.filename) for d in self.errors]
            )
        return CheckedSpec(self.spec, tuple(rules), dict(self.env), actions)

    def _define(self, name: str, span: Span, line: int) -> None:
        if name in self.env:
            raise _diag(
                "E302",
                f"`{name}` is already defined on line {self.defined_at[name]}",
                span,
                hint="choose another name; names cannot be rebound",
            )
        if name in TABLE:
            raise _diag(
                "E302",
                f"`{name}` is the name of an optax function",
                span,
                hint="choose another name",
            )
        self.defined_at[name] = line

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
        actions: dict[str, OptaxCall | Unset | None],
        label_source: dict[str, tuple[str, int]],
    ) -> CheckedRule:
        action: OptaxCall | Unset | None
        text = format_expr(rule.action)
        if text in self.action_memo:
            action = self.action_memo[text]
        elif isinstance(rule.action, ast.Frozen):
            action = None
        else:
            value = self.eval(rule.action)
            if isinstance(value, Unset):
                action = value
            elif not _is_transform(value):
                hint = None
                if _is_schedule(value):
                    hint = "pass the schedule as a learning rate, for example `adam(schedule)`"
                raise _diag(
                    "E403",
                    f"a rule's action must be `frozen` or an optimizer, got {type_name(value)}",
                    rule.action.span,
                    hint=hint,
                )
            else:
                assert isinstance(value, OptaxCall)
                action = value
        self.action_memo[text] = action
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
        return CheckedRule(index, rule, label, action)

    # -- expressions
    def eval(self, e: ast.Expr) -> Value:
        if isinstance(e, (ast.Num, ast.Str, ast.Bool)):
            return e.value
        if isinstance(e, ast.NoneLit):
            return None
        if isinstance(e, ast.ListExpr):
            return tuple(self.eval(i) for i in e.items)
        if isinstance(e, ast.Name):
            return self._name(e)
        if isinstance(e, ast.Neg):
            v = self.eval(e.operand)
            return self._arith("*", -1, v, e)
        if isinstance(e, ast.BinOp):
            return self._arith(e.op, self.eval(e.left), self.eval(e.right), e)
        if isinstance(e, ast.Call):
            return self._call(e)
        raise AssertionError(e)  # pragma: no cover

    def _name(self, e: ast.Name) -> Value:
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
            else did_you_mean(e.id, [*self.env, "true", "false", "none"])
        )
        if hint is None:
            hint = f"define it first: `let {e.id} = ...` or `param {e.id} = ...`"
        raise _diag("E301", f"undefined name `{e.id}`", e.span, hint=hint, label="not defined")

    def _arith(self, op: str, a: Value, b: Value, e: ast.Expr) -> Value:
        if isinstance(a, Unset) or isinstance(b, Unset):
            return a if isinstance(a, Unset) else b
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

    def _call(self, e: ast.Call) -> Value:
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
        positional = [p for p in params if p["kind"] == "pos"]
        varargs = next((p for p in params if p["kind"] == "varargs"), None)
        bound: dict[str, tuple[Value, Span]] = {}
        extra: list[Value] = []
        for i, arg in enumerate(e.args):
            v = self.eval(arg)
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
            bound[kw.name] = (self.eval(kw.value), kw.span)
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
    return _Checker(spec, values, values is not None if require is None else require).run()
