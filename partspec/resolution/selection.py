"""Glob selectors and state-dict transfer plans over paths: framework-neutral.

A selector is the left side of a rule (patterns, ``,``, ``except``, ``where``) compiled
once (:func:`compile_selector`), then asked which leaves it selects (:meth:`Selector.flags`),
exactly as a rule would own them. :func:`plan_transfer` decides which source entry fills
which destination leaf (renames, shape and dtype checks, the report), from paths, shapes
and dtypes alone: ``partspec.transfer`` (JAX pytrees) and ``partspec.torch.transfer``
(``state_dict``) both copy by its plan.

>>> from partspec.language.values import LeafInfo
>>> sel = compile_selector("head/** except **/bias")
>>> sel.flags([("head", "w"), ("head", "bias"), ("body", "w")])
[True, False, False]
>>> pairs, report = plan_transfer(
...     [("encoder/w", LeafInfo((2,), "float32"))],
...     [("backbone", "encoder", "w"), ("head", "w")],
...     [LeafInfo((2,), "float32"), LeafInfo((3,), "float32")],
...     rename=("", "backbone/"),
... )
>>> pairs, report.copied, report.missing
([(0, 0)], (('encoder/w', 'backbone/encoder/w'),), ('head/w',))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from partspec._caches import register_lru
from partspec.diagnostics import Diagnostic, SpecError
from partspec.language import ast
from partspec.language.checker import check_spec
from partspec.language.parser import parse_selector
from partspec.language.values import LeafInfo
from partspec.resolution.resolver import Resolver, matcher_for

__all__ = [
    "MAX_LISTED",
    "Rename",
    "Selector",
    "TransferReport",
    "compile_selector",
    "no_match",
    "plan_transfer",
    "renamer",
]

#: How many paths an error or a report lists before summarising.
MAX_LISTED = 20

#: ``rename`` for a transfer: one ``(old_prefix, new_prefix)`` pair, a sequence of pairs
#: (the first whose prefix matches applies), or a function from a source path to a
#: destination path (``None`` to leave the entry out).
Rename = Union[tuple[str, str], Sequence[tuple[str, str]], Callable[[str], Union[str, None]]]

PATTERN_FILE = "<pattern>"


class Selector:
    """A compiled selector: the left side of a rule (patterns, ``except``, ``where``).

    Leaves are selected exactly as a rule would own them: by the same matcher and, with
    a ``where`` clause, by the same condition on each leaf's shape and dtype.
    """

    def __init__(self, spec: ast.Spec):
        self.checked = check_spec(spec)  # an unknown dtype or a type error in `where`
        self.matcher = matcher_for(self.checked)
        self.has_condition = spec.rules[0].where is not None

    def flags(
        self,
        segments: Sequence[Sequence[str]],
        info: Callable[[int], LeafInfo | None] | None = None,
    ) -> list[bool]:
        """Whether each path (its segments) is selected; ``info(i)`` gives leaf ``i``'s
        shape and dtype, asked for only by a ``where`` clause (``None``: error E409)."""
        if not self.has_condition:
            return [bool(self.matcher.match(segs)) for segs in segments]
        resolver = Resolver(self.checked, self.matcher)
        get = info if info is not None else (lambda i: None)
        return [
            resolver.locate(segs, functools.partial(get, i))[0] == 0
            for i, segs in enumerate(segments)
        ]


def compile_selector(pattern: str) -> Selector:
    """The :class:`Selector` of ``pattern`` (compiled once per pattern).

    Raises:
      TypeError: ``pattern`` is not a string.
      SpecError: a bad pattern, positioned in it.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    return _compile_cached(pattern)


@functools.lru_cache(maxsize=256)
def _compile_cached(pattern: str) -> Selector:
    if "\n" in pattern or "\r" in pattern:
        raise _pattern_error(pattern, "a pattern must be on one line")
    if not pattern:
        raise _pattern_error(pattern, 'empty pattern: `**` matches every leaf, `""` the root')
    rule = parse_selector(pattern, filename=PATTERN_FILE)
    return Selector(ast.Spec((rule,), source=pattern, filename=PATTERN_FILE))


register_lru(
    "surgery.selectors", _compile_cached, owner=__name__, what="a compiled selector per pattern"
)


def _pattern_error(pattern: str, message: str, code: str = "E100") -> SpecError:
    return SpecError(
        [
            Diagnostic(
                code,
                "error",
                message,
                1,
                1,
                1,
                max(2, len(pattern) + 1),
                filename=PATTERN_FILE,
                source_line=pattern,
            )
        ]
    )


def listed(paths: Sequence[str], limit: int = MAX_LISTED) -> list[str]:
    """At most ``limit`` paths (the root shown as ``<root>``), then how many more."""
    shown = [p or "<root>" for p in paths[:limit]]
    if len(paths) > limit:
        shown.append(f"... and {len(paths) - limit} more")
    return shown


