"""Suggestions for hints: the nearest known name to a misspelled one, with bounded work."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["MAX_SUGGEST_CANDIDATES", "MAX_SUGGEST_LENGTH", "closest", "did_you_mean"]


def _osa_distance(a: str, b: str) -> int:
    """Edit distance counting an adjacent transposition as one edit."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


#: Names longer than this get a suggestion only for a difference in case: edit
#: distance costs length squared, and a name this long is pasted, not mistyped.
MAX_SUGGEST_LENGTH = 64
#: At most this many candidates (the nearest in length) are compared with a name.
MAX_SUGGEST_CANDIDATES = 200


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name``, or ``None`` when nothing is close.

    The work is bounded: candidates whose length alone rules them out are skipped,
    at most :data:`MAX_SUGGEST_CANDIDATES` are compared, and a name longer than
    :data:`MAX_SUGGEST_LENGTH` is only matched ignoring case.

    >>> closest("adma", ["adam", "adamax", "sgd"])
    'adam'
    """
    pool = sorted(set(candidates))
    if not pool:
        return None
    if len(name) > MAX_SUGGEST_LENGTH:
        folded = name.casefold()
        same = [c for c in pool if len(c) == len(name) and c.casefold() == folded]
        return same[0] if same else None
    limit = max(1, len(name) // 3)
    near = [c for c in pool if abs(len(c) - len(name)) <= max(limit, len(name) // 2)]
    near = sorted(near, key=lambda c: abs(len(c) - len(name)))[:MAX_SUGGEST_CANDIDATES]
    near = [c for c in near if len(c) <= 2 * MAX_SUGGEST_LENGTH]
    if not near:
        return None
    scored = sorted(
        near,
        key=lambda c: (
            _osa_distance(name, c),
            -difflib.SequenceMatcher(None, name, c).ratio(),
            c,
        ),
    )
    best = scored[0]
    if _osa_distance(name, best) <= limit:
        return best
    matches = difflib.get_close_matches(name, near, n=1, cutoff=0.75)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A ``did you mean `x`?`` hint, or ``None`` when nothing is close (see :func:`closest`).

    >>> did_you_mean("adma", ["adam", "adamax", "sgd"])
    'did you mean `adam`?'
    """
    best = closest(name, candidates)
    return None if best is None else f"did you mean `{best}`?"
