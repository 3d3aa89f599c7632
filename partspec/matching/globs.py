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
>>> from partspec.matching.globs import compile_patterns
>>> m = compile_patterns([partspec.parse("a/** -> frozen").rules[0].patterns[0]])
>>> m.match(["a", "b", "c"]), m.match(["b"])
((0,), ())
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from partspec.language import ast

__all__ = [
    "GROUP_SIZE",
    "Matcher",
    "collapse_globstars",
    "compile_patterns",
    "compile_rules",
    "fold_case",
    "globstar_at",
    "matching_nodes",
    "range_classes",
]

# Edge kinds.
_CHAR, _ANY, _CLASS, _SEP = 0, 1, 2, 3
#: The separator symbol fed to the DFA between two keys.
SEP = None


def globstar_at(nodes: Sequence[ast.GlobNode], i: int) -> str | None:
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


def _swap_ascii_case(lo: str, hi: str) -> list[tuple[str, str]]:
    """The other case of the ASCII letters in the range ``lo..hi``."""
    out = []
    for a, b, shift in (("a", "z", -32), ("A", "Z", 32)):
        x, y = max(lo, a), min(hi, b)
        if x <= y:
            out.append((chr(ord(x) + shift), chr(ord(y) + shift)))
    return out


def fold_case(nodes: Sequence[ast.GlobNode]) -> tuple[ast.GlobNode, ...]:
    """``nodes`` with every ASCII letter matching either case (a ``(?i)`` pattern):
    a letter of literal text becomes a class of its two cases, a class takes the other
    case of its letters (a negated one excludes both).

    >>> [type(n).__name__ for n in fold_case((ast.Lit("ln1"),))]
    ['CharClass', 'CharClass', 'Lit']
    >>> fold_case((ast.Lit("a"),))[0].ranges
    (('a', 'a'), ('A', 'A'))
    """
    out: list[ast.GlobNode] = []
    for node in nodes:
        if isinstance(node, ast.Lit):
            run = ""
            for ch in node.text:
                if ch.isascii() and ch.isalpha():
                    if run:
                        out.append(ast.Lit(run))
                        run = ""
                    pair = ((ch.lower(), ch.lower()), (ch.upper(), ch.upper()))
                    out.append(ast.CharClass(False, pair))
                else:
                    run += ch
            if run:
                out.append(ast.Lit(run))
        elif isinstance(node, ast.CharClass):
            extra = [r for lo, hi in node.ranges for r in _swap_ascii_case(lo, hi)]
            out.append(ast.CharClass(node.negated, (*node.ranges, *extra)))
        elif isinstance(node, ast.Alt):
            out.append(ast.Alt(tuple(fold_case(b) for b in node.branches)))
        else:
            out.append(node)
    return tuple(out)


def matching_nodes(pattern: ast.Pattern) -> tuple[ast.GlobNode, ...]:
    """The nodes a pattern matches with: ``**`` runs collapsed, case folded for ``(?i)``."""
    nodes = collapse_globstars(pattern.nodes)
    return fold_case(nodes) if pattern.nocase else nodes


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
            star = globstar_at(nodes, i)
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

    def __init__(self, groups: list[_GroupDFA], n_rules: int, owners: int | None = None):
        self._groups = groups
        self._lock = threading.Lock()
        self.n_rules = n_rules
        #: Rules ``0 .. owners - 1`` can own a leaf (``->`` rules); the rest only match
        #: (``with`` rules).
        self.owners = n_rules if owners is None else owners
        self._combos: list[tuple[int, ...]] = []
        self._ids: dict[tuple[int, ...], int] = {}
        self._trans: list[dict[str | None, int]] = []
        self._keys: list[dict[str, int]] = []
        self._matches: dict[int, tuple[int, ...]] = {}
        self._intern(tuple(0 for _ in groups))
        self.start = self._intern(tuple(g.start for g in groups))

    @property
    def key_transitions(self) -> list[dict[str, int]]:
        """``state -> {key: state after it}``, as far as built: for fast tree walks.

        Read-only for callers; a missing entry is built with :meth:`key`.
        """
        return self._keys

    @property
    def transitions(self) -> list[dict[str | None, int]]:
        """``state -> {symbol: next state}`` (``None`` is ``/``), as far as built.

        Read-only for callers; a missing entry is built with :meth:`step`.
        """
        return self._trans

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
        """The first rule that can own a leaf matching at ``state``, or ``-1``."""
        m = self.matches(state)
        return m[0] if m and m[0] < self.owners else -1

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
    owners: int | None = None,
) -> Matcher:
    """Compile ``(patterns, except_patterns)`` per rule into one :class:`Matcher`.

    Only the first ``owners`` rules (all by default) can own a leaf (:meth:`Matcher.owner`).
    """
    groups: list[_GroupDFA] = []
    for first in range(0, max(len(rules), 1), GROUP_SIZE):
        nfa = _NFA()
        root = nfa.new()  # one start state: seq() shares the patterns' common prefixes
        for index in range(first, min(first + GROUP_SIZE, len(rules))):
            patterns, excepts = rules[index]
            for pats, is_except in ((patterns, False), (excepts, True)):
                for pattern in pats:
                    end = nfa.seq(matching_nodes(pattern), root)
                    nfa.accept.setdefault(end, []).append((index, is_except))
        groups.append(_GroupDFA(nfa, [root]))
    return Matcher(groups, len(rules), owners)


def compile_patterns(patterns: Sequence[ast.Pattern]) -> Matcher:
    """A matcher whose rule ``i`` is the single pattern ``patterns[i]``."""
    return compile_rules([((p,), ()) for p in patterns])