def no_match(pattern: str, paths: Sequence[str], what: str = "leaf") -> SpecError:
    """``E701``: ``pattern`` selects nothing; the hint shows the paths there are."""
    examples = ", ".join(f"`{p or '<root>'}`" for p in paths[:5])
    more = ", ..." if len(paths) > 5 else ""
    hint = (
        f"the tree's paths are {examples}{more} (partspec.jax.tree.leaf_paths lists them)"
        if paths
        else "the tree has no leaves"
    )
    return SpecError(
        [
            Diagnostic(
                "E701",
                "error",
                f"`{pattern}` matches no {what} of the tree",
                1,
                1,
                1,
                max(2, len(pattern) + 1),
                filename=PATTERN_FILE,
                hint=hint,
                label="matches nothing",
                source_line=pattern,
            )
        ]
    )


def error(code: str, where: str, message: str, **kw: Any) -> SpecError:
    """A one-diagnostic error of an API call (``where`` names it)."""
    return SpecError([Diagnostic(code, "error", message, filename=where, **kw)])


def duplicate(where: str, path: str) -> SpecError:
    """``E704``: two leaves with one path."""
    return error(
        "E704",
        where,
        f"two leaves have the same path `{path}`",
        hint="a `/` inside a key separates segments: `{'a/b': x}` and `{'a': {'b': y}}` "
        "both have the path `a/b`",
    )


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ---------------------------------------------------------------- transfer


@dataclass(frozen=True)
class TransferReport:
    """What a transfer did.

    Attributes:
      copied: ``(source path, destination path)`` of every copied leaf, in the
        destination's leaf order.
      missing: destination paths that the pattern selects but the source does not
        have: they kept their values ("not filled").
      skipped: destination paths outside the pattern: left as they were.
      unused: source paths (before renaming) that were not copied anywhere.
      values: the number of array elements copied.
    """

    copied: tuple[tuple[str, str], ...]
    missing: tuple[str, ...]
    skipped: tuple[str, ...]
    unused: tuple[str, ...]
    values: int = 0

    @property
    def not_filled(self) -> tuple[str, ...]:
        """Every destination path that kept its value: ``missing`` then ``skipped``."""
        return self.missing + self.skipped

    def __str__(self) -> str:
        n = len(self.copied)
        lines = [
            f"copied {plural(n, 'leaf', 'leaves')} ({self.values:,} values); "
            f"not filled: {len(self.missing)} missing, {len(self.skipped)} outside the "
            f"pattern; unused in the source: {len(self.unused)}"
        ]
        if self.copied:
            lines.append("copied:")
            lines += [
                f"  {s or '<root>'} -> {d or '<root>'}" if s != d else f"  {d or '<root>'}"
                for s, d in self.copied[:MAX_LISTED]
            ]
            if n > MAX_LISTED:
                lines.append(f"  ... and {n - MAX_LISTED} more")
        for title, paths in (
            ("missing (selected, not in the source; kept their values):", self.missing),
            ("unused (in the source, not copied):", self.unused),
        ):
            if paths:
                lines.append(title)
                lines += [f"  {p}" for p in listed(paths)]
        return "\n".join(lines)


def renamer(rename: Rename | None) -> Callable[[str], str | None]:
    """``rename`` as a function from a source path to its destination path."""
    if rename is None:
        return lambda p: p
    if callable(rename):
        return rename
    pairs: list[tuple[str, str]]
    if (
        isinstance(rename, tuple)
        and len(rename) == 2
        and isinstance(rename[0], str)
        and isinstance(rename[1], str)
    ):
        pairs = [(rename[0], rename[1])]
    else:
        pairs = []
        for pair in rename:
            if not (
                isinstance(pair, (tuple, list))
                and len(pair) == 2
                and all(isinstance(x, str) for x in pair)
            ):
                raise TypeError(
                    "rename must be an (old_prefix, new_prefix) pair of strings, a sequence "
                    f"of such pairs or a function, not {rename!r}"
                )
            pairs.append((pair[0], pair[1]))

    def apply(path: str) -> str:
        for old, new in pairs:
            if path.startswith(old):
                return new + path[len(old) :]
        return path

    return apply


