"""The partspec abstract syntax tree: frozen dataclasses that carry source spans.

Spans never take part in equality, so a spec equals the spec parsed from its
canonical text (``parse(format(spec)) == spec``).

>>> import partspec
>>> spec = partspec.parse("head/* -> adam(5e-3)")
>>> rule = spec.rules[0]
>>> rule.action
Call(func='adam', args=(Num(value=0.005),), kwargs=())
>>> rule.span.line, rule.span.column
(1, 1)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from partspec.diagnostics import Diagnostic, Span
from partspec.diagnostics.text import line_of

__all__ = [
    "DEFERRED",
    "Alt",
    "BinOp",
    "Bool",
    "BoolOp",
    "Call",
    "Capture",
    "CharClass",
    "Comment",
    "Compare",
    "Expr",
    "Frozen",
    "FrozenUntil",
    "GlobNode",
    "GlobStar",
    "Global",
    "Include",
    "Index",
    "Keyword",
    "Let",
    "ListExpr",
    "Lit",
    "Name",
    "Neg",
    "NoneLit",
    "Not",
    "Num",
    "Param",
    "Pattern",
    "PatternDef",
    "QMark",
    "Range",
    "Rule",
    "Sep",
    "Setting",
    "Spec",
    "Star",
    "Statement",
    "Str",
    "WithRule",
    "capture_names",
]

_NOSPAN = Span(0, 0, 0, 0)


def _span() -> Span:
    span: Span = field(default=_NOSPAN, compare=False, repr=False)
    return span


# ---------------------------------------------------------------- glob nodes


@dataclass(frozen=True)
class Lit:
    """Literal text inside a segment (quoted and escaped text included)."""

    text: str


@dataclass(frozen=True)
class Star:
    """``*``: any run of characters inside one segment, possibly empty."""


@dataclass(frozen=True)
class QMark:
    """``?``: exactly one character inside a segment."""


@dataclass(frozen=True)
class GlobStar:
    """``**`` as a whole segment: zero or more whole segments."""


@dataclass(frozen=True)
class Sep:
    """``/``: the boundary between two segments."""


@dataclass(frozen=True)
class CharClass:
    """``[a-z]``, ``[!abc]``: one character from (or not from) a set of ranges."""

    negated: bool
    ranges: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Alt:
    """``{a,b/c}``: any one of the branches; a branch may contain ``/``."""

    branches: tuple[tuple[GlobNode, ...], ...]


@dataclass(frozen=True)
class Range:
    """``{0..11}``: a decimal integer from ``lo`` to ``hi`` inclusive, no leading zeros."""

    lo: int
    hi: int


@dataclass(frozen=True)
class Capture:
    """``<name>``: like ``*`` but non-empty, and binds the text it matched to ``name``.

    The bound value is an integer when the text is all digits (``layer/<i>`` on
    ``layer/3`` binds ``i = 3``), otherwise a string.
    """

    name: str


GlobNode = Union[Lit, Star, QMark, GlobStar, Sep, CharClass, Alt, Range, Capture]


def capture_names(nodes: Iterable[GlobNode]) -> list[str]:
    """The names of the captures among glob nodes (inside braces too), in order, with repeats.

    >>> capture_names(Pattern((Capture("i"), Sep(), Alt(((Capture("j"),), (Star(),))))).nodes)
    ['i', 'j']
    """
    out: list[str] = []
    for n in nodes:
        if isinstance(n, Capture):
            out.append(n.name)
        elif isinstance(n, Alt):
            for branch in n.branches:
                out += capture_names(branch)
    return out


#: ``Pattern.ref_index`` of a ``@name`` used below an ``include`` with no definition in
#: its own file yet: resolving includes replaces it by the included file's definition.
DEFERRED = -1


@dataclass(frozen=True)
class Pattern:
    """One glob, anchored at both ends of the path.

    ``nocase`` (written ``(?i)`` before the pattern) makes ASCII letters match either
    case. A pattern written as a named pattern's name (``@norms``) is stored expanded, one
    :class:`Pattern` per pattern of the definition, each with ``ref`` (the name) and
    ``ref_index`` (its place in the definition), so that matching never looks names up
    and formatting writes the name back.
    """

    nodes: tuple[GlobNode, ...]
    span: Span = _span()
    ref: str | None = None
    ref_index: int = 0
    #: ``(?i)``: ASCII letters match either case.
    nocase: bool = False

    def __hash__(self) -> int:
        # Cached: compile() looks its matcher up by the rules' patterns on every call.
        h: int | None = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.nodes, self.nocase))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict[str, object]:
        # String hashes differ between processes: never pickle the cached one.
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num:
    """A number literal (``int`` or ``float``); ``text`` is how it was written."""

    value: int | float
    span: Span = _span()
    text: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Str:
    """A string literal."""

    value: str
    span: Span = _span()


@dataclass(frozen=True)
class Bool:
    """``true`` or ``false``."""

    value: bool
    span: Span = _span()


@dataclass(frozen=True)
class NoneLit:
    """``none``."""

    span: Span = _span()


@dataclass(frozen=True)
class ListExpr:
    """``[a, b, ...]``."""

    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Name:
    """A name bound by ``let`` or ``param``."""

    id: str
    span: Span = _span()


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with ``op`` one of ``+ - * / **``."""

    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Neg:
    """``-operand``."""

    operand: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Keyword:
    """``name=value`` inside a call."""

    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    """A call of an allow-listed optax function by its optax name."""

    func: str
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    span: Span = _span()
    func_span: Span = _span()


