"""Text to AST. The Lark parse tree never leaves this module.

>>> import partspec
>>> spec = partspec.parse('''
... backbone/** -> frozen   # keep the pretrained weights
... head/*      -> adam(5e-3)
... ''')
>>> [partspec.format_pattern(p) for r in spec.rules for p in r.patterns]
['backbone/**', 'head/*']
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import Any

from lark import Token, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedInput,
)

from partspec.diagnostics import Diagnostic, Span, SpecError, did_you_mean, source_lines
from partspec.language import ast
from partspec.language._gc import no_gc
from partspec.language.grammar import (
    MAX_NESTING,
    NestingError,
    collect_comments,
    comments_sink,
    driver,
    grammar_text,
    lark_parser,
)
from partspec.language.lalr import Fallback
from partspec.language.syntax_errors import _tok_span, syntax_diagnostic
from partspec.language.vocabulary import KEYWORDS

__all__ = [
    "MAX_CLASS_CHARS",
    "MAX_DEPTH",
    "MAX_NESTING",
    "MAX_PATTERN_NODES",
    "MAX_RANGE_DIGITS",
    "grammar_text",
    "parse_selector",
    "parse_syntax",
]

#: Parse trees (operators, calls, lists, braces) may be this deep; deeper is error E102.
MAX_DEPTH = 200
#: A single pattern may have at most this many glob nodes (error E205).
MAX_PATTERN_NODES = 10_000
#: Bounds of a ``{lo..hi}`` range have at most this many digits (error E202).
MAX_RANGE_DIGITS = 18
#: A character class ``[...]`` may be at most this long (error E203).
MAX_CLASS_CHARS = 1_000


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---------------------------------------------------------------- grammar factory


# ---------------------------------------------------------------- entry points


def parse_syntax(text: str, filename: str | None = None) -> ast.Spec:
    """Parse without checking names or calls (the formatter and tools use this)."""
    if not isinstance(text, str):
        raise TypeError(f"spec text must be str, not {type(text).__name__}")
    if text.startswith("\ufeff"):
        text = text[1:]
    # One pause of the collector for the whole parse: the parse tree becomes garbage
    # only when the AST is built, and a collection in between would scan it all.
    with collect_comments() as comments, no_gc():
        try:
            tree = _lark_parse(text, "start")
            statements = _Converter(text).convert(tree)
        except SpecError as err:
            raise SpecError([d.with_source(text, filename) for d in err.diagnostics]) from None
        del tree  # freed by reference counting, before the collector runs again
        return ast.Spec(
            statements=statements,
            source=text,
            filename=filename,
            comments=tuple(_comment_nodes(comments, text)),
        )


def parse_selector(text: str, filename: str | None = "<pattern>") -> ast.Rule:
    """Parse the left side of a rule alone: patterns, ``except`` and ``where``.

    This is what :func:`partspec.select`, :func:`partspec.replace`,
    :func:`partspec.transfer` and ``pspec explain --leaves`` take. The result is a rule
    whose action is ``frozen``, so that it is checked and matched as rules are.

    >>> import partspec
    >>> rule = parse_selector("head/**, neck/* except **/bias where ndim > 1")
    >>> [partspec.format_pattern(p) for p in rule.patterns], rule.where is not None
    (['head/**', 'neck/*'], True)

    Raises:
      SpecError: a syntax error, positioned in ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"a pattern must be a str, not {type(text).__name__}")
    try:
        tree = _lark_parse(text, "selector")
        with no_gc():
            rule = _Converter(text).selector(tree)
    except SpecError as err:
        raise SpecError([d.with_source(text, filename) for d in err.diagnostics]) from None
    return rule


