"""The canonical text of a spec, a pattern or an expression.

``parse(format(spec)) == spec`` for every spec; comments are kept, arrows and trailing
comments in a block of consecutive statements are aligned, and numbers keep their
spelling (``1e-3``). :func:`format_expr`, which makes labels, writes numbers canonically.

>>> import partspec
>>> print(partspec.format("head/*->adam( 5e-3 )  # the new head\\nbackbone/**->frozen"))
head/*      -> adam(5e-3)  # the new head
backbone/** -> frozen
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from partspec.language import ast
from partspec.language.vocabulary import KEYWORDS

__all__ = ["format_expr", "format_pattern", "format_setting", "format_spec"]

_LITERAL_RE = re.compile(r'(?:[^\s/*?\[\]{},"\\#;<>=()\-]|-(?!>))+')

_ALIGN_MAX = 40
_COMMENT_ALIGN_MAX = 70


def _quote(text: str) -> str:
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{body}"'


def _lit(text: str, *, in_single_alt: bool = False) -> str:
    if (
        _LITERAL_RE.fullmatch(text)
        and text not in KEYWORDS
        and not text.startswith("@")
        and not (in_single_alt and ".." in text)
        and not text.endswith("-")
    ):
        return text
    return _quote(text)


def _class(node: ast.CharClass) -> str:
    def esc(c: str) -> str:
        return "\\" + c if c in "]\\-!^" else c

    items = "".join(esc(lo) if lo == hi else f"{esc(lo)}-{esc(hi)}" for lo, hi in node.ranges)
    return "[" + ("!" if node.negated else "") + items + "]"


def _nodes(nodes: tuple[ast.GlobNode, ...], *, in_single_alt: bool = False) -> str:
    out: list[str] = []
    for n in nodes:
        if isinstance(n, ast.Lit):
            out.append(_lit(n.text, in_single_alt=in_single_alt and len(nodes) == 1))
        elif isinstance(n, ast.Star):
            out.append("*")
        elif isinstance(n, ast.QMark):
            out.append("?")
        elif isinstance(n, ast.GlobStar):
            out.append("**")
        elif isinstance(n, ast.Sep):
            out.append("/")
        elif isinstance(n, ast.CharClass):
            out.append(_class(n))
        elif isinstance(n, ast.Capture):
            out.append(f"<{n.name}>")
        elif isinstance(n, ast.Range):
            out.append(f"{{{n.lo}..{n.hi}}}")
        elif isinstance(n, ast.Alt):
            parts = [
                f"{b[0].lo}..{b[0].hi}"
                if len(b) == 1 and isinstance(b[0], ast.Range) and len(n.branches) > 1
                else _nodes(b, in_single_alt=True)
                for b in n.branches
            ]
            out.append("{" + ",".join(parts) + "}")
    return "".join(out)


def format_pattern(pattern: ast.Pattern) -> str:
    """The canonical text of one pattern.

    >>> import partspec
    >>> spec = partspec.parse('"my key"/a\\\\*b/** -> frozen')
    >>> format_pattern(spec.rules[0].patterns[0])
    '"my key"/"a*b"/**'
    """
    text = _nodes(pattern.nodes) or '""'
    return f"(?i){text}" if pattern.nocase else text


# ---------------------------------------------------------------- expressions

# Binding strength, loosest first, as in the grammar.
_OR, _AND, _NOT, _CMP, _SUM, _PRODUCT, _NEG, _POWER, _ATOM = range(1, 10)
_PREC = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT, "**": _POWER}


def _num(v: int | float) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def _wrap(e: ast.Expr, keep: bool, at_least: int) -> str:
    text, prec = _expr(e, keep)
    return text if prec >= at_least else f"({text})"


def _expr(e: ast.Expr, keep: bool = False) -> tuple[str, int]:
    if isinstance(e, ast.Num):
        return (e.text if keep and e.text else _num(e.value)), _ATOM
    if isinstance(e, ast.Str):
        return _quote(e.value), _ATOM
    if isinstance(e, ast.Bool):
        return ("true" if e.value else "false"), _ATOM
    if isinstance(e, ast.NoneLit):
        return "none", _ATOM
    if isinstance(e, ast.Name):
        return e.id, _ATOM
    if isinstance(e, ast.ListExpr):
        return "[" + ", ".join(_expr(i, keep)[0] for i in e.items) + "]", _ATOM
    if isinstance(e, ast.Call):
        parts = [_expr(a, keep)[0] for a in e.args]
        parts += [f"{k.name}={_expr(k.value, keep)[0]}" for k in e.kwargs]
        return f"{e.func}({', '.join(parts)})", _ATOM
    if isinstance(e, ast.Index):
        return f"{_wrap(e.value, keep, _ATOM)}[{_expr(e.index, keep)[0]}]", _ATOM
    if isinstance(e, ast.Neg):
        return f"-{_wrap(e.operand, keep, _NEG)}", _NEG
    if isinstance(e, ast.Not):
        return f"not {_wrap(e.operand, keep, _NOT)}", _NOT
    if isinstance(e, ast.Compare):
        return f"{_wrap(e.left, keep, _SUM)} {e.op} {_wrap(e.right, keep, _SUM)}", _CMP
    if isinstance(e, ast.BoolOp):
        p = _AND if e.op == "and" else _OR
        return f"{_wrap(e.left, keep, p)} {e.op} {_wrap(e.right, keep, p + 1)}", p
    if isinstance(e, ast.BinOp):
        p = _PREC[e.op]
        if e.op == "**":
            return f"{_wrap(e.left, keep, _ATOM)} ** {_wrap(e.right, keep, _NEG)}", p
        return f"{_wrap(e.left, keep, p)} {e.op} {_wrap(e.right, keep, p + 1)}", p
    raise TypeError(f"not an expression: {e!r}")  # pragma: no cover


def format_expr(expr: ast.Action) -> str:
    """The canonical text of an expression or action (``frozen``, ``frozen until ...``).

    >>> import partspec
    >>> spec = partspec.parse("let lr = (1e-3 * 0.75) ** (11 - 2)")
    >>> format_expr(spec.statements[0].value)
    '(0.001 * 0.75) ** (11 - 2)'
    """
    return _action(expr, keep=False)


def _action(expr: ast.Action, keep: bool) -> str:
    if isinstance(expr, ast.Frozen):
        return "frozen"
    if isinstance(expr, ast.FrozenUntil):
        return f"frozen until {_expr(expr.until, keep)[0]} then {_expr(expr.then, keep)[0]}"
    return _expr(expr, keep)[0]


def _source_expr(expr: ast.Action) -> str:
    """Like :func:`format_expr`, but numbers keep their spelling (``1e-3``, ``10_000``)."""
    return _action(expr, keep=True)


# ---------------------------------------------------------------- statements


def _patterns(patterns: tuple[ast.Pattern, ...]) -> str:
    """Patterns as written: a named pattern's expansion is its name, once."""
    return ", ".join(
        format_pattern(p) if p.ref is None else f"@{p.ref}"
        for p in patterns
        if p.ref is None or p.ref_index in (0, ast.DEFERRED)
    )


