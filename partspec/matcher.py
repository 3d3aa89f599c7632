"""Glob matching over parameter paths, linear in path length times pattern size.

Compilation and matching are separate (as in pathspec): :func:`compile_rules`
turns every rule's patterns into one Thompson NFA over the characters of a path,
with ``/`` as a separator symbol distinct from any character of a key. A
:class:`Matcher` simulates that NFA as a lazily built DFA: each DFA state is a
set of NFA states, built at most once per distinct path prefix, so matching
never backtracks and a tree's shared prefixes are matched once.

Braces and ranges are not multiplied out: ``{a,b}`` is one fork in the NFA and
``{0..100000}`` becomes a few digit classes.

>>> import partspec
>>> from partspec.matcher import compile_patterns
>>> m = compile_patterns([partspec.parse("a/** -> frozen").rules[0].patterns[0]])
>>> m.match(["a", "b", "c"]), m.match(["b"])
((0,), ())
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from partspec.language import ast

__all__ = [
    "GROUP_SIZE",
    "Matcher",
    "capture_keys",
    "collapse_globstars",
    "compile_patterns",
    "compile_rules",
    "extract_captures",
    "range_classes",
]

# Edge kinds.
_CHAR, _ANY, _CLASS, _SEP = 0, 1, 2, 3
#: The separator symbol fed to the DFA between two keys.
SEP = None


def _globstar_at(nodes: Sequence[ast.GlobNode], i: int) -> str | None:
    """Which ``**`` construct starts at ``nodes[i]``, if any.

    ``"/**"`` (a trailing ``/**``: zero or more ``/segment``), ``"**/"`` (zero or more
    ``segment/``) or ``"**"`` (any path at all); the first consumes two nodes.
    """
    node, n = nodes[i], len(nodes)
    if (
        isinstance(node, ast.Sep)
        and i == n - 2
        and i > 0
        and isinstance(nodes[i + 1], ast.GlobStar)
    ):
        return "/**"
    if isinstance(node, ast.GlobStar):
        return "**/" if i + 1 < n and isinstance(nodes[i + 1], ast.Sep) else "**"
    return None


def collapse_globstars(nodes: Sequence[ast.GlobNode]) -> tuple[ast.GlobNode, ...]:
    """``nodes`` with each run of ``**`` segments (``**/**/**``) written as one ``**``.

    Zero or more segments followed by zero or more segments are zero or more
    segments; without this, ``a/**/**`` asked for a ``/`` after ``a`` and did not
    match ``a``, which ``a/**`` does. Both matchers compile the collapsed form.

    >>> collapse_globstars((ast.Lit("a"), ast.Sep(), ast.GlobStar(), ast.Sep(), ast.GlobStar()))
    (Lit(text='a'), Sep(), GlobStar())
    """
    out: list[ast.GlobNode] = []
    for node in nodes:
        if (
            isinstance(node, ast.GlobStar)
            and len(out) >= 2
            and isinstance(out[-1], ast.Sep)
            and isinstance(out[-2], ast.GlobStar)
        ):
            out.pop()  # `**/` + `**` -> `**`
            continue
        out.append(node)
    return tuple(out)


def _same_len(a: str, b: str) -> list[list[tuple[int, int]]]:
    n = len(a)
    if n == 1:
        return [[(int(a), int(b))]]
    if a[0] == b[0]:
        d = int(a[0])
        return [[(d, d), *rest] for rest in _same_len(a[1:], b[1:])]
    lo_d, hi_d = int(a[0]), int(b[0])
    out: list[list[tuple[int, int]]] = []
    if a[1:] != "0" * (n - 1):
        out += [[(lo_d, lo_d), *rest] for rest in _same_len(a[1:], "9" * (n - 1))]
        lo_d += 1
    tail: list[list[tuple[int, int]]] = []
    if b[1:] != "9" * (n - 1):
        tail = [[(hi_d, hi_d), *rest] for rest in _same_len("0" * (n - 1), b[1:])]
        hi_d -= 1
    if lo_d <= hi_d:
        out.append([(lo_d, hi_d)] + [(0, 9)] * (n - 1))
    return out + tail


def range_classes(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """Digit-class sequences whose union is exactly the decimal numbers ``lo..hi``.

    Numbers are written without leading zeros. The result has O(digits²) classes,
    however wide the range.

    >>> range_classes(0, 11)
    [[(0, 9)], [(1, 1), (0, 1)]]
    """
    out: list[list[tuple[int, int]]] = []
    for length in range(len(str(lo)), len(str(hi)) + 1):
        a = max(lo, 10 ** (length - 1) if length > 1 else 0)
        b = min(hi, 10**length - 1)
        if a <= b:
            out += _same_len(str(a), str(b))
    return out


class _NFA:
    def __init__(self) -> None:
        self.edges: list[list[tuple[int, object, int]]] = []
        self.eps: list[list[int]] = []
        self.accept: dict[int, list[tuple[int, bool]]] = {}
        self.share: dict[tuple[int, object], int] = {}

    def new(self) -> int:
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    def edge(self, a: int, kind: int, data: object, b: int) -> None:
        self.edges[a].append((kind, data, b))

    def seq(self, nodes: Sequence[ast.GlobNode], cur: int) -> int:
        """Build ``nodes`` from ``cur``; return the end state.

        Prefixes are shared (hash-consed): the states after the same construct
        from the same state are the same states. Every construct only adds edges
        out of ``cur`` into new states, so the strings that reach the state after
        a construct are the same for every pattern that shares the prefix, and a
        DFA state holds one NFA state for ``**/encoder/layer_`` instead of one per
        rule that starts so.
        """
        share = self.share
        i = 0
        n = len(nodes)
        while i < n:
            node = nodes[i]
            star = _globstar_at(nodes, i)
            if star == "/**":
                # Trailing "/**": zero or more "/segment".
                key: tuple[int, object] = (cur, "/**")
                m = share.get(key)
                if m is None:
                    m, m2 = self.new(), self.new()
                    self.eps[cur].append(m)
                    self.edge(m, _SEP, None, m2)
                    self.edge(m2, _ANY, None, m2)
                    self.eps[m2].append(m)
                    share[key] = m
                cur, i = m, i + 2
                continue
            if star is not None:
                slash = star == "**/"
                key = (cur, star)
                loop = share.get(key)
                if loop is None:
                    loop = self.new()
                    self.eps[cur].append(loop)
                    if slash:
                        # "**/": zero or more "segment/".
                        inner = self.new()
                        self.edge(loop, _ANY, None, inner)
                        self.edge(inner, _ANY, None, inner)
                        self.edge(inner, _SEP, None, loop)
                        self.edge(loop, _SEP, None, loop)
                    else:
                        # "**" alone: any path at all.
                        self.edge(loop, _ANY, None, loop)
                        self.edge(loop, _SEP, None, loop)
                    share[key] = loop
                cur = loop
                i += 2 if slash else 1
                continue
            if isinstance(node, (ast.Lit, ast.Sep)):
                # A quoted "/" is still a separator: paths are text.
                for ch in node.text if isinstance(node, ast.Lit) else "/":
                    key = (cur, ch)
                    nxt = share.get(key)
                    if nxt is None:
                        nxt = share[key] = self.new()
                        if ch == "/":
                            self.edge(cur, _SEP, None, nxt)
                        else:
                            self.edge(cur, _CHAR, ch, nxt)
                    cur = nxt
                i += 1
                continue
            key = (cur, node)
            got = share.get(key)
            if got is not None:
                cur = got
                i += 1
                continue
            if isinstance(node, ast.Star):
                loop = self.new()
                self.eps[cur].append(loop)
                self.edge(loop, _ANY, None, loop)
                nxt = loop
            elif isinstance(node, ast.QMark):
                nxt = self.new()
                self.edge(cur, _ANY, None, nxt)
            elif isinstance(node, ast.Capture):
                # Like `*`, but at least one character.
                nxt = self.new()
                self.edge(cur, _ANY, None, nxt)
                self.edge(nxt, _ANY, None, nxt)
            elif isinstance(node, ast.CharClass):
                nxt = self.new()
                self.edge(cur, _CLASS, (node.negated, node.ranges), nxt)
            elif isinstance(node, ast.Alt):
                nxt = self.new()
                for branch in node.branches:
                    start = self.new()
                    self.eps[cur].append(start)
                    self.eps[self.seq(branch, start)].append(nxt)
            else:
                assert isinstance(node, ast.Range)
                nxt = self.new()
                for classes in range_classes(node.lo, node.hi):
                    b = self.new()
                    self.eps[cur].append(b)
                    for lo, hi in classes:
                        c = self.new()
                        self.edge(b, _CLASS, (False, ((str(lo), str(hi)),)), c)
                        b = c
                    self.eps[b].append(nxt)
            share[key] = nxt
            cur = nxt
            i += 1
        return cur


def _class_has(data: Any, ch: str) -> bool:
    negated, ranges = data
    hit = any(lo <= ch <= hi for lo, hi in ranges)
    return hit != negated


class _GroupDFA:
    """A lazily built DFA over path symbols for one group of rules."""

    def __init__(self, nfa: _NFA, starts: list[int]):
        self._nfa = nfa
        self._lock = threading.Lock()
        self._closure_memo: dict[int, frozenset[int]] = {}
        self._sets: list[frozenset[int]] = []
        self._ids: dict[frozenset[int], int] = {}
        self._trans: list[dict[str | None, int]] = []
        self._keys: list[dict[str, int]] = []
        self._matches: dict[int, tuple[int, ...]] = {}
        self._intern(frozenset())
        start: set[int] = set()
        for s in starts:
            start |= self._closure(s)
        self.start = self._intern(frozenset(start))

    def _closure(self, q: int) -> frozenset[int]:
        memo = self._closure_memo.get(q)
        if memo is not None:
            return memo
        seen = {q}
        stack = [q]
        eps = self._nfa.eps
        while stack:
            for r in eps[stack.pop()]:
                if r not in seen:
                    seen.add(r)
                    stack.append(r)
        out = frozenset(seen)
        self._closure_memo[q] = out
        return out

    def _intern(self, states: frozenset[int]) -> int:
        sid = self._ids.get(states)
        if sid is None:
            with self._lock:  # threads share a matcher: number each state once
                sid = self._ids.get(states)
                if sid is None:
                    sid = len(self._sets)
                    self._sets.append(states)
                    self._trans.append({})
                    self._keys.append({})
                    self._ids[states] = sid
        return sid

    def step(self, state: int, symbol: str | None) -> int:
        trans = self._trans[state]
        nxt = trans.get(symbol, -1)
        if nxt >= 0:
            return nxt
        out: set[int] = set()
        edges = self._nfa.edges
        for q in self._sets[state]:
            for kind, data, target in edges[q]:
                if symbol is None:
                    ok = kind == _SEP
                elif kind == _CHAR:
                    ok = data == symbol
                elif kind == _ANY:
                    ok = True
                elif kind == _CLASS:
                    ok = _class_has(data, symbol)
                else:
                    ok = False
                if ok:
                    out |= self._closure(target)
        nxt = self._intern(frozenset(out))
        trans[symbol] = nxt
        return nxt

    def key(self, state: int, key: str) -> int:
        memo = self._keys[state]
        nxt = memo.get(key, -1)
        if nxt >= 0:
            return nxt
        s = state
        for ch in key:
            if s == 0:
                break
            # A "/" inside a key separates segments (Haiku's "mlp/~/linear_1").
            s = self.step(s, SEP if ch == "/" else ch)
        memo[key] = s
        return s

    def matches(self, state: int) -> tuple[int, ...]:
        found = self._matches.get(state)
        if found is not None:
            return found
        inc: set[int] = set()
        exc: set[int] = set()
        accept = self._nfa.accept
        for q in self._sets[state]:
            for rule, is_except in accept.get(q, ()):
                (exc if is_except else inc).add(rule)
        found = tuple(sorted(inc - exc))
        self._matches[state] = found
        return found


class Matcher:
    """A lazily built DFA over paths for a list of rules.

    Rules are split into groups of :data:`GROUP_SIZE`, each simulated by its own lazy
    DFA; a matcher state is the tuple of its groups' states. A new transition then
    costs one (usually cached) step per group instead of a walk over every NFA state
    of every rule, which keeps a first compile of 1,000 rules cheap.

    States are small integers; ``0`` is the dead state (nothing can match any more).
    Use :meth:`key` to consume one key, :meth:`sep` to cross a ``/``, and
    :meth:`matches` or :meth:`owner` at a leaf.
    """

    DEAD = 0

    def __init__(self, groups: list[_GroupDFA], n_rules: int):
        self._groups = groups
        self._lock = threading.Lock()
        self.n_rules = n_rules
        self._combos: list[tuple[int, ...]] = []
        self._ids: dict[tuple[int, ...], int] = {}
        self._trans: list[dict[str | None, int]] = []
        self._keys: list[dict[str, int]] = []
        self._matches: dict[int, tuple[int, ...]] = {}
        self._intern(tuple(0 for _ in groups))
        self.start = self._intern(tuple(g.start for g in groups))

    def _intern(self, combo: tuple[int, ...]) -> int:
        sid = self._ids.get(combo)
        if sid is None:
            with self._lock:  # threads share a matcher: number each state once
                sid = self._ids.get(combo)
                if sid is None:
                    sid = len(self._combos)
                    self._combos.append(combo)
                    self._trans.append({})
                    self._keys.append({})
                    self._ids[combo] = sid
        return sid

    def step(self, state: int, symbol: str | None) -> int:
        """The state after one character (or ``SEP`` for ``None``)."""
        trans = self._trans[state]
        nxt = trans.get(symbol, -1)
        if nxt < 0:
            combo = self._combos[state]
            nxt = self._intern(
                tuple(g.step(gs, symbol) if gs else 0 for g, gs in zip(self._groups, combo))
            )
            trans[symbol] = nxt
        return nxt

    def key(self, state: int, key: str) -> int:
        """The state after consuming a whole key (memoised per state and key)."""
        memo = self._keys[state]
        nxt = memo.get(key, -1)
        if nxt < 0:
            combo = self._combos[state]
            nxt = self._intern(
                tuple(g.key(gs, key) if gs else 0 for g, gs in zip(self._groups, combo))
            )
            memo[key] = nxt
        return nxt

    def sep(self, state: int) -> int:
        """The state after a ``/``."""
        return self.step(state, SEP) if state else 0

    def matches(self, state: int) -> tuple[int, ...]:
        """Indices of the rules that match a path ending in ``state``, in rule order."""
        found = self._matches.get(state)
        if found is None:
            found = tuple(
                r for g, gs in zip(self._groups, self._combos[state]) if gs for r in g.matches(gs)
            )
            self._matches[state] = found
        return found

    def owner(self, state: int) -> int:
        """The first rule matching at ``state``, or ``-1``."""
        m = self.matches(state)
        return m[0] if m else -1

    def state(self, segments: Iterable[str]) -> int:
        """The state after a whole path given as its segments."""
        s = self.start
        for i, seg in enumerate(segments):
            if i:
                s = self.sep(s)
            s = self.key(s, seg)
        return s

    def match(self, segments: Iterable[str]) -> tuple[int, ...]:
        """The rules matching a whole path given as its segments."""
        return self.matches(self.state(segments))

    @property
    def num_states(self) -> int:
        """How many matcher states have been built so far."""
        return len(self._combos)

    @property
    def nfa_size(self) -> int:
        """How many NFA states the compiled patterns have, over all groups."""
        return sum(len(g._nfa.edges) for g in self._groups)


#: Rules per group DFA (see :class:`Matcher`).
GROUP_SIZE = 128


def compile_rules(
    rules: Sequence[tuple[Sequence[ast.Pattern], Sequence[ast.Pattern]]],
) -> Matcher:
    """Compile ``(patterns, except_patterns)`` per rule into one :class:`Matcher`."""
    groups: list[_GroupDFA] = []
    for first in range(0, max(len(rules), 1), GROUP_SIZE):
        nfa = _NFA()
        root = nfa.new()  # one start state: seq() shares the patterns' common prefixes
        for index in range(first, min(first + GROUP_SIZE, len(rules))):
            patterns, excepts = rules[index]
            for pats, is_except in ((patterns, False), (excepts, True)):
                for pattern in pats:
                    end = nfa.seq(collapse_globstars(pattern.nodes), root)
                    nfa.accept.setdefault(end, []).append((index, is_except))
        groups.append(_GroupDFA(nfa, [root]))
    return Matcher(groups, len(rules))


def compile_patterns(patterns: Sequence[ast.Pattern]) -> Matcher:
    """A matcher whose rule ``i`` is the single pattern ``patterns[i]``."""
    return compile_rules([((p,), ()) for p in patterns])


# ---------------------------------------------------------------- captures

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
            star = _globstar_at(nodes, i)
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
        self.nodes = collapse_globstars(pattern.nodes)
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

    def extract(self, segments: Sequence[str]) -> dict[str, str] | None:
        if self.program is not None:
            return _run(self.program, "/".join(segments))
        if not self.whole.match(segments):
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


def extract_captures(pattern: ast.Pattern, segments: Sequence[str]) -> dict[str, str] | None:
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
    """
    return _extractor(pattern).extract(segments)


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
