"""What ``pspec check`` does to one loaded spec, shared by the command line and the
language server: check names, calls and types with the given ``param`` values, then,
with a tree, resolve every leaf (coverage, unused and shadowed rules).

>>> from partspec.language.parser import parse_syntax
>>> out = check_loaded(parse_syntax("a/** -> sgd(0.1)\\nb/** -> frozen"), {}, None, strict=False)
>>> (out.diagnostics, out.failed, out.resolution is None)
([], False, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from partspec.diagnostics import Diagnostic, SpecError

if TYPE_CHECKING:
    from partspec.language.ast import Spec
    from partspec.language.checker import CheckedSpec
    from partspec.resolution.result import Resolution

__all__ = ["CheckOutcome", "check_loaded"]


@dataclass(frozen=True)
class CheckOutcome:
    """The diagnostics of one spec, and what checking it produced on the way.

    Attributes:
      diagnostics: errors and warnings (warnings as errors with ``strict``).
      checked: the checked spec, unless checking failed.
      resolution: each leaf's rule and label, when a tree was given and it resolved.
    """

    diagnostics: list[Diagnostic]
    checked: CheckedSpec | None = None
    resolution: Resolution | None = None

    @property
    def failed(self) -> bool:
        """Whether any diagnostic is an error."""
        return any(d.severity == "error" for d in self.diagnostics)


def check_loaded(
    spec: Spec, values: Mapping[str, Any], leaves: Sequence[Any] | None, *, strict: bool
) -> CheckOutcome:
    """Check ``spec`` (includes resolved) as ``pspec check`` does.

    Args:
      spec: a spec from :func:`partspec.language.includes.load_syntax` or
        ``resolve_includes``.
      values: ``param`` values (``--set``).
      leaves: the tree's leaves (``path``, ``shape``, ``dtype``), or ``None``: then
        coverage is not checked.
      strict: report warnings as errors.
    """
    from partspec.language.checker import check_spec

    try:
        checked = check_spec(spec, values, require=leaves is not None)
    except SpecError as err:
        return CheckOutcome(list(err.diagnostics))
    if leaves is None:
        found = list(checked.warnings)  # deprecated optax functions
        if strict:
            found = [dataclasses.replace(w, severity="error") for w in found]
        return CheckOutcome(found, checked)
    from partspec.language.values import LeafInfo
    from partspec.resolution import resolve_paths
    from partspec.resolution.coverage import is_integer_dtype

    # Shapes and dtypes matter to `where` conditions, and integer leaves to E503.
    infos = (
        [LeafInfo(tuple(leaf.shape), leaf.dtype) for leaf in leaves]
        if any(r.rule.where is not None for r in checked.rules)
        or any(r.rule.where is not None for r in checked.with_rules)
        or any(is_integer_dtype(leaf.dtype) for leaf in leaves)
        else None
    )
    try:
        resolution = resolve_paths(checked, [leaf.path for leaf in leaves], infos)
    except SpecError as err:  # a condition or capture that fails on some leaf
        return CheckOutcome(list(err.diagnostics), checked)
    return CheckOutcome(resolution.diagnostics(strict=strict), resolution.checked, resolution)