def _lhs(rule: ast.Rule | ast.WithRule) -> str:
    text = _patterns(rule.patterns)
    if rule.excepts:
        text += " except " + _patterns(rule.excepts)
    if rule.where is not None:
        text += " where " + _source_expr(rule.where)
    return text


def _rhs(rule: ast.Rule) -> str:
    text = "-> " + _source_expr(rule.action)
    if rule.label is not None:
        text += f" as {rule.label}"
    return text


def format_setting(st: ast.Setting) -> str:
    """A ``with`` rule's setting as the formatter writes it: ``lr * 0.5``, ``b1 = 0.95``."""
    if st.scales:
        # `lr * a * b` reads back as the factor `a * b`: a sum needs parentheses.
        factor = _wrap_source(st.value, _PREC["*"])
        return f"lr * {factor}"
    return f"{st.name} = {_source_expr(st.value)}"


def _wrap_source(e: ast.Expr, at_least: int) -> str:
    return _wrap(e, True, at_least)


def _statement(stmt: ast.Statement, width: int = 0) -> str:
    if isinstance(stmt, ast.Rule):
        return f"{_lhs(stmt).ljust(width)} {_rhs(stmt)}"
    if isinstance(stmt, ast.WithRule):
        return f"{_lhs(stmt).ljust(width)} with " + ", ".join(
            format_setting(x) for x in stmt.settings
        )
    if isinstance(stmt, ast.Let):
        return f"let {stmt.name} = {_source_expr(stmt.value)}"
    if isinstance(stmt, ast.PatternDef):
        return f"let @{stmt.name} = {_patterns(stmt.patterns)}"
    if isinstance(stmt, ast.Include):
        return f"include {_quote(stmt.path)}"
    if isinstance(stmt, ast.Global):
        return f"global {_source_expr(stmt.value)}"
    if stmt.default is None:
        return f"param {stmt.name}"
    return f"param {stmt.name} = {_source_expr(stmt.default)}"


_Item = tuple[int, str, "ast.Statement | ast.Comment"]  # (line, "stmt" | "comment", node)


@dataclass
class _Layout:
    """Statements and comments in output order, and where each comment goes."""

    items: list[_Item]
    #: whether line numbers place comments and blank lines (every statement is from
    #: the spec's own text, not from an include)
    has_lines: bool
    #: ``id(statement)`` -> comments inside a multi-line statement, written above it
    before: dict[int, list[ast.Comment]] = field(default_factory=dict)
    #: ``id(statement)`` -> the comment that trails it
    trailing: dict[int, ast.Comment] = field(default_factory=dict)