@dataclass(frozen=True)
class Compare:
    """``left op right`` with ``op`` one of ``== != < <= > >= in``: true or false."""

    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class BoolOp:
    """``left and right`` or ``left or right`` (short-circuiting)."""

    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Not:
    """``not operand``."""

    operand: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Index:
    """``value[index]``: an item of a list (``shape[-1]``); negative indices count from the end."""

    value: Expr
    index: Expr
    span: Span = _span()


Expr = Union[Num, Str, Bool, NoneLit, ListExpr, Name, BinOp, Neg, Call, Compare, BoolOp, Not, Index]


@dataclass(frozen=True)
class Frozen:
    """The ``frozen`` action: the leaf never changes and has no optimizer state."""

    span: Span = _span()


@dataclass(frozen=True)
class FrozenUntil:
    """``frozen until N then action``: frozen for the first ``N`` updates, then trained.

    Update number ``N`` (counting from 0) is the first that moves the leaves; the
    optimizer ``then`` starts fresh at that update (step count 0, zero moments).
    """

    until: Expr
    then: Expr
    span: Span = _span()


Action = Union[Frozen, FrozenUntil, Expr]


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Rule:
    """``patterns [except patterns] [where condition] -> action [as label]``."""

    patterns: tuple[Pattern, ...]
    excepts: tuple[Pattern, ...]
    action: Action
    label: str | None = None
    span: Span = _span()
    label_span: Span = _span()
    where: Expr | None = None

    @functools.cached_property
    def captures(self) -> tuple[str, ...]:
        """The names the rule's patterns capture, in order of appearance."""
        cached: tuple[str, ...] | None = self.__dict__.get("_captures")
        if cached is None:
            names = (n for p in self.patterns for n in capture_names(p.nodes))
            cached = tuple(dict.fromkeys(names))
            object.__setattr__(self, "_captures", cached)
        return cached


#: The name of the learning-rate multiplier among a ``with`` rule's settings.
LR_SETTING = "lr"


@dataclass(frozen=True)
class Setting:
    """One setting of a ``with`` rule: ``lr * value`` (``name == "lr"``: the owner's
    learning rate times ``value``) or ``name = value`` (keyword ``name`` of the owner's
    optimizer call)."""

    name: str
    value: Expr
    span: Span = _span()
    name_span: Span = _span()

    @property
    def scales(self) -> bool:
        """Whether this is the learning-rate multiplier ``lr * value``."""
        return self.name == LR_SETTING


@dataclass(frozen=True)
class WithRule:
    """``patterns [except patterns] [where condition] with setting, ...``.

    It owns no leaf: it sets settings of the optimizer of whatever ``->`` rule owns
    the leaves it matches. For each setting, the first ``with`` rule in file order that
    matches a leaf and names the setting decides it.
    """

    patterns: tuple[Pattern, ...]
    excepts: tuple[Pattern, ...]
    settings: tuple[Setting, ...]
    span: Span = _span()
    where: Expr | None = None

    @functools.cached_property
    def captures(self) -> tuple[str, ...]:
        """The names the rule's patterns capture, in order of appearance."""
        names = (n for p in self.patterns for n in capture_names(p.nodes))
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class PatternDef:
    """``let @name = pattern, ...``: patterns named once, used by ``@name`` in rules."""

    name: str
    patterns: tuple[Pattern, ...]
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True)
class Let:
    """``let name = value``."""

    name: str
    value: Expr
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True)
class Param:
    """``param name [= default]``: a value the caller may set."""

    name: str
    default: Expr | None
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True)
class Include:
    """``include "path"``: the statements of another spec file, in this one's place."""

    path: str
    span: Span = _span()


