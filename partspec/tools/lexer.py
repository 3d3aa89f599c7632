"""A Pygments lexer for ``.pspec`` files, registered under the alias ``pspec``.

The package registers it as a ``pygments.lexers`` entry point, so anything that
highlights with Pygments (MkDocs, Sphinx, ``pygmentize``, GitHub-style renderers built on
it) highlights ```` ```pspec ```` blocks once partspec is installed. It follows the
grammar (``grammar/pspec.lark``): a statement is a ``let``, ``param``, ``include`` or
``global`` declaration, or a rule whose patterns run up to ``->`` (or ``with``, or
``where``); keywords are keywords only where the grammar expects them, so ``frozen/**``
is a path and ``x -> frozen`` an action. Names of allow-listed optax functions and of the
number functions are ``Name.Builtin``, other calls ``Name.Function``.

>>> from pygments import lex
>>> [(str(t), v) for t, v in lex("head/* -> adam(5e-3)  # the head\\n", PspecLexer())
...  if v.strip()]  # doctest: +NORMALIZE_WHITESPACE
[('Token.Name.Namespace', 'head'), ('Token.Punctuation', '/'), ('Token.Operator', '*'),
 ('Token.Operator', '->'), ('Token.Name.Builtin', 'adam'), ('Token.Punctuation', '('),
 ('Token.Literal.Number.Float', '5e-3'), ('Token.Punctuation', ')'),
 ('Token.Comment.Single', '# the head')]
"""

from __future__ import annotations

from typing import Any, ClassVar

from pygments.lexer import RegexLexer, bygroups, default, include, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

from partspec.language._optax_table import TABLE
from partspec.language.functions import FUNCTIONS

__all__ = ["PspecLexer"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STRING = r'"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"'
# A run of characters with no meaning in a glob (the grammar's LITERAL): '-' is literal
# unless it starts '->'.
_LIT_CHAR = r'[^\s/*?\[\]{},"\\#;<>=()\-]'
_LITERAL = rf"(?:{_LIT_CHAR}|-(?!>))+"
_CLASS = r"\[(?:[^\]\\\n]|\\[^\n])[^\]\\\n]*(?:\\[^\n][^\]\\\n]*)*\]"
_NUMBER = r"(?:[0-9]+(?:_[0-9]+)*(?:\.(?:[0-9]+(?:_[0-9]+)*)?)?|\.[0-9]+(?:_[0-9]+)*)"
_BUILTINS = sorted(set(TABLE) | set(FUNCTIONS) | {"count"})


class PspecLexer(RegexLexer):
    """Lexer for partspec rule files (``.pspec``)."""

    name = "partspec"
    aliases: ClassVar[list[str]] = ["pspec", "partspec"]
    filenames: ClassVar[list[str]] = ["*.pspec"]
    mimetypes: ClassVar[list[str]] = ["text/x-pspec"]
    url = "https://partspec.github.io/partspec/language/"

    tokens: ClassVar[dict[str, Any]] = {
        "root": [
            (r"\s+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r";", Punctuation),
            (
                rf"(let)(\s+)(@{_NAME})(\s*)(=)",
                bygroups(Keyword.Declaration, Whitespace, Name.Decorator, Whitespace, Operator),
                "pattern",
            ),
            (
                rf"(let)(\s+)({_NAME})(\s*)(=)",
                bygroups(Keyword.Declaration, Whitespace, Name.Variable, Whitespace, Operator),
                "expr",
            ),
            (
                rf"(param)(\s+)({_NAME})",
                bygroups(Keyword.Declaration, Whitespace, Name.Variable),
                "expr",
            ),
            # At a statement's start these words are keywords whatever follows (the
            # grammar's lexer prefers them to a path: `global/**` is a syntax error).
            (r"(let|param)\b", Keyword.Declaration, "expr"),
            (r"include\b", Keyword.Namespace, "expr"),
            (r"global\b", Keyword, "expr"),
            default("pattern"),
        ],
        "pattern": [
            (r"\n|;", Punctuation, "#pop"),
            (r"\\\r?\n", Whitespace),
            (r"[ \t\f\r]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r"(?<=\s)except\b", Keyword),
            (r"(?<=\s)(where|with)\b", Keyword, ("#pop", "expr")),
            (r"->", Operator, ("#pop", "expr")),
            (r"\(\?i\)", Keyword.Pseudo),
            (rf"@{_NAME}", Name.Decorator),
            (rf"(<)({_NAME})?(>)", bygroups(Punctuation, Name.Variable, Punctuation)),
            (r"\*\*|\*|\?", Operator),
            (_CLASS, String.Regex),
            (_STRING, String.Double),
            (r"\\[^\n]", String.Escape),
            (r"[{},/]", Punctuation),
            (_LITERAL, Name.Namespace),
        ],
        "expr": [
            (r"\n|;", Punctuation, "#pop"),
            include("expression"),
        ],
        "paren": [
            (r"\n", Whitespace),
            (r"[)\]]", Punctuation, "#pop"),
            include("expression"),
        ],
        "expression": [
            (r"\\\r?\n", Whitespace),
            (r"[ \t\f\r]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r"[(\[]", Punctuation, "paren"),
            (r"->", Operator),
            (rf"(as)(\s+)({_NAME})", bygroups(Keyword, Whitespace, Name.Label)),
            (words(("frozen", "until", "then", "with", "where"), suffix=r"\b"), Keyword),
            (words(("true", "false", "none"), suffix=r"\b"), Keyword.Constant),
            (words(("and", "or", "not", "in"), suffix=r"\b"), Operator.Word),
            (words(_BUILTINS, suffix=r"\b(?=[ \t]*\()"), Name.Builtin),
            (rf"{_NAME}(?=[ \t]*\()", Name.Function),
            (_NAME, Name),
            (rf"{_NUMBER}[eE][+-]?[0-9]+|[0-9_]*\.[0-9_]*(?:[eE][+-]?[0-9]+)?", Number.Float),
            (_NUMBER, Number.Integer),
            (_STRING, String.Double),
            (r"\*\*|==|!=|<=|>=|[-+*/<>=]", Operator),
            (r",", Punctuation),
        ],
    }
