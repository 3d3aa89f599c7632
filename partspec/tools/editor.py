"""What an editor shows about a spec: diagnostics, hovers, completions, definitions.

Pure functions of the buffer's text (never the file on disk, which may be older), its
path (includes are relative to it) and the project's ``[tool.partspec]`` table; the
language server (:mod:`partspec.tools.lsp`) turns them into LSP messages. Diagnostics
are those of ``pspec check`` (:func:`partspec.tools.checking.check_loaded`), with the
table's ``tree``, ``set`` and ``strict``. Positions are 1-based lines and columns in
code points, as everywhere in partspec.

>>> a = analyze("let lr = 1e-3\\nhead/** -> adam(lr * 2)\\n", "spec.pspec")
>>> a.diagnostics
[]
>>> print(hover(a, 2, 18))
**`let lr`** = `0.001`
>>> [c.label for c in completions("x/** -> ada", 1, 12)][:3]
['adabelief', 'adadelta', 'adafactor']
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from partspec.diagnostics import Diagnostic, SpecError
from partspec.language import ast
from partspec.language._optax_table import TABLE
from partspec.language.functions import FUNCTIONS, signature
from partspec.tools.checking import CheckOutcome, check_loaded
from partspec.tools.config import Config

__all__ = [
    "Analysis",
    "Completion",
    "Location",
    "analyze",
    "completions",
    "definition",
    "format_text",
    "hover",
]

_WORD = re.compile(r"@?[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Location:
    """A place in a file: ``path`` and the 1-based span."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class Completion:
    """One completion item: the text, its kind and a one-line detail."""

    label: str
    kind: str  # "function", "keyword", "variable" or "argument"
    detail: str = ""
    insert: str | None = None


@dataclass(frozen=True)
class Analysis:
    """A buffer parsed, checked and (with a tree) resolved.

    Attributes:
      text: the buffer.
      path: its file name.
      own: the buffer's statements as written (``None`` on a syntax error).
      outcome: what checking found (diagnostics of every file, the checked spec and,
        with a tree, the resolution).
      leaves: the tree's leaves (``path``, ``shape``, ``dtype``), if one is configured.
      tree_error: why the configured tree could not be read.
    """

    text: str
    path: str
    own: ast.Spec | None
    outcome: CheckOutcome
    leaves: Sequence[Any] | None = None
    tree_error: str | None = None
    config: Config = field(default_factory=Config)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """The diagnostics to show in this buffer (an included file's at its include)."""
        here, out = os.path.abspath(self.path), []
        for d in self.outcome.diagnostics:
            if d.filename is None or os.path.abspath(d.filename) == here:
                out.append(d)
                continue
            include = self._include_of(d.filename)
            if include is not None:
                out.append(
                    Diagnostic.at(
                        d.code,
                        f"in {d.location}: {d.message}",
                        include.span,
                        severity=d.severity,
                        hint=d.hint,
                    )
                )
            else:
                out.append(d)
        if self.tree_error:
            out.append(Diagnostic("E001", "warning", f"tree not read: {self.tree_error}"))
        return out

    def _include_of(self, filename: str) -> ast.Include | None:
        if self.own is None:
            return None
        target = os.path.abspath(filename)
        base = os.path.dirname(os.path.abspath(self.path))
        for inc in self.own.includes:
            if os.path.abspath(os.path.join(base, inc.path)) == target:
                return inc
        return self.own.includes[0] if self.own.includes else None


#: The last trees read, by (path, modification time, size): a buffer is analysed on
#: every keystroke, and a manifest of 100,000 leaves takes a while to read.
_TREES: dict[tuple[str, int, int], Sequence[Any]] = {}


