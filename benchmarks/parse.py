"""Parsing and checking benchmark: large specs, and includes of one file many times.

Generates specs of 1,000 and 10,000 rules in the shapes real specs use (alternatives,
``except``, ``where``, captures, keyword arguments, ``frozen until``) and measures, in
one process, best of N:

* ``parse_syntax(text)`` (text to AST) and ``check_spec(spec)`` (names, calls, types);
* the same rules written as the Python a user would hand-write (a list of
  ``(glob, optax call)`` pairs), parsed by Python's own ``compile()``: the baseline;
* ``partspec.load`` of a file that includes one 100-rule file 100 times.

Usage::

    python benchmarks/parse.py            # report only (exit 0)
    python benchmarks/parse.py --check    # exit 1 if a target is missed

Targets (gated by ``--check``): parse + check at most 0.5 s per 1,000 rules at 10,000
rules; 10,000 rules cost at most 12x 1,000 rules (linear); the 100 includes load in at
most 3x the time of parsing the same 10,000 rules once (each file is parsed once).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if importlib.util.find_spec("partspec") is None:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import partspec
from partspec.language.checker import check_spec
from partspec.language.parser import parse_syntax

_SHAPES = [
    "encoder/layer_{i}/{{query,key,value}}/* except **/bias -> adamw({i}e-6, weight_decay=0.01)",
    "blocks/{i}/** where ndim > 1 and shape[-1] >= 64 -> sgd(0.1 * {i}, momentum=0.9)",
    "decoder/layer_{i}/mlp/expert_{{0..7}}/w[io]/kernel -> adam(lr * 0.9 ** {i})",
    "stage_{i}/<j>/conv/** -> frozen until {i}00 then lion(1e-4 * j)",
    '"head {i}"/**, neck_{i}/* -> chain(clip_by_global_norm(1.0), adam(lr)) as h{i}',
]


def rules_text(n: int) -> str:
    """``n`` rules in the shapes above."""
    return "".join(_SHAPES[i % len(_SHAPES)].format(i=i) + "\n" for i in range(n))


def spec_text(n: int) -> str:
    """A spec of ``n`` rules (plus a param and a catch-all)."""
    return "param lr = 1e-3\n" + rules_text(n) + "** -> frozen\n"


def python_text(n: int) -> str:
    """The same rules as hand-written Python: ``(glob, optimizer call)`` pairs."""
    rows = [
        f"    ({f'encoder/layer_{i}/*'!r}, optax.adamw({i}e-6, weight_decay=0.01), "
        f"lambda p: p.ndim > 1 and p.shape[-1] >= 64),"
        for i in range(n)
    ]
    return "RULES = [\n" + "\n".join(rows) + "\n]\n"


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    rows: list[tuple[str, float, str]] = []
    per: dict[int, float] = {}
    for n in (1_000, 10_000):
        text = spec_text(n)
        spec = parse_syntax(text)
        t_parse = best(lambda text=text: parse_syntax(text), args.repeat)
        t_check = best(lambda spec=spec: check_spec(spec), args.repeat)
        t_py = best(lambda n=n: compile(python_text(n), "<rules>", "exec"), args.repeat)
        per[n] = t_parse + t_check
        rows += [
            (f"parse, {n:,} rules", t_parse, f"{1000 * t_parse / n:.3f} ms/rule"),
            (f"check, {n:,} rules", t_check, f"{1000 * t_check / n:.3f} ms/rule"),
            (f"Python compile(), {n:,} rules", t_py, f"parse / Python: {t_parse / t_py:.1f}x"),
        ]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "part.pspec").write_text(rules_text(100))
        (root / "top.pspec").write_text(
            "param lr = 1e-3\n" + 'include "part.pspec"\n' * 100 + "** -> frozen\n"
        )
        t_include = best(lambda: partspec.load(root / "top.pspec"), args.repeat)
    rows.append(("load, 100 includes of 100 rules", t_include, ""))

    width = max(len(name) for name, _, _ in rows)
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds * 1000:9.1f} ms  {note}")
    per_thousand = per[10_000] / 10
    scaling = per[10_000] / per[1_000]
    include_ratio = t_include / per[10_000]
    print()
    print(f"parse + check per 1,000 rules (at 10,000): {per_thousand:.3f} s (target <= 0.5 s)")
    print(f"10,000 rules / 1,000 rules: {scaling:.1f}x (target <= 12x)")
    print(f"100 includes / parse + check of 10,000 rules: {include_ratio:.2f}x (target <= 3x)")
    missed = per_thousand > 0.5 or scaling > 12 or include_ratio > 3
    if args.check and missed:
        print("a target was missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
