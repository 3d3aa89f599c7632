"""``pspec check --tree`` and ``pspec explain`` end to end, through every tree format."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from partspec.tools.cli import main

SPEC = """param lr = 1e-3
backbone/** -> frozen
head/**     -> adam(lr)
**/bias     -> sgd(0.1)
"""
GOLDEN = Path(__file__).parent / "golden" / "cli"

PARAMS = {
    "backbone": {"dense": {"kernel": (4, 4), "bias": (4,)}},
    "head": {"kernel": (4, 2), "bias": (2,)},
    "extra": {"w": (3,)},
}


def flat() -> dict[str, tuple[int, ...]]:
    out = {}
    for top, sub in PARAMS.items():
        for k, v in sub.items():
            if isinstance(v, dict):
                out.update({f"{top}/{k}/{kk}": vv for kk, vv in v.items()})
            else:
                out[f"{top}/{k}"] = v
    return out


def write_json(d: Path) -> Path:
    leaves = [
        {"path": p.split("/"), "shape": list(s), "dtype": "float32"} for p, s in flat().items()
    ]
    (d / "tree.json").write_text(json.dumps(leaves))
    return d / "tree.json"


def write_npz(d: Path) -> Path:
    np.savez(d / "tree.npz", **{p: np.zeros(s, np.float32) for p, s in flat().items()})
    return d / "tree.npz"


def write_safetensors(d: Path) -> Path:
    header: dict[str, object] = {}
    offset = 0
    for p, s in flat().items():
        n = int(np.prod(s)) * 4
        header[p.replace("/", ".")] = {
            "dtype": "F32",
            "shape": list(s),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    blob = json.dumps(header).encode()
    (d / "tree.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)
    return d / "tree.safetensors"


def write_orbax(d: Path) -> Path:
    import orbax.checkpoint as ocp

    tree: dict[str, object] = {}
    for p, s in flat().items():
        node = tree
        *parents, last = p.split("/")
        for k in parents:
            node = node.setdefault(k, {})  # type: ignore[assignment]
        node[last] = np.zeros(s, np.float32)  # type: ignore[index]
    ckpt = ocp.StandardCheckpointer()
    ckpt.save((d / "ckpt").absolute(), tree)
    ckpt.wait_until_finished()
    return d / "ckpt"


def write_module(d: Path) -> str:
    (d / "mymodel.py").write_text(
        "import jax.numpy as jnp\n"
        f"SHAPES = {flat()!r}\n"
        "def params():\n"
        "    out = {}\n"
        "    for p, s in SHAPES.items():\n"
        "        node = out\n"
        "        *parents, last = p.split('/')\n"
        "        for k in parents:\n"
        "            node = node.setdefault(k, {})\n"
        "        node[last] = jnp.zeros(s)\n"
        "    return out\n"
    )
    return "mymodel:params"


WRITERS = {
    "json": write_json,
    "npz": write_npz,
    "safetensors": write_safetensors,
    "orbax": write_orbax,
    "module": write_module,
}


def run(cwd: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    sys.path.insert(0, str(cwd))
    try:
        return main(list(argv), out=out), out.getvalue()
    finally:
        sys.path.remove(str(cwd))
        os.chdir(old)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_check_against_every_tree_format(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "s.pspec").write_text(SPEC)
    tree = str(WRITERS[fmt](tmp_path))
    code, out = run(tmp_path, "check", "s.pspec", "--tree", tree, "--format", "concise")
    # extra/w is uncovered; **/bias is shadowed for backbone and head biases.
    assert code == 1, out
    assert out.splitlines() == [
        "s.pspec: E501 1 parameter leaf is not covered by any rule",
        "s.pspec:4:1: W602 rule is shadowed: every parameter it matches is taken by an earlier "
        "rule (lines 2, 3)",
        "Found 1 error and 1 warning.",
    ]


@pytest.mark.parametrize("fmt", ["full", "concise", "json", "github"])
def test_check_with_tree_golden(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "s.pspec").write_text(SPEC)
    write_json(tmp_path)
    code, out = run(tmp_path, "check", "s.pspec", "--tree", "tree.json", "--format", fmt)
    assert code == 1
    path = GOLDEN / f"check_tree.{fmt}.txt"
    if os.environ.get("PARTSPEC_UPDATE_GOLDEN"):
        path.write_text(out, encoding="utf-8")
    assert out == path.read_text(encoding="utf-8")


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text(SPEC + "** -> frozen\n")
    write_json(tmp_path)
    code, out = run(tmp_path, "check", "s.pspec", "--tree", "tree.json")
    assert code == 0 and "warning[W602]" in out
    code, out = run(tmp_path, "check", "s.pspec", "--tree", "tree.json", "--strict")
    assert code == 1 and "error[W602]" in out


def test_param_without_value_is_a_problem_with_a_tree(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text("param lr\n** -> adam(lr)\n")
    write_json(tmp_path)
    assert run(tmp_path, "check", "s.pspec")[0] == 0
    code, out = run(tmp_path, "check", "s.pspec", "--tree", "tree.json")
    assert code == 1 and "E305" in out
    assert run(tmp_path, "check", "s.pspec", "--tree", "tree.json", "--set", "lr=0.1")[0] == 0


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: None, "no such file"),
        (lambda d: (d / "t.json").write_text(""), "t.json"),
        (lambda d: (d / "t.json").write_bytes(b"\x00\xff\x13garbage"), "t.json"),
        (lambda d: (d / "t.json").write_text('[{"path": ["a"], "shape": "big"}]'), "shape"),
        (lambda d: (d / "t.json").mkdir(), "t.json"),
    ],
)
def test_bad_tree_inputs_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: object, needle: str
) -> None:
    (tmp_path / "s.pspec").write_text(SPEC)
    setup(tmp_path)  # type: ignore[operator]
    code, _ = run(tmp_path, "check", "s.pspec", "--tree", "t.json")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pspec: error: cannot read tree: ") and needle in err
    assert "Traceback" not in err


def test_directory_that_is_not_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.pspec").write_text(SPEC)
    (tmp_path / "notackpt").mkdir()
    (tmp_path / "notackpt" / "readme.txt").write_text("hi")
    assert run(tmp_path, "check", "s.pspec", "--tree", "notackpt")[0] == 2
    assert "notackpt" in capsys.readouterr().err


def test_check_on_a_manifest_does_not_import_jax(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text(SPEC + "** -> frozen\n")
    write_json(tmp_path)
    code = (
        "import sys\n"
        "from partspec.tools.cli import main\n"
        "rc = main(['check', 's.pspec', '--tree', 'tree.json'])\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('jax', 'optax', 'flax')]\n"
        "assert not loaded, loaded\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_explain_text_and_json(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text(SPEC + "** -> frozen\n")
    write_json(tmp_path)
    code, out = run(tmp_path, "explain", "s.pspec", "--tree", "tree.json", "--leaves", "**/bias")
    assert code == 0
    assert "adam(lr)" in out and "frozen" in out and "\x1b[" not in out
    assert "head/bias" in out
    code, out = run(tmp_path, "explain", "s.pspec", "--tree", "tree.json", "--format", "json")
    report = json.loads(out)
    assert code == 0
    assert report["totals"]["trainable_parameters"] == 4 * 2 + 2
    assert report["totals"]["frozen_parameters"] == 16 + 4 + 3


def test_explain_reports_spec_problems(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text(SPEC)
    write_json(tmp_path)
    code, out = run(tmp_path, "explain", "s.pspec", "--tree", "tree.json")
    assert code == 1 and "E501" in out


def test_tree_command_writes_a_manifest_that_check_reads(tmp_path: Path) -> None:
    (tmp_path / "s.pspec").write_text(SPEC + "** -> frozen\n")
    src = write_module(tmp_path)
    assert run(tmp_path, "tree", src, "-o", "m.json")[0] == 0
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["format"] == "partspec-manifest" and len(doc["leaves"]) == len(flat())
    assert run(tmp_path, "check", "s.pspec", "--tree", "m.json")[0] == 0


def test_tree_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "tree", "nomodule_xyz:params")[0] == 2
    assert "nomodule_xyz" in capsys.readouterr().err
    assert run(tmp_path, "tree", "plainname")[0] == 2
    assert "MODULE:CALLABLE" in capsys.readouterr().err