def _lark_parse(text: str, start: str) -> Tree:
    """The parse tree of ``text`` from the grammar's ``start`` symbol, or a SpecError."""
    lean = driver()
    try:
        if lean is not None:
            comments = comments_sink()
            mark = len(comments) if comments is not None else 0
            try:
                with no_gc():
                    tree: Tree = lean.parse(text, start)
                return tree
            except Fallback:  # what the driver leaves to Lark: Lark parses it again
                if comments is not None:
                    del comments[mark:]
        with no_gc():
            tree = lark_parser().parse(text, start=start)
            return tree
    except NestingError as exc:
        raise _error(
            "E102",
            f"brackets nested more than {MAX_NESTING} deep",
            _tok_span(exc.tok),
            hint="flatten the expression or pattern",
            label="too deep",
        ) from None
    except UnexpectedInput as exc:
        raise SpecError([syntax_diagnostic(exc, text)]) from None
    except LarkError as exc:  # pragma: no cover - defensive: any other parser failure
        raise SpecError([Diagnostic("E100", "error", f"syntax error: {exc}")]) from None


def _comment_nodes(tokens: list[Token], text: str) -> Iterator[ast.Comment]:
    lines = source_lines(text)
    for tok in tokens:
        line = tok.line or 1
        col = tok.column or 1
        before = lines[line - 1][: col - 1] if line <= len(lines) else ""
        yield ast.Comment(text=str(tok).rstrip(), line=line, trailing=bool(before.strip()))


# ---------------------------------------------------------------- errors


def _meta_span(tree: Tree | Token) -> Span:
    if isinstance(tree, Token):
        return _tok_span(tree)
    start = getattr(tree, "start", None)
    if start is not None:
        end = tree.end  # type: ignore[attr-defined]
        return Span(start.line, start.column, end.end_line, end.end_column)
    m = tree.meta
    if getattr(m, "empty", True):
        return Span(0, 0, 0, 0)
    return Span(m.line, m.column, m.end_line, m.end_column)


def _error(
    code: str, message: str, span: Span, *, hint: str | None = None, label: str | None = None
) -> SpecError:
    return SpecError([Diagnostic.at(code, message, span, hint=hint, label=label)])


def check_captures(patterns: Sequence[ast.Pattern]) -> None:
    """``E204`` unless every pattern of a rule binds the same names (its action may use
    any of them). Patterns still waiting for an included file's definition are skipped."""
    known = [p for p in patterns if p.ref_index != ast.DEFERRED]
    if not known:
        return
    first = set(ast.capture_names(known[0].nodes))
    for pattern in known[1:]:
        names = set(ast.capture_names(pattern.nodes))
        if names != first:
            shown = ", ".join(f"<{n}>" for n in sorted(first)) or "no captures"
            raise _error(
                "E204",
                f"the patterns of one rule capture different names ({shown} in the first)",
                pattern.span,
                hint="capture the same names in every pattern of the rule, or split it "
                "into several rules",
            )


def check_except_captures(patterns: Sequence[ast.Pattern]) -> None:
    """``E204`` for a capture in an ``except`` pattern: it would bind nothing."""
    for pattern in patterns:
        if ast.capture_names(pattern.nodes):
            raise _error(
                "E204",
                "a capture in an `except` pattern binds nothing",
                pattern.span,
                hint="use `*` (or `?*` for a non-empty run) in `except` patterns",
            )


def _unescape(body: str) -> str:
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


_RANGE_RE = re.compile(r"^([0-9]+)\.\.([0-9]+)$")
#: Pattern tokens that stand for one glob node each.
_SIMPLE_PIECES: dict[str, ast.GlobNode] = {
    "STAR": ast.Star(),
    "GLOBSTAR": ast.GlobStar(),
    "QMARK": ast.QMark(),
    "SLASH": ast.Sep(),
}
_INT_MAX = 2**63 - 1


