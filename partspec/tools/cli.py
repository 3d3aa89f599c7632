"""The ``pspec`` command line (also ``python -m partspec``).

Commands:
  ``pspec check SPEC... [--tree TREE] [--set NAME=VALUE]... [--strict] [--format F]``
  ``pspec explain SPEC --tree TREE [--set NAME=VALUE]... [--leaves GLOB] [--format F]``
  ``pspec fmt SPEC... [--check]``
  ``pspec tree MODULE:CALLABLE [-o FILE]``
  ``pspec diff OLD NEW --tree TREE [--set NAME=VALUE]... [--format F]``
  ``pspec plot SPEC --tree TREE --steps N [-o FILE] [--format image|csv|json]``
  ``pspec lsp [--plugin MODULE]`` (the language server, over stdio)

A SPEC may be a directory (its ``*.pspec`` files) or ``-``; ``[tool.partspec]`` in
``pyproject.toml`` gives defaults for SPECs, ``--tree``, ``--set``, ``--strict`` and plugins
(:mod:`partspec.tools.config`).

``check``, ``explain`` and ``diff`` follow ``include`` statements (and take
``--allow-outside-includes``); ``fmt`` formats each file as written.

Exit codes: 0 clean (warnings allowed unless ``--strict``), 1 problems in a spec (an
include that cannot be resolved included), 2 usage errors or unreadable input (a spec
file given on the command line that cannot be read). ``check`` on a JSON manifest never
imports JAX.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from partspec._extras import MissingExtra, needs
from partspec._version import __version__
from partspec.diagnostics import Diagnostic, SpecError, clip, printable
from partspec.diagnostics.render import FORMATS, RENDERERS
from partspec.language.includes import STDIN, STDIN_NAME

if TYPE_CHECKING:
    from partspec.language.ast import Spec
    from partspec.tools.config import Config

__all__ = ["main"]

EXIT_CLEAN, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
#: Commands that compile a spec or build a model: they need the `jax` extra.
_NEEDS_JAX = frozenset({"explain", "diff", "tree", "plot"})
#: Commands that need a parameter tree (``--tree``, or ``tree`` in ``[tool.partspec]``).
_NEEDS_TREE = frozenset({"explain", "diff", "plot"})
#: Diagnostic codes that mean the input, not the spec, is bad (exit 2).
_USAGE_CODES = frozenset({"E001", "E304"})


class _Usage(Exception):
    """A usage error: printed as ``pspec: error: ...``, exit 2."""


# ---------------------------------------------------------------- helpers


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set NAME=VALUE``: numbers, ``true``/``false``/``none``, quoted or bare strings."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise _Usage(f"--set expects NAME=VALUE, got {item!r}")
        values[name] = _literal(raw.strip())
    return values


def _exit_code(diags: Sequence[Diagnostic]) -> int:
    """2 when every diagnostic is about the input (an unreadable file, an unknown
    ``--set``), else 1: a problem in the spec."""
    return EXIT_USAGE if all(d.code in _USAGE_CODES for d in diags) else EXIT_PROBLEMS


def _spec_failed(
    err: SpecError, items: Sequence[str], fmt: str, out: TextIO, checked_files: int
) -> int:
    """A spec that does not compile against the tree: a ``--set`` type error is raised
    at the option; anything else is reported and gives the exit code."""
    _set_errors(err, items)
    _emit(err.diagnostics, fmt, out, checked_files=checked_files)
    return _exit_code(err.diagnostics)


def _write_output(path: str | None, text: str, out: TextIO) -> None:
    """``text`` to the file ``-o`` names (``-`` or none: standard output)."""
    if path is None or path == "-":
        out.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _Usage(f"cannot write {path!r}: {exc.strerror or exc}") from None


def _set_errors(err: SpecError, items: Sequence[str]) -> None:
    """Raise a usage error for a ``--set`` value of the wrong type (``E416``): the
    mistake is in the option, not at the spec's line that declares the param."""
    bad = [d for d in err.diagnostics if d.code == "E416"]
    if not bad:
        return
    given = {item.partition("=")[0].strip(): item for item in items}
    for d in bad:
        name = re.search(r"param `([^`]+)`", d.message)
        item = given.get(name.group(1)) if name else None
        if item is not None:
            where = f" (declared at {d.filename}:{d.line})" if d.filename and d.line else ""
            raise _Usage(f"--set {item}: {d.message}{where}")


