"""``include "base.pspec"``: one spec file's statements in another's place.

An ``include`` statement is replaced by the statements of the file it names, so under
first-match the rules written above an ``include`` override the included file's rules
and the rules below it come after them. Include paths are relative to the directory of
the file that contains the ``include``; included files may include others.

Resolving never reads outside the directory tree of the top-level spec (the directory
of the file given to :func:`partspec.load`, or ``base_dir``) unless the caller passes
``allow_outside=True``; real paths are compared, so neither ``..`` nor a symbolic link
can escape. Problems are raised as :class:`~partspec.diagnostics.SpecError`, positioned at
the ``include`` statement, with the chain of includes as notes:

- ``E801``: an include cycle (``a.pspec -> b.pspec -> a.pspec``), or includes nested
  more than :data:`MAX_INCLUDE_DEPTH` deep, or more than :data:`MAX_INCLUDES` in all;
- ``E802``: an included file that is missing, unreadable or not UTF-8;
- ``E803``: an included file outside the top-level spec's directory tree.

Syntax errors inside an included file are reported with that file's name, line and
source line. Statements that come from an included file carry its name in
``span.file``, and the resolved spec keeps its text in ``Spec.sources``, so the
checker's diagnostics point into the right file too.

>>> import pathlib, tempfile, partspec
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "base.pspec").write_text("backbone/** -> frozen\\n** -> sgd(0.1)\\n")
>>> _ = (root / "top.pspec").write_text('head/** -> sgd(0.5)\\ninclude "base.pspec"\\n')
>>> spec = partspec.load(root / "top.pspec")
>>> [partspec.format_pattern(r.patterns[0]) for r in spec.rules]
['head/**', 'backbone/**', '**']
>>> spec.rules[1].span.file == str(root / "base.pspec")
True
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from partspec.diagnostics import Annotation, Diagnostic, Span, SpecError, did_you_mean
from partspec.diagnostics.text import line_of
from partspec.language import ast
from partspec.language.files import MAX_INCLUDE_BYTES, MAX_SPEC_BYTES, read_regular, read_stream

__all__ = [
    "MAX_INCLUDES",
    "MAX_INCLUDE_DEPTH",
    "decode_spec",
    "load_syntax",
    "read_spec_file",
    "relocate",
    "resolve_includes",
]

#: Includes may nest this deep (the top-level spec is depth 0); deeper is error E801.
MAX_INCLUDE_DEPTH = 50
#: At most this many ``include`` statements are resolved for one spec (error E801).
MAX_INCLUDES = 1000

_OUTSIDE_HINT = (
    "includes may only read files under the top-level spec's directory; to allow this "
    "one, pass `allow_outside=True` (to `partspec.load` or `partspec.parse`) or "
    "`--allow-outside-includes` (to `pspec`)"
)

_T = TypeVar("_T")

#: The spec "file" name that reads standard input (``pspec check -``).
STDIN = "-"
#: How a spec read from standard input is named in diagnostics.
STDIN_NAME = "<stdin>"


def read_spec_file(path: str | os.PathLike[str]) -> str:
    """The text of a top-level spec file, decoded as UTF-8.

    Only a regular file of at most :data:`~partspec.language.files.MAX_SPEC_BYTES` is read: a
    FIFO or a device is refused without blocking. ``-`` reads standard input (up to
    the same size).

    Raises:
      SpecError: code ``E001`` when the file cannot be read, is not a regular file, is
        too large or is not UTF-8.

    >>> try:
    ...     read_spec_file("no/such/file.pspec")
    ... except SpecError as err:
    ...     print(err.diagnostics[0].code, err.diagnostics[0].location)
    E001 no/such/file.pspec
    """
    name = os.fspath(path)
    try:
        if name == STDIN:
            return decode_spec(read_stream(sys.stdin.buffer, limit=MAX_SPEC_BYTES))
        return decode_spec(read_regular(name, limit=MAX_SPEC_BYTES))
    except OSError as exc:
        message = f"cannot read spec file {name!r}: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        message = f"spec file {name!r} is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except ValueError as exc:  # a NUL character in the path
        message = f"cannot read spec file {name!r}: {exc}"
    raise SpecError([Diagnostic("E001", "error", message, filename=name)])


def decode_spec(data: bytes) -> str:
    """The text of a spec file: UTF-8 with no NUL byte (a NUL means a binary file).

    Raises:
      UnicodeDecodeError: not UTF-8 text, or a NUL byte (its position is ``start``).
    """
    nul = data.find(b"\0")
    if nul >= 0:
        raise UnicodeDecodeError("utf-8", data, nul, nul + 1, "a NUL byte")
    return data.decode("utf-8")


def load_syntax(path: str | os.PathLike[str], *, allow_outside: bool = False) -> ast.Spec:
    """Read a spec file and resolve its includes, without checking names or calls.

    This is :func:`partspec.load` minus the checking (the command line uses it, to
    check with ``param`` values of its own).

    Args:
      path: the ``.pspec`` file; includes are relative to its directory, and may not
        read outside that directory's tree unless ``allow_outside``. ``-`` reads the
        spec from standard input (includes relative to the current directory).
      allow_outside: allow includes to read files anywhere.

    Returns:
      The flattened spec: no ``Include`` statements, ``source`` and ``filename`` of
      the file itself, ``sources`` with the text of every included file.

    Raises:
      SpecError: ``E001`` when ``path`` itself cannot be read, a syntax error in any
        of the files, or an include problem (``E801``-``E803``).
    """
    from partspec.language.parser import parse_syntax

    name = os.fspath(path)
    if name == STDIN:
        spec = parse_syntax(read_spec_file(name), filename=STDIN_NAME)
        return resolve_includes(spec, os.curdir, allow_outside=allow_outside)
    spec = parse_syntax(read_spec_file(name), filename=name)
    return resolve_includes(spec, os.path.dirname(name) or os.curdir, allow_outside=allow_outside)


def resolve_includes(
    spec: ast.Spec,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    allow_outside: bool = False,
) -> ast.Spec:
    """``spec`` with every ``include`` replaced by the statements of the file it names.

    Args:
      spec: a spec from :func:`partspec.language.parser.parse_syntax`.
      base_dir: the directory its include paths are relative to, and the root of the
        tree includes may read from; by default the directory of ``spec.filename``
        (the current directory for a spec without a file name).
      allow_outside: allow includes to read files outside ``base_dir``'s tree.

    Returns:
      The flattened spec (the same object when it has no includes). Statements from
      included files carry the included file's name in every ``span.file``, and
      ``sources`` maps those names to the files' texts.

    Raises:
      SpecError: ``E801`` (a cycle, or too deep or too many), ``E802`` (a file that
        cannot be read or is not UTF-8), ``E803`` (outside the root), or a syntax
        error in an included file.

    >>> import pathlib, tempfile
    >>> from partspec.language.parser import parse_syntax
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "loop.pspec").write_text('include "loop.pspec"\\n')
    >>> try:
    ...     resolve_includes(parse_syntax('include "loop.pspec"'), root)
    ... except SpecError as err:
    ...     d = err.diagnostics[0]
    ...     print(d.code, d.message.replace(str(root / "x")[:-1], ""))
    E801 include cycle: loop.pspec -> loop.pspec
    """
    if not spec.includes:
        return spec
    if base_dir is None:
        base_dir = os.path.dirname(spec.filename) if spec.filename else os.curdir
    base = os.fspath(base_dir) or os.curdir
    resolver = _Resolver(spec, base, allow_outside)
    top = _Frame(spec.filename, base, resolver.names.get(spec.filename or ""), spec.source)
    statements = resolver.expand(spec.statements, top)
    flat = dataclasses.replace(
        spec, statements=tuple(statements), sources={**spec.sources, **resolver.sources}
    )
    return _expand_named(flat)


def _expand_named(spec: ast.Spec) -> ast.Spec:
    """Named patterns across files: a ``@name`` that its own file left for an included
    file's definition (:data:`~partspec.language.ast.DEFERRED`) is expanded, in statement
    order, by the definitions above it; a name defined in two files is ``E302``."""
    from partspec.language.parser import check_captures, check_except_captures

    named: dict[str, ast.PatternDef] = {}

    def expand(patterns: tuple[ast.Pattern, ...]) -> tuple[ast.Pattern, ...]:
        if all(p.ref_index != ast.DEFERRED for p in patterns):
            return patterns
        out: list[ast.Pattern] = []
        for p in patterns:
            if p.ref_index != ast.DEFERRED:
                out.append(p)
                continue
            assert p.ref is not None
            found = named.get(p.ref)
            if found is None:
                hint = did_you_mean(p.ref, named)
                raise _spec_error(
                    spec,
                    Diagnostic.at(
                        "E301",
                        f"undefined pattern `@{p.ref}`",
                        p.span,
                        hint=hint.replace("`", "`@", 1)
                        if hint
                        else f"define it above its first use, in this file or in a file "
                        f"included above it: `let @{p.ref} = ...`",
                        label="not defined",
                    ),
                )
            out += [
                dataclasses.replace(d, span=p.span, ref=p.ref, ref_index=i)
                for i, d in enumerate(found.patterns)
            ]
        return tuple(out)

    changed = False
    statements: list[ast.Statement] = []
    for stmt in spec.statements:
        new: ast.Statement = stmt
        if isinstance(stmt, ast.PatternDef):
            pats = expand(stmt.patterns)
            if pats is not stmt.patterns:
                new = dataclasses.replace(stmt, patterns=pats)
                _checked(spec, check_captures, pats)
            first = named.get(stmt.name)
            if first is not None:
                where = f" in {first.name_span.file}" if first.name_span.file else ""
                raise _spec_error(
                    spec,
                    Diagnostic.at(
                        "E302",
                        f"pattern `@{stmt.name}` is already defined on line "
                        f"{first.name_span.line}{where}",
                        stmt.name_span,
                        hint="choose another name; names cannot be rebound",
                    ),
                )
            named[stmt.name] = new  # type: ignore[assignment]
        elif isinstance(stmt, (ast.Rule, ast.WithRule)):
            pats, excepts = expand(stmt.patterns), expand(stmt.excepts)
            if pats is not stmt.patterns or excepts is not stmt.excepts:
                new = dataclasses.replace(stmt, patterns=pats, excepts=excepts)
                _checked(spec, check_captures, pats)
                _checked(spec, check_except_captures, excepts)
        changed = changed or new is not stmt
        statements.append(new)
    return dataclasses.replace(spec, statements=tuple(statements)) if changed else spec


def _checked(spec: ast.Spec, check: Any, patterns: tuple[ast.Pattern, ...]) -> None:
    """Run a parser check over expanded patterns, its error placed in ``spec``'s files."""
    try:
        check(patterns)
    except SpecError as err:
        raise SpecError([spec.attach(d) for d in err.diagnostics]) from None


