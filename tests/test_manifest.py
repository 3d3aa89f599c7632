"""Tree inputs without weights: JSON manifests, .npz/.safetensors headers, Orbax
checkpoint metadata and MODULE:CALLABLE under ``jax.eval_shape``."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from partspec.language.vocabulary import LEAF_DTYPES
from partspec.tools.manifest import (
    FILE_EXTENSIONS,
    MAX_LEAF_SIZE,
    Leaf,
    TreeInputError,
    dump_manifest,
    is_callable_reference,
    leaves_to_shape_tree,
    load_leaves,
)

F32 = "float32"


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return str(path)


def write_json(path: Path, doc: Any) -> str:
    return write(path, json.dumps(doc))


def fails(source: str, *needles: str) -> str:
    with pytest.raises(TreeInputError) as info:
        load_leaves(source)
    message = str(info.value)
    assert message.startswith(source), message  # the source, or a file inside it
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------- JSON manifests


def test_json_list_form(tmp_path: Path) -> None:
    src = write_json(
        tmp_path / "m.json",
        [
            {"path": ["backbone", "encoder", "kernel"], "shape": [768, 768], "dtype": "float32"},
            {"path": "backbone/encoder/bias", "shape": [768]},
            {"path": ["layers", 0, "w"], "shape": [], "dtype": "bfloat16"},
            {"path": ["mlp/~/linear_1", "w"], "shape": [2, 0], "dtype": "float8_e4m3fn"},
        ],
    )
    assert load_leaves(src) == [
        Leaf(("backbone", "encoder", "kernel"), (768, 768), F32),
        Leaf(("backbone", "encoder", "bias"), (768,), F32),
        Leaf(("layers", "0", "w"), (), "bfloat16"),
        Leaf(("mlp/~/linear_1", "w"), (2, 0), "float8_e4m3fn"),
    ]


def test_json_nested_form(tmp_path: Path) -> None:
    src = write_json(
        tmp_path / "m.json",
        {
            "backbone": {"kernel": [768, 768], "bias": {"shape": [768], "dtype": "bfloat16"}},
            "head": {"w": {"shape": [3]}, "empty": {}},
            "step": [],
        },
    )
    assert load_leaves(src) == [
        Leaf(("backbone", "kernel"), (768, 768), F32),
        Leaf(("backbone", "bias"), (768,), "bfloat16"),
        Leaf(("head", "w"), (3,), F32),
        Leaf(("step",), (), F32),
    ]


def test_dump_manifest_round_trip(tmp_path: Path) -> None:
    leaves = [
        Leaf(("b", "kernel"), (2, 3), "bfloat16"),
        Leaf(("a", "0"), (), "int32"),
        Leaf(("ünï", "a/b"), (1,), "bool"),
    ]
    text = dump_manifest(leaves)
    doc = json.loads(text)
    assert doc["format"] == "partspec-manifest"
    assert doc["version"] == 1
    assert doc["leaves"][0] == {"path": ["b", "kernel"], "shape": [2, 3], "dtype": "bfloat16"}
    assert text.endswith("}\n")
    assert len(text.split("\n")) == 7 + len(leaves)  # one line per leaf
    assert dump_manifest(leaves) == text  # deterministic
    assert load_leaves(write(tmp_path / "m.json", text)) == leaves


def test_dump_manifest_exact_text() -> None:
    assert dump_manifest([Leaf(("a", "b"), (2,), F32), Leaf(("c",), (), "int8")]) == (
        "{\n"
        ' "format": "partspec-manifest",\n'
        ' "version": 1,\n'
        ' "leaves": [\n'
        '  {"path": ["a", "b"], "shape": [2], "dtype": "float32"},\n'
        '  {"path": ["c"], "shape": [], "dtype": "int8"}\n'
        " ]\n"
        "}\n"
    )


BAD_LIST_ENTRIES = [
    ({"path": ["a"], "shape": "3"}, "leaves[1].shape: shape must be a list of non-negative"),
    ({"path": ["a"], "shape": [-1]}, "leaves[1].shape"),
    ({"path": ["a"], "shape": [2.0]}, "leaves[1].shape"),
    ({"path": ["a"], "shape": [True]}, "leaves[1].shape"),
    ({"path": ["a"], "shape": None}, "leaves[1].shape"),
    ({"path": [], "shape": [1]}, "leaves[1].path: path must be a non-empty list"),
    ({"path": ["a", None], "shape": [1]}, "leaves[1].path"),
    ({"path": ["a", 1.5], "shape": [1]}, "leaves[1].path"),
    ({"path": ["a", -1], "shape": [1]}, "leaves[1].path"),
    ({"path": ["a", ""], "shape": [1]}, "leaves[1].path"),
    ({"path": "a//b", "shape": [1]}, "leaves[1].path: name 'a//b' has an empty path segment"),
    ({"path": 7, "shape": [1]}, "leaves[1].path"),
    ({"path": ["a"], "shape": [1], "dtype": "float33"}, "leaves[1].dtype: unknown dtype"),
    ({"path": ["a"], "shape": [1], "dtype": "<f4"}, "unknown dtype '<f4'"),
    ({"path": ["a"], "shape": [1], "dtype": 4}, "leaves[1].dtype: dtype must be a string"),
    ({"path": ["a"], "shape": [1], "dtipe": F32}, "leaves[1]: unknown key 'dtipe'"),
    ({"path": ["a"]}, "leaves[1]: 'shape' is missing"),
    ({"shape": [1]}, "leaves[1]: 'path' is missing"),
    (["a", [1]], "leaves[1]: expected"),
]


@pytest.mark.parametrize(("entry", "needle"), BAD_LIST_ENTRIES)
def test_json_wrong_types(tmp_path: Path, entry: Any, needle: str) -> None:
    doc = {"format": "partspec-manifest", "version": 1, "leaves": [{"path": "ok", "shape": []}]}
    doc["leaves"].append(entry)
    fails(write_json(tmp_path / "m.json", doc), needle)
    # The bare list form reports the index without the "leaves" prefix.
    fails(write_json(tmp_path / "l.json", doc["leaves"]), needle.replace("leaves[1]", "[1]"))


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"a": {"b": "3"}}, '$["a"]["b"]: expected a shape list'),
        ({"a": {"b": [1, -2]}}, '$["a"]["b"]: shape must be'),
        ({"a": {"b": {"shape": [1], "dtype": "f32"}}}, '$["a"]["b"].dtype: unknown dtype'),
        ({"a": {"b": {"shape": ["x"]}}}, '$["a"]["b"].shape'),
        ({"a": 3}, '$["a"]: expected'),
        ({"": [1]}, '$[""]: empty key'),
        ({"a": None}, '$["a"]'),
    ],
)
def test_json_nested_wrong_types(tmp_path: Path, doc: Any, needle: str) -> None:
    fails(write_json(tmp_path / "m.json", doc), needle)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (3, "a manifest is a list of leaves"),
        ("a/b", "a manifest is a list of leaves"),
        (None, "a manifest is a list of leaves"),
        ({"format": "other", "version": 1, "leaves": []}, "unknown manifest format 'other'"),
        (
            {"format": "partspec-manifest", "version": 2, "leaves": []},
            "unsupported manifest version 2",
        ),
        (
            {"format": "partspec-manifest", "version": "1", "leaves": []},
            "unsupported manifest version",
        ),
        ({"format": "partspec-manifest", "leaves": []}, '"version" is missing'),
        ({"format": "partspec-manifest", "version": 1}, '"leaves" is missing'),
        ({"format": "partspec-manifest", "version": 1, "leaves": {}}, '"leaves" must be a list'),
        (
            {"format": "partspec-manifest", "version": 1, "leaves": [], "x": 1},
            "unknown top-level key 'x'",
        ),
        ({"format": "partspec-manifest", "version": 1, "leaves": []}, "empty manifest"),
        ([], "empty manifest"),
        ({}, "empty manifest"),
        ({"a": {}}, "empty manifest"),
    ],
)
def test_json_bad_documents(tmp_path: Path, doc: Any, needle: str) -> None:
    fails(write_json(tmp_path / "m.json", doc), needle)


def test_json_duplicate_paths(tmp_path: Path) -> None:
    doc = [
        {"path": ["a", "b"], "shape": [1]},
        {"path": ["c"], "shape": [1]},
        {"path": "a/b", "shape": [2]},
    ]
    fails(write_json(tmp_path / "m.json", doc), "[2]: duplicate path 'a/b' (first at [0])")
    doc = [{"path": ["a", "b", "c"], "shape": [1]}, {"path": "a/b", "shape": [2]}]
    msg = "[0]: path 'a/b/c' is inside 'a/b', which is a leaf itself (at [1])"
    fails(write_json(tmp_path / "p.json", doc), msg)
    src = write(tmp_path / "k.json", '{"a": {"b": [1], "b": [2]}}')
    fails(src, "not valid JSON", "duplicate key 'b'")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "manifest is empty"),
        (b"  \n", "manifest is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8"),
        (b"{'a': [1]}", "not valid JSON"),
        (b'[{"path": "a", "shape": [NaN]}]', "not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_json_unreadable(tmp_path: Path, data: bytes, needle: str) -> None:
    fails(write(tmp_path / "m.json", data), needle)


def test_json_does_not_import_jax_or_optax(tmp_path: Path) -> None:
    src = write_json(tmp_path / "m.json", {"a": {"kernel": [2, 2]}})
    code = textwrap.dedent(
        f"""
        import sys
        from partspec.tools.manifest import load_leaves
        assert load_leaves({src!r})[0].shape == (2, 2)
        heavy = sorted(m for m in ("jax", "optax", "flax", "numpy") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-3, 5)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from(["", "a", "a/b", "float32", "bfloat16", "partspec-manifest", "x.y"]),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["a", "b", "", "path", "shape", "dtype", "format", "version", "leaves"]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_json_fuzz_only_tree_input_errors(doc: Any) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = write_json(Path(tmp) / "m.json", doc)
        try:
            leaves = load_leaves(src)
        except TreeInputError as exc:
            assert str(exc).startswith(src)
        else:
            assert leaves and all(isinstance(leaf, Leaf) for leaf in leaves)
            assert load_leaves(write(Path(tmp) / "again.json", dump_manifest(leaves))) == leaves


