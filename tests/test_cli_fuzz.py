"""`pspec` never crashes: any bytes as a spec, any JSON as a manifest, exit 0, 1 or 2.

Hypothesis writes random spec files and random tree manifests and runs
`partspec.tools.cli.main` on them in-process; two subprocess runs check that garbage input ends
in a message, not a traceback. Bounded by the Hypothesis profile (`tests/conftest.py`).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partspec.tools.cli import main

ROOT = Path(__file__).resolve().parent.parent

GOOD_SPEC = """# fuzz target
param lr = 1e-3
backbone/** -> frozen
head/**     -> adamw(lr, weight_decay=0.05) as head
**          -> adam(lr)
"""

# capsys is function-scoped; it is drained on every example, so sharing it is safe.
fuzz_settings = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli_fuzz")
    (d / "good.pspec").write_text(GOOD_SPEC, encoding="utf-8")
    return d


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`main(argv)`: it must return an exit code, never raise."""
    capsys.readouterr()  # drop what earlier examples left
    out = io.StringIO()
    code = main(argv, out=out)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (code, out.getvalue(), err)
    assert "Traceback" not in out.getvalue() and "Traceback" not in err
    return code, out.getvalue(), err


# ------------------------------------------------------------------ specs

# Random bytes, and random text built from the language's own tokens (which gets past
# the lexer far more often than raw bytes do).
TOKENS = [
    "a", "b/", "**", "*", "?", "/", "{0..3}", "{a,b}", "[a-z]", '"q"', "\\", "->", "frozen",
    "adam(", "adamw(", "sgd(", "chain(", ")", ",", "1e-3", "0.1", "10_000", "-", "*", " ",
    "\n", ";", "#", "let ", "param ", "=", "lr", "sched", "except ", " as ", "x", "true",
    "none", "warmup_cosine_decay_schedule(", "weight_decay=", "(", "[", "]", "\t", "é",
]  # fmt: skip
spec_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(lambda t: "".join(t).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@fuzz_settings
@given(
    data=spec_bytes,
    fmt=st.sampled_from(["full", "concise", "json", "github", "sarif"]),
    tree=st.booleans(),
    strict=st.booleans(),
)
def test_check_any_spec_bytes(
    workdir: Path, capsys, data: bytes, fmt: str, tree: bool, strict: bool
) -> None:
    path = workdir / "fuzz.pspec"
    path.write_bytes(data)
    argv = ["check", str(path), "--format", fmt]
    if tree:  # also label a real model's leaves with whatever rules parse
        argv += ["--tree", str(ROOT / "examples" / "transfer_learning.tree.json")]
    code, out, _ = run([*argv, "--strict"] if strict else argv, capsys)
    if fmt == "json":
        diags = json.loads(out)["diagnostics"]
        assert isinstance(diags, list)
        assert (code == 0) == (not any(d["severity"] == "error" for d in diags))
    if fmt == "sarif":  # any spec bytes give a log whose levels agree with the exit code
        (run_,) = json.loads(out)["runs"]
        levels = [r["level"] for r in run_["results"]]
        assert (code == 0) == ("error" not in levels)


@fuzz_settings
@given(data=spec_bytes)
def test_fmt_check_any_spec_bytes(workdir: Path, capsys, data: bytes) -> None:
    path = workdir / "fmt.pspec"
    path.write_bytes(data)
    run(["fmt", "--check", str(path)], capsys)
    assert path.read_bytes() == data  # --check never writes


# ------------------------------------------------------------------ manifests

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)

SEGMENTS = ["backbone", "head", "kernel", "bias", "0", "", "a/b", "mlp/~/linear_1", "é", "**"]
segment = st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=6), st.integers(-2, 20))
leaf = st.fixed_dictionaries(
    {
        "path": st.one_of(st.lists(segment, max_size=4), st.text(max_size=12), json_values),
        "shape": st.one_of(st.lists(st.integers(-1, 4096), max_size=3), json_values),
    },
    optional={
        "dtype": st.one_of(st.sampled_from(["float32", "bfloat16", "int8", "f4"]), json_values)
    },
)
manifests = st.one_of(
    json_values,  # anything at all
    st.fixed_dictionaries(  # the envelope, with plausible and implausible leaves
        {
            "format": st.sampled_from(["partspec-manifest", "other"]),
            "version": st.one_of(st.just(1), json_values),
            "leaves": st.lists(leaf, max_size=6),
        }
    ),
    st.lists(leaf, max_size=6),  # a bare list of leaves
    st.dictionaries(  # nested shapes: {"backbone": {"kernel": [3, 4]}}
        st.sampled_from(SEGMENTS),
        st.one_of(
            st.lists(st.integers(0, 8), max_size=3),
            st.dictionaries(st.sampled_from(SEGMENTS), st.lists(st.integers(0, 8), max_size=2)),
            json_values,
        ),
        max_size=4,
    ),
)


@fuzz_settings
@given(doc=manifests, strict=st.booleans())
def test_check_any_json_manifest(workdir: Path, capsys, doc: Any, strict: bool) -> None:
    manifest = workdir / "fuzz.tree.json"
    manifest.write_text(json.dumps(doc), encoding="utf-8")
    argv = ["check", str(workdir / "good.pspec"), "--tree", str(manifest)]
    code, _, err = run([*argv, "--strict"] if strict else argv, capsys)
    if code == 2:
        assert err.startswith("pspec: error: cannot read tree"), err


@fuzz_settings
@given(data=st.binary(max_size=200))
def test_check_any_manifest_bytes(workdir: Path, capsys, data: bytes) -> None:
    manifest = workdir / "bytes.tree.json"
    manifest.write_bytes(data)
    run(["check", str(workdir / "good.pspec"), "--tree", str(manifest)], capsys)


# ------------------------------------------------------------------ real processes


@pytest.mark.parametrize(
    ("spec", "manifest"),
    [
        (b"\xff\xfe\x00head/** -> adma(\x80", None),
        (GOOD_SPEC.encode(), b'{"format": "partspec-manifest", "version": 1, "leaves": [{"path'),
    ],
    ids=["garbage-spec", "truncated-manifest"],
)
def test_pspec_process_never_prints_a_traceback(
    tmp_path: Path, spec: bytes, manifest: bytes | None
) -> None:
    (tmp_path / "s.pspec").write_bytes(spec)
    argv = [sys.executable, "-m", "partspec", "check", "s.pspec"]
    if manifest is not None:
        (tmp_path / "m.tree.json").write_bytes(manifest)
        argv += ["--tree", "m.tree.json"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stdout.strip() or proc.stderr.strip()  # it says what is wrong
