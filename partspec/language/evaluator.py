"""Evaluating expressions and actions to :mod:`values <partspec.language.values>`.

The :class:`Evaluator` knows a spec's names (``let``, ``param``) and the allow-listed
calls; a rule's captures and, in a ``where`` condition, the leaf come in a
:class:`Scope` argument, so one evaluator serves any number of leaves and threads.
Problems are raised as :class:`Fail` (a diagnostic); the checker collects them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from partspec.diagnostics import Diagnostic, Span, closest, did_you_mean
from partspec.language import ast
from partspec.language.functions import FUNCTIONS, ArityError, FunctionTypeError, apply, signature
from partspec.language.registry import SIGNATURES as TABLE
from partspec.language.values import (
    _BOOL,
    _INT,
    _NUMBER,
    _TYPE_WORDS,
    Abstract,
    Action,
    DTypeName,
    LeafInfo,
    OptaxCall,
    Unset,
    Until,
    Value,
    _abstract,
    _coerce,
    _equal,
    _is_number,
    _is_schedule,
    _is_transform,
    _kind,
    _numeric,
    _SampleShape,
    _scale,
    type_name,
)
from partspec.language.vocabulary import LEAF_DTYPES, LEAF_PROPERTIES

__all__ = ["Evaluator", "Fail", "Scope"]

#: Names a newcomer writes for `frozen` (PyTorch's `requires_grad = False`, Keras's
#: `trainable = False`).
_FROZEN_WORDS = frozenset(
    {"freeze", "freezed", "frozen_", "fixed", "no_grad", "nograd", "untrainable", "fix"}
)


class Scope(NamedTuple):
    """What an expression is evaluated with besides the spec's names: a rule's captures
    (name -> value, :class:`Unset` while checking without a tree) and, in a `where`
    condition, the leaf it looks at (``None`` elsewhere)."""

    captures: Mapping[str, Value]
    leaf: LeafInfo | None


TOP = Scope({}, None)


class Fail(Exception):
    def __init__(self, diag: Diagnostic):
        self.diag = diag


def _diag(
    code: str, message: str, span: Span, hint: str | None = None, label: str | None = None
) -> Fail:
    return Fail(Diagnostic.at(code, message, span, hint=hint, label=label))


#: The largest update number optax's int32 step counters reach.
_MAX_STEP = 2**31 - 1
#: Functions of the language itself (not optax).
_BUILTINS = frozenset({"count"})


class Evaluator:
    """Evaluates a spec's expressions: its names are known, scopes are passed in."""

    def __init__(self, spec: ast.Spec, counts: Mapping[str, int] | None = None):
        self.spec = spec
        self.counts = counts
        self.counted: set[str] = set()
        self.env: dict[str, Value] = {}
        # Warnings are collected while checking only (see the checker), never by an
        # evaluator kept to bind captures later: it evaluates the same calls again.
        self.collecting = False
        self.warnings: list[Diagnostic] = []

    def action(self, rule: ast.Rule, sc: Scope = TOP) -> Action:
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
                        "E414",
                        "`until` takes a number of updates (a non-negative integer), got "
                        f"{type_name(at)}{shown}",
                        act.until.span,
                    )
                if fixed > _MAX_STEP:
                    raise _diag(
                        "E414",
                        f"`until {fixed}` is beyond the step counter's range (at most "
                        f"{_MAX_STEP:,} updates, as optax counts in int32)",
                        act.until.span,
                    )
                at = fixed
            then = self._optimizer(act.then, sc)
            return Until(at, then)
        return self._optimizer(act, sc)

    def _optimizer(self, e: ast.Expr, sc: Scope) -> OptaxCall | Unset:
        if (
            isinstance(e, ast.Call)
            and e.func not in TABLE
            and e.func not in FUNCTIONS
            and e.func not in _BUILTINS
        ):
            raise self._unknown_call(e, "optimizer")
        value = self.eval(e, sc)
        if isinstance(value, Unset):
            return value
        if not _is_transform(value):
            hint = None
            if _is_schedule(value):
                hint = "pass the schedule as a learning rate, for example `adam(schedule)`"
            raise _diag(
                "E412",
                f"a rule's action must be `frozen` or an optimizer, got {type_name(value)}",
                e.span,
                hint=hint,
            )
        assert isinstance(value, OptaxCall)
        return value

    def _want_bool(self, v: Value, e: ast.Expr, what: str) -> None:
        if not isinstance(v, (bool, Unset)) and v != _BOOL:
            raise _diag(
                "E417",
                f"{what} must be true or false, got {type_name(v)}",
                e.span,
                hint='compare it: `ndim == 1`, `dtype == "float32"`, `shape[-1] > 256`',
            )

    # -- expressions
    def eval(self, e: ast.Expr, sc: Scope = TOP) -> Value:
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
            if right is (e.op == "or"):
                # `ndim > 1 and use_decay` with use_decay = false is false for any leaf.
                return right
            return _BOOL if _abstract(left, right) else right
        if isinstance(e, ast.Not):
            v = self.eval(e.operand, sc)
            self._want_bool(v, e.operand, "the operand of `not`")
            return v if isinstance(v, (Unset, Abstract)) else not v
        if isinstance(e, ast.Index):
            return self._index(e, sc)
        raise AssertionError(e)  # pragma: no cover

    def _index(self, e: ast.Index, sc: Scope) -> Value:
        seq = self.eval(e.value, sc)
        idx = self.eval(e.index, sc)
        if isinstance(seq, Unset) or isinstance(idx, Unset):
            return seq if isinstance(seq, Unset) else idx
        if not isinstance(seq, tuple):
            raise _diag("E421", f"cannot index {type_name(seq)}", e.value.span)
        if idx != _INT and (not isinstance(idx, int) or isinstance(idx, bool)):
            raise _diag(
                "E421", f"a list index must be an integer, got {type_name(idx)}", e.index.span
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

    def _compare(self, e: ast.Compare, sc: Scope) -> Value:
        a = self.eval(e.left, sc)
        b = self.eval(e.right, sc)
        if isinstance(a, Unset) or isinstance(b, Unset):
            return a if isinstance(a, Unset) else b
        if e.op == "in":
            if not isinstance(b, tuple):
                raise _diag(
                    "E420",
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
                "E418",
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
                    "E419",
                    f'unknown dtype "{y}"',
                    span,
                    hint=did_you_mean(y, LEAF_DTYPES)
                    or "dtype names are NumPy's: "
                    + ", ".join(f'"{d}"' for d in sorted(LEAF_DTYPES)),
                )
        kinds = {_kind(a), _kind(b)}
        if len(kinds) > 1 and "none" not in kinds:
            raise _diag(
                "E418",
                f"cannot compare {type_name(a)} with {type_name(b)}",
                a_span.to(b_span),
                hint='shape is a list (`shape == [768]`), dtype a string (`dtype == "float32"`)'
                if any(isinstance(x, (tuple, DTypeName)) for x in (a, b))
                else "a capture is an integer where its text is all digits, else a string",
            )

    def _name(self, e: ast.Name, sc: Scope) -> Value:
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
        if e.id in FUNCTIONS:
            raise _diag(
                "E301",
                f"`{e.id}` is a function, not a value",
                e.span,
                hint=f"call it: `{signature(e.id)}`",
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
            else "parameters that must not train are `frozen`: `backbone/** -> frozen`"
            if e.id.casefold() in _FROZEN_WORDS
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
            "E415",
            f"cannot apply `{op}` to {type_name(a)} and {type_name(b)}",
            e.span,
            hint="arithmetic works on numbers; a schedule can only be multiplied or "
            "divided by a number",
        )

    def _call(self, e: ast.Call, sc: Scope) -> Value:
        if e.func in _BUILTINS:
            return self._count(e)
        if e.func in FUNCTIONS:
            return self._function(e, sc)
        entry = TABLE.get(e.func)
        if entry is None:
            raise self._unknown_call(e)
        params = entry["params"]
        if self.collecting:
            self._deprecated(e, entry)
            if e.func == "chain":
                self._decay_after_optimizer(e)
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

    def _unknown_call(self, e: ast.Call, expected: str | None = None) -> Fail:
        """E401 for a call of a name that is neither an optax function nor a function of
        the language: "unknown optimizer" where the closest name is an optax optimizer or
        transform, "unknown schedule" for a schedule, otherwise "unknown function"."""
        if e.func.startswith("_"):
            return _diag(
                "E401",
                f"`{e.func}` is not allowed",
                e.func_span,
                hint="see docs/language.md for the allow-listed optax functions",
                label="not an allow-listed optax function",
            )
        near = closest(e.func, [*TABLE, *FUNCTIONS, *_BUILTINS])
        if expected is not None:
            what = expected
        elif near is not None and near in TABLE:
            what = "schedule" if TABLE[near]["kind"] == "schedule" else "optimizer"
        else:
            what = "function"
        if near is not None:
            hint = f"did you mean `{near}`?"
        elif what == "function" and any(isinstance(a, ast.Call) for a in e.args):
            hint = "see docs/language.md for the allow-listed optax functions"
        else:
            hint = (
                "the functions are the allow-listed optax functions (docs/language.md), "
                + ", ".join(f"`{f}`" for f in sorted(FUNCTIONS))
                + ", and those registered with `partspec.register` (`pspec --plugin`)"
            )
        return _diag(
            "E401",
            f"unknown {what} `{e.func}`",
            e.func_span,
            hint=hint,
            label="not an allow-listed optax function" if what != "function" else "unknown",
        )

    def _function(self, e: ast.Call, sc: Scope) -> Value:
        """``min``, ``max``, ``round``, ``int``, ``floor``, ``ceil``, ``abs``."""
        if e.kwargs:
            raise _diag(
                "E402",
                f"`{e.func}` takes no keyword arguments",
                e.kwargs[0].span,
                hint=f"call it as `{signature(e.func)}`",
            )
        args = [self.eval(a, sc) for a in e.args]
        try:
            return apply(e.func, args)
        except ArityError:
            raise _diag(
                "E404",
                f"`{e.func}` is called as `{signature(e.func)}`, got {len(args)} argument"
                + ("s" if len(args) != 1 else ""),
                e.span,
            ) from None
        except FunctionTypeError as bad:
            want = "an integer" if e.func == "round" and bad.index == 1 else "a number"
            shown = f" `{bad.value}`" if isinstance(bad.value, (int, float, str)) else ""
            raise _diag(
                "E403",
                f"argument {bad.index + 1} of `{e.func}` must be {want}, got "
                f"{type_name(bad.value)}{shown}",
                e.args[bad.index].span,
                label="wrong type",
            ) from None

    def _decay_after_optimizer(self, e: ast.Call) -> None:
        """W604 for ``chain(sgd(...), add_decayed_weights(...))``: the decay is added to
        the optimizer's update, which is then *added* to the parameters, so the weights
        grow by ``wd * p`` each step instead of shrinking.

        What matters is how many times the sign is flipped after the decay is added (by
        an optimizer, ``scale_by_learning_rate`` unless ``flip_sign=false``, or ``scale``
        of a negative number): an even number, after a flip before it, grows the
        weights. big_vision's ``chain(scale(...), scale_by_learning_rate(lr,
        flip_sign=false), add_decayed_weights(wd), scale(-1))`` shrinks them."""
        calls = [a for a in e.args if isinstance(a, ast.Call)]
        flips = [_flips_sign(c) for c in calls]
        for i, arg in enumerate(calls):
            if arg.func != "add_decayed_weights" or _negated(arg):
                continue
            before = [c.func for c, f in zip(calls[:i], flips[:i]) if f]
            if not before or sum(flips[i + 1 :]) % 2 == 1:
                continue
            self.warnings.append(
                Diagnostic.at(
                    "W604",
                    f"`add_decayed_weights` after `{before[-1]}` makes the weights grow: "
                    "the decay is added after the update's sign is applied",
                    arg.span,
                    severity="warning",
                    hint="put it first, `chain(add_decayed_weights(wd), sgd(lr))` "
                    "(L2 as torch's SGD does it), or use `adamw(lr, weight_decay=wd)` "
                    "for decoupled decay (see docs/weight_decay.md)",
                )
            )

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
        bound |= {n for r in self.spec.with_rules for n in r.captures}
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
                "E411",
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


def _flips_sign(call: ast.Call) -> bool:
    """Whether a call in a chain negates the update (descent direction applied)."""
    if TABLE.get(call.func, {}).get("kind") == "optimizer":
        return True
    if call.func == "scale_by_learning_rate":
        flip = next((k.value for k in call.kwargs if k.name == "flip_sign"), None)
        return not (isinstance(flip, ast.Bool) and not flip.value)
    return call.func == "scale" and _negated(call)


def _negated(call: ast.Call) -> bool:
    """Whether a call's first argument is written negative (``add_decayed_weights(-wd)``
    after the learning rate: decay independent of the rate, as big_vision does it)."""
    first = call.args[0] if call.args else next((k.value for k in call.kwargs), None)
    if isinstance(first, ast.Neg):
        return True
    return isinstance(first, ast.Num) and first.value < 0