segments = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=5)


def _no_leaf_inside_another(leaves: list[Leaf]) -> bool:
    """A valid structure: no path is a proper prefix of another (a leaf is not a node)."""
    paths = {leaf.path for leaf in leaves}
    return not any(leaf.path[:n] in paths for leaf in leaves for n in range(1, len(leaf.path)))


@given(
    st.lists(
        st.builds(
            Leaf,
            st.lists(segments, min_size=1, max_size=3).map(tuple),
            st.lists(st.integers(0, 2**40), max_size=3)
            .map(tuple)
            .filter(lambda shape: math.prod(shape) <= MAX_LEAF_SIZE),
            st.sampled_from(["float32", "bfloat16", "int4", "bool", "complex64"]),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda leaf: leaf.path,
    ).filter(_no_leaf_inside_another)
)
def test_dump_then_load_is_identity(leaves: list[Leaf]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        assert load_leaves(write(Path(tmp) / "m.json", dump_manifest(leaves))) == leaves


# ---------------------------------------------------------------- .npz


def test_npz_slash_keys(tmp_path: Path) -> None:
    src = str(tmp_path / "p.npz")
    np.savez(
        src,
        **{
            "backbone/kernel": np.zeros((3, 4), np.float32),
            "backbone/bias": np.zeros(4, np.int8),
            "head.w": np.zeros((), np.complex64),  # kept whole: some key has a "/"
        },
    )
    assert load_leaves(src) == [
        Leaf(("backbone", "kernel"), (3, 4), F32),
        Leaf(("backbone", "bias"), (4,), "int8"),
        Leaf(("head.w",), (), "complex64"),
    ]


def test_npz_dot_keys_and_compression(tmp_path: Path) -> None:
    src = str(tmp_path / "p.npz")
    np.savez_compressed(
        src,
        **{
            "encoder.layer.0.attention.self.query.weight": np.ones((8, 8), np.float16),
            "pooler.dense.bias": np.ones(8, np.bool_),
        },
    )
    assert load_leaves(src) == [
        Leaf(("encoder", "layer", "0", "attention", "self", "query", "weight"), (8, 8), "float16"),
        Leaf(("pooler", "dense", "bias"), (8,), "bool"),
    ]


def npy_header(
    shape: tuple[int, ...], descr: str = "<f4", version: tuple[int, int] = (1, 0)
) -> bytes:
    import io

    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def test_npz_reads_headers_only(tmp_path: Path) -> None:
    # Members whose data is missing entirely: a ~40 GB array in a few hundred bytes.
    src = str(tmp_path / "p.npz")
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("big/kernel.npy", npy_header((100_000, 100_000)))
        zf.writestr("big/bias.npy", npy_header((100_000,), "<f8", (2, 0)) + b"\0" * 7)
    assert os.path.getsize(src) < 1000
    assert load_leaves(src) == [
        Leaf(("big", "kernel"), (100_000, 100_000), F32),
        Leaf(("big", "bias"), (100_000,), "float64"),
    ]


def test_npz_errors(tmp_path: Path) -> None:
    fails(write(tmp_path / "g.npz", os.urandom(256)), "not an .npz file")
    fails(write(tmp_path / "e.npz", b""), "not an .npz file")

    with zipfile.ZipFile(tmp_path / "n.npz", "w") as zf:
        zf.writestr("a.npy", b"not a header at all")
    fails(str(tmp_path / "n.npz"), "member 'a.npy': not a readable .npy header")

    with zipfile.ZipFile(tmp_path / "t.npz", "w") as zf:
        zf.writestr("notes.txt", b"hi")
    fails(str(tmp_path / "t.npz"), "member 'notes.txt' is not a .npy array")

    np.savez(tmp_path / "o.npz", a=np.array([{}], dtype=object))
    fails(str(tmp_path / "o.npz"), "array 'a': dtype '|O' is not numeric")

    import ml_dtypes

    np.savez(tmp_path / "bf.npz", w=np.zeros(2, ml_dtypes.bfloat16))
    fails(str(tmp_path / "bf.npz"), "array 'w': dtype '|V2' is not numeric", "raw bytes")

    np.savez(tmp_path / "s.npz", **{"a..b": np.zeros(1)})
    fails(str(tmp_path / "s.npz"), "empty path segment")

    np.savez(tmp_path / "z.npz")
    fails(str(tmp_path / "z.npz"), "contains no parameters")

    with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
        zf.writestr("a/b.npy", npy_header((1,)))
        zf.writestr("a/c.npy", npy_header((1,)))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("a/b.npy", npy_header((2,)))
    fails(str(tmp_path / "d.npz"), "duplicate path 'a/b'")


# ---------------------------------------------------------------- .safetensors


def safetensors_bytes(header: dict[str, Any], data: bytes = b"", pad: int = 0) -> bytes:
    raw = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_round_trip(tmp_path: Path) -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "encoder.layer.0.attention.self.query.weight": {
            "dtype": "BF16",
            "shape": [4, 4],
            "data_offsets": [0, 32],
        },
        "encoder.layer.0.attention.self.query.bias": {
            "dtype": "F32",
            "shape": [4],
            "data_offsets": [32, 48],
        },
        "scale": {"dtype": "F8_E4M3", "shape": [], "data_offsets": [48, 49]},
        "mask": {"dtype": "BOOL", "shape": [2], "data_offsets": [49, 51]},
    }
    src = write(tmp_path / "m.safetensors", safetensors_bytes(header, b"\0" * 51, pad=5))
    q = ("encoder", "layer", "0", "attention", "self", "query")
    assert load_leaves(src) == [
        Leaf((*q, "weight"), (4, 4), "bfloat16"),
        Leaf((*q, "bias"), (4,), F32),
        Leaf(("scale",), (), "float8_e4m3fn"),
        Leaf(("mask",), (2,), "bool"),
    ]


def test_safetensors_reads_header_only(tmp_path: Path) -> None:
    # A header describing a 10 GB tensor, in a file of a few dozen bytes.
    header = {"w": {"dtype": "F32", "shape": [50_000, 50_000], "data_offsets": [0, 10**10]}}
    src = write(tmp_path / "big.safetensors", safetensors_bytes(header))
    assert os.path.getsize(src) < 200
    assert load_leaves(src) == [Leaf(("w",), (50_000, 50_000), F32)]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "0 bytes is too short"),
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 2**63) + b"{}", "exceeds 100000000 bytes"),
        (struct.pack("<Q", 10**9) + b"{}", "exceeds"),
        (struct.pack("<Q", 1000) + b'{"a": 1}', "truncated: the header claims 1000 bytes"),
        (struct.pack("<Q", 4) + b"\xff\xfe\x00\x01", "not UTF-8"),
        (struct.pack("<Q", 4) + b"abcd", "safetensors header is not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "must be a JSON object"),
        (struct.pack("<Q", 2) + b"{}", "contains no parameters"),
    ],
)
def test_safetensors_bad_files(tmp_path: Path, data: bytes, needle: str) -> None:
    fails(write(tmp_path / "m.safetensors", data), needle)