class _Converter:
    def __init__(self, text: str):
        self.text = text
        #: named patterns defined so far (``let @name = ...``), by name
        self.named: dict[str, ast.PatternDef] = {}
        #: whether an ``include`` came before: an undefined ``@name`` may then be defined
        #: by the included file, and is left for include resolution to expand.
        self.after_include = False
        # The branches of each Alt with their tree nodes, for error positions.
        self._alt_parts: dict[int, list[list[tuple[ast.GlobNode, Any]]]] = {}

    # -- statements
    def convert(self, tree: Tree) -> tuple[ast.Statement, ...]:
        self._check_depth(tree)
        out: list[ast.Statement] = []
        for child in tree.children:
            if not isinstance(child, Tree):
                continue
            if child.data == "rule":
                out.append(self.rule(child))
            elif child.data == "with_rule":
                out.append(self.with_rule(child))
            elif child.data == "let_stmt":
                name, value = child.children
                assert isinstance(name, Token) and isinstance(value, (Tree, Token))
                self._check_name(name)
                out.append(ast.Let(str(name), self.expr(value), _meta_span(child), _tok_span(name)))
            elif child.data == "let_pattern":
                out.append(self.let_pattern(child))
            elif child.data == "include_stmt":
                (path,) = child.children
                self.after_include = True
                out.append(ast.Include(_unescape(str(path)[1:-1]), _meta_span(child)))
            elif child.data == "global_stmt":
                (value,) = child.children
                out.append(ast.Global(self.expr(value), _meta_span(child)))
            elif child.data == "param_stmt":
                name, default = child.children
                assert isinstance(name, Token)
                self._check_name(name)
                out.append(
                    ast.Param(
                        str(name),
                        None if default is None else self.expr(default),
                        _meta_span(child),
                        _tok_span(name),
                    )
                )
        return tuple(out)

    def _check_depth(self, tree: Tree) -> None:
        stack: list[tuple[Any, int]] = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                span = _meta_span(node) if isinstance(node, Tree) else _tok_span(node)
                raise _error(
                    "E102",
                    f"expression or pattern too deeply nested (more than {MAX_DEPTH} levels of "
                    "brackets, calls and operators)",
                    span,
                    hint="split it into steps with `let`",
                    label="too deep",
                )
            if isinstance(node, Tree):
                stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))

    def _check_name(self, tok: Token) -> None:
        if str(tok) in KEYWORDS:
            raise _error(
                "E303",
                f"`{tok}` is a keyword and cannot be used as a name",
                _tok_span(tok),
                hint="choose another name",
            )
        if str(tok).startswith("_"):
            raise _error(
                "E303",
                f"name `{tok}` is not allowed: names may not start with `_`",
                _tok_span(tok),
                hint="rename it without the leading underscore",
            )

    def selector(self, tree: Tree) -> ast.Rule:
        """A selector (a rule's left side alone), as a rule whose action is ``frozen``."""
        self._check_depth(tree)
        pats, excepts, where = tree.children
        assert isinstance(pats, Tree)
        patterns, except_patterns = self.left_side(pats, excepts)
        return ast.Rule(
            patterns,
            except_patterns,
            ast.Frozen(),
            span=_meta_span(tree),
            where=None if where is None else self.expr(where),
        )

    def left_side(
        self, pats: Tree, excepts: Tree | None
    ) -> tuple[tuple[ast.Pattern, ...], tuple[ast.Pattern, ...]]:
        patterns = self.patterns(pats)
        self._check_rule_captures(patterns, pats)
        except_patterns = self.patterns(excepts) if isinstance(excepts, Tree) else ()
        check_except_captures(except_patterns)
        return patterns, except_patterns

    def rule(self, tree: Tree) -> ast.Rule:
        pats, excepts, where, action, label = tree.children
        assert isinstance(pats, Tree) and isinstance(action, Tree)
        patterns, except_patterns = self.left_side(pats, excepts)
        action_node: ast.Action
        if action.data == "until":
            _, until, then = action.children
            action_node = ast.FrozenUntil(self.expr(until), self.expr(then), _meta_span(action))
        else:
            (act,) = action.children
            if isinstance(act, Token) and act.type == "FROZEN":
                action_node = ast.Frozen(_tok_span(act))
            else:
                action_node = self.expr(act)
        label_str = None
        label_span = Span(0, 0, 0, 0)
        if isinstance(label, Token):
            self._check_name(label)
            label_str, label_span = str(label), _tok_span(label)
        return ast.Rule(
            patterns,
            except_patterns,
            action_node,
            label_str,
            _meta_span(tree),
            label_span,
            where=None if where is None else self.expr(where),
        )

    def with_rule(self, tree: Tree) -> ast.WithRule:
        pats, excepts, where, *settings = tree.children
        assert isinstance(pats, Tree)
        patterns, except_patterns = self.left_side(pats, excepts)
        out: list[ast.Setting] = []
        for node in settings:
            if not isinstance(node, Tree):
                continue  # the commas
            out.append(self.setting(node))
        seen: dict[str, ast.Setting] = {}
        for st in out:
            if st.name in seen:
                raise _error(
                    "E105",
                    f"`{st.name}` is set twice in one `with` rule",
                    st.name_span,
                    hint="set each setting once per rule; a later `with` rule may set it "
                    "for other leaves",
                )
            seen[st.name] = st
        return ast.WithRule(
            patterns,
            except_patterns,
            tuple(out),
            _meta_span(tree),
            where=None if where is None else self.expr(where),
        )

    def setting(self, node: Tree) -> ast.Setting:
        span = _meta_span(node)
        if node.data == "keyword_setting":
            name, value = node.children
            assert isinstance(name, Token)
            if str(name) == ast.LR_SETTING:
                raise _error(
                    "E105",
                    "`lr = ...` would replace the learning rate: write `learning_rate = ...`, "
                    "or scale it with `lr * ...`",
                    _tok_span(name),
                    hint="`lr * 0.5` halves the owner's learning rate (a schedule keeps its shape)",
                )
            return ast.Setting(str(name), self.expr(value), span, _tok_span(name))
        (value,) = node.children
        expr = self.expr(value)
        factor = _lr_factor(expr)
        if factor is None:
            raise _error(
                "E105",
                "a `with` setting is `lr * FACTOR` or `NAME = VALUE`",
                span,
                hint="for example `with lr * 0.1, weight_decay = 0`",
                label="not a setting",
            )
        lr_span = _leftmost(expr).span
        return ast.Setting(ast.LR_SETTING, factor, span, lr_span)

    def _check_rule_captures(self, patterns: tuple[ast.Pattern, ...], tree: Tree) -> None:
        """Every pattern of a rule binds the same names (the action may use any of them)."""
        check_captures(patterns)

    # -- patterns
    def let_pattern(self, tree: Tree) -> ast.PatternDef:
        ref, pats = tree.children
        assert isinstance(ref, Token) and isinstance(pats, Tree)
        name = str(ref)[1:]
        span = _tok_span(ref)
        if name in self.named:
            first = self.named[name].name_span
            raise _error(
                "E302",
                f"pattern `@{name}` is already defined on line {first.line}",
                span,
                hint="choose another name; names cannot be rebound",
            )
        if name.startswith("_"):
            raise _error(
                "E303",
                f"name `@{name}` is not allowed: names may not start with `_`",
                span,
                hint="rename it without the leading underscore",
            )
        patterns = self.patterns(pats)
        self._check_rule_captures(patterns, pats)
        named = ast.PatternDef(name, patterns, _meta_span(tree), span)
        self.named[name] = named
        return named

    def patterns(self, tree: Tree) -> tuple[ast.Pattern, ...]:
        out: list[ast.Pattern] = []
        for c in tree.children:
            if isinstance(c, Tree):
                out.append(self.pattern(c))
            elif isinstance(c, Token) and c.type == "PATTERN_REF":
                out += self.pattern_ref(c)
        return tuple(out)

    def pattern_ref(self, tok: Token) -> list[ast.Pattern]:
        name = str(tok)[1:]
        span = _tok_span(tok)
        named = self.named.get(name)
        if named is None and self.after_include:
            return [ast.Pattern((), span, ref=name, ref_index=ast.DEFERRED)]
        if named is None:
            hint = did_you_mean(name, self.named)
            raise _error(
                "E301",
                f"undefined pattern `@{name}`",
                span,
                hint=hint.replace("`", "`@", 1)
                if hint
                else (
                    f"define it above its first use: `let @{name} = ...`; a path segment "
                    f'that starts with `@` is quoted: `"@{name}"`'
                ),
                label="not defined",
            )
        return [
            dataclasses.replace(p, span=span, ref=name, ref_index=i)
            for i, p in enumerate(named.patterns)
        ]

    def pattern(self, tree: Tree) -> ast.Pattern:
        span = _meta_span(tree)
        self._check_adjacent(tree)
        children = tree.children
        nocase = bool(children) and isinstance(children[0], Token) and children[0].type == "NOCASE"
        nodes = self.seq(children[1:] if nocase else children)
        self._check_empty_segments(nodes, span)
        self._check_globstars(nodes, left_ok=True, right_ok=True)
        seen: set[str] = set()
        for node, where in nodes:
            if isinstance(node, ast.Capture):
                if node.name in seen:
                    raise _error(
                        "E204",
                        f"capture `<{node.name}>` appears twice in one pattern",
                        _meta_span(where),
                        hint="give each capture its own name",
                    )
                seen.add(node.name)
        count = _count_nodes(nodes)
        if count > MAX_PATTERN_NODES:
            raise _error(
                "E205",
                f"pattern too large ({count} glob nodes; the limit is {MAX_PATTERN_NODES})",
                span,
            )
        return ast.Pattern(tuple(n for n, _ in nodes), span, nocase=nocase)

    def _check_empty_segments(self, nodes: list[tuple[ast.GlobNode, Any]], span: Span) -> None:
        seps = [isinstance(n, ast.Sep) for n, _ in nodes]
        bad = None
        if seps and seps[0]:
            bad = (nodes[0][1], "a pattern cannot start with `/`")
        elif seps and seps[-1]:
            bad = (nodes[-1][1], "a pattern cannot end with `/`")
        else:
            for i in range(1, len(seps)):
                if seps[i] and seps[i - 1]:
                    bad = (nodes[i][1], "empty segment (`//`) in a pattern")
                    break
        if bad is None:
            return
        where, message = bad
        after = (
            source_lines(self.text)[span.end_line - 1][span.end_column - 1 :] if span.line else ""
        )
        hint = "remove the extra `/`"
        if after.lstrip().startswith("except"):
            hint = 'to match a key named except, quote it: `"except"`'
        raise _error("E206", message, _meta_span(where), hint=hint)

    def _check_adjacent(self, tree: Tree) -> None:
        prev: Token | None = None
        stack: list[Any] = [tree]
        while stack:  # the tokens in source order, depth first
            node = stack.pop()
            if isinstance(node, Tree):
                stack.extend(reversed(node.children))
                continue
            if node is None:
                continue
            if prev is not None and prev.end_pos != node.start_pos:
                gap = Span(
                    prev.end_line or 1, prev.end_column or 1, node.line or 1, node.column or 1
                )
                raise _error(
                    "E104",
                    "whitespace inside a pattern",
                    gap,
                    hint='quote keys with spaces (`"my key"`), and separate patterns with `,`',
                    label="here",
                )
            prev = node

    def seq(self, children: list[Any]) -> list[tuple[ast.GlobNode, Any]]:
        out: list[tuple[ast.GlobNode, Any]] = []
        for child in children:
            if child is None:
                continue
            node = self.piece(child)
            if isinstance(node, ast.Lit) and not node.text:
                continue
            if isinstance(node, ast.Lit) and out and isinstance(out[-1][0], ast.Lit):
                prev, where = out[-1]
                assert isinstance(prev, ast.Lit)
                out[-1] = (ast.Lit(prev.text + node.text), where)
            else:
                out.append((node, child))
        return out

    def piece(self, piece: Token | Tree) -> ast.GlobNode:
        if isinstance(piece, Tree):
            return self.capture(piece) if piece.data == "capture" else self.alt(piece)
        kind = piece.type
        if kind == "LITERAL":
            return ast.Lit(str(piece))
        if kind == "STRING":
            return ast.Lit(_unescape(str(piece)[1:-1]))
        if kind == "ESCAPED":
            return ast.Lit(str(piece)[1:])
        if kind == "CLASS":
            return self.char_class(piece)
        return _SIMPLE_PIECES[kind]

    def capture(self, tree: Tree) -> ast.Capture:
        names = [c for c in tree.children if isinstance(c, Token) and c.type == "LITERAL"]
        span = _meta_span(tree)
        if not names:
            raise _error(
                "E204",
                "a capture needs a name",
                span,
                hint="write `<i>`: the name is then usable on the right side",
            )
        name = str(names[0])
        if not _NAME_RE.fullmatch(name):
            raise _error(
                "E204",
                f"capture name `{name}` is not a name",
                span,
                hint="a capture name is letters, digits and `_`, starting with a letter: `<i>`; "
                'to match the text literally, quote it: `"<' + name + '>"`',
            )
        if name in KEYWORDS or name.startswith("_"):
            raise _error(
                "E204",
                f"`{name}` cannot be a capture name",
                span,
                hint="choose another name, such as `<i>`",
            )
        return ast.Capture(name)

    def alt(self, tree: Tree) -> ast.GlobNode:
        branches = [c for c in tree.children if isinstance(c, Tree) and c.data == "branch"]
        out: list[list[tuple[ast.GlobNode, Any]]] = []
        for b in branches:
            kids = [c for c in b.children if c is not None]
            if len(kids) == 1 and isinstance(kids[0], Token) and kids[0].type == "LITERAL":
                text = str(kids[0])
                m = _RANGE_RE.match(text)
                if m:
                    rng = self.range(m.group(1), m.group(2), _meta_span(tree))
                    if len(branches) == 1:
                        return rng  # `{0..11}` is a range, not a one-way alternative
                    out.append([(rng, kids[0])])
                    continue
                if ".." in text:
                    raise _error(
                        "E202",
                        f"invalid range `{text}`",
                        _meta_span(kids[0]),
                        hint="a range is `{LO..HI}` with non-negative integers, such as "
                        '`{0..11}`; for characters use a class such as `[a-z]`; quote `".."` '
                        "to match two dots",
                    )
            nodes = self.seq(b.children)
            for node, where in nodes:
                if isinstance(node, ast.Capture) or (
                    isinstance(node, ast.Alt) and ast.capture_names((node,))
                ):
                    raise _error(
                        "E204",
                        "a capture inside `{...}`",
                        _meta_span(where),
                        hint="a capture must bind on every path the rule matches; put it "
                        "outside the braces, or write one rule per branch",
                        label="not allowed here",
                    )
                if isinstance(node, ast.GlobStar):
                    raise _error(
                        "E201",
                        "`**` inside `{...}`",
                        _meta_span(where),
                        hint="`**` must be a whole segment of the pattern itself; write two "
                        "patterns instead: `a/x/b, a/**/b`",
                        label="not allowed here",
                    )
            out.append(nodes)
        alt = ast.Alt(tuple(tuple(n for n, _ in nodes) for nodes in out))
        self._alt_parts[id(alt)] = out
        return alt

    def range(self, lo: str, hi: str, span: Span) -> ast.Range:
        for bound in (lo, hi):
            if len(bound) > 1 and bound.startswith("0"):
                raise _error(
                    "E202",
                    f"range bound `{bound}` has a leading zero",
                    span,
                    hint="write range bounds without leading zeros: `{0..11}`",
                )
            if len(bound) > MAX_RANGE_DIGITS:
                raise _error(
                    "E202", f"range bound `{bound}` has more than {MAX_RANGE_DIGITS} digits", span
                )
        a, b = int(lo), int(hi)
        if a > b:
            raise _error(
                "E202",
                f"empty range `{{{lo}..{hi}}}`: the start is greater than the end",
                span,
                hint=f"write `{{{hi}..{lo}}}`",
            )
        return ast.Range(a, b)

    def char_class(self, tok: Token) -> ast.CharClass:
        body = str(tok)[1:-1]
        if len(body) > MAX_CLASS_CHARS:
            raise _error(
                "E203",
                f"character class too long ({len(body):,} characters; the limit is "
                f"{MAX_CLASS_CHARS:,})",
                _tok_span(tok),
                hint="use ranges such as `[a-z0-9]`",
            )
        negated = False
        if len(body) > 1 and body[0] in "!^":
            negated, body = True, body[1:]
        chars: list[str] = []
        i = 0
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body):
                chars.append("\\" + body[i + 1])
                i += 2
            else:
                chars.append(body[i])
                i += 1
        ranges: list[tuple[str, str]] = []
        j = 0
        span = _tok_span(tok)
        while j < len(chars):
            c = chars[j][-1]
            if j + 2 < len(chars) and chars[j + 1] == "-":
                d = chars[j + 2][-1]
                if c > d:
                    raise _error(
                        "E203",
                        f"invalid class range `{c}-{d}`",
                        span,
                        hint=f"write the smaller character first: `{d}-{c}`",
                    )
                ranges.append((c, d))
                j += 3
            else:
                ranges.append((c, c))
                j += 1
        if any(lo <= "/" <= hi for lo, hi in ranges):
            raise _error(
                "E203",
                "a character class cannot match `/`",
                span,
                hint="`/` separates segments; use `{a,b/c}` or `**` instead",
            )
        return ast.CharClass(negated, tuple(ranges))

    def _check_globstars(
        self, nodes: list[tuple[ast.GlobNode, Any]], *, left_ok: bool, right_ok: bool
    ) -> None:
        for i, (node, where) in enumerate(nodes):
            prev_ok = left_ok if i == 0 else isinstance(nodes[i - 1][0], ast.Sep)
            next_ok = right_ok if i == len(nodes) - 1 else isinstance(nodes[i + 1][0], ast.Sep)
            if isinstance(node, ast.GlobStar) and not (prev_ok and next_ok):
                raise _error(
                    "E201",
                    "`**` inside a segment",
                    _meta_span(where),
                    hint="`**` must be a whole segment (`a/**/b`); use `*` to match within a "
                    "segment",
                    label="not a whole segment",
                )
            if isinstance(node, ast.Alt) and id(node) in self._alt_parts:
                for branch in self._alt_parts[id(node)]:
                    self._check_globstars(branch, left_ok=prev_ok, right_ok=next_ok)

    # -- expressions
    def expr(self, node: Any) -> ast.Expr:
        if isinstance(node, Token):  # pragma: no cover - the grammar wraps every atom
            raise AssertionError(node)
        kind = node.data
        span = _meta_span(node)
        ch = node.children
        if kind == "number":
            return ast.Num(self.number(ch[0]), span, str(ch[0]))
        if kind == "string":
            return ast.Str(_unescape(str(ch[0])[1:-1]), span)
        if kind == "true":
            return ast.Bool(True, span)
        if kind == "false":
            return ast.Bool(False, span)
        if kind == "none":
            return ast.NoneLit(span)
        if kind == "name":
            self._check_name(ch[0])
            return ast.Name(str(ch[0]), span)
        if kind == "binop":
            left, op, right = ch
            return ast.BinOp(str(op), self.expr(left), self.expr(right), span)
        if kind == "neg":
            return ast.Neg(self.expr(ch[1]), span)
        if kind == "compare":
            left, op, right = ch
            return ast.Compare(str(op), self.expr(left), self.expr(right), span)
        if kind in ("and_op", "or_op"):
            left, right = ch
            return ast.BoolOp(kind[:-3], self.expr(left), self.expr(right), span)
        if kind == "not_op":
            (operand,) = ch
            return ast.Not(self.expr(operand), span)
        if kind == "index":
            value, index = ch
            return ast.Index(self.expr(value), self.expr(index), span)
        if kind == "pos":
            return self.expr(ch[1])
        if kind == "list":
            items = ch[0]
            values = (
                ()
                if items is None
                else tuple(self.expr(c) for c in items.children if isinstance(c, Tree))
            )
            return ast.ListExpr(values, span)
        if kind == "call":
            name, arguments = ch
            self._check_name(name)
            args: list[ast.Expr] = []
            kwargs: list[ast.Keyword] = []
            seen: set[str] = set()
            for a in arguments.children if arguments is not None else ():
                if not isinstance(a, Tree):
                    continue
                if a.data == "kwarg":
                    kname, kvalue = a.children
                    assert isinstance(kname, Token)
                    self._check_name(kname)
                    if str(kname) in seen:
                        raise _error(
                            "E100", f"keyword argument `{kname}` given twice", _tok_span(kname)
                        )
                    seen.add(str(kname))
                    kwargs.append(ast.Keyword(str(kname), self.expr(kvalue), _meta_span(a)))
                else:
                    if kwargs:
                        raise _error(
                            "E100",
                            "positional argument after a keyword argument",
                            _meta_span(a),
                            hint="put positional arguments first",
                        )
                    args.append(self.expr(a))
            return ast.Call(str(name), tuple(args), tuple(kwargs), span, _tok_span(name))
        raise AssertionError(kind)  # pragma: no cover

    def number(self, tok: Token) -> int | float:
        text = str(tok).replace("_", "")
        span = _tok_span(tok)
        if re.fullmatch(r"[0-9]+", text):
            # Too many digits for int() (Python refuses over 4,300) means too large anyway.
            value = int(text) if len(text.lstrip("0")) <= 19 else _INT_MAX + 1
            if value > _INT_MAX:
                raise _error(
                    "E103",
                    f"integer `{tok}` is too large",
                    span,
                    hint="write it as a float, for example `1e20`",
                )
            return value
        f = float(text)
        if f == float("inf"):
            raise _error("E103", f"number `{tok}` is too large", span)
        return f


