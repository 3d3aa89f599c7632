"""Generates ``partspec/parser_tables.json``: the LALR tables of ``grammar/pspec.lark``.

The parser loads these tables as JSON data (about 2 ms) instead of analysing the
grammar at start-up (about 100 ms) and instead of Lark's ``cache=True``, which
unpickles a file from the shared temporary directory: a file another local user could
have written. Nothing here is ever unpickled. ``tests/test_parser_tables.py`` checks
that the committed tables are what this module generates from the grammar; after
editing the grammar, run::

    python -m partspec.language._parsergen
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from lark import Lark, __version__
from lark.grammar import Rule
from lark.lexer import TerminalDef

__all__ = ["LARK_OPTIONS", "TABLES", "build", "grammar_digest", "load_tables", "render"]

#: Where the generated tables live, inside the package.
TABLES = Path(__file__).resolve().parent / "parser_tables.json"

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
    from partspec.language.parser import _PostLex

    # The post-lexer's `always_accept` shapes the tables, so analyse with it.
    data, memo = build(grammar, postlex=_PostLex()).memo_serialize([TerminalDef, Rule])
    data["options"] = {k: v for k, v in data["options"].items() if k not in _CODE_OPTIONS}
    data["parser"]["parser"] = _canonical(data["parser"]["parser"])
    doc = {
        "generator": f"python -m partspec.language._parsergen (lark {__version__}); do not edit",
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


if __name__ == "__main__":  # pragma: no cover
    from partspec.language.parser import grammar_text

    TABLES.write_text(render(grammar_text()), encoding="utf-8")
    print(f"wrote {TABLES}")