def test_safetensors_garbage(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(20):
        data = rng.integers(0, 256, size=int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        with pytest.raises(TreeInputError):
            load_leaves(write(tmp_path / f"g{i}.safetensors", data))


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"dtype": "F33", "shape": [1]}, "tensor 'a.b': unknown safetensors dtype \"F33\""),
        ({"dtype": "float32", "shape": [1]}, "unknown safetensors dtype"),
        ({"dtype": "F32", "shape": [-1]}, "tensor 'a.b': shape must be"),
        ({"dtype": "F32", "shape": "1"}, "shape must be"),
        ({"dtype": "F32"}, '"dtype" and "shape" are required'),
        ({"dtype": "F32", "shape": [1], "data_offsets": [5, 2]}, "bad data_offsets"),
        ([1, 2], "tensor 'a.b': expected an object"),
    ],
)
def test_safetensors_bad_entries(tmp_path: Path, entry: Any, needle: str) -> None:
    fails(write(tmp_path / "m.safetensors", safetensors_bytes({"a.b": entry})), needle)


def test_safetensors_metadata_and_duplicates(tmp_path: Path) -> None:
    bad_meta = {"__metadata__": [1], "a": {"dtype": "F32", "shape": [1]}}
    fails(write(tmp_path / "m.safetensors", safetensors_bytes(bad_meta)), "__metadata__ must be")
    raw = b'{"a": {"dtype": "F32", "shape": [1]}, "a": {"dtype": "F32", "shape": [2]}}'
    src = write(tmp_path / "d.safetensors", struct.pack("<Q", len(raw)) + raw)
    fails(src, "duplicate key 'a'")
    empty = {"a..b": {"dtype": "F32", "shape": [1]}}
    fails(write(tmp_path / "e.safetensors", safetensors_bytes(empty)), "empty path segment")


