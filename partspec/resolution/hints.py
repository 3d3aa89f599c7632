"""Why a pattern matches no parameter: the usual mistakes, recognised, and near paths.

A rule that matches nothing is most often one of a few slips, each of which can be
confirmed by matching a corrected pattern against the real paths:

* PyTorch's dotted names (``head.kernel``) where paths are separated by ``/``;
* a module written alone (``backbone``) where its parameters are ``backbone/**``;
* a missing leading segment (``backbone/**`` for paths under ``params/``), or an extra
  one (``model/backbone/**`` for paths that start at ``backbone``).

:func:`unmatched_hint` tries those corrections (and their combinations) and names the
one that matches; otherwise it lists the nearest real paths. The work is bounded: at
most :data:`MAX_HINT_PATHS` paths are tried, spread over the tree.

>>> from partspec.language.parser import parse_selector
>>> paths = [("params", "head", "kernel"), ("params", "head", "bias")]
>>> hint = unmatched_hint(parse_selector("head.kernel").patterns[0], paths)
>>> hint.split("; ")[0], hint.split(": write ")[1]
('paths are separated by `/`, not `.`', '`params/head/kernel`')
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

from partspec.diagnostics import SpecError
from partspec.language import ast
from partspec.language.formatter import format_pattern
from partspec.language.parser import parse_selector
from partspec.matching.globs import compile_rules

__all__ = ["MAX_HINT_PATHS", "nearest_paths", "sample", "unmatched_hint"]

#: At most this many paths (spread evenly over the tree) are matched against each
#: corrected pattern.
MAX_HINT_PATHS = 1000

Paths = Sequence[tuple[str, ...]]


def sample(paths: Paths, limit: int = MAX_HINT_PATHS) -> list[tuple[str, ...]]:
    """At most ``limit`` of ``paths``, spread evenly (neighbours share prefixes)."""
    if len(paths) <= limit:
        return list(paths)
    step = len(paths) / limit
    return [paths[int(i * step)] for i in range(limit)]


def _first_match(text: str, paths: Paths) -> tuple[str, ...] | None:
    """The first path the pattern ``text`` matches, or ``None`` (also if it is not a
    pattern)."""
    try:
        rule = parse_selector(text)
    except SpecError:
        return None
    if rule.where is not None:  # pragma: no cover - corrections never add a condition
        return None
    matcher = compile_rules([(rule.patterns, ())])
    for p in paths:
        if matcher.matches(matcher.state(p)):
            return p
    return None


def _variants(text: str) -> Iterator[tuple[str, list[str]]]:
    """Corrected patterns, with what was corrected, fewest corrections first."""
    dotted = "." in text and "/" not in text
    bases: list[tuple[str, list[str]]] = [(text, [])]
    if dotted:
        bases.append((text.replace(".", "/"), ["paths are separated by `/`, not `.`"]))
    for base, why in bases:
        if why:
            yield base, why
    for base, why in bases:
        if not base.endswith("**"):
            yield f"{base}/**", [*why, "a module's parameters are `MODULE/**`"]
    for base, why in bases:
        if base.startswith("**"):
            continue
        for suffix in ("",) if base.endswith("**") else ("", "/**"):
            for depth in (1, 2):
                more = [] if not suffix else ["a module's parameters are `MODULE/**`"]
                yield "*/" * depth + base + suffix, [*why, *more]
    segments = text.split("/")
    for drop in (1, 2):
        if len(segments) > drop:
            rest = "/".join(segments[drop:])
            head = "/".join(segments[:drop])
            yield rest, [f"no parameter path starts with `{head}/`"]


def unmatched_hint(pattern: ast.Pattern, paths: Paths) -> str | None:
    """A hint for a pattern that matches none of ``paths``: the correction that makes
    it match, or the nearest real paths; ``None`` when there is nothing to say."""
    text = format_pattern(pattern)
    pool = sample(paths)
    for corrected, why in _variants(text):
        found = _first_match(corrected, pool)
        if found is None:
            continue
        reasons = list(why)
        depth = 0
        while corrected.startswith("*/" * (depth + 1)):
            depth += 1
        if depth:  # name the real leading segments that `*/` stood for
            prefix = "/".join(found[:depth])
            corrected = f"{prefix}/{corrected[2 * depth :]}"
            reasons.append(f"the parameter paths start with `{prefix}/`")
        return "; ".join(reasons) + f": write `{corrected}`"
    near = nearest_paths(text, paths)
    if near:
        return "the nearest parameter paths: " + ", ".join(f"`{p}`" for p in near)
    return None


def nearest_paths(text: str, paths: Paths, n: int = 3) -> list[str]:
    """The real paths (cut to the pattern's number of segments) nearest to ``text``."""
    depth = text.count("/") + 1
    pool = sorted({"/".join(p[:depth]) for p in sample(paths)})
    plain = text.replace("*", "").replace("?", "")
    return difflib.get_close_matches(plain, pool, n=n, cutoff=0.5)
