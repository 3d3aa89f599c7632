"""The grammar, loaded once by a factory: Lark tables shipped as data, never a cache.

``grammar/pspec.lark`` is the grammar (shipped inside the wheel). Its LALR tables are
generated into ``parser_tables.json`` (``python -m partspec.language``),
renumbered so that the file is the same every run, and loaded as JSON in about 2 ms:
nothing is analysed at start-up (about 100 ms) and nothing is unpickled, unlike Lark's
``cache=True``, which reads a pickle from the shared temporary directory that another
local user could have written. A grammar edited without regenerating the tables is
analysed afresh, never cached; ``tests/test_parser_tables.py`` checks the tables.

:func:`lark_parser` (Lark's own parser, the reference) and :func:`driver` (the lean
loop every parse goes through) are the factories;
the parser module is their only user.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lark import Lark, Token, Tree, __version__
from lark.grammar import Rule
from lark.lexer import TerminalDef

from partspec._caches import register_lru
from partspec.language.lalr import Driver
from partspec.language.lalr import driver as make_driver

__all__ = [
    "LARK_OPTIONS",
    "MAX_NESTING",
    "TABLES",
    "NestingError",
    "build",
    "collect_comments",
    "comments_sink",
    "driver",
    "grammar_digest",
    "grammar_text",
    "lark_parser",
    "load_tables",
    "render",
]

#: Brackets, braces and operators may nest this deep; deeper is error E102.
MAX_NESTING = 100
#: Where the generated tables live, inside the package.
TABLES = Path(__file__).resolve().parent / "parser_tables.json"

_comments: contextvars.ContextVar[list[Token]] = contextvars.ContextVar("_comments")


@contextlib.contextmanager
def collect_comments() -> Iterator[list[Token]]:
    """The comment tokens the lexer meets while the block parses (Lark drops them)."""
    sink: list[Token] = []
    token = _comments.set(sink)
    try:
        yield sink
    finally:
        _comments.reset(token)


def comments_sink() -> list[Token] | None:
    """Where the comments of the parse in progress go (None outside :func:`collect_comments`)."""
    return _comments.get(None)


def grammar_text() -> str:
    """The text of the Lark grammar, as shipped inside the package."""
    here = Path(__file__).resolve().parent
    packaged = here / "grammar" / "pspec.lark"  # inside an installed wheel
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # A source checkout (or an editable install): the grammar lives at the top level.
    return (here.parents[1] / "grammar" / "pspec.lark").read_text(encoding="utf-8")


def _on_comment(tok: Token) -> Token:
    sink = _comments.get(None)
    if sink is not None:
        sink.append(tok)
    return tok


class NestingError(Exception):
    """Brackets nested more than :data:`MAX_NESTING` deep (the post-lexer stops there)."""

    def __init__(self, tok: Token):
        self.tok = tok


class _PostLex:
    """Drops newlines inside brackets and bounds bracket nesting."""

    always_accept = ("_SEP",)
    _OPEN = frozenset({"_LPAR", "_LSQB", "LBRACE"})
    _CLOSE = frozenset({"_RPAR", "_RSQB", "RBRACE"})

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        for tok in stream:
            if tok.type in self._OPEN:
                depth += 1
                if depth > MAX_NESTING:
                    raise NestingError(tok)
            elif tok.type in self._CLOSE:
                depth = max(0, depth - 1)
            elif tok.type == "_SEP" and depth > 0 and tok.value != ";":
                continue
            yield tok


class _Node(Tree):
    """A parse-tree node that knows its first and last tokens (set by the driver).

    ``start``/``end`` span the node's own symbols; ``cstart``/``cend`` (its
    "container") also cover the tokens of rules that were inlined into it, such as the
    parentheses around an expression, exactly as Lark's ``propagate_positions``
    computes ``meta`` (which costs a third of a parse). Nodes built by Lark itself
    carry ``meta`` instead.
    """

    # Class defaults: most nodes are made and thrown away by inlining, so they are
    # not set in ``__init__`` (Tree's own).
    start: Token | None = None
    end: Token | None = None
    cstart: Token | None = None
    cend: Token | None = None


def _load(positions: bool) -> Lark:
    """A Lark parser from the tables generated into the package.

    Nothing is read from (or written to) a cache outside the package: Lark's own
    ``cache=True`` unpickles a file from the shared temporary directory. When the
    grammar no longer matches the tables (a grammar edited in a source checkout), it
    is analysed afresh (about 100 ms), never cached.
    """
    options = {
        "postlex": _PostLex(),
        "lexer_callbacks": {"COMMENT": _on_comment},
        "tree_class": _Node,
        "propagate_positions": positions,
    }
    grammar = grammar_text()
    try:
        tables = load_tables(TABLES.read_text(encoding="utf-8"))
        if tables["grammar_sha256"] == grammar_digest(grammar):
            return Lark._load_from_dict(tables["data"], tables["memo"], **options)
    except Exception:  # pragma: no cover - missing tables, or a lark that reads them otherwise
        pass
    return build(grammar, **options)


@functools.cache
def lark_parser() -> Lark:
    """Lark's own parser, built once, with Lark's own position tracking.

    The reference the :func:`driver` is tested against; it parses what the driver
    leaves to it (brackets nested too deep, or everything under a lark whose
    internals the driver does not know).
    """
    return _load(positions=True)


@functools.cache
def driver() -> Driver | None:
    """The lean driver over the same tables (None where it cannot be built).

    It parses valid text to the tree :func:`lark_parser` builds, with the same spans,
    and raises the error Lark raises for invalid text, in less than half the time;
    where it raises :class:`~partspec.language.lalr.Fallback` the caller parses with
    :func:`lark_parser`. It runs on a Lark of its own, without ``propagate_positions``,
    whose tree-building callbacks it calls directly.
    """
    lark = _load(positions=False)
    callbacks = getattr(lark, "_callbacks", None)
    if not isinstance(callbacks, dict):  # pragma: no cover - a lark whose internals moved
        return None
    return make_driver(
        lark,
        callbacks=callbacks,
        node_class=_Node,
        open_brackets=_PostLex._OPEN,
        close_brackets=_PostLex._CLOSE,
        separator="_SEP",
        max_nesting=MAX_NESTING,
    )


#: The options the grammar is analysed with (the parser adds its post-lexer and the
#: comment callback, which are code, when it loads the tables).
LARK_OPTIONS = {
    "start": ["start", "selector"],
    "parser": "lalr",
    "lexer": "contextual",
    "propagate_positions": True,
    "maybe_placeholders": True,
}
#: Options that hold code: never part of the generated data.
_CODE_OPTIONS = ("postlex", "lexer_callbacks", "transformer", "tree_class", "edit_terminals")


def grammar_digest(text: str) -> str:
    """The SHA-256 of the grammar text the tables were generated from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build(grammar: str, **options: object) -> Lark:
    """Analyse ``grammar`` (slow: about 100 ms); ``options`` add to or override the defaults."""
    return Lark(grammar, **{**LARK_OPTIONS, **options})