# ---------------------------------------------------------------- Orbax checkpoints

ORBAX_TREE_LEAVES = [
    Leaf(("a", "b"), (2, 3), F32),
    Leaf(("a", "c"), (4,), "bfloat16"),
    Leaf(("dot.key",), (2,), "float64"),
    Leaf(("lst", "0"), (1,), "int32"),
    Leaf(("lst", "1", "x"), (), "float16"),
    Leaf(("sl/ash",), (3,), "uint8"),
]


@pytest.fixture(scope="module")
def orbax_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import jax.numpy as jnp

    ocp = pytest.importorskip("orbax.checkpoint")
    root = tmp_path_factory.mktemp("orbax")
    tree = {
        "a": {"b": np.zeros((2, 3), np.float32), "c": jnp.zeros((4,), jnp.bfloat16)},
        "lst": [np.ones((1,), np.int32), {"x": np.zeros((), np.float16)}],
        "dot.key": np.zeros(2),
        "sl/ash": np.zeros(3, np.uint8),
        "empty": {},
        "none": None,
    }
    dirs = {}
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(root / "standard", tree)
    with ocp.PyTreeCheckpointer() as ckpt:
        ckpt.save(root / "pytree", {**tree, "note": "text", "lr": 0.5})
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=True)) as ckpt:
        ckpt.save(root / "plain", args=ocp.args.PyTreeSave(tree))
    with ocp.CheckpointManager(root / "manager") as mgr:
        for step in (2, 9, 10):  # 10 is the latest: numbers, not text
            small = {"a": {"b": np.zeros((step,), np.float32)}}
            mgr.save(step, args=ocp.args.StandardSave(small))
        mgr.wait_until_finished()
    with ocp.CheckpointManager(root / "items", item_names=("state", "extra")) as mgr:
        mgr.save(
            3,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), extra=ocp.args.JsonSave({"epoch": 1})
            ),
        )
        mgr.wait_until_finished()
    for name in ("standard", "pytree", "plain", "manager", "items"):
        dirs[name] = root / name
    return dirs


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
    }