def plan_transfer(
    sources: Sequence[tuple[str, LeafInfo]],
    destinations: Sequence[Sequence[str]],
    infos: Sequence[LeafInfo | None],
    pattern: str = "**",
    *,
    rename: Rename | None = None,
    strict: bool = False,
    where: str = "partspec.transfer",
    condition_info: Callable[[int], LeafInfo | None] | None = None,
) -> tuple[list[tuple[int, int]], TransferReport]:
    """Which source entry fills which destination leaf.

    Args:
      sources: ``(path, shape and dtype)`` of each source entry, paths ``/``-joined.
      destinations: each destination leaf's path, as segments.
      infos: each destination leaf's shape and dtype.
      pattern: globs over destination paths: which leaves may be filled.
      rename: rewrites source paths before matching (see :data:`Rename`).
      strict: also fail when a selected destination leaf has no source or a source
        entry is unused.
      where: the API call named in errors.
      condition_info: destination leaf ``i``'s shape and dtype as a ``where`` clause
        sees them (by default ``infos[i]``).

    Returns:
      ``(pairs, report)``: ``(destination index, source index)`` of every copy, in
      destination order, and the :class:`TransferReport`.

    Raises:
      SpecError: ``E702`` (shapes or dtypes differ, every such leaf listed with both),
        ``E701`` (the pattern selects no destination leaf), ``E703`` (nothing to copy, or
        leftovers with ``strict``), ``E704`` (two sources with one destination path, or
        two destination leaves with one path).
    """
    selector = compile_selector(pattern)
    by_target, dropped = _targets(sources, renamer(rename), where)
    paths = ["/".join(s) for s in destinations]
    selected = selector.flags(
        destinations, condition_info if condition_info is not None else infos.__getitem__
    )
    if not any(selected):
        raise no_match(pattern, paths)
    pairs: list[tuple[int, int]] = []
    copied: list[tuple[str, str]] = []
    missing: list[str] = []
    mismatches: list[str] = []
    values = 0
    seen: set[str] = set()
    for i, path in enumerate(paths):
        if not selected[i]:
            continue
        if path in seen:
            raise duplicate(where, path)
        seen.add(path)
        k = by_target.get(path)
        if k is None:
            missing.append(path)
            continue
        src_path, src_info = sources[k]
        bad = _mismatch(path, src_path, src_info, infos[i])
        if bad is not None:
            mismatches.append(bad)
            continue
        pairs.append((i, k))
        copied.append((src_path, path))
        values += math.prod(src_info.shape)
    if mismatches:
        raise _mismatches(where, mismatches)
    used = {d for _, d in copied}
    report = TransferReport(
        tuple(copied),
        tuple(missing),
        tuple(p for p, s in zip(paths, selected) if not s),
        tuple(sorted([sources[k][0] for t, k in by_target.items() if t not in used] + dropped)),
        values,
    )
    if not report.copied:
        raise error(
            "E703",
            where,
            f"nothing to copy: no source path equals a destination path matching `{pattern}`",
            notes=(
                "source paths: "
                + ", ".join(listed([sources[k][0] for k in by_target.values()], 5)),
                "destination paths: "
                + ", ".join(listed([p for p, s in zip(paths, selected) if s], 5)),
            ),
            hint="rewrite source paths with rename=(old_prefix, new_prefix)",
        )
    if strict and (report.missing or report.unused):
        raise _strict_error(report, where)
    return pairs, report


def _targets(
    sources: Sequence[tuple[str, LeafInfo]], rename: Callable[[str], str | None], where: str
) -> tuple[dict[str, int], list[str]]:
    """Destination path -> source index, and the source paths renamed to ``None``."""
    by_target: dict[str, int] = {}
    dropped: list[str] = []
    for k, (path, _) in enumerate(sources):
        target = rename(path)
        if target is None:
            dropped.append(path)
            continue
        if not isinstance(target, str):
            raise TypeError(f"rename returned {target!r} for `{path}`; expected a str or None")
        if target in by_target:
            raise error(
                "E704",
                where,
                f"source leaves `{sources[by_target[target]][0]}` and `{path}` both go to "
                f"`{target}`",
                hint="check `rename`, or leave one of them out with a rename function",
            )
        by_target[target] = k
    return by_target, dropped


def _describe(info: LeafInfo) -> str:
    return f"{info.dtype}[{','.join(map(str, info.shape))}]"


def _mismatch(path: str, src_path: str, src: LeafInfo, dst: LeafInfo | None) -> str | None:
    """Why the source cannot fill the destination (shapes or dtypes differ), or ``None``."""
    if dst is None:
        return None
    what = " and ".join(
        w
        for w, bad in (
            ("shapes", tuple(src.shape) != tuple(dst.shape)),
            ("dtypes", str(src.dtype) != str(dst.dtype)),
        )
        if bad
    )
    if not what:
        return None
    frm = f" (from `{src_path or '<root>'}`)" if src_path != path else ""
    return (
        f"`{path or '<root>'}`{frm}: {what} differ: source "
        f"{_describe(src)}, destination {_describe(dst)}"
    )


def _mismatches(where: str, mismatches: list[str]) -> SpecError:
    """``E702``, one diagnostic per leaf whose shape or dtype differs."""
    hint = (
        "cast or reshape the source first (partspec.replace helps), or leave these "
        "leaves out with `pattern` or `rename`"
    )
    last = len(mismatches) - 1
    return SpecError(
        [
            Diagnostic("E702", "error", m, filename=where, hint=hint if i == last else None)
            for i, m in enumerate(mismatches)
        ]
    )


def _strict_error(report: TransferReport, where: str) -> SpecError:
    """``E703`` for ``strict=True``: every missing and unused leaf, named."""
    missing, unused = report.missing, report.unused
    notes = [f"missing: {p}" for p in missing] + [f"unused: {p}" for p in unused]
    return error(
        "E703",
        where,
        f"strict transfer: {plural(len(missing), 'destination leaf', 'destination leaves')} "
        f"not filled, {plural(len(unused), 'source leaf', 'source leaves')} unused",
        notes=tuple(listed(notes)),
        hint="narrow `pattern`, fix `rename`, or pass strict=False and read the report",
    )
