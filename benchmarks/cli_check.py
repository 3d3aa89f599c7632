"""CLI benchmark: `pspec check` on a JSON manifest against the cost of `import jax`.

`pspec check SPEC --tree MANIFEST` is meant for CI and pre-commit: on a manifest it never
imports JAX, so checking a spec against a 10,000-leaf model should take less time than
merely importing JAX. This script writes, in a temporary directory, a 10,000-leaf JSON
manifest of a mixture-of-experts encoder and a 50-rule spec that covers it with no warnings,
then times, in separate processes (wall time, best of N after one warm-up round; the
commands take turns within each round, and partspec is byte-compiled first, as a wheel
install does):

* ``python -m partspec check SPEC --tree MANIFEST``;
* ``python -c "import jax"``.

It also checks, in a subprocess that calls ``partspec.tools.cli.main`` directly, that checking
the manifest leaves ``jax`` out of ``sys.modules``.

Usage::

    python benchmarks/cli_check.py              # report only (exit 0)
    python benchmarks/cli_check.py --check      # exit 1 if the target is missed
    python benchmarks/cli_check.py --leaves 2000 -n 3

Target: check / ``import jax`` <= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.5
BANDS = 9  # layer bands with their own rules
EXPERTS = 8

# ------------------------------------------------------------------ the manifest


def _layer(i: int) -> list[tuple[list[str], list[int]]]:
    d, ff = 1024, 4096
    pre = ["model", "encoder", f"layer_{i}"]
    leaves: list[tuple[list[str], list[int]]] = []
    for name in ("query", "key", "value", "out"):
        leaves += [([*pre, "attention", name, "kernel"], [d, d])]
        leaves += [([*pre, "attention", name, "bias"], [d])]
    for ln in ("ln_1", "ln_2"):
        leaves += [([*pre, ln, "scale"], [d]), ([*pre, ln, "bias"], [d])]
    leaves.append(([*pre, "mlp", "router", "kernel"], [d, EXPERTS]))
    for e in range(EXPERTS):
        for w, shape in (("wi", [d, ff]), ("wo", [ff, d])):
            leaves += [([*pre, "mlp", "experts", f"expert_{e}", w, "kernel"], shape)]
            leaves += [([*pre, "mlp", "experts", f"expert_{e}", w, "bias"], [shape[1]])]
    return leaves


def build_leaves(n: int) -> tuple[list[tuple[list[str], list[int]]], int]:
    """About `n` leaves (exactly `n` when `n` is large enough) and the number of layers."""
    top: list[tuple[list[str], list[int]]] = [
        (["model", "embed", "embedding"], [32_000, 1024]),
        (["model", "embed", "pos_embedding"], [1, 2048, 1024]),
        (["model", "encoder", "rel_pos_bias"], [32, 16]),  # left to the catch-all
        (["model", "encoder", "final_ln", "scale"], [1024]),
        (["model", "encoder", "final_ln", "bias"], [1024]),
        (["head", "kernel"], [1024, 1000]),
        (["head", "bias"], [1000]),
    ]
    layers: list[tuple[list[str], list[int]]] = []
    n_layers = 0
    while len(top) + len(layers) < n or n_layers < BANDS:
        layers += _layer(n_layers)
        n_layers += 1
    # Trim the last layer's surplus experts (keeping its structure valid for the spec).
    surplus = len(top) + len(layers) - n
    if surplus > 0 and n_layers > BANDS:
        layers = layers[: len(layers) - surplus]
    return top + layers, n_layers


def manifest_text(leaves: list[tuple[list[str], list[int]]]) -> str:
    try:
        from partspec.tools.manifest import Leaf, dump_manifest
    except ImportError:  # pragma: no cover - an older partspec without manifests
        doc = {
            "format": "partspec-manifest",
            "version": 1,
            "leaves": [{"path": p, "shape": s, "dtype": "float32"} for p, s in leaves],
        }
        return json.dumps(doc, indent=1) + "\n"
    return dump_manifest(Leaf(tuple(p), tuple(s), "float32") for p, s in leaves)


# ------------------------------------------------------------------ the spec


def spec_text(n_layers: int) -> str:
    """A 50-rule fine-tuning spec: 5 rules for each of 9 layer bands, and 5 more."""
    lines = [
        "# Benchmark spec: per-band optimizers for a mixture-of-experts encoder.",
        "param lr = 3e-4",
        "let sched = warmup_cosine_decay_schedule(0.0, lr, 1000, 100_000)",
        "let slow = 0.1 * sched",
        "",
        "model/embed/** -> frozen",
        "head/** -> chain(clip_by_global_norm(1.0), adamw(10 * sched)) as head",
    ]
    size = -(-n_layers // BANDS)  # ceil
    for b in range(BANDS):
        lo, hi = b * size, min((b + 1) * size, n_layers) - 1
        layer = f"model/encoder/layer_{{{lo}..{hi}}}"
        decay = round(0.01 * (b + 1), 2)
        lines += [
            f"# layers {lo}..{hi}",
            f"{layer}/attention/{{query,key}}/** -> adamw(slow, weight_decay={decay})",
            f"{layer}/attention/{{value,out}}/kernel -> adamw(sched, weight_decay={decay})",
            f"{layer}/ln_?/* -> adam(sched)",
            f"{layer}/mlp/experts/expert_{{0..3}}/** except **/bias -> lion(slow)",
            f"{layer}/mlp/** -> adamw(sched, weight_decay={decay}, b2=0.95)",
        ]
    lines += [
        "model/encoder/final_ln/* -> adam(sched)",
        "**/attention/*/bias -> sgd(sched, momentum=0.9)",
        "** -> frozen",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ timing


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _wall(cmd: list[str], env: dict[str, str], expect: str | None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or (expect is not None and expect not in proc.stdout):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def best_walls(cmds: list[tuple[list[str], str | None]], repeat: int) -> list[float]:
    """Best wall time of each command over `repeat` rounds, after one warm-up round.

    The commands take turns within each round, so that a machine whose speed drifts
    (a shared or throttled VM) slows all of them alike.
    """
    env = _env()
    times: list[list[float]] = [[] for _ in cmds]
    for i in range(repeat + 1):
        for (cmd, expect), out in zip(cmds, times):
            elapsed = _wall(cmd, env, expect)
            if i:
                out.append(elapsed)
    return [min(t) for t in times]


def byte_compile() -> None:
    """Write partspec's ``.pyc`` files, as installing its wheel does.

    JAX's modules are byte-compiled in site-packages; without this, an editable checkout
    under ``PYTHONDONTWRITEBYTECODE`` (as in CI) would compile partspec's sources anew in
    every timed process.
    """
    import compileall

    compileall.compile_dir(str(ROOT / "partspec"), quiet=1)


def assert_no_jax(spec: Path, manifest: Path) -> None:
    """`pspec check` on a manifest, in a fresh interpreter: `jax` must stay unimported."""
    code = (
        "import io, sys\n"
        "from partspec.tools.cli import main\n"
        "out = io.StringIO()\n"
        "rc = main(['check', '--strict', sys.argv[1], '--tree', sys.argv[2]], out=out)\n"
        "assert rc == 0, out.getvalue()\n"
        "heavy = sorted(m for m in ('jax', 'jaxlib', 'optax', 'flax') if m in sys.modules)\n"
        "assert not heavy, f'pspec check imported {heavy}'\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(spec), str(manifest)],
        env=_env(),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        sys.exit(f"jax-free check failed:\n{proc.stdout}\n{proc.stderr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaves", type=int, default=10_000, help="manifest size (default 10,000)")
    ap.add_argument("-n", "--repeat", type=int, default=5, help="best of N (default 5)")
    ap.add_argument("--check", action="store_true", help=f"exit 1 if the ratio is > {TARGET}")
    args = ap.parse_args(argv)

    leaves, n_layers = build_leaves(args.leaves)
    spec = spec_text(n_layers)
    n_rules = sum(1 for ln in spec.splitlines() if "->" in ln and not ln.startswith("#"))
    with tempfile.TemporaryDirectory(prefix="pspec-bench-") as tmp:
        spec_path, manifest_path = Path(tmp, "bench.pspec"), Path(tmp, "model.tree.json")
        spec_path.write_text(spec, encoding="utf-8")
        manifest_path.write_text(manifest_text(leaves), encoding="utf-8")

        assert_no_jax(spec_path, manifest_path)
        check_cmd = [
            sys.executable,
            "-m",
            "partspec",
            "check",
            "--strict",
            str(spec_path),
            "--tree",
            str(manifest_path),
        ]
        byte_compile()
        t_check, t_jax, t_python = best_walls(
            [
                (check_cmd, "All checks passed"),
                ([sys.executable, "-c", "import jax"], None),
                ([sys.executable, "-c", "pass"], None),
            ],
            args.repeat,
        )

    ratio = t_check / t_jax
    ok = ratio <= TARGET
    print(
        f"manifest: {len(leaves):,} leaves ({n_layers} layers); spec: {n_rules} rules; "
        f"best of {args.repeat}, wall time per process"
    )
    print(f"  python -m partspec check --strict SPEC --tree MANIFEST  {t_check * 1e3:8.1f} ms")
    print(f'  python -c "import jax"                                 {t_jax * 1e3:8.1f} ms')
    print(f'  python -c "pass" (interpreter start-up)                {t_python * 1e3:8.1f} ms')
    print(f"  check / import jax = {ratio:.2f}  (target <= {TARGET}: {'met' if ok else 'MISSED'})")
    print("  pspec check on a manifest does not import jax: ok")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