def test_orbax_standard_checkpoint(orbax_dirs: dict[str, Path]) -> None:
    path = orbax_dirs["standard"]
    before = snapshot(path)
    assert load_leaves(str(path)) == ORBAX_TREE_LEAVES
    assert snapshot(path) == before  # read-only


def test_orbax_pytree_checkpoint_skips_strings(orbax_dirs: dict[str, Path]) -> None:
    leaves = load_leaves(str(orbax_dirs["pytree"]))
    assert Leaf(("lr",), (), "float64") in leaves
    assert [leaf.path for leaf in leaves if leaf.path[0] == "note"] == []
    assert set(ORBAX_TREE_LEAVES) <= set(leaves)


def test_orbax_without_ocdbt(orbax_dirs: dict[str, Path]) -> None:
    assert (orbax_dirs["plain"] / "a.b" / "zarr.json").is_file()
    assert load_leaves(str(orbax_dirs["plain"])) == ORBAX_TREE_LEAVES


def test_orbax_manager_uses_latest_step(orbax_dirs: dict[str, Path]) -> None:
    root = orbax_dirs["manager"]
    assert load_leaves(str(root)) == [Leaf(("a", "b"), (10,), F32)]
    assert load_leaves(str(root / "9")) == [Leaf(("a", "b"), (9,), F32)]
    assert load_leaves(str(root / "2" / "default")) == [Leaf(("a", "b"), (2,), F32)]
    assert load_leaves(str(root / "2" / "default" / "_METADATA")) == [Leaf(("a", "b"), (2,), F32)]