class _Progress:
    """What a slow command is doing, on standard error, for people: shown only on a
    terminal, only once the command has run for :attr:`after` seconds, on one line that
    is cleared at the end (a pipe or a CI log gets nothing)."""

    after = 1.0

    def __init__(self, err: TextIO) -> None:
        import time

        self.err = err
        self.start = time.monotonic()
        self.shown = False
        self.last = ""
        self.live = bool(getattr(err, "isatty", lambda: False)()) and not _env("NO_PROGRESS")

    def say(self, what: str) -> None:
        import time

        self.last = what
        if self.live and (self.shown or time.monotonic() - self.start >= self.after):
            self.err.write(f"\r\x1b[2K{_shown(what)}...")
            self.err.flush()
            self.shown = True

    def __enter__(self) -> _Progress:
        self.say(self.last)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shown:
            self.err.write("\r\x1b[2K")
            self.err.flush()


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "")


def _use_color(choice: str, out: TextIO) -> bool:
    """``--color always|never|auto``; ``auto`` follows the conventions: ``NO_COLOR`` (any
    value) turns color off, ``FORCE_COLOR`` on, ``TERM=dumb`` off, else a terminal gets it."""
    import os

    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    return out.isatty()


def _width() -> int:
    """The terminal's width (``COLUMNS`` first), at least 60 columns."""
    import shutil

    return max(60, shutil.get_terminal_size((100, 24)).columns)


def _parse_steps(text: str) -> list[int]:
    """``--steps 0,1000,10000``: non-negative update numbers."""
    steps = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part.isdigit():
            raise _Usage(f"--steps expects update numbers such as 0,1000,10000, got {text!r}")
        steps.append(int(part))
    return steps


def _looks_like_tree(path: str) -> bool:
    """A file a spec is checked against (``--tree``), not a spec."""
    import os

    lowered = path.lower()
    return lowered.endswith(_TREE_SUFFIXES) or (path != "-" and os.path.isdir(path))


#: Suffixes of the parameter-tree files ``--tree`` reads.
_TREE_SUFFIXES = (".json", ".npz", ".safetensors", ".msgpack", ".pt", ".pth", ".ckpt")


def _not_trees(paths: Sequence[str], command: str) -> None:
    """A usage error for a tree file given where a spec is expected."""
    for path in paths:
        if _looks_like_tree(path):
            raise _Usage(
                f"{path!r} looks like a parameter tree, not a spec; give it with --tree: "
                f"`pspec {command} SPEC --tree {path}`"
            )


def _literal(raw: str) -> Any:
    lowered = {"true": True, "false": False, "none": None}
    if raw in lowered:
        return lowered[raw]
    for conv in (int, float):
        try:
            return conv(raw.replace("_", ""))
        except ValueError:
            pass
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


def _read_spec(path: str) -> tuple[str | None, list[Diagnostic]]:
    """The text of a spec file, or an E001 diagnostic."""
    from partspec.language.includes import read_spec_file

    try:
        return read_spec_file(path), []
    except SpecError as err:
        return None, err.diagnostics


def _load_spec(path: str, allow_outside: bool) -> tuple[Spec | None, list[Diagnostic], int]:
    """A spec file with its includes resolved (unchecked), or its diagnostics and exit code.

    A spec file that cannot be read is a usage error (exit 2); a problem in it or in a
    file it includes (a syntax error, ``E801``-``E803``) is a problem in the spec (exit 1).
    """
    from partspec.language.includes import load_syntax

    try:
        return load_syntax(path, allow_outside=allow_outside), [], EXIT_CLEAN
    except SpecError as err:
        return None, err.diagnostics, _exit_code(err.diagnostics)