@dataclass(frozen=True)
class Global:
    """``global transform``: runs on the gradients of all trainable leaves, before the rules."""

    value: Expr
    span: Span = _span()


Statement = Union[Rule, WithRule, Let, PatternDef, Param, Include, Global]


@dataclass(frozen=True)
class Comment:
    """A ``#`` comment: its text (with the ``#``), its line, and whether code precedes it."""

    text: str
    line: int
    trailing: bool


@dataclass(frozen=True)
class Spec:
    """A parsed spec: its statements in file order.

    ``source``, ``filename`` and ``comments`` describe where the spec came from and
    take no part in equality. ``sources`` maps the file name of every included file
    to its text (statements from an include carry that name in ``span.file``).
    """

    statements: tuple[Statement, ...]
    source: str | None = field(default=None, compare=False, repr=False)
    filename: str | None = field(default=None, compare=False, repr=False)
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self) -> dict[str, object]:
        # Caches (a checked spec per param values) stay behind.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def attach(self, diagnostic: Diagnostic) -> Diagnostic:
        """``diagnostic`` with its file name and source lines filled in from this spec
        (and from the included files it was read with, for spans in them)."""
        name = diagnostic.filename
        if name is not None and name != self.filename and name in self.sources:
            attached = diagnostic.with_source(self.sources[name], name)
        else:
            attached = diagnostic.with_source(self.source, self.filename)
        if not any(a.file for a in attached.annotations):
            return attached
        notes = tuple(
            dataclasses.replace(a, source_line=line_of(self.sources[a.file], a.line))
            if a.file is not None and a.file in self.sources and a.source_line is None
            else a
            for a in attached.annotations
        )
        return dataclasses.replace(attached, annotations=notes)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in file order (first match wins)."""
        return tuple(s for s in self.statements if isinstance(s, Rule))

    @property
    def with_rules(self) -> tuple[WithRule, ...]:
        """The ``with`` rules, in file order (first match per setting wins)."""
        return tuple(s for s in self.statements if isinstance(s, WithRule))

    @property
    def globals(self) -> tuple[Global, ...]:
        """The ``global`` transforms, in file order."""
        return tuple(s for s in self.statements if isinstance(s, Global))

    @property
    def includes(self) -> tuple[Include, ...]:
        """The ``include`` statements not yet resolved (see :func:`partspec.load`)."""
        return tuple(s for s in self.statements if isinstance(s, Include))

    @property
    def params(self) -> tuple[Param, ...]:
        """The ``param`` declarations."""
        return tuple(s for s in self.statements if isinstance(s, Param))

    def compile(
        self,
        params: object,
        /,
        *,
        strict: bool = False,
        values: dict[str, object] | None = None,
        **kwvalues: object,
    ) -> object:
        """Compile against a parameter tree; see :func:`partspec.compile`."""
        return _hook("compile")(self, params, strict=strict, values=values, **kwvalues)

    def __str__(self) -> str:
        """The canonical text of the spec (:func:`partspec.format`)."""
        text: str = _hook("format")(self)
        return text


#: What a spec can do that later stages implement: ``format`` (the formatter) and
#: ``compile`` (the API layer). They register here, so that the AST imports neither.
_HOOKS: dict[str, Callable[..., Any]] = {}


def register_hook(name: str, fn: Callable[..., Any]) -> None:
    """Let ``Spec.__str__`` (``name="format"``) or ``Spec.compile`` call ``fn``."""
    _HOOKS[name] = fn


def _hook(name: str) -> Callable[..., Any]:
    fn = _HOOKS.get(name)
    if fn is None:  # pragma: no cover - `import partspec` registers both
        raise RuntimeError(f"Spec.{name} needs `import partspec`")
    return fn
