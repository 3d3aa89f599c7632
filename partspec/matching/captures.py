"""Captures: which text each ``<name>`` of a pattern binds on a path.

A pattern is compiled into a program for a Pike VM (threads in priority order, each
carrying its capture positions), so extraction is linear in path length times
pattern size; where a path can match in several ways, every wildcard takes as little
as it can, from left to right. Results are memoised by the leading keys that decide
them, when a fixed number does (``encoder/layer_<i>/**``: two).

>>> import partspec
>>> p = partspec.parse_syntax("**/layer_<i>/<name> -> frozen").rules[0].patterns[0]
>>> extract_captures(p, ["enc", "layer_3", "kernel"])
{'i': '3', 'name': 'kernel'}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from partspec._caches import register_lru
from partspec.language import ast
from partspec.matching.globs import (
    _class_has,
    compile_patterns,
    globstar_at,
    matching_nodes,
    range_classes,
)

__all__ = ["MAX_EXTRACTORS", "capture_keys", "extract_captures"]

# Instructions of the capture program (a Pike VM: threads in priority order, each
# carrying its capture positions; linear in path length times program size).
_I_CHAR, _I_ANY, _I_CLASS, _I_SEP, _I_ANYSEP, _I_SPLIT, _I_JMP, _I_SAVE, _I_MATCH = range(9)


def _program(nodes: Sequence[ast.GlobNode]) -> tuple[list[tuple[int, Any, Any]], list[str]]:
    """Compile a pattern into a Pike VM program; every wildcard prefers matching less."""
    prog: list[tuple[int, Any, Any]] = []
    names: list[str] = []

    def emit(op: int, a: Any = None, b: Any = None) -> int:
        prog.append((op, a, b))
        return len(prog) - 1

    def patch(at: int, op: int, a: Any, b: Any = None) -> None:
        prog[at] = (op, a, b)

    def lazy_loop(body: Callable[[], object]) -> None:
        # L: split(exit, body); body; jmp L; exit:
        split = emit(_I_SPLIT)
        body()
        emit(_I_JMP, split)
        patch(split, _I_SPLIT, len(prog), split + 1)

    def seq(nodes: Sequence[ast.GlobNode]) -> None:
        i, n = 0, len(nodes)
        while i < n:
            node = nodes[i]
            star = globstar_at(nodes, i)
            if star == "/**":
                # Trailing "/**": zero or more "/segment".
                def slash_segment() -> None:
                    emit(_I_SEP)
                    lazy_loop(lambda: emit(_I_ANY))

                lazy_loop(slash_segment)
                i += 2
                continue
            if star is not None:
                if star == "**/":
                    # "**/": zero or more "segment/".
                    def segment() -> None:
                        lazy_loop(lambda: emit(_I_ANY))
                        emit(_I_SEP)

                    lazy_loop(segment)
                    i += 2
                else:
                    lazy_loop(lambda: emit(_I_ANYSEP))
                    i += 1
                continue
            if isinstance(node, ast.Lit):
                for ch in node.text:
                    emit(_I_SEP) if ch == "/" else emit(_I_CHAR, ch)
            elif isinstance(node, ast.Sep):
                emit(_I_SEP)
            elif isinstance(node, ast.Star):
                lazy_loop(lambda: emit(_I_ANY))
            elif isinstance(node, ast.QMark):
                emit(_I_ANY)
            elif isinstance(node, ast.CharClass):
                emit(_I_CLASS, (node.negated, node.ranges))
            elif isinstance(node, ast.Capture):
                k = len(names)
                names.append(node.name)
                emit(_I_SAVE, 2 * k)
                emit(_I_ANY)
                lazy_loop(lambda: emit(_I_ANY))
                emit(_I_SAVE, 2 * k + 1)
            elif isinstance(node, ast.Alt):
                alternatives(node.branches)
            else:
                assert isinstance(node, ast.Range)
                alternatives(
                    [
                        tuple(ast.CharClass(False, ((str(lo), str(hi)),)) for lo, hi in classes)
                        for classes in range_classes(node.lo, node.hi)
                    ]
                )
            i += 1

    def alternatives(branches: Sequence[Sequence[ast.GlobNode]]) -> None:
        jumps: list[int] = []
        for j, branch in enumerate(branches):
            if j < len(branches) - 1:
                split = emit(_I_SPLIT)
                seq(branch)
                jumps.append(emit(_I_JMP))
                patch(split, _I_SPLIT, split + 1, len(prog))
            else:
                seq(branch)
        for at in jumps:
            patch(at, _I_JMP, len(prog))

    seq(nodes)
    emit(_I_MATCH)
    return prog, names


def _has_sep(nodes: Iterable[ast.GlobNode]) -> bool:
    for n in nodes:
        if isinstance(n, ast.Sep) or (isinstance(n, ast.Lit) and "/" in n.text):
            return True
        if isinstance(n, ast.Alt) and any(_has_sep(b) for b in n.branches):
            return True
    return False


def _prefix(nodes: tuple[ast.GlobNode, ...]) -> tuple[tuple[ast.GlobNode, ...], int] | None:
    """The part of a pattern that decides its captures, and how many segments it spans.

    When every capture comes before the first ``**`` and nothing before it can span a
    varying number of segments, the captures depend only on that many leading
    segments of a matching path: ``encoder/layer_<i>/**`` needs two. ``None``
    otherwise (``**/layer_<i>/**``).
    """
    idx = 0
    for idx, n in enumerate(nodes):  # noqa: B007 - idx is used after the loop
        if isinstance(n, ast.GlobStar):
            break
        if isinstance(n, ast.Alt) and any(_has_sep(b) for b in n.branches):
            return None
    else:
        return None
    head, tail = nodes[:idx], nodes[idx:]
    if not head or any(isinstance(n, ast.Capture) for n in tail):
        return None
    if isinstance(head[-1], ast.Sep):
        head = head[:-1]
    seps = sum(
        1 if isinstance(n, ast.Sep) else n.text.count("/") if isinstance(n, ast.Lit) else 0
        for n in head
    )
    return head, seps + 1


_Compiled = tuple[list[tuple[int, Any, Any]], list[str]]
_MISSING: Any = object()
#: Entries per pattern in the memo of captures by leading segments.
_MEMO_LIMIT = 10_000


class _Extractor:
    """What capture extraction keeps per pattern, built on first use.

    Either ``keys`` leading keys decide the captures (``head`` is the program of the
    pattern's part before its first ``**``; ``whole`` checks that the rest matches
    too, and ``memo`` holds the results by leading keys), or ``keys`` is ``None`` and
    ``program`` runs over every whole path.
    """

    __slots__ = ("head", "keys", "memo", "nodes", "program", "whole")

    def __init__(self, pattern: ast.Pattern):
        self.nodes = matching_nodes(pattern)
        found = _prefix(self.nodes)
        self.keys: int | None = None
        self.memo: dict[tuple[str, ...], dict[str, str] | None] = {}
        self.program: _Compiled | None = None
        if found is None:
            self.program = _program(self.nodes)
        else:
            self.head = _program(found[0])
            self.keys = found[1]
            self.whole = compile_patterns([pattern])

    def extract(self, segments: Sequence[str], matched: bool = False) -> dict[str, str] | None:
        if self.program is not None:
            return _run(self.program, "/".join(segments))
        if not matched and not self.whole.match(segments):
            return None
        k = self.keys
        assert k is not None
        # The leading keys fix the leading segments, even if a key holds a "/".
        lead = tuple(segments[:k])
        got = self.memo.get(lead, _MISSING)  # one lookup: another thread may clear it
        if got is _MISSING:
            if len(self.memo) >= _MEMO_LIMIT:
                self.memo.clear()
            head = "/".join("/".join(lead).split("/", k)[:k])
            got = self.memo[lead] = _run(self.head, head)
        return None if got is None else dict(got)


#: Patterns whose capture programs (and memos) are kept; the least recently used go.
MAX_EXTRACTORS = 256


@functools.lru_cache(maxsize=MAX_EXTRACTORS)
def _extractor(pattern: ast.Pattern) -> _Extractor:
    return _Extractor(pattern)


register_lru(
    "matching.extractors",
    _extractor,
    owner=__name__,
    what="capture programs and their memos, per pattern",
)


def extract_captures(
    pattern: ast.Pattern, segments: Sequence[str], *, matched: bool = False
) -> dict[str, str] | None:
    """The text each ``<name>`` of ``pattern`` binds on a path, or ``None`` if it does not match.

    Where a path can match in several ways, every wildcard (``*``, ``**``, and the
    captures themselves) takes as little as it can, from left to right: ``<a>_<b>``
    on ``x_y_z`` binds ``a = "x"`` and ``b = "y_z"``, and ``**/layer_<i>/**`` binds
    the first ``layer_`` segment's number. Linear in path length times pattern size.

    >>> import partspec
    >>> p = partspec.parse_syntax("**/layer_<i>/<name> -> frozen").rules[0].patterns[0]
    >>> extract_captures(p, ["enc", "layer_3", "kernel"])
    {'i': '3', 'name': 'kernel'}
    >>> extract_captures(p, ["enc", "kernel"]) is None
    True

    ``matched=True`` says the caller knows the pattern matches the whole path (a
    matcher said so): only the captures are read.
    """
    return _extractor(pattern).extract(segments, matched)


def capture_keys(pattern: ast.Pattern) -> int | None:
    """How many leading keys of a matching path decide ``pattern``'s captures.

    ``None`` when no fixed number does (a capture after a ``**``, as in
    ``**/layer_<i>/**``).

    >>> import partspec
    >>> capture_keys(partspec.parse_syntax("enc/layer_<i>/** -> frozen").rules[0].patterns[0])
    2
    """
    return _extractor(pattern).keys


def _run(compiled: _Compiled, text: str) -> dict[str, str] | None:
    """Run a capture program over a path's text."""
    prog, names = compiled
    clist: list[tuple[int, tuple[int, ...]]] = []
    seen: set[int] = set()

    def add(
        pc: int, caps: tuple[int, ...], out: list[tuple[int, tuple[int, ...]]], pos: int
    ) -> None:
        stack = [(pc, caps)]
        while stack:
            pc, caps = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            op, a, b = prog[pc]
            if op == _I_JMP:
                stack.append((a, caps))
            elif op == _I_SPLIT:
                stack.append((b, caps))  # pushed first: explored after ``a``
                stack.append((a, caps))
            elif op == _I_SAVE:
                stack.append((pc + 1, (*caps[:a], pos, *caps[a + 1 :])))
            else:
                out.append((pc, caps))

    add(0, (-1,) * (2 * len(names)), clist, 0)
    for pos, ch in enumerate(text):
        if not clist:
            return None
        nlist: list[tuple[int, tuple[int, ...]]] = []
        seen = set()
        for pc, caps in clist:
            op, a, _ = prog[pc]
            if ch == "/":
                ok = op in (_I_SEP, _I_ANYSEP)
            elif op == _I_CHAR:
                ok = a == ch
            elif op in (_I_ANY, _I_ANYSEP):
                ok = True
            elif op == _I_CLASS:
                ok = _class_has(a, ch)
            else:
                ok = False
            if ok:
                add(pc + 1, caps, nlist, pos + 1)
        clist = nlist
    for pc, caps in clist:
        if prog[pc][0] == _I_MATCH:
            return {name: text[caps[2 * k] : caps[2 * k + 1]] for k, name in enumerate(names)}
    return None