def _lines(text: str) -> list[str]:
    """The lines of ``text`` with their ``\n``, split as the parser counts lines."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _load_tree(source: str) -> list[Any]:
    from partspec.tools.manifest import TreeInputError, load_leaves

    try:
        return load_leaves(source)
    except TreeInputError as exc:
        raise _Usage(f"cannot read tree: {exc}") from None


# ---------------------------------------------------------------- output formats


def _shown(text: str) -> str:
    """User text on one line: control characters escaped, cut to a readable length."""
    return printable(clip(text))


def _emit(
    diags: list[Diagnostic],
    fmt: str,
    out: TextIO,
    *,
    checked_files: int,
    coverage: bool = True,
) -> None:
    """The diagnostics in format ``fmt``, and for people a summary line (which says when
    coverage was not checked: no ``--tree``)."""
    out.write(RENDERERS[fmt](diags))
    if fmt not in ("full", "concise"):
        return
    unchecked = (
        ""
        if coverage
        else "\nCoverage not checked: give --tree to check against a model's parameters."
    )
    if not diags:
        n = checked_files
        out.write(f"All checks passed ({n} spec{'s' if n != 1 else ''}).{unchecked}\n")
        return
    errors = sum(d.severity == "error" for d in diags)
    warnings = len(diags) - errors
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    out.write(f"Found {' and '.join(parts)}.{unchecked}\n")


# ---------------------------------------------------------------- commands


def _check_one(
    path: str,
    values: dict[str, Any],
    leaves: list[Any] | None,
    strict: bool,
    allow_outside: bool = False,
    set_items: Sequence[str] = (),
) -> tuple[list[Diagnostic], int]:
    """Diagnostics for one spec file and the exit code it deserves."""
    from partspec.tools.checking import check_loaded

    spec, diags, code = _load_spec(path, allow_outside)
    if spec is None:
        return diags, code
    outcome = check_loaded(spec, values, leaves, strict=strict)
    if outcome.checked is None:  # names, calls or types: a --set value may be at fault
        _set_errors(SpecError(outcome.diagnostics), set_items)
        return outcome.diagnostics, _exit_code(outcome.diagnostics)
    return outcome.diagnostics, EXIT_PROBLEMS if outcome.failed else EXIT_CLEAN


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    _not_trees(args.specs, "check")
    values = _parse_set(args.set)
    leaves = _load_tree(args.tree) if args.tree else None
    all_diags: list[Diagnostic] = []
    code = EXIT_CLEAN
    for path in args.specs:
        diags, c = _check_one(
            path, values, leaves, args.strict, args.allow_outside_includes, args.set
        )
        all_diags += diags
        code = max(code, c)
    _emit(all_diags, args.format, out, checked_files=len(args.specs), coverage=leaves is not None)
    return code


def cmd_fmt(args: argparse.Namespace, out: TextIO) -> int:
    import difflib

    from partspec.language.formatter import format_spec
    from partspec.language.parser import parse_syntax

    code = EXIT_CLEAN
    changed = unchanged = 0
    problems: list[Diagnostic] = []
    for path in args.specs:
        text, diags = _read_spec(path)
        if text is None:
            problems += diags
            code = max(code, EXIT_USAGE)
            continue
        name = STDIN_NAME if path == STDIN else path
        try:
            spec = parse_syntax(text, filename=name)
            new = format_spec(spec)
            _same_meaning(spec, parse_syntax(new, filename=name), name)
        except SpecError as err:
            problems += err.diagnostics
            code = max(code, EXIT_PROBLEMS)
            continue
        if path == STDIN and not args.check:
            out.write(new)  # `pspec fmt -` is a filter
            continue
        if new == text:
            unchanged += 1
            continue
        changed += 1
        if args.check:
            diff = difflib.unified_diff(
                _lines(text),
                _lines(new),
                fromfile=path,
                tofile=f"{path} (formatted)",
            )
            out.writelines(diff)
            out.write(f"Would reformat: {path}\n")
            code = max(code, EXIT_PROBLEMS)
        else:
            Path(path).write_text(new, encoding="utf-8")
    for d in problems:
        out.write(d.render() + "\n\n")
    if args.specs == [STDIN] and not args.check:
        return code
    verb = "would be reformatted" if args.check else "reformatted"
    out.write(
        f"{changed} file{'s' if changed != 1 else ''} {verb}, "
        f"{unchanged} file{'s' if unchanged != 1 else ''} left unchanged\n"
    )
    return code


def _same_meaning(old: Spec, new: Spec, name: str) -> None:
    """Refuse to write a formatted file that lost a statement or a comment (a formatter
    bug must never cost the user their text)."""
    if new == old and [c.text for c in new.comments] == [c.text for c in old.comments]:
        return
    raise SpecError(
        [
            Diagnostic(
                "E002",
                "error",
                "formatting would change this spec's statements or comments; the file is "
                "left as it is",
                filename=name,
                hint="please report this as a partspec bug, with the file",
            )
        ]
    )


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    from partspec.language.parser import parse_selector
    from partspec.tools.explain import collapse_labels, explain, render_json, render_text

    _not_trees([args.spec], "explain")
    values = _parse_set(args.set)
    if args.leaves is not None:
        from partspec.language.ast import Spec as _Spec
        from partspec.language.checker import check_spec

        try:  # a bad glob, or a bad `where` in it (an unknown dtype): a usage error
            rule = parse_selector(args.leaves, filename="--leaves")
            check_spec(_Spec((rule,), source=args.leaves, filename="--leaves"))
        except SpecError as err:
            message = err.diagnostics[0].message
            raise _Usage(f"--leaves: invalid glob {args.leaves!r}: {message}") from None
    spec, diags, code = _load_spec(args.spec, args.allow_outside_includes)
    if spec is None:
        _emit(diags, args.format, out, checked_files=1)
        return code
    progress = _Progress(sys.stderr)
    progress.say(f"reading {args.tree}")
    leaves = _load_tree(args.tree)
    progress.say(f"resolving {len(leaves):,} leaves and sizing the optimizer state")
    steps = _parse_steps(args.steps) if args.steps is not None else None
    try:
        with progress:
            report = explain(spec, leaves, values, args.leaves, steps)
    except SpecError as err:
        return _spec_failed(err, args.set, args.format, out, 1)
    if args.format == "json":
        out.write(render_json(report))
    else:
        if args.collapse:
            report = collapse_labels(report)
        color = _use_color(args.color, out)
        tty = color or bool(getattr(out, "isatty", lambda: False)())
        out.write(render_text(report, color=color, width=_width() if tty else None))
    return EXIT_CLEAN


def cmd_plot(args: argparse.Namespace, out: TextIO) -> int:
    """``pspec plot SPEC --tree TREE --steps N [-o FILE] [--format F]``."""
    from partspec.tools.plot import lr_series, render_csv, render_json, save_image

    _not_trees([args.spec], "plot")
    if args.steps < 1:
        raise _Usage(f"--steps must be at least 1, got {args.steps}")
    fmt = args.format
    if fmt is None:
        image = args.output is not None and args.output.lower().endswith((".png", ".svg", ".pdf"))
        fmt = "image" if image else "json"
    if fmt == "image" and args.output is None:
        raise _Usage("an image needs a file: -o lr.png (or --format csv|json for text)")
    values = _parse_set(args.set)
    spec, diags, code = _load_spec(args.spec, args.allow_outside_includes)
    if spec is None:
        _emit(diags, "full", out, checked_files=1)
        return code
    leaves = _load_tree(args.tree)
    try:
        series = lr_series(spec, leaves, args.steps, values)
    except SpecError as err:
        return _spec_failed(err, args.set, "full", out, 1)
    if fmt == "image":
        try:
            save_image(series, args.output)
        except OSError as exc:
            raise _Usage(f"cannot write {args.output}: {exc.strerror or exc}") from None
        return EXIT_CLEAN
    _write_output(args.output, render_csv(series) if fmt == "csv" else render_json(series), out)
    return EXIT_CLEAN


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    """``pspec diff OLD NEW --tree TREE``: 0 if a checkpoint made under OLD restores under NEW."""
    from partspec.tools.diff import diff, render_diff, render_json
    from partspec.tools.manifest import TreeInputError

    _not_trees([args.old, args.new], "diff")
    values = _parse_set(args.set)
    specs: list[Spec] = []
    problems: list[Diagnostic] = []
    code = EXIT_CLEAN
    for path in (args.old, args.new):
        spec, diags, c = _load_spec(path, args.allow_outside_includes)
        problems += diags
        code = max(code, c)
        if spec is not None:
            specs.append(spec)
    if problems:
        _emit(problems, args.format, out, checked_files=2)
        return code
    leaves = _load_tree(args.tree)
    try:
        old, new = specs
        # Each spec gets the --set values it declares; a name neither declares goes to
        # OLD, to be reported there (E304, with a suggestion).
        declared = [{p.name for p in spec.params} for spec in (old, new)]
        unknown = {k: v for k, v in values.items() if not (k in declared[0] or k in declared[1])}
        old_values = {k: v for k, v in values.items() if k in declared[0]} | unknown
        new_values = {k: v for k, v in values.items() if k in declared[1]}
        report = diff(old, new, leaves, old_values, new_values)
    except SpecError as err:
        return _spec_failed(err, args.set, args.format, out, 2)
    except TreeInputError as exc:
        raise _Usage(f"cannot read tree: {exc}") from None
    out.write(render_json(report) if args.format == "json" else render_diff(report))
    return EXIT_CLEAN if report.restorable else EXIT_PROBLEMS


def cmd_lsp(args: argparse.Namespace, out: TextIO) -> int:
    """``pspec lsp``: the language server, on standard input and output."""
    from partspec.tools.lsp import serve

    return serve()


def cmd_tree(args: argparse.Namespace, out: TextIO) -> int:
    from partspec.tools.manifest import dump_manifest

    if ":" not in args.source:
        raise _Usage(f"expected MODULE:CALLABLE, got {args.source!r}")
    _write_output(args.output, dump_manifest(_load_tree(args.source)), out)
    return EXIT_CLEAN


# ---------------------------------------------------------------- entry point


_TREE_HELP = (
    "parameter structure: a .json manifest, .npz, .safetensors, an Orbax checkpoint "
    "directory, or MODULE:CALLABLE (which imports and runs that module)"
)
_TREE_DEFAULT = " (required; default: `tree` of [tool.partspec] in pyproject.toml)"


def _examples(*commands: str) -> dict[str, Any]:
    """``add_parser`` keywords for an epilog of examples, kept as written."""
    return {
        "epilog": "examples:\n" + "\n".join(f"  {c}" for c in commands),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pspec",
        description="Check, explain and format partspec specs: per-parameter optimizers for JAX.",
    )
    p.add_argument("--version", action="version", version=f"pspec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add_values(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="value of a `param` declared by the spec (repeatable)",
        )
        sp.add_argument(
            "--plugin",
            action="append",
            default=[],
            metavar="MODULE",
            help="import MODULE first, so that specs can use the optimizers, transforms "
            "and schedules it registers with partspec.register (repeatable; runs its "
            "code; [tool.partspec] plugins in pyproject.toml are imported too)",
        )

    def add_includes(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--allow-outside-includes",
            action="store_true",
            help="let `include` read files outside the directory of the spec file",
        )

    c = sub.add_parser(
        "check",
        help="check specs, optionally against a parameter structure",
        **_examples(
            "pspec check examples/vit_finetune.pspec --tree examples/vit_b16.tree.json",
            "pspec check --strict --format github specs/*.pspec --tree params.json",
        ),
    )
    c.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help=".pspec files or directories of them (`-` reads standard input; none: `files` "
        "of [tool.partspec] in pyproject.toml)",
    )
    c.add_argument(
        "--tree", metavar="TREE", help=_TREE_HELP + " (default: `tree` of [tool.partspec])"
    )
    add_values(c)
    add_includes(c)
    c.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="treat warnings as errors (default: `strict` of [tool.partspec], else off)",
    )
    c.add_argument(
        "--format",
        choices=FORMATS,
        default="full",
        help="full (default: source lines and carets), concise (one line each), json, "
        "github (workflow annotations) or sarif (SARIF 2.1.0, for GitHub code scanning)",
    )
    c.set_defaults(func=cmd_check)

    e = sub.add_parser(
        "explain",
        help="what a spec does to a model, rule by rule",
        **_examples(
            "pspec explain examples/layer_decay.pspec --tree examples/layer_decay.tree.json",
            "pspec explain SPEC --tree params.json --leaves 'encoder/**' --format json",
            "pspec explain SPEC --tree params.json --steps 0,1000,10000",
        ),
    )
    e.add_argument("spec", metavar="SPEC", help="the .pspec file (`-` reads standard input)")
    e.add_argument("--tree", metavar="TREE", help=_TREE_HELP + _TREE_DEFAULT)
    add_values(e)
    add_includes(e)
    e.add_argument("--leaves", metavar="GLOB", help="also show the owner of each matching leaf")
    e.add_argument(
        "--steps",
        metavar="N,N,...",
        help="also show every label's learning rate at these update numbers "
        "(from the compiled schedules), e.g. 0,1000,10000",
    )
    e.add_argument(
        "--format", choices=("full", "json"), default="full", help="a table (default) or JSON"
    )
    e.add_argument(
        "--collapse",
        action="store_true",
        help="one row per capture rule in the labels table (`layer[i=0..11]`, rates as "
        "ranges) instead of a row per label",
    )
    e.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="color the tables: auto (default) on a terminal, unless NO_COLOR is set or "
        "TERM=dumb; FORCE_COLOR forces it",
    )
    e.set_defaults(func=cmd_explain)

    f = sub.add_parser(
        "fmt",
        help="rewrite specs in canonical form (comments and `include` lines kept)",
        **_examples("pspec fmt examples/*.pspec", "pspec fmt --check specs/*.pspec"),
    )
    f.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help=".pspec files or directories of them, rewritten in place (`-` formats standard "
        "input to standard output; none: `files` of [tool.partspec] in pyproject.toml)",
    )
    f.add_argument("--check", action="store_true", help="exit 1 and show a diff instead")
    f.set_defaults(func=cmd_fmt)

    d = sub.add_parser(
        "diff",
        help="will a checkpoint made under OLD restore under NEW? (exit 0 if so, 1 if not)",
        **_examples("pspec diff old.pspec new.pspec --tree params.json"),
    )
    d.add_argument("old", metavar="OLD", help="the spec the checkpoint was made under")
    d.add_argument("new", metavar="NEW", help="the edited spec")
    d.add_argument("--tree", metavar="TREE", help=_TREE_HELP + _TREE_DEFAULT)
    add_values(d)
    add_includes(d)
    d.add_argument(
        "--format", choices=("full", "json"), default="full", help="a report (default) or JSON"
    )
    d.set_defaults(func=cmd_diff)

    pl = sub.add_parser(
        "plot",
        help="each label's learning rate against the update number (image, CSV or JSON)",
        **_examples(
            "pspec plot examples/param_groups.pspec --tree examples/param_groups.tree.json "
            "--steps 100 -o lr.png",
            "pspec plot SPEC --tree params.json --steps 10000 --format csv > lr.csv",
        ),
    )
    pl.add_argument("spec", metavar="SPEC", help="the .pspec file (`-` reads standard input)")
    pl.add_argument("--tree", metavar="TREE", help=_TREE_HELP + _TREE_DEFAULT)
    pl.add_argument("--steps", metavar="N", type=int, required=True, help="plot updates 0 to N - 1")
    add_values(pl)
    add_includes(pl)
    pl.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here: an image (.png, .svg, .pdf; needs matplotlib, the `plot` extra) "
        "or, with --format, CSV or JSON; standard output by default",
    )
    pl.add_argument(
        "--format",
        choices=("image", "csv", "json"),
        default=None,
        help="image (the default with -o FILE.png/.svg/.pdf), csv or json (the default "
        "without -o): the series the image draws",
    )
    pl.set_defaults(func=cmd_plot)

    t = sub.add_parser(
        "tree",
        help="write the parameter structure a function builds (runs that code)",
        **_examples("pspec tree my_pkg.models:params -o model.tree.json"),
    )
    t.add_argument(
        "source",
        metavar="MODULE:CALLABLE",
        help="imports MODULE and calls CALLABLE() for its parameters (this runs user code)",
    )
    t.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    t.set_defaults(func=cmd_tree)

    ls = sub.add_parser(
        "lsp",
        help="the language server for editors, over stdio (needs the `lsp` extra)",
        **_examples("pspec lsp", "pspec lsp --plugin my_project.partspec_ext"),
    )
    ls.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that specs can use what it registers (runs its code; "
        "the server never imports the plugins of [tool.partspec] by itself)",
    )
    ls.set_defaults(func=cmd_lsp)
    return p


def _plugins(config: Config, named: Sequence[str]) -> None:
    """Import the plugins named by ``--plugin`` and by ``[tool.partspec]``: the one
    place where these commands import user code."""
    from partspec.tools.plugins import PluginError, load_plugins

    try:
        load_plugins([*config.plugins, *named])
    except PluginError as err:
        raise _Usage(str(err)) from None


def _toml_item(name: str, value: Any) -> str:
    """A ``[tool.partspec.set]`` value as the ``--set`` item that gives it."""
    if isinstance(value, bool):
        return f"{name}={'true' if value else 'false'}"
    if isinstance(value, str):
        return f"{name}={json.dumps(value)}"
    return f"{name}={value!r}"


def _configure(args: argparse.Namespace) -> Config:
    """Fill what the command line left out from ``[tool.partspec]`` (the command line
    wins), and expand directories given as specs."""
    from partspec.tools.config import ConfigError, expand_specs, load_config

    try:
        config = load_config()
    except ConfigError as err:
        raise _Usage(str(err)) from None
    where = (
        f"[tool.partspec] of {config.path}" if config.path else "[tool.partspec] of pyproject.toml"
    )
    if hasattr(args, "set"):
        args.set = [_toml_item(k, v) for k, v in config.values.items()] + list(args.set)
    if hasattr(args, "strict") and args.strict is None:
        args.strict = config.strict
    if hasattr(args, "tree") and args.tree is None:
        args.tree = config.tree
        if args.tree is None and args.command in _NEEDS_TREE:
            raise _Usage(f"--tree TREE is required (or set `tree` in {where})")
    if hasattr(args, "specs"):
        base = config.path.parent if config.path else None
        given = list(args.specs) or list(config.files)
        if not given:
            raise _Usage(f"give SPEC files or directories (or set `files` in {where})")
        try:
            args.specs = expand_specs(given, config.exclude, base)
        except ConfigError as err:
            raise _Usage(str(err)) from None
    return config


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``pspec`` with ``argv``; returns the exit code (never raises for bad input)."""
    if out is None:
        out = sys.stdout
        # A key the terminal's encoding cannot show (or a lone surrogate from a file
        # name) is written as an escape, never a UnicodeEncodeError.
        if isinstance(out, io.TextIOWrapper):
            out.reconfigure(errors="backslashreplace")
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help/--version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(
            "pspec: error: a command is required (check, explain, fmt, plot, tree, diff, lsp)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        if args.command in _NEEDS_JAX:
            needs("jax", f"`pspec {args.command}`")
        if args.command == "lsp":
            needs("lsp", "`pspec lsp`")
        config = _configure(args)
        if args.command == "lsp":  # an editor starts it: only what its command line names
            _plugins(type(config)(), args.plugin)
        elif hasattr(args, "plugin"):
            _plugins(config, args.plugin)
        return int(args.func(args, out))
    except (_Usage, MissingExtra) as exc:
        print(f"pspec: error: {_shown(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `pspec ... | head`: stop quietly, as the Python docs advise
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PROBLEMS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