def _spec_error(spec: ast.Spec, diag: Diagnostic) -> SpecError:
    return SpecError([spec.attach(diag)])


def relocate(node: _T, file: str | None) -> _T:
    """A copy of an AST node with ``file`` set on every :class:`Span` inside it.

    Works on any of the frozen AST dataclasses (statements, patterns, expressions),
    descending into nested nodes and tuples; nodes without spans come back as they are.

    >>> from partspec.language.parser import parse_syntax
    >>> rule = relocate(parse_syntax("a/** -> sgd(0.1)").rules[0], "base.pspec")
    >>> rule.span.file, rule.action.span.file, rule.action.args[0].span.file
    ('base.pspec', 'base.pspec', 'base.pspec')
    """
    out: _T = _relocate(node, file)
    return out


def _relocate(node: Any, file: str | None) -> Any:
    if isinstance(node, Span):
        return node if node.file == file else dataclasses.replace(node, file=file)
    if isinstance(node, tuple):
        items = tuple(_relocate(x, file) for x in node)
        return node if all(a is b for a, b in zip(items, node)) else items
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(node):
            if not f.init:
                continue
            old = getattr(node, f.name)
            new = _relocate(old, file)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(node, **changes) if changes else node
    return node


# ---------------------------------------------------------------- resolution