def format_spec(spec: ast.Spec) -> str:
    """The canonical text of a whole spec, comments included, ending in a newline.

    A spec whose includes were resolved (statements from other files, with
    ``span.file`` set) is written flattened, in statement order, without comments.
    """
    layout = _layout(spec)
    return _align_comments(_lines(layout, _rule_widths(layout)))


def _layout(spec: ast.Spec) -> _Layout:
    stmts = spec.statements
    # Comments and blank lines are placed by line number, which only means something
    # when every statement comes from the spec's own text.
    if not all(s.span.line > 0 and s.span.file is None for s in stmts):
        return _Layout([(0, "stmt", s) for s in stmts], has_lines=False)
    layout = _Layout([], has_lines=True)
    # A statement written over several lines is written on one: the comments inside it
    # go on lines of their own above it, in order, but for the last, which trails it.
    inside = _comments_inside(stmts, spec.comments)
    for s in stmts:
        layout.items.append((s.span.line, "stmt", s))
        found = inside.get(id(s), [])
        if found:
            layout.before[id(s)], layout.trailing[id(s)] = found[:-1], found[-1]
    taken = {id(c) for found in inside.values() for c in found}
    layout.items += [(c.line, "comment", c) for c in spec.comments if id(c) not in taken]
    layout.items.sort(key=lambda it: (it[0], {"stmt": 0, "comment": 1}[it[1]]))
    return layout


def _rule_widths(layout: _Layout) -> dict[int, int]:
    """``id(rule)`` -> the width its left-hand side is padded to: one per block of
    consecutive rules (no blank line, comment or other statement between)."""
    widths: dict[int, int] = {}
    block: list[ast.Rule | ast.WithRule] = []
    prev_end = -10

    def close_block() -> None:
        fitting = [len(_lhs(r)) for r in block if len(_lhs(r)) <= _ALIGN_MAX]
        w = max(fitting, default=0)
        for r in block:
            widths[id(r)] = w if len(_lhs(r)) <= _ALIGN_MAX else 0
        block.clear()

    for line, kind, payload in layout.items:
        if kind == "stmt" and isinstance(payload, (ast.Rule, ast.WithRule)):
            gap = line - prev_end > 1 or layout.before.get(id(payload))
            if block and layout.has_lines and gap:
                close_block()
            block.append(payload)
            prev_end = payload.span.end_line if layout.has_lines else 0
        else:
            close_block()
            if not isinstance(payload, ast.Comment):
                prev_end = payload.span.end_line
    close_block()
    return widths


def _lines(layout: _Layout, widths: dict[int, int]) -> list[list[str | None]]:
    """Lines as ``[code, trailing comment]``; a blank line or a comment line is code alone."""
    lines: list[list[str | None]] = []
    last_line = None
    for line, kind, payload in layout.items:
        if layout.has_lines and last_line is not None and line - last_line > 1 and lines:
            lines.append(["", None])
        if kind == "comment":
            assert isinstance(payload, ast.Comment)
            lines.append([payload.text, None])
            last_line = line
            continue
        assert not isinstance(payload, ast.Comment)
        lines += [[c.text, None] for c in layout.before.get(id(payload), ())]
        tail = layout.trailing.get(id(payload))
        text = _statement(payload, widths.get(id(payload), 0))
        lines.append([text, tail.text if tail is not None else None])
        last_line = payload.span.end_line if layout.has_lines else None
    return lines


def _comments_inside(
    stmts: tuple[ast.Statement, ...], comments: tuple[ast.Comment, ...]
) -> dict[int, list[ast.Comment]]:
    """``id(statement)`` -> the comments on its lines (a trailing one on its first line
    included), in order. A standalone comment line before a statement is not inside it."""
    out: dict[int, list[ast.Comment]] = {}
    ordered = sorted(stmts, key=lambda st: st.span.line)
    i = 0
    for c in sorted(comments, key=lambda c: c.line):
        while i < len(ordered) and ordered[i].span.end_line < c.line:
            i += 1
        if i == len(ordered):
            break
        st = ordered[i]
        first_line_comment = c.line == st.span.line and c.trailing
        if st.span.line < c.line <= st.span.end_line or first_line_comment:
            out.setdefault(id(st), []).append(c)
    return out


def _align_comments(lines: list[list[str | None]]) -> str:
    """Join lines, aligning trailing comments within each run of statement lines."""
    out: list[str] = []
    run: list[list[str | None]] = []

    def flush() -> None:
        width = max((len(c or "") for c, t in run if t), default=0)
        for code, comment in run:
            code = code or ""
            if comment is None:
                out.append(code)
            elif width <= _COMMENT_ALIGN_MAX:
                out.append(f"{code.ljust(width)}  {comment}")
            else:
                out.append(f"{code}  {comment}")
        run.clear()

    for code, comment in lines:
        if not code or (code.startswith("#") and comment is None):
            flush()
            out.append(code or "")
        else:
            run.append([code, comment])
    flush()
    return "\n".join(out) + "\n" if out else ""


ast.register_hook("format", format_spec)  # str(spec)