def test_orbax_single_item_among_other_items(orbax_dirs: dict[str, Path]) -> None:
    root = orbax_dirs["items"]
    assert load_leaves(str(root)) == ORBAX_TREE_LEAVES
    assert load_leaves(str(root / "3")) == ORBAX_TREE_LEAVES


def test_orbax_metadata_needs_no_jax(orbax_dirs: dict[str, Path]) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from partspec.tools.manifest import load_leaves
        assert len(load_leaves({str(orbax_dirs["items"])!r})) == 6
        assert len(load_leaves({str(orbax_dirs["plain"])!r})) == 6
        heavy = sorted(m for m in ("jax", "optax", "flax", "orbax") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file.txt").write_text("hi")
    fails(str(tmp_path), "not an Orbax checkpoint")
    fails(str(tmp_path / "sub"), "not an Orbax checkpoint")


def test_orbax_bad_layouts(tmp_path: Path, orbax_dirs: dict[str, Path]) -> None:
    import shutil

    two = tmp_path / "two"
    shutil.copytree(orbax_dirs["standard"], two / "x")
    shutil.copytree(orbax_dirs["standard"], two / "y")
    fails(str(two), "several checkpoint items (x, y)")

    steps = tmp_path / "steps"
    shutil.copytree(orbax_dirs["standard"], steps / "1")
    (steps / "5").mkdir()
    fails(str(steps), "the latest step directory '5' has no _METADATA")
    shutil.rmtree(steps / "5")
    shutil.copytree(orbax_dirs["standard"], steps / "12")  # steps saved without items
    assert load_leaves(str(steps)) == ORBAX_TREE_LEAVES

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "_METADATA").write_text('{"tree_metadata": 3}')
    fails(str(bad), "_METADATA", "tree_metadata")
    (bad / "_METADATA").write_bytes(b"\x00\xff garbage")
    fails(str(bad), "_METADATA is not UTF-8")

    lost = tmp_path / "lost"
    shutil.copytree(orbax_dirs["plain"], lost)
    shutil.rmtree(lost / "a.b")
    fails(str(lost), "no array metadata for 'a.b'")

    unfinished = tmp_path / "unfinished"
    shutil.copytree(orbax_dirs["standard"], unfinished)
    (unfinished / "manifest.ocdbt").unlink()
    fails(str(unfinished), "no manifest.ocdbt")


# ---------------------------------------------------------------- MODULE:CALLABLE


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_callable_plain_function(modules: Path) -> None:
    (modules / "pspec_mod_plain.py").write_text(
        textwrap.dedent(
            """
            import jax.numpy as jnp

            CALLS = []

            def init_params():
                CALLS.append(1)
                return {"dense": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4, jnp.bfloat16)},
                        "layers": [jnp.ones((2,), jnp.int32)], "gone": None}

            class Factory:
                @staticmethod
                def make():
                    return {"w": jnp.zeros((100_000, 100_000))}  # 40 GB if materialised

            NOT_CALLABLE = 3

            def boom():
                raise ValueError("no weights here")
            """
        )
    )
    assert load_leaves("pspec_mod_plain:init_params") == [
        Leaf(("dense", "bias"), (4,), "bfloat16"),
        Leaf(("dense", "kernel"), (3, 4), F32),
        Leaf(("layers", "0"), (2,), "int32"),
    ]
    assert load_leaves("pspec_mod_plain:Factory.make") == [Leaf(("w",), (100_000, 100_000), F32)]
    fails("pspec_mod_plain:NOT_CALLABLE", "'NOT_CALLABLE' is not callable")
    fails("pspec_mod_plain:missing", "'pspec_mod_plain' has no attribute 'missing'")
    msg = fails("pspec_mod_plain:boom", "raised ValueError: no weights here")
    assert "Traceback" not in msg