def _leaves(config: Config) -> tuple[Sequence[Any] | None, str | None]:
    if config.tree is None:
        return None, None
    from partspec.tools.manifest import TreeInputError, load_leaves

    if ":" in config.tree and not os.path.exists(config.tree):
        return None, None  # MODULE:CALLABLE runs user code: never from an editor
    try:
        st = os.stat(config.tree)
        key = (os.path.abspath(config.tree), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    if key is not None and key in _TREES:
        return _TREES[key], None
    try:
        leaves = load_leaves(config.tree)
    except TreeInputError as err:
        return None, str(err)
    if key is not None:
        if len(_TREES) >= 4:
            _TREES.clear()
        _TREES[key] = leaves
    return leaves, None


def analyze(
    text: str, path: str, config: Config | None = None, leaves: Sequence[Any] | None = None
) -> Analysis:
    """Parse, check and (with ``config.tree`` or ``leaves``) resolve a buffer."""
    from partspec.language.includes import resolve_includes
    from partspec.language.parser import parse_syntax

    config = config or Config()
    tree_error = None
    if leaves is None:
        leaves, tree_error = _leaves(config)
    try:
        own = parse_syntax(text, filename=path)
    except SpecError as err:
        return Analysis(text, path, None, CheckOutcome(list(err.diagnostics)), leaves, tree_error)
    try:
        spec = resolve_includes(own, os.path.dirname(path) or os.curdir)
    except SpecError as err:
        return Analysis(text, path, own, CheckOutcome(list(err.diagnostics)), leaves, tree_error)
    outcome = check_loaded(spec, config.values, leaves, strict=config.strict)
    return Analysis(text, path, own, outcome, leaves, tree_error, config)


# ---------------------------------------------------------------- words and places


def _word_at(text: str, line: int, column: int) -> tuple[str, int] | None:
    """The name (or ``@name``) under a 1-based position, and its start column."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return None
    src = lines[line - 1]
    for m in _WORD.finditer(src):
        if m.start() + 1 <= column <= m.end() + 1:
            return m.group(), m.start() + 1
    return None


def _inside(span: Any, line: int, column: int) -> bool:
    start, end = (span.line, span.column), (span.end_line, span.end_column)
    return start <= (line, column) <= end


def _own_file(a: Analysis, span: Any) -> bool:
    return span.file is None or os.path.abspath(span.file) == os.path.abspath(a.path)


# ---------------------------------------------------------------- hover


def _value_text(v: Any) -> str:
    from partspec.resolution.settings import show_value

    return show_value(v)


def _signature_text(name: str) -> str:
    entry = TABLE[name]
    args = []
    for p in entry["params"]:
        if p["kind"] == "varargs":
            args.append(f"*{p['name']}")
        elif p["required"]:
            args.append(p["name"])
        else:
            default = p["default"]
            shown = "none" if default is None else _value_text(default)
            args.append(f"{p['name']}={shown}")
    return f"{name}({', '.join(args)})"


def _rate(action: Any) -> str:
    """An action's learning rate in words (``learning rate constant 0.001``)."""
    from partspec.language.values import OptaxCall, Until
    from partspec.resolution.hyper import describe, named_args

    if isinstance(action, Until):
        action = action.then
    todo = [action] if isinstance(action, OptaxCall) else []
    while todo:  # the call, then the calls nested in it (a chain's parts)
        call = todo.pop(0)
        if call.kind == "schedule" or call.name not in TABLE:
            continue
        args = named_args(call)
        if "learning_rate" in args:
            return "learning rate " + describe(args["learning_rate"])
        todo += [v for v in (*call.args, *(v for _, v in call.kwargs)) if isinstance(v, OptaxCall)]
    return "no learning rate"


def _rule_hover(a: Analysis, index: int) -> str:
    checked = a.outcome.checked
    assert checked is not None
    cr = checked.rules[index]
    head = f"**rule `{cr.label}`**"
    res = a.outcome.resolution
    if res is None:
        why = (
            f"tree not read: {a.tree_error}"
            if a.tree_error
            else "set `tree` in `[tool.partspec]` of pyproject.toml to see what it owns"
        )
        if cr.action is None:
            what = "frozen"
        elif cr.captures:
            what = f"learning rate per value of {', '.join(cr.captures)}"
        else:
            what = _rate(cr.action)
        return f"{head}\n\n{what}\n\n_{why}_"
    assert a.leaves is not None
    n_leaves = n_params = 0
    labels: dict[str, None] = {}
    for owner, label, leaf in zip(res.owners, res.labels, a.leaves):
        if owner == index:
            n_leaves += 1
            n_params += math.prod(leaf.shape)
            if label is not None:
                labels[label] = None
    lines = [
        head,
        "",
        f"owns {n_leaves:,} lea{'f' if n_leaves == 1 else 'ves'}, "
        f"{n_params:,} parameter{'' if n_params == 1 else 's'}",
    ]
    if not n_leaves:
        lines.append("(switched off)" if cr.switched_off else "(matches nothing it can own)")
    rates: dict[str, list[str]] = {}
    for label in labels:
        owned = res.actions[label]
        if owned.frozen:
            rates.setdefault("frozen", []).append(label)
            continue
        rates.setdefault(_rate(owned.optimizer), []).append(label)
    for text, labs in list(rates.items())[:8]:
        which = f" ({len(labs)} labels)" if len(labs) > 1 else ""
        lines.append(f"- {text}{which}")
    if len(rates) > 8:
        lines.append(f"- ... {len(rates) - 8} more")
    return "\n".join(lines)


def hover(a: Analysis, line: int, column: int) -> str | None:
    """Markdown for the position: a name's value, a function's signature, or what the
    rule there owns (leaves, parameters, learning rate)."""
    word = _word_at(a.text, line, column)
    checked = a.outcome.checked
    if word is not None:
        name, _ = word
        if name.startswith("@"):
            d = _named_pattern(a, name[1:])
            if d is not None:
                from partspec.language.formatter import format_pattern

                shown = ", ".join(format_pattern(p) for p in d.patterns)
                return f"**`let {name}`** = `{shown}`"
        elif checked is not None and name in checked.values:
            kind = "param" if any(p.name == name for p in checked.spec.params) else "let"
            return f"**`{kind} {name}`** = `{_value_text(checked.values[name])}`"
        elif name in TABLE:
            kind = TABLE[name]["kind"]
            return f"**{kind}** `{_signature_text(name)}` (optax.{name})"
        elif name in FUNCTIONS:
            return f"**function** `{signature(name)}`"
    if checked is None:
        return None
    for cr in checked.rules:
        if _own_file(a, cr.rule.span) and _inside(cr.rule.span, line, column):
            return _rule_hover(a, cr.index)
    for cw in checked.with_rules:
        if _own_file(a, cw.rule.span) and _inside(cw.rule.span, line, column):
            return _with_hover(a, cw.index)
    return None


def _with_hover(a: Analysis, index: int) -> str:
    """What a ``with`` rule decides: its settings, and the trained leaves it decides them
    for (a later ``with`` rule may decide the same setting instead)."""
    from partspec.language.formatter import format_setting

    checked = a.outcome.checked
    assert checked is not None
    cw = checked.with_rules[index]
    settings = ", ".join(format_setting(s) for s in cw.rule.settings)
    head = f"**`with` rule** `{settings}`"
    res = a.outcome.resolution
    if res is None:
        return f"{head}\n\n_set `tree` in `[tool.partspec]` of pyproject.toml to see its leaves_"
    assert a.leaves is not None
    decided = {lab for lab, act in res.actions.items() if index in act.with_rules}
    n_leaves = n_params = 0
    for label, leaf in zip(res.labels, a.leaves):
        if label in decided:
            n_leaves += 1
            n_params += math.prod(leaf.shape)
    if not n_leaves:
        why = (
            "switched off"
            if cw.switched_off
            else "decides nothing: no trained leaf, or later rules"
        )
        return f"{head}\n\n({why})"
    return (
        f"{head}\n\ndecides settings of {n_leaves:,} lea{'f' if n_leaves == 1 else 'ves'}, "
        f"{n_params:,} parameter{'' if n_params == 1 else 's'} ({len(decided)} labels)"
    )


# ---------------------------------------------------------------- definition


def _named_pattern(a: Analysis, name: str) -> ast.PatternDef | None:
    spec = a.outcome.checked.spec if a.outcome.checked is not None else a.own
    if spec is None:
        return None
    for st in spec.statements:
        if isinstance(st, ast.PatternDef) and st.name == name:
            return st
    return None


def definition(a: Analysis, line: int, column: int) -> Location | None:
    """Where the name under the position is defined (a ``let``, ``param`` or named
    pattern, in this file or an included one), or the file an ``include`` names."""
    if a.own is not None:
        for inc in a.own.includes:
            if _inside(inc.span, line, column):
                target = os.path.join(os.path.dirname(a.path), inc.path)
                return Location(os.path.normpath(target), 1, 1, 1, 1)
    word = _word_at(a.text, line, column)
    if word is None:
        return None
    name = word[0]
    spec = a.outcome.checked.spec if a.outcome.checked is not None else a.own
    if spec is None:
        return None
    for st in spec.statements:
        hit = (isinstance(st, ast.PatternDef) and name == f"@{st.name}") or (
            isinstance(st, (ast.Let, ast.Param)) and name == st.name
        )
        if hit:
            s = st.name_span  # type: ignore[union-attr]
            path = a.path if s.file is None else s.file
            if s.file is not None and not os.path.isabs(s.file):
                path = os.path.join(os.path.dirname(a.path), s.file)
            return Location(os.path.normpath(path), s.line, s.column, s.end_line, s.end_column)
    return None


# ---------------------------------------------------------------- completion

_KINDS_AFTER_ARROW = ("optimizer", "combinator")


def _open_call(before: str) -> str | None:
    """The function whose argument list the text ``before`` the cursor is inside."""
    depth = 0
    for i in range(len(before) - 1, -1, -1):
        ch = before[i]
        if ch in ")]":
            depth += 1
        elif ch in "([":
            if depth:
                depth -= 1
                continue
            if ch == "[":
                return None
            m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:i])
            return m.group(1) if m else None
    return None


