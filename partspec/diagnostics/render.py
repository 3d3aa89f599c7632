"""One renderer per output format: ``full``, ``concise``, ``json``, ``github``, ``sarif``.

Each takes diagnostics as data (anything shaped like
:class:`~partspec.diagnostics.Diagnostic`) and returns text; user text in them is
escaped and cut (:mod:`partspec.diagnostics.text`). ``pspec check --format F`` prints
``RENDERERS[F](diagnostics)``.

>>> from partspec.diagnostics import Diagnostic, Span
>>> d = Diagnostic.at("E401", "unknown optimizer `adma`", Span(1, 12, 1, 16))
>>> print(concise([d.with_source("head/** -> adma(1e-3)", "spec.pspec")]), end="")
spec.pspec:1:12: E401 unknown optimizer `adma`
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from partspec._version import __version__
from partspec.diagnostics.text import shown, source_window

__all__ = [
    "DOCS_URL",
    "FORMATS",
    "JSON_VERSION",
    "RENDERERS",
    "SARIF_SCHEMA",
    "as_json",
    "code_url",
    "concise",
    "full",
    "full_all",
    "github",
    "json_text",
    "sarif",
]

#: Where the documentation is published (``mkdocs.yml``'s ``site_url``).
DOCS_URL = "https://partspec.github.io/partspec/"


def code_url(code: str) -> str:
    """The documentation of a diagnostic code: its row in the language reference's table.

    >>> code_url("E401")
    'https://partspec.github.io/partspec/language/#E401'
    """
    return f"{DOCS_URL}language/#{code}"


class Renderable(Protocol):
    """What a renderer reads of a diagnostic (:class:`~partspec.diagnostics.Diagnostic`)."""

    @property
    def code(self) -> str: ...
    @property
    def severity(self) -> Any: ...
    @property
    def message(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...
    @property
    def end_line(self) -> int: ...
    @property
    def end_column(self) -> int: ...
    @property
    def filename(self) -> str | None: ...
    @property
    def hint(self) -> str | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def source_line(self) -> str | None: ...
    @property
    def notes(self) -> tuple[str, ...]: ...
    @property
    def annotations(self) -> tuple[Any, ...]: ...
    @property
    def location(self) -> str: ...


def _snippet(
    line: int, column: int, end_line: int, end_column: int, src: str, mark: str, label: str | None
) -> list[str]:
    gutter = " " * len(str(line))
    if end_line == line and end_column > column:
        width = end_column - column
    else:
        width = max(1, len(src) - column + 1)
    text, col, width = source_window(src, column, width)
    carets = " " * (col - 1) + mark * width + (f" {shown(label)}" if label else "")
    return [f"{gutter} |", f"{line} | {text}", f"{gutter} | {carets}", f"{gutter} |"]


def full(d: Renderable) -> str:
    """Header, location, the source line with carets, secondary annotations, notes, help.

    Text from the user's files is shown safely: long source lines as a window around
    the carets, long messages cut, control characters escaped.
    """
    out = [f"{d.severity}[{d.code}]: {shown(d.message)}", f" --> {shown(d.location)}"]
    if d.line > 0 and d.source_line is not None:
        out += _snippet(d.line, d.column, d.end_line, d.end_column, d.source_line, "^", d.label)
    for a in d.annotations:
        where = f"{a.file or d.filename or '<string>'}:{a.line}:{a.column}"
        out.append(f" ::: {shown(where)}")
        if a.source_line is not None:
            out += _snippet(a.line, a.column, a.end_line, a.end_column, a.source_line, "-", a.label)
        else:
            out.append(f"   = {shown(a.label)}")
    for note in d.notes:
        out.append(f"   = note: {shown(note)}")
    if d.hint:
        out.append(f"   = help: {shown(d.hint)}")
    return "\n".join(out)


def full_all(diagnostics: Sequence[Renderable]) -> str:
    """Every diagnostic in full, separated by blank lines."""
    return "\n\n".join(full(d) for d in diagnostics)


def concise(diagnostics: Sequence[Renderable]) -> str:
    """One line each: ``file:line:col: CODE message``."""
    return "".join(f"{shown(d.location)}: {d.code} {shown(d.message)}\n" for d in diagnostics)


#: The version of the JSON diagnostics schema (``docs/cli.md``). 2: an object with
#: ``version`` and ``diagnostics`` (1 was a bare list), each diagnostic with a ``url``.
JSON_VERSION = 2


def as_json(d: Renderable) -> dict[str, Any]:
    """One diagnostic as the documented JSON object."""
    return {
        "code": d.code,
        "severity": str(d.severity),
        "message": d.message,
        "filename": d.filename,
        "line": d.line or None,
        "column": d.column or None,
        "end_line": d.end_line or None,
        "end_column": d.end_column or None,
        "hint": d.hint,
        "notes": list(d.notes),
        "url": code_url(d.code),
        "related": [
            {
                "filename": a.file or d.filename,
                "line": a.line,
                "column": a.column,
                "end_line": a.end_line,
                "end_column": a.end_column,
                "message": a.label,
            }
            for a in d.annotations
        ],
    }


def json_text(diagnostics: Sequence[Renderable]) -> str:
    """``{"version": 2, "diagnostics": [...]}`` (see :func:`as_json`), indented, ending
    in a newline."""
    doc = {"version": JSON_VERSION, "diagnostics": [as_json(d) for d in diagnostics]}
    return json.dumps(doc, indent=2) + "\n"


def _gh_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def github(diagnostics: Sequence[Renderable]) -> str:
    """GitHub Actions workflow commands: ``::error file=...,line=...::message``."""
    out = []
    for d in diagnostics:
        kind = "error" if str(d.severity) == "error" else "warning"
        props = [f"file={_gh_escape(shown(d.filename or '<string>'), prop=True)}"]
        if d.line:
            props += [f"line={d.line}", f"col={d.column}"]
            if d.end_line:
                props += [f"endLine={d.end_line}", f"endColumn={d.end_column}"]
        props.append(f"title={_gh_escape(f'pspec {d.code}', prop=True)}")
        body = shown(d.message) + "".join(f"\n{shown(n)}" for n in d.notes)
        body += "".join(
            f"\n{shown(a.label)} ({a.file or d.filename or '<string>'}:{a.line})"
            for a in d.annotations
        )
        if d.hint:
            body += f"\nhelp: {shown(d.hint)}"
        out.append(f"::{kind} {','.join(props)}::{_gh_escape(body)}\n")
    return "".join(out)


#: The schema that :func:`sarif`'s output follows.
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _artifact(filename: str | None) -> dict[str, Any]:
    name = (filename or "<string>").replace("\\", "/")
    uri = urllib.parse.quote(name, safe="/:")
    out: dict[str, Any] = {"uri": uri}
    if not name.startswith("/") and ":" not in name.split("/")[0]:
        out["uriBaseId"] = "%SRCROOT%"  # relative to where pspec ran (the checkout)
    return out


def _region(line: int, column: int, end_line: int, end_column: int) -> dict[str, int]:
    region = {"startLine": line, "startColumn": max(column, 1)}
    if end_line >= line and end_column > 0:
        region["endLine"] = end_line
        region["endColumn"] = end_column
    return region


def sarif(diagnostics: Sequence[Renderable]) -> str:
    """A SARIF 2.1.0 log (one run of ``pspec``), for GitHub code scanning.

    Each code is a rule whose ``helpUri`` is its documentation; columns count Unicode
    code points, as partspec's do. A problem of a whole file (``line == 0``) has a
    location without a region.
    """
    codes = sorted({d.code for d in diagnostics})
    index = {c: i for i, c in enumerate(codes)}
    results = []
    for d in diagnostics:
        physical: dict[str, Any] = {"artifactLocation": _artifact(d.filename)}
        if d.line > 0:
            physical["region"] = _region(d.line, d.column, d.end_line, d.end_column)
        text = d.message + "".join(f"\n{n}" for n in d.notes)
        if d.hint:
            text += f"\nhelp: {d.hint}"
        result: dict[str, Any] = {
            "ruleId": d.code,
            "ruleIndex": index[d.code],
            "level": "error" if str(d.severity) == "error" else "warning",
            "message": {"text": text},
            "locations": [{"physicalLocation": physical}],
        }
        related = [
            {
                "id": i,
                "message": {"text": a.label},
                "physicalLocation": {
                    "artifactLocation": _artifact(a.file or d.filename),
                    "region": _region(a.line, a.column, a.end_line, a.end_column),
                },
            }
            for i, a in enumerate(d.annotations)
            if a.line > 0
        ]
        if related:
            result["relatedLocations"] = related
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "pspec",
                        "version": __version__,
                        "informationUri": DOCS_URL,
                        "rules": [{"id": c, "helpUri": code_url(c)} for c in codes],
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


#: Output format -> renderer of a list of diagnostics.
RENDERERS: dict[str, Callable[[Sequence[Renderable]], str]] = {
    "full": lambda ds: "".join(full(d) + "\n\n" for d in ds),
    "concise": concise,
    "json": json_text,
    "github": github,
    "sarif": sarif,
}
#: The formats, in the order the command line lists them.
FORMATS = tuple(RENDERERS)