def test_callable_nnx_module(modules: Path) -> None:
    (modules / "pspec_mod_nnx.py").write_text(
        textwrap.dedent(
            """
            from flax import nnx

            class Model(nnx.Module):
                def __init__(self, rngs):
                    self.linear = nnx.Linear(3, 4, rngs=rngs)
                    self.norm = nnx.BatchNorm(4, rngs=rngs)

            def make():
                return Model(nnx.Rngs(0))
            """
        )
    )
    # Params only: no BatchNorm statistics, no RNG state.
    assert load_leaves("pspec_mod_nnx:make") == [
        Leaf(("linear", "bias"), (4,), F32),
        Leaf(("linear", "kernel"), (3, 4), F32),
        Leaf(("norm", "bias"), (4,), F32),
        Leaf(("norm", "scale"), (4,), F32),
    ]


def test_callable_import_errors(modules: Path) -> None:
    fails(
        "pspec_no_such_module:make", "cannot import 'pspec_no_such_module'", "ModuleNotFoundError"
    )
    (modules / "pspec_mod_broken.py").write_text("raise RuntimeError('broken at import')\n")
    fails("pspec_mod_broken:make", "RuntimeError: broken at import")
    (modules / "pspec_mod_exit.py").write_text("import sys\nsys.exit(3)\n")
    fails("pspec_mod_exit:make", "SystemExit")
    (modules / "pspec_mod_str.py").write_text(
        textwrap.dedent(
            """
            import sys
            import jax

            def text():
                return {"a": "text"}

            def key():
                return {"k": jax.random.key(0)}

            def leave():
                sys.exit(2)
            """
        )
    )
    fails("pspec_mod_str:text", "raised TypeError")
    fails("pspec_mod_str:key", "leaf 'k' has unsupported dtype 'key<fry>'")
    fails("pspec_mod_str:leave", "raised SystemExit: 2")


def test_callable_uses_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pspec_mod_cwd.py").write_text(
        "import jax.numpy as jnp\ndef f():\n    return {'w': jnp.zeros(2)}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_leaves("pspec_mod_cwd:f") == [Leaf(("w",), (2,), F32)]


# ---------------------------------------------------------------- other inputs


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    fails(str(tmp_path / "nope.json"), "no such file")
    fails(str(tmp_path / "nope.npz"), "no such file")
    fails(str(tmp_path / "nope"), "no such file")
    msg = fails(
        write(tmp_path / "model.pkl", b"\x80\x02"), "unsupported tree input (extension '.pkl')"
    )
    for fmt in (".json", ".npz", ".safetensors", "Orbax", "MODULE:CALLABLE"):
        assert fmt in msg
    fails(write(tmp_path / "README", "x"), "no extension")
    fails("models/vit.py:init", "no such file (and not MODULE:CALLABLE")


def test_empty_files(tmp_path: Path) -> None:
    for name in ("e.json", "e.npz", "e.safetensors"):
        fails(write(tmp_path / name, b""))


# ---------------------------------------------------------------- shape trees


def test_leaves_to_shape_tree() -> None:
    import jax

    tree = leaves_to_shape_tree(
        [Leaf(("a", "b"), (2,), "bfloat16"), Leaf(("a", "c"), (), "int4"), Leaf(("d",), (1,), F32)]
    )
    assert tree == {
        "a": {
            "b": jax.ShapeDtypeStruct((2,), jax.numpy.bfloat16),
            "c": jax.ShapeDtypeStruct((), jax.numpy.int4),
        },
        "d": jax.ShapeDtypeStruct((1,), np.float32),
    }


@pytest.mark.parametrize(
    ("leaves", "needle"),
    [
        (
            [Leaf(("a",), (1,), F32), Leaf(("a", "b"), (1,), F32)],
            "'a/b' is inside 'a', a leaf",
        ),
        ([Leaf(("a", "b"), (1,), F32), Leaf(("a",), (1,), F32)], "'a' is a leaf and a prefix"),
        ([Leaf(("a",), (1,), F32), Leaf(("a",), (1,), F32)], "'a' is a duplicate"),
        ([Leaf((), (1,), F32)], "empty path"),
        ([Leaf(("a",), (1,), "float33")], "unknown dtype 'float33'"),
    ],
)
def test_leaves_to_shape_tree_conflicts(leaves: list[Leaf], needle: str) -> None:
    with pytest.raises(TreeInputError, match=needle.replace("(", r"\(")):
        leaves_to_shape_tree(leaves)