def _statement_before(text: str, line: int, column: int) -> str:
    """The text of the statement up to the cursor (lines joined inside brackets)."""
    lines = text.split("\n")
    upto = [*lines[: line - 1], lines[line - 1][: column - 1] if line <= len(lines) else ""]
    joined = "\n".join(upto)
    # A statement ends at a newline or ';' outside brackets.
    depth, start = 0, 0
    for i, ch in enumerate(joined):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "#":
            continue
        elif ch in "\n;" and depth == 0:
            start = i + 1
    return joined[start:]


def completions(text: str, line: int, column: int, a: Analysis | None = None) -> list[Completion]:
    """What may be typed at the position: keyword arguments inside a call of an optax
    function, otherwise function names (optimizers after ``->``, transforms after
    ``global``), names defined above, and keywords; filtered by the word being typed."""
    before = _statement_before(text, line, column)
    typed = re.search(r"@?[A-Za-z_][A-Za-z0-9_]*$", before)
    prefix = typed.group() if typed else ""
    call = _open_call(before)
    out: list[Completion] = []
    if call in TABLE:
        used = set(re.findall(r"([A-Za-z_]\w*)\s*=(?!=)", before.rsplit(call, 1)[-1]))
        for p in TABLE[call]["params"]:
            if p["kind"] == "varargs" or p["name"] in used:
                continue
            types = "/".join(p["types"]) if p.get("types") else "value"
            default = "" if p["required"] else f", default {p['default']!r}"
            out.append(Completion(p["name"], "argument", f"{types}{default}", f"{p['name']}="))
    stripped = before.lstrip()
    in_pattern = "->" not in before and not re.search(r"\s(where|with)\s", before)
    if in_pattern and not stripped.startswith(("let ", "param ", "global ")):
        out += _names(a, patterns=True)  # a pattern: offer the named patterns
        return [c for c in out if c.label.startswith(prefix)]
    if stripped.startswith("global "):
        kinds: tuple[str, ...] = ("transform",)
    elif call is None and re.search(r"->\s*[A-Za-z_]*$", before):
        kinds = _KINDS_AFTER_ARROW
        out.append(Completion("frozen", "keyword", "no optimizer: the leaves never change"))
    else:
        kinds = ("optimizer", "transform", "combinator", "schedule")
    for name, entry in sorted(TABLE.items()):
        if entry["kind"] in kinds:
            out.append(Completion(name, "function", f"{entry['kind']}: {_signature_text(name)}"))
    if kinds != _KINDS_AFTER_ARROW:
        out += [Completion(f, "function", signature(f).replace("`", "")) for f in sorted(FUNCTIONS)]
        out += _names(a, patterns=False)
    return [c for c in out if c.label.startswith(prefix)]


def _names(a: Analysis | None, *, patterns: bool) -> list[Completion]:
    if a is None:
        return []
    spec = a.outcome.checked.spec if a.outcome.checked is not None else a.own
    if spec is None:
        return []
    out = []
    for st in spec.statements:
        if patterns and isinstance(st, ast.PatternDef):
            out.append(Completion(f"@{st.name}", "variable", "named pattern"))
        elif not patterns and isinstance(st, (ast.Let, ast.Param)):
            kind = "param" if isinstance(st, ast.Param) else "let"
            out.append(Completion(st.name, "variable", kind))
    return out


# ---------------------------------------------------------------- formatting


def format_text(text: str, path: str) -> str | None:
    """``pspec fmt`` of the buffer, or ``None`` when it does not parse."""
    from partspec.language.formatter import format_spec
    from partspec.language.parser import parse_syntax

    try:
        return format_spec(parse_syntax(text, filename=path))
    except SpecError:
        return None
