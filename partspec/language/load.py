"""The language's front door: text or a file in, a checked AST out.

``parse`` and ``load`` run the stages in order: :mod:`~partspec.language.parser`
(text to AST), :mod:`~partspec.language.includes` (``include`` statements spliced in)
and :mod:`~partspec.language.checker` (names, calls, types). Each stage knows only the
ones below it; this module composes them.

>>> spec = parse("a/** -> frozen; b/** -> sgd(0.1)")
>>> len(spec.rules)
2
"""

from __future__ import annotations

import os

from partspec.language import ast
from partspec.language.checker import check_spec
from partspec.language.includes import load_syntax, resolve_includes
from partspec.language.parser import parse_syntax

__all__ = ["load", "parse"]


def parse(
    text: str,
    filename: str | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    allow_outside: bool = False,
) -> ast.Spec:
    """Parse rule text into a :class:`~partspec.language.ast.Spec`.

    Args:
      text: the spec: statements separated by newlines or ``;``.
      filename: shown in diagnostics (``file:line:col``); ``None`` for a string.
      base_dir: the directory that ``include`` paths are relative to. Without it,
        includes are left unresolved and checking reports them (``E804``): use
        :func:`load` for a spec file, or pass ``base_dir``.
      allow_outside: let includes read files outside ``base_dir``'s tree
        (otherwise error ``E803``).

    Returns:
      The spec's AST, with included files' statements in place of the ``include``
      statements. Names, optimizer calls and argument types are checked too, so a
      spec that parses can be compiled against any tree it covers.

    Raises:
      SpecError: for any problem, with every diagnostic rendered.

    >>> spec = parse("a/** -> frozen; b/** -> sgd(0.1)")
    >>> len(spec.rules)
    2
    """
    spec = parse_syntax(text, filename)
    if base_dir is not None:
        spec = resolve_includes(spec, base_dir, allow_outside=allow_outside)
    check_spec(spec)
    return spec


def load(path: str | os.PathLike[str], *, allow_outside: bool = False) -> ast.Spec:
    """Read and parse a ``.pspec`` file (UTF-8), following its ``include`` statements.

    Include paths are relative to the directory of the file that contains them, and
    may not read outside the directory of ``path`` (real paths are compared) unless
    ``allow_outside`` is true.

    Raises:
      SpecError: the file cannot be read or decoded (code ``E001``), an include
        cannot be resolved (``E801`` cycle, ``E802`` unreadable, ``E803`` outside),
        or the spec has problems.
    """
    spec = load_syntax(path, allow_outside=allow_outside)
    check_spec(spec)
    return spec