def test_a_missing_file_name_never_runs_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--tree model:v2.json`` for a missing file must not import ``./model.py``."""
    from partspec.tools.cli import main

    marker = tmp_path / "ran"
    (tmp_path / "model.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef v2():\n    return {{'w': 1.0}}\n"
    )
    (tmp_path / "s.pspec").write_text("** -> frozen\n")
    monkeypatch.chdir(tmp_path)
    for name in ("model:v2.json", "model:v2.safetensors", "model:v2.NPZ", "model:v2.pt"):
        fails(name, "no such file")
        assert main(["check", "s.pspec", "--tree", name]) == 2
        assert not marker.exists(), name
    # A name that cannot be a file name is a function to call, as documented.
    assert load_leaves("model:v2") == [Leaf(("w",), (), F32)]
    assert marker.exists()


@given(
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[a-z_][a-z0-9_]{0,6}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
    st.sampled_from(sorted(FILE_EXTENSIONS)),
)
def test_names_ending_in_a_file_extension_are_files(module: str, attr: str, ext: str) -> None:
    assert not is_callable_reference(f"{module}:{attr}.{ext}")
    assert not is_callable_reference(f"{module}:{attr}.{ext.upper()}")
    assert not is_callable_reference(f"dir/{module}:{attr}")


@pytest.mark.parametrize("dtype", sorted(LEAF_DTYPES))
def test_one_dtype_vocabulary_for_manifests_conditions_and_explain(
    tmp_path: Path, dtype: str
) -> None:
    """A manifest could declare float4_e2m1fn, which `where dtype == ...` rejected."""
    from partspec.tools.cli import main

    path = write(
        tmp_path / "t.json",
        json.dumps([{"path": "a/w", "shape": [4, 2], "dtype": dtype}, {"path": "b", "shape": [3]}]),
    )
    spec = write(tmp_path / "s.pspec", f'** where dtype == "{dtype}" -> frozen\n** -> sgd(0.1)\n')
    out = io.StringIO()
    code = main(["check", "--strict", spec, "--tree", path], out=out)
    if dtype == "float32":  # `b` is float32 too: every leaf frozen, rule 2 unused
        assert code == 1 and "E502" in out.getvalue(), out.getvalue()
        return
    assert code == 0, out.getvalue()
    out = io.StringIO()
    assert main(["explain", spec, "--tree", path, "--format", "json"], out=out) == 0
    report = json.loads(out.getvalue())
    assert report["rules"][0]["leaves"] == 1


def test_every_reader_maps_into_the_vocabulary() -> None:
    from partspec.language.vocabulary import OPTAX_DTYPES
    from partspec.tools import manifest

    assert set(manifest.SAFETENSORS_DTYPES.values()) <= LEAF_DTYPES
    assert set(manifest._TYPESTR.values()) <= LEAF_DTYPES
    assert OPTAX_DTYPES <= LEAF_DTYPES


_BAD_SHAPES = [[10**300], [2**62, 4], [-1, 3], [True, 2], [2.0], [3, None]]


@pytest.mark.parametrize("shape", _BAD_SHAPES, ids=str)
def test_every_reader_refuses_shapes_no_array_can_have(tmp_path: Path, shape: list[Any]) -> None:
    """10**300 dims overflowed later in `where size * 1 > 0` and explain; an .npz header
    with a negative or a True dim was accepted and crashed inside JAX."""
    fails(write(tmp_path / "m.json", json.dumps([{"path": "w", "shape": shape}])), "shape")
    fails(write(tmp_path / "n.json", json.dumps({"w": shape})), "shape")
    header = {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}
    fails(write(tmp_path / "m.safetensors", safetensors_bytes(header)), "shape")
    if all(isinstance(d, int) for d in shape):
        src = str(tmp_path / "m.npz")
        with zipfile.ZipFile(src, "w") as zf:
            zf.writestr("w.npy", npy_header(tuple(shape)))
        fails(src, "shape")


@given(st.lists(st.integers(-3, 2**64), max_size=4))
@example([0, 2**63])  # no elements, but no int64 holds the second dimension
def test_a_shape_is_read_iff_an_int64_can_count_its_elements(dims: list[int]) -> None:
    from partspec.tools.manifest import leaves_from_json

    # Every dimension must itself fit in an int64 (numpy keeps shapes as int64s), even
    # when another dimension is 0 and the element count is 0.
    ok = all(0 <= d <= MAX_LEAF_SIZE for d in dims) and math.prod(dims) <= MAX_LEAF_SIZE
    try:
        got = leaves_from_json([{"path": "w", "shape": dims}])
    except TreeInputError:
        assert not ok
    else:
        assert ok and got[0].shape == tuple(dims)
