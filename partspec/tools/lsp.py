"""``pspec lsp``: a language server for ``.pspec`` files, over stdio (pygls).

It shows ``pspec check``'s diagnostics as you type (with the ``tree``, ``set`` and
``strict`` of the ``[tool.partspec]`` table that applies to the file), hovers (a name's
value, a function's signature, what a rule owns and its learning rate), completion of
optax functions and of their keyword arguments, go to definition of ``let`` names, named
patterns and included files, and formatting (``pspec fmt``). The analysis is
:mod:`partspec.tools.editor`; this module only speaks the protocol. It imports no user
code: a ``MODULE:CALLABLE`` tree and ``plugins`` are left out (start the server with
``--plugin`` to register extensions). Install with ``pip install 'partspec[lsp]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from partspec._version import __version__
from partspec.diagnostics import Diagnostic
from partspec.tools.config import Config, ConfigError, load_config
from partspec.tools.editor import Analysis, analyze, completions, definition, format_text, hover

__all__ = ["make_server", "serve"]

_KIND = {
    "function": types.CompletionItemKind.Function,
    "keyword": types.CompletionItemKind.Keyword,
    "variable": types.CompletionItemKind.Variable,
    "argument": types.CompletionItemKind.Property,
}


def _utf16(line: str, column: int) -> int:
    """A 1-based code-point column as an LSP character offset (UTF-16 code units)."""
    return len(line[: max(column - 1, 0)].encode("utf-16-le")) // 2


def _column(line: str, character: int) -> int:
    """An LSP character offset (UTF-16 code units) as a 1-based code-point column."""
    units = 0
    for i, ch in enumerate(line):
        if units >= character:
            return i + 1
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(line) + 1


def _range(lines: list[str], line: int, col: int, end_line: int, end_col: int) -> types.Range:
    def pos(ln: int, c: int) -> types.Position:
        text = lines[ln - 1] if 0 < ln <= len(lines) else ""
        return types.Position(line=max(ln - 1, 0), character=_utf16(text, c))

    if line <= 0:
        return types.Range(types.Position(0, 0), types.Position(0, 0))
    if end_line < line or (end_line == line and end_col <= col):
        end_line, end_col = line, col + 1
    return types.Range(pos(line, col), pos(end_line, end_col))


def _lsp_diagnostic(d: Diagnostic, lines: list[str]) -> types.Diagnostic:
    from partspec.diagnostics.render import code_url

    message = d.message + "".join(f"\n{n}" for n in d.notes)
    if d.hint:
        message += f"\nhelp: {d.hint}"
    return types.Diagnostic(
        range=_range(lines, d.line, d.column, d.end_line, d.end_column),
        message=message,
        severity=types.DiagnosticSeverity.Error
        if str(d.severity) == "error"
        else types.DiagnosticSeverity.Warning,
        code=d.code,
        code_description=types.CodeDescription(href=code_url(d.code)),
        source="pspec",
    )


class PspecServer(LanguageServer):
    """The server, with the last analysis of each open document."""

    def __init__(self) -> None:
        super().__init__("pspec", __version__)
        self.analyses: dict[str, Analysis] = {}

    def config_for(self, path: str) -> tuple[Config, str | None]:
        try:
            return load_config(Path(path).parent), None
        except ConfigError as err:
            return Config(), str(err)

    def refresh(self, uri: str) -> None:
        doc = self.workspace.get_text_document(uri)
        path = to_fs_path(uri) or uri
        config, problem = self.config_for(path)
        a = analyze(doc.source, path, config)
        self.analyses[uri] = a
        lines = doc.source.split("\n")
        diags = [_lsp_diagnostic(d, lines) for d in a.diagnostics]
        if problem:
            diags.append(
                types.Diagnostic(
                    range=_range(lines, 1, 1, 1, 1),
                    message=f"[tool.partspec] ignored: {problem}",
                    severity=types.DiagnosticSeverity.Warning,
                    source="pspec",
                )
            )
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diags, version=doc.version)
        )

    def position(self, uri: str, pos: types.Position) -> tuple[Analysis | None, int, int]:
        a = self.analyses.get(uri)
        if a is None:
            self.refresh(uri)
            a = self.analyses.get(uri)
        text = self.workspace.get_text_document(uri).source
        lines = text.split("\n")
        line = lines[pos.line] if pos.line < len(lines) else ""
        return a, pos.line + 1, _column(line, pos.character)


def make_server() -> PspecServer:
    """A server with every feature registered (not started)."""
    server = PspecServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: PspecServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PspecServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: PspecServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: PspecServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.analyses.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
        )

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def on_hover(ls: PspecServer, params: types.HoverParams) -> types.Hover | None:
        a, line, col = ls.position(params.text_document.uri, params.position)
        text = hover(a, line, col) if a is not None else None
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=["(", ",", "@", ">", " "]),
    )
    def on_completion(ls: PspecServer, params: types.CompletionParams) -> types.CompletionList:
        a, line, col = ls.position(params.text_document.uri, params.position)
        text = ls.workspace.get_text_document(params.text_document.uri).source
        items = [
            types.CompletionItem(
                label=c.label,
                kind=_KIND[c.kind],
                detail=c.detail or None,
                insert_text=c.insert,
            )
            for c in completions(text, line, col, a)
        ]
        return types.CompletionList(is_incomplete=False, items=items)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def on_definition(ls: PspecServer, params: types.DefinitionParams) -> types.Location | None:
        a, line, col = ls.position(params.text_document.uri, params.position)
        loc = definition(a, line, col) if a is not None else None
        if loc is None:
            return None
        try:
            lines = Path(loc.path).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            lines = []
        if os.path.abspath(loc.path) == os.path.abspath(a.path if a else ""):
            lines = ls.workspace.get_text_document(params.text_document.uri).source.split("\n")
        return types.Location(
            uri=from_fs_path(loc.path) or loc.path,
            range=_range(lines, loc.line, loc.column, loc.end_line, loc.end_column),
        )

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def on_formatting(
        ls: PspecServer, params: types.DocumentFormattingParams
    ) -> list[types.TextEdit] | None:
        doc = ls.workspace.get_text_document(params.text_document.uri)
        new = format_text(doc.source, to_fs_path(doc.uri) or doc.uri)
        if new is None or new == doc.source:
            return [] if new is not None else None
        lines = doc.source.split("\n")
        end = types.Position(line=len(lines) - 1, character=_utf16(lines[-1], len(lines[-1]) + 1))
        return [types.TextEdit(range=types.Range(types.Position(0, 0), end), new_text=new)]

    return server


def serve(argv: Any = None) -> int:
    """Run the server on stdin and stdout until the client says exit."""
    make_server().start_io()
    return 0