@dataclasses.dataclass(frozen=True)
class _Frame:
    """One file on the include stack."""

    display: str | None  # the name shown in diagnostics (None: a string spec)
    location: str  # the directory its include paths are relative to (``location/x``)
    real: str | None  # its real path, for cycles (None: a string spec)
    source: str | None  # its text, for source lines
    include_line: int = 0  # the line of the `include` (in the parent) that read it
    include_span: Span | None = None  # and its span


class _Resolver:
    def __init__(self, spec: ast.Spec, base: str, allow_outside: bool):
        self.allow_outside = allow_outside
        try:
            self.root = os.path.realpath(base)
        except ValueError:  # pragma: no cover - a NUL character in base_dir
            self.root = base
        self.sources: dict[str, str] = {}
        self.texts: dict[str, str] = {}  # real path -> text (each file is read once)
        # (real path, display name) -> its statements, parsed and relocated once.
        self.parsed: dict[tuple[str, str], list[ast.Statement]] = {}
        self.names: dict[str, str] = {}  # display name -> real path
        if spec.filename is not None:
            self.names[spec.filename] = _real(spec.filename) or spec.filename
        self.count = 0
        self.stack: list[_Frame] = []

    # -- diagnostics
    def _notes(self) -> tuple[str, ...]:
        """``included from FILE:LINE`` for each file on the stack, innermost first."""
        notes: list[str] = []
        for child, parent in zip(reversed(self.stack[1:]), reversed(self.stack[:-1])):
            notes.append(f"included from {parent.display or '<string>'}:{child.include_line}")
        return tuple(notes)

    def _chain(self) -> tuple[Annotation, ...]:
        """The ``include`` statements that led here, innermost first, with their source."""
        out: list[Annotation] = []
        for child, parent in zip(reversed(self.stack[1:]), reversed(self.stack[:-1])):
            if child.include_span is None:  # pragma: no cover - every child has one
                continue
            a = Annotation.at(child.include_span, "included here")
            src = line_of(parent.source, a.line) if parent.source is not None else None
            out.append(dataclasses.replace(a, file=parent.display or "<string>", source_line=src))
        return tuple(out)

    def _fail(
        self,
        code: str,
        message: str,
        stmt: ast.Include,
        *,
        hint: str | None = None,
        label: str | None = None,
    ) -> SpecError:
        frame = self.stack[-1]
        d = Diagnostic.at(code, message, stmt.span, hint=hint, label=label)
        d = dataclasses.replace(
            d.with_source(frame.source, frame.display),
            notes=self._notes(),
            annotations=self._chain(),
        )
        return SpecError([d])

    # -- the walk
    def expand(self, statements: Sequence[ast.Statement], frame: _Frame) -> list[ast.Statement]:
        self.stack.append(frame)
        try:
            out: list[ast.Statement] = []
            for stmt in statements:
                if isinstance(stmt, ast.Include):
                    out.extend(self._include(stmt))
                else:
                    out.append(stmt)
            return out
        finally:
            self.stack.pop()

    def _include(self, stmt: ast.Include) -> list[ast.Statement]:
        parent = self.stack[-1]
        path = stmt.path
        shown = f'"{path}"'
        self.count += 1
        if self.count > MAX_INCLUDES:
            raise self._fail(
                "E801",
                f"more than {MAX_INCLUDES} includes in one spec",
                stmt,
                hint="include each file once",
            )
        if len(self.stack) > MAX_INCLUDE_DEPTH:
            raise self._fail(
                "E801",
                f"includes nested more than {MAX_INCLUDE_DEPTH} deep",
                stmt,
                hint="flatten the chain of includes (a chain this long is usually a cycle "
                "through differently spelled paths)",
            )
        if not path or "\0" in path:
            problem = "is empty" if not path else "contains a NUL character"
            raise self._fail("E802", f"the include path {problem}", stmt)
        location = os.path.join(parent.location, path)
        real = _real(location)
        if real is None:  # pragma: no cover - realpath only fails for odd paths
            raise self._fail("E802", f"cannot resolve include path {shown}", stmt)
        display = self._display(location, real)
        if not self.allow_outside and not _within(real, self.root):
            raise self._fail(
                "E803",
                f"included file {display!r} is outside the directory of the top-level spec "
                f"({self.root})",
                stmt,
                hint=_OUTSIDE_HINT,
                label="outside the spec's directory",
            )
        reals = [f.real for f in self.stack]
        if real in reals:
            first = reals.index(real)
            cycle = [f.display or "<string>" for f in self.stack[first:]] + [display]
            raise self._fail(
                "E801",
                "include cycle: " + " -> ".join(cycle),
                stmt,
                hint="a file cannot include itself, directly or through other files",
                label="includes a file that is already being included",
            )
        text = self._read(real, display, stmt)
        child = _Frame(display, os.path.dirname(location), real, text, stmt.span.line, stmt.span)
        own = self.parsed.get((real, display))
        if own is None:  # each file is parsed once per load, however often it is included
            from partspec.language.parser import parse_syntax

            try:
                included = parse_syntax(text, filename=display)
            except SpecError as err:
                self.stack.append(child)
                try:
                    notes, chain = self._notes(), self._chain()
                finally:
                    self.stack.pop()
                raise SpecError(
                    [
                        dataclasses.replace(
                            d, notes=d.notes + notes, annotations=d.annotations + chain
                        )
                        for d in err.diagnostics
                    ]
                ) from None
            assert included.source is not None
            self.sources[display] = included.source
            own = self.parsed[real, display] = [relocate(s, display) for s in included.statements]
        child = dataclasses.replace(child, source=self.sources[display])
        return self.expand(own, child)

    def _display(self, location: str, real: str) -> str:
        """The file name shown in diagnostics: the normalised path, unique per file."""
        display = os.path.normpath(location)
        known = self.names.setdefault(display, real)
        if known != real:  # two files with one name (through symbolic links)
            display = real
            self.names.setdefault(display, real)
        return display

    def _read(self, real: str, display: str, stmt: ast.Include) -> str:
        if real in self.texts:
            return self.texts[real]
        try:
            data = read_regular(real, limit=MAX_INCLUDE_BYTES)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise self._fail(
                "E802",
                f"cannot read included file {display!r}: {reason}",
                stmt,
                hint="include paths are relative to the directory of the file that "
                "contains the `include`",
                label="cannot read this file",
            ) from None
        try:
            text = decode_spec(data)
        except UnicodeDecodeError as exc:
            raise self._fail(
                "E802",
                f"included file {display!r} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                stmt,
                label="not UTF-8",
            ) from None
        self.texts[real] = text
        return text


def _real(path: str) -> str | None:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):  # pragma: no cover - a symlink loop on old Pythons, NUL
        return None


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives (Windows), or mixed absolute and relative
        return False
