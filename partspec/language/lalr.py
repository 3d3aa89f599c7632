"""A lean LALR driver over the Lark parser's own tables, lexers and tree builders.

Lark's LALR loop is general: a lexer thread, a post-lexer generator, a parser-state
object, a :class:`~lark.Token` built through its checking constructor, line counting
on every token. For valid text, :meth:`Driver.parse` does the same work in one loop: the same
parse table, the same contextual lexer's regular expressions (chosen by the parser
state, exactly as Lark's contextual lexer chooses them), the same token and rule
callbacks, so it returns the same tree, with the same token positions. Where the
text is not valid, it raises the exception Lark would raise at the same place
(:class:`~lark.exceptions.UnexpectedToken` with the terminals the state expects, or
:class:`~lark.exceptions.UnexpectedCharacters`, after trying the other states'
terminals as Lark's contextual lexer does), which the diagnostics are built from. On
what it does not handle itself (brackets nested too deep, which Lark's post-lexer
reports) it raises :class:`Fallback`, and the caller parses the text again with Lark.
Tests compare the two, trees and errors, on generated, mutated and random specs
(``tests/test_lalr.py``).

>>> from partspec.language.grammar import collect_comments, driver, lark_parser
>>> text = "backbone/** -> frozen  # keep\\nhead/* -> adam(5e-3)\\n"
>>> with collect_comments() as comments:
...     tree = driver().parse(text, "start")
>>> tree == lark_parser().parse(text, start="start"), [str(c) for c in comments]
(True, ['# keep'])
>>> driver().parse("head/* -> adam(5e-3", "start")
Traceback (most recent call last):
...
lark.exceptions.UnexpectedToken: Unexpected token Token('$END', '') ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import BasicLexer, ContextualLexer
from lark.parse_tree_builder import ExpandSingleChild
from lark.parsers.lalr_analysis import Shift

__all__ = ["Driver", "Fallback", "driver"]


class Fallback(Exception):
    """The text is not one :func:`Driver.parse` takes as is: parse it with Lark."""


class Driver:
    """Parses with a built :class:`~lark.Lark` (LALR, contextual lexer) in one loop.

    Args:
      lark: the parser whose tables and lexers are used.
      callbacks: the tree builder's callback per rule, as Lark made them (unwrapped).
      node_class: the tree class whose new nodes get their first and last tokens:
        ``start``/``end`` span the node's own symbols, ``cstart``/``cend`` also the
        tokens of rules inlined into it (see ``partspec.language.grammar``).
      open_brackets: token types that open a bracket (the post-lexer's).
      close_brackets: token types that close one.
      separator: the statement separator's token type, dropped inside brackets
        unless its text is ``;``.
      max_nesting: deeper brackets make the driver fall back (Lark's post-lexer
        raises the error).
    """

    def __init__(
        self,
        lark: Lark,
        *,
        callbacks: dict[Any, Callable[[Any], Any]],
        node_class: type,
        open_brackets: frozenset[str],
        close_brackets: frozenset[str],
        separator: str,
        max_nesting: int,
    ):
        frontend = lark.parser
        lexer = getattr(frontend.lexer, "lexer", frontend.lexer)  # inside the post-lexer
        if not isinstance(lexer, ContextualLexer):
            raise TypeError("the driver needs Lark's contextual lexer")
        lalr = frontend.parser.parser
        table = lalr.parse_table
        self._start_states: dict[str, int] = table.start_states
        self._end_states: dict[str, int] = table.end_states
        self._callbacks = callbacks
        self._node = node_class
        self._open = open_brackets
        self._close = close_brackets
        self._sep = separator
        self._max_nesting = max_nesting
        # Per parser state: (compiled alternations, ignored types, newline types,
        # token callbacks), from the contextual lexer's own per-state lexer.
        self._scanners: dict[int, tuple[Any, ...]] = {}
        by_lexer: dict[int, tuple[Any, ...]] = {}
        for state, basic in lexer.lexers.items():
            if not isinstance(basic, BasicLexer):
                raise TypeError("the driver needs Lark's basic per-state lexers")
            key = id(basic)
            if key not in by_lexer:
                scanner = basic.scanner  # builds it, with the callbacks
                by_lexer[key] = (
                    tuple(scanner._mres),
                    basic.ignore_types,
                    basic.newline_types,
                    dict(basic.callback),
                    # What Lark's error says this state's lexer would have taken.
                    frozenset(scanner.allowed_types - basic.ignore_types) or {"<END-OF-FILE>"},
                )
            self._scanners[state] = by_lexer[key]
        root = lexer.root_lexer
        if not isinstance(root, BasicLexer):
            raise TypeError("the driver needs Lark's basic root lexer")
        self._root = (tuple(root.scanner._mres), dict(root.callback))
        # The table, recoded for the loop: per state and symbol, the next state (an
        # int) for a shift, or a reduction (expansion length, callback, origin name).
        # A rule of one symbol whose callback only unwraps a single child
        # (`?rule: other`) gets no callback: the child stays on the stack, as the
        # callback would return it.
        reductions: dict[Any, tuple[int, Callable[[Any], Any] | None, str]] = {}
        self._table: dict[int, dict[str, Any]] = {}
        # (state below, top state, lookahead) -> the top after its unit reductions.
        self._units: dict[tuple[int, int, str], int] = {}
        for state, acts in table.states.items():
            row: dict[str, Any] = {}
            for symbol, (action, arg) in acts.items():
                if action is Shift:
                    if type(arg) is not int:
                        raise TypeError("the driver needs states numbered by ints")
                    row[symbol] = arg
                    continue
                if arg not in reductions:
                    callback = callbacks[arg]
                    size = len(arg.expansion)
                    unit = size == 1 and type(callback) is ExpandSingleChild
                    reductions[arg] = (size, None if unit else callback, arg.origin.name)
                row[symbol] = reductions[arg]
            self._table[state] = row

    def parse(self, text: str, start: str) -> Any:
        """The tree Lark would build for ``text``.

        Raises:
          UnexpectedToken, UnexpectedCharacters: Lark's error for invalid text.
          Fallback: brackets nested too deep; Lark's parser reports it.
        """
        table = self._table
        units = self._units
        scanners = self._scanners
        callbacks = self._callbacks
        node: Any = self._node
        opens, closes, sep = self._open, self._close, self._sep
        max_nesting = self._max_nesting
        end_state = self._end_states[start]
        state_stack = [self._start_states[start]]
        value_stack: list[Any] = []
        pos = 0
        line = 1
        line_start = 0
        depth = 0
        n = len(text)
        last: Token | None = None
        new_str = str.__new__
        while True:
            if pos < n:
                mres, ignore, newlines, tok_callbacks, allowed = scanners[state_stack[-1]]
                for mre in mres:
                    m = mre.match(text, pos)
                    if m is not None:
                        break
                else:
                    raise self._unexpected_characters(
                        text, pos, line, pos - line_start + 1, allowed, last
                    )
                value = m.group(0)
                type_ = m.lastgroup
                start_pos = pos
                start_line = line
                col = pos - line_start + 1
                pos = m.end()
                if type_ in newlines:
                    count = value.count("\n")
                    if count:
                        line += count
                        line_start = start_pos + value.rindex("\n") + 1
                ignored = type_ in ignore
                if ignored and type_ not in tok_callbacks:
                    continue
                tok = new_str(Token, value)  # Token() checks arguments the driver has right
                tok.type = type_
                tok.value = value
                tok.start_pos = start_pos
                tok.line = start_line
                tok.column = col
                tok.end_line = line
                tok.end_column = pos - line_start + 1
                tok.end_pos = pos
                if type_ in tok_callbacks:
                    tok = tok_callbacks[type_](tok)
                if ignored:
                    continue
                type_ = tok.type
                # The post-lexer: bracket depth, separators inside brackets.
                if type_ in opens:
                    depth += 1
                    if depth > max_nesting:
                        raise Fallback
                elif type_ in closes:
                    if depth:
                        depth -= 1
                elif type_ == sep and depth and value != ";":
                    continue
                last = tok
                is_end = False
            else:
                tok = (
                    Token.new_borrow_pos("$END", "", last)
                    if last is not None
                    else Token("$END", "", 0, 1, 1)
                )
                type_ = "$END"
                is_end = True
            while True:
                try:
                    act = table[state_stack[-1]][type_]
                except KeyError:
                    # Lark's own error: the terminals this state has an action for.
                    expected = {t for t in table[state_stack[-1]] if t.isupper()}
                    raise UnexpectedToken(tok, expected) from None
                if type(act) is int:
                    if is_end:
                        raise Fallback
                    state_stack.append(act)
                    value_stack.append(tok if type_ not in callbacks else callbacks[type_](tok))
                    break
                size, callback, origin = act
                if callback is None:
                    if not is_end:
                        # A chain of unit reductions (`expr` down to `atom`) replaces
                        # the top state only: where it ends depends on the state
                        # below, the top and the lookahead, so it is followed once.
                        key = (state_stack[-2], state_stack[-1], type_)
                        top = units.get(key)
                        if top is None:
                            top = units[key] = self._unit_chain(*key)
                        state_stack[-1] = top
                        continue
                    del state_stack[-1]
                    new_state = table[state_stack[-1]][origin]
                    state_stack.append(new_state)
                    if new_state == end_state:
                        return value_stack[-1]
                    continue
                if size:
                    children = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    children = []
                res: Any = callback(children)
                if type(res) is node:
                    # Its first and last tokens, through the nodes inlined into it.
                    head = tail = None
                    for c in children:
                        head = c.cstart if type(c) is node else c
                        if head is not None:
                            break
                    for c in reversed(children):
                        tail = c.cend if type(c) is node else c
                        if tail is not None:
                            break
                    if head is not None:
                        if res.start is None:
                            res.start = head
                        res.cstart = head
                    if tail is not None:
                        if res.end is None:
                            res.end = tail
                        res.cend = tail
                new_state = table[state_stack[-1]][origin]
                state_stack.append(new_state)
                value_stack.append(res)
                if is_end and new_state == end_state:
                    return res

    def _unit_chain(self, below: int, top: int, lookahead: str) -> int:
        """The top state after every unit reduction that ``lookahead`` makes in a row
        from ``top`` (above ``below``); the loop then takes the next action there."""
        table = self._table
        while True:
            act = table[top].get(lookahead)
            if type(act) is not tuple or act[1] is not None:
                return top
            top = table[below][act[2]]

    def _unexpected_characters(
        self, text: str, pos: int, line: int, col: int, allowed: Any, last: Token | None
    ) -> UnexpectedInput:
        """Lark's error where no terminal of the state matches: as its contextual lexer
        does, an :class:`UnexpectedToken` if a terminal of another state matches there
        (what the text has is then named), :class:`UnexpectedCharacters` if none does."""
        error = UnexpectedCharacters(
            text,
            pos,
            line,
            col,
            allowed=allowed,
            token_history=None if last is None else [last],
        )
        mres, callbacks = self._root
        for mre in mres:
            m = mre.match(text, pos)
            if m is not None:
                break
        else:
            return error
        value = m.group(0)
        tok = Token(m.lastgroup, value, pos, line, col)
        end_line = line + value.count("\n")
        tok.end_line = end_line
        tok.end_column = col + len(value) if end_line == line else len(value) - value.rindex("\n")
        tok.end_pos = m.end()
        if tok.type in callbacks:
            tok = callbacks[tok.type](tok)
        return UnexpectedToken(tok, allowed, token_history=[last])


def driver(lark: Lark, **options: Any) -> Driver | None:
    """A :class:`Driver` for ``lark``, or None when its internals are not the expected ones."""
    try:
        return Driver(lark, **options)
    except (AttributeError, TypeError, KeyError):  # pragma: no cover - another lark
        return None