def _leftmost(e: ast.Expr) -> ast.Expr:
    while isinstance(e, ast.BinOp) and e.op in ("*", "/"):
        e = e.left
    return e


def _lr_factor(e: ast.Expr) -> ast.Expr | None:
    """``X`` for a setting written ``lr * X`` (``lr * a * b`` is ``lr * (a * b)``, and
    ``lr / a`` is ``lr * (1 / a)``), else ``None``."""
    if not (isinstance(e, ast.BinOp) and e.op in ("*", "/")):
        return None
    if isinstance(e.left, ast.Name) and e.left.id == ast.LR_SETTING:
        if e.op == "*":
            return e.right
        return ast.BinOp("/", ast.Num(1, e.right.span, "1"), e.right, e.right.span)
    inner = _lr_factor(e.left)
    if inner is None:
        return None
    return ast.BinOp(
        e.op,
        inner,
        e.right,
        Span(inner.span.line, inner.span.column, e.span.end_line, e.span.end_column, e.span.file),
    )


def _is_comma(node: Any) -> bool:
    return isinstance(node, Token) and node.type == "COMMA"


def _count_nodes(nodes: list[tuple[ast.GlobNode, Any]]) -> int:
    total = 0
    stack: list[ast.GlobNode] = [n for n, _ in nodes]
    while stack:
        n = stack.pop()
        total += 1
        if isinstance(n, ast.Alt):
            for b in n.branches:
                stack.extend(b)
    return total