def _canonical(table: dict[str, Any]) -> dict[str, Any]:
    """The parse table with states and tokens numbered in a fixed order.

    Lark numbers them in the order of sets of objects hashed by identity, which
    differs from run to run; renumbering (tokens by name, states breadth-first from
    the start states) makes the generated file the same every time.
    """
    names = table["tokens"]
    token_id = {name: i for i, name in enumerate(sorted(names.values()))}
    states = table["states"]
    order: dict[int, int] = {}
    queue = [table["start_states"][k] for k in sorted(table["start_states"])]
    while queue:
        state = queue.pop(0)
        if state in order:
            continue
        order[state] = len(order)
        for _tok, (action, arg) in sorted(states[state].items(), key=lambda kv: names[kv[0]]):
            if action == 0:
                queue.append(arg)
    for state in states:  # unreachable states (none expected) keep a number too
        order.setdefault(state, len(order))

    def entry(action: int, arg: Any) -> tuple[int, Any]:
        return (action, order[arg]) if action == 0 else (action, arg)

    return {
        "tokens": {i: name for name, i in token_id.items()},
        "states": {
            order[s]: {
                token_id[names[t]]: entry(*act)
                for t, act in sorted(acts.items(), key=lambda kv: names[kv[0]])
            }
            for s, acts in sorted(states.items(), key=lambda kv: order[kv[0]])
        },
        "start_states": {k: order[v] for k, v in sorted(table["start_states"].items())},
        "end_states": {k: order[v] for k, v in sorted(table["end_states"].items())},
    }


def render(grammar: str) -> str:
    """The text of ``parser_tables.json`` for ``grammar`` (the same text every run)."""
    # The post-lexer's `always_accept` shapes the tables, so analyse with it.
    data, memo = build(grammar, postlex=_PostLex()).memo_serialize([TerminalDef, Rule])
    data["options"] = {k: v for k, v in data["options"].items() if k not in _CODE_OPTIONS}
    data["parser"]["parser"] = _canonical(data["parser"]["parser"])
    doc = {
        "generator": f"python -m partspec.language (lark {__version__}); do not edit",
        "grammar_sha256": grammar_digest(grammar),
        "data": data,
        "memo": memo,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n"


_INT_KEY = re.compile(r"-?[0-9]+")


def _int_keys(pairs: list[tuple[str, Any]]) -> dict[Any, Any]:
    # JSON object keys are text; Lark's state, token and memo numbers are ints.
    return {int(k) if _INT_KEY.fullmatch(k) else k: v for k, v in pairs}


def load_tables(text: str) -> dict[str, Any]:
    """The tables from the text of ``parser_tables.json``."""
    doc: dict[str, Any] = json.loads(text, object_pairs_hook=_int_keys)
    return doc


register_lru("language.parser", lark_parser, owner=__name__, what="the Lark parser, built once")
register_lru("language.driver", driver, owner=__name__, what="the lean LALR driver, built once")
