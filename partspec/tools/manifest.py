"""Parameter structures without parameters: manifests and checkpoint headers.

``pspec check --tree TREE`` reads a parameter structure from a JSON manifest, an
``.npz`` or ``.safetensors`` file (headers only), a ``torch.save``d state dict (read
with torch's ``weights_only`` loader, onto the meta device: no data), an Orbax
checkpoint directory (metadata only) or ``MODULE:CALLABLE``. Nothing here imports JAX, except for
``MODULE:CALLABLE``, which runs the user's function under ``jax.eval_shape``.

Every failure is a :class:`TreeInputError` whose message names the source and the
problem. The formats are documented in ``docs/manifest.md``.

>>> leaves = [Leaf(("backbone", "kernel"), (768, 768), "float32")]
>>> print(dump_manifest(leaves), end="")
{
 "format": "partspec-manifest",
 "version": 1,
 "leaves": [
  {"path": ["backbone", "kernel"], "shape": [768, 768], "dtype": "float32"}
 ]
}
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, NoReturn

from partspec._extras import MissingExtra, needs
from partspec.language.files import open_regular, read_regular
from partspec.language.vocabulary import LEAF_DTYPES

__all__ = [
    "DTYPES",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "MAX_LEAF_SIZE",
    "Leaf",
    "TreeInputError",
    "dump_manifest",
    "leaves_from_json",
    "leaves_to_shape_tree",
    "load_leaves",
]

#: The ``"format"`` value of a manifest written by :func:`dump_manifest`.
MANIFEST_FORMAT = "partspec-manifest"
#: The manifest version :func:`dump_manifest` writes (and the only one read).
MANIFEST_VERSION = 1

#: The dtype names a leaf may have (:data:`partspec.language.vocabulary.LEAF_DTYPES`).
DTYPES = LEAF_DTYPES

#: numpy type strings without byte order (``<f4`` -> ``f4``) -> dtype names.
_TYPESTR = {
    "b1": "bool",
    "i1": "int8",
    "i2": "int16",
    "i4": "int32",
    "i8": "int64",
    "u1": "uint8",
    "u2": "uint16",
    "u4": "uint32",
    "u8": "uint64",
    "f2": "float16",
    "f4": "float32",
    "f8": "float64",
    "f16": "float128",
    "c8": "complex64",
    "c16": "complex128",
    "c32": "complex256",
}

#: safetensors dtype codes -> dtype names.
SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F6_E2M3": "float6_e2m3fn",
    "F6_E3M2": "float6_e3m2fn",
    "F4": "float4_e2m1fn",
}

#: Largest JSON manifest, Orbax ``_METADATA`` or zarr array metadata read (bytes): these
#: list shapes, never data. Every input is read only if it is a regular file.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
#: The most elements a leaf may have (so also the largest dimension): int64's range.
MAX_LEAF_SIZE = 2**63 - 1
#: Largest safetensors header accepted (bytes), as in the reference implementation.
MAX_SAFETENSORS_HEADER = 100_000_000

_FORMATS = (
    "a JSON manifest (.json), an .npz or .safetensors file, a torch.save state dict "
    "(.pt, .pth, .bin), an Orbax checkpoint directory, or MODULE:CALLABLE"
)
#: The buffers of torch's normalization layers (BatchNorm, InstanceNorm): in a state dict,
#: never parameters.
NORM_BUFFERS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
#: Extensions read as ``torch.save`` files (with ``weights_only=True``).
_TORCH_EXTENSIONS = frozenset({".pt", ".pth", ".bin"})
_CALLABLE_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
#: Extensions that make a name a file name, never ``MODULE:CALLABLE``: a missing
#: ``model:v2.json`` is "no such file", not an import of ``model.py``.
FILE_EXTENSIONS = frozenset(
    {
        *("json", "npz", "npy", "safetensors", "pt", "pth", "bin", "ckpt", "msgpack"),
        *("pkl", "pickle", "h5", "hdf5", "pb", "onnx", "gguf", "zip", "tar", "gz"),
        *("pspec", "txt", "yaml", "yml", "toml", "orbax"),
    }
)


def is_callable_reference(source: str) -> bool:
    """Whether ``source`` names a function to call (``MODULE:CALLABLE``), not a file.

    Only when it cannot be a file name: nothing exists at that path, it has the form
    ``dotted.module:dotted.attribute`` (no path separator), and it does not end in a
    file extension (:data:`FILE_EXTENSIONS`). This is the only way ``--tree`` runs code.

    >>> is_callable_reference("examples.vit_b16:params")
    True
    >>> is_callable_reference("model:v2.json"), is_callable_reference("ckpt/model:v2")
    (False, False)
    """
    if not _CALLABLE_RE.match(source) or os.path.lexists(source):
        return False
    attribute = source.partition(":")[2]
    return "." not in attribute or attribute.rpartition(".")[2].lower() not in FILE_EXTENSIONS


class Leaf(NamedTuple):
    """One parameter: its path segments, shape and dtype name."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str


class TreeInputError(ValueError):
    """A tree input that cannot be read: the message names the file and the problem."""


def _fail(source: str, problem: str) -> NoReturn:
    raise TreeInputError(f"{source}: {problem}")


def _show(path: Iterable[str]) -> str:
    return "/".join(path)


def _brief(value: Any, limit: int = 60) -> str:
    """A JSON value, shortened, for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # pragma: no cover - values here come from JSON
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- entry point


def load_leaves(source: str) -> list[Leaf]:
    """Read the leaves of a parameter structure from ``source``.

    ``source`` is a JSON manifest (``.json``), an ``.npz`` or ``.safetensors`` file
    (headers only), an Orbax checkpoint directory (metadata only) or
    ``MODULE:CALLABLE`` (called under ``jax.eval_shape``). Raises
    :class:`TreeInputError` for anything that cannot be read.
    """
    try:
        leaves = _dispatch(source)
    except TreeInputError:
        raise
    except RecursionError:
        _fail(source, "nested too deeply")
    except OSError as exc:
        _fail(source, f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # a safety net: a tree input never ends in a traceback
        _fail(source, f"cannot read ({type(exc).__name__}: {exc})")
    if not leaves:
        _fail(source, "contains no parameters")
    return leaves


def _dispatch(source: str) -> list[Leaf]:
    if os.path.isdir(source):
        return _load_orbax(source)
    if not os.path.exists(source):
        if is_callable_reference(source):
            return _load_callable(source)
        if ":" in source and not _CALLABLE_RE.match(source):
            _fail(source, "no such file (and not MODULE:CALLABLE, as in my_pkg.models:init)")
        _fail(source, "no such file")
    if os.path.basename(source) == _METADATA:
        return _load_orbax(os.path.dirname(source) or ".")
    ext = os.path.splitext(source)[1].lower()
    if ext == ".json":
        return _load_json_file(source)
    if ext == ".npz":
        return _load_npz(source)
    if ext == ".safetensors":
        return _load_safetensors(source)
    if ext in _TORCH_EXTENSIONS:
        return _load_torch(source)
    what = f"extension {ext!r}" if ext else "no extension"
    _fail(source, f"unsupported tree input ({what}); expected {_FORMATS}")


def _check_unique(source: str, leaves: list[Leaf], where: Callable[[int], str]) -> None:
    """No path twice, and no path that is also a prefix of another (a leaf is not a node)."""
    seen: dict[tuple[str, ...], int] = {}
    for i, leaf in enumerate(leaves):
        j = seen.setdefault(leaf.path, i)
        if j != i:
            _fail(source, f"{where(i)}: duplicate path {_show(leaf.path)!r} (first at {where(j)})")
    # A path's extensions follow it directly in sorted order, so comparing neighbours
    # finds every leaf that is also a prefix of another.
    ordered = sorted(seen)
    for a, b in itertools.pairwise(ordered):
        if b[: len(a)] == a:
            i, j = seen[b], seen[a]
            _fail(
                source,
                f"{where(i)}: path {_show(b)!r} is inside {_show(a)!r}, "
                f"which is a leaf itself (at {where(j)})",
            )


def _split(source: str, name: str, sep: str, where: str | _Where) -> tuple[str, ...]:
    segments = tuple(name.split(sep))
    if name == "" or "" in segments:
        _fail(source, f"{where}: name {name!r} has an empty path segment")
    return segments


def _dtype_from_typestr(text: str) -> str | None:
    """``<f4`` / ``|u1`` / ``float32`` / ``bfloat16`` -> a name in :data:`DTYPES`."""
    if text in DTYPES:
        return text
    return _TYPESTR.get(text.lstrip("<>|="))


# ---------------------------------------------------------------- JSON manifests


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _parse_json(source: str, data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        _fail(source, f"{what} is not UTF-8 text")
    if not text.strip():
        _fail(source, f"{what} is empty")
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except RecursionError:
        _fail(source, f"{what} is nested too deeply")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        _fail(source, f"{what} is not valid JSON: {exc}")


def _load_json_file(source: str) -> list[Leaf]:
    data = read_regular(source, limit=MAX_MANIFEST_BYTES)
    return leaves_from_json(_parse_json(source, data, "manifest"), source)


def leaves_from_json(doc: Any, source: str = "<manifest>") -> list[Leaf]:
    """The leaves of a parsed JSON manifest (any of the forms :func:`load_leaves` reads)."""
    if isinstance(doc, list):
        leaves = _leaf_list(source, doc, "")
    elif isinstance(doc, dict) and isinstance(doc.get("format"), str):
        leaves = _envelope(source, doc)
    elif isinstance(doc, dict):
        leaves = []
        _nested(source, doc, (), leaves)
    else:
        _fail(
            source,
            "a manifest is a list of leaves, an object of nested shapes, or "
            f'{{"format": "{MANIFEST_FORMAT}", ...}}; got {_brief(doc)}',
        )
    if not leaves:
        _fail(source, "empty manifest: no leaves")
    return leaves


def _envelope(source: str, doc: dict[str, Any]) -> list[Leaf]:
    if doc["format"] != MANIFEST_FORMAT:
        _fail(source, f"unknown manifest format {doc['format']!r} (expected {MANIFEST_FORMAT!r})")
    unknown = sorted(set(doc) - {"format", "version", "leaves"})
    if unknown:
        _fail(source, f"unknown top-level key {unknown[0]!r}")
    version = doc.get("version")
    if "version" not in doc:
        _fail(source, '"version" is missing')
    if type(version) is not int or version != MANIFEST_VERSION:
        _fail(source, f"unsupported manifest version {_brief(version)} (expected 1)")
    if "leaves" not in doc:
        _fail(source, '"leaves" is missing')
    if not isinstance(doc["leaves"], list):
        _fail(source, f'"leaves" must be a list, got {_brief(doc["leaves"])}')
    return _leaf_list(source, doc["leaves"], "leaves")


def _shape(source: str, value: Any, where: str | _Where) -> tuple[int, ...]:
    """A shape read from any tree input: non-negative ints (not bools), size in range.

    Every reader goes through here (JSON, npz and zarr headers, safetensors), so no
    shape that JAX or an int64 cannot hold (``10**300``, ``-1``, ``True``) gets past.
    """
    if not isinstance(value, (list, tuple)) or not all(type(d) is int and d >= 0 for d in value):
        _fail(
            source, f"{where}: shape must be a list of non-negative integers, got {_brief(value)}"
        )
    for d in value:
        if d > MAX_LEAF_SIZE:
            _fail(
                source,
                f"{where}: shape {_brief(list(value))} has a dimension of {d:,}, more than "
                f"{MAX_LEAF_SIZE:,} (the most an int64 can hold)",
            )
    size = 1
    for d in value:
        size *= d
        if size > MAX_LEAF_SIZE:
            _fail(
                source,
                f"{where}: shape {_brief(list(value))} is too large (more than "
                f"{MAX_LEAF_SIZE:,} elements, the most an int64 can count)",
            )
    return tuple(value)


def _dtype(source: str, value: Any, where: str | _Where) -> str:
    if not isinstance(value, str):
        _fail(source, f"{where}: dtype must be a string, got {_brief(value)}")
    if value not in DTYPES:
        _fail(
            source,
            f"{where}: unknown dtype {value!r} (expected a numpy or ml_dtypes name such as "
            "float32, bfloat16, int8, bool, float8_e4m3fn)",
        )
    return value


def _path(source: str, value: Any, where: str | _Where) -> tuple[str, ...]:
    if isinstance(value, str):
        return _split(source, value, "/", where)
    if isinstance(value, list) and value:
        out = []
        for seg in value:
            if isinstance(seg, str) and seg:
                out.append(seg)
            elif type(seg) is int and seg >= 0:
                out.append(str(seg))
            else:
                break
        else:
            return tuple(out)
    _fail(
        source,
        f"{where}: path must be a non-empty list of non-empty strings or non-negative "
        f'integers, or a string "a/b/c"; got {_brief(value)}',
    )


_LEAF_KEYS = frozenset({"path", "shape", "dtype"})
_STR, _INT = frozenset({str}), frozenset({int})


class _Where:
    """A location such as ``leaves[3].shape``, formatted only if an error needs it."""

    __slots__ = ("index", "prefix", "suffix")

    def __init__(self, prefix: str, index: int, suffix: str):
        self.prefix, self.index, self.suffix = prefix, index, suffix

    def __str__(self) -> str:
        return f"{self.prefix}[{self.index}]{self.suffix}"


def _leaf_list(source: str, items: list[Any], prefix: str) -> list[Leaf]:
    def where(i: int) -> str:
        return f"{prefix}[{i}]"

    leaves = []
    for i, item in enumerate(items):
        # The common case, checked inline: {"path": [str, ...], "shape": [int, ...], "dtype"}.
        if type(item) is dict and item.keys() <= _LEAF_KEYS:
            p, s, d = item.get("path"), item.get("shape"), item.get("dtype", "float32")
            if (
                type(p) is list
                and set(map(type, p)) == _STR
                and "" not in p
                and type(s) is list
                and set(map(type, s)) <= _INT
                and min(s, default=0) >= 0
                and len(s) <= 16
                and math.prod(s) <= MAX_LEAF_SIZE
                and type(d) is str
                and d in DTYPES
            ):
                leaves.append(Leaf(tuple(p), tuple(s), d))
                continue
        if not isinstance(item, dict):
            _fail(source, f'{where(i)}: expected {{"path": ..., "shape": ...}}, got {_brief(item)}')
        unknown = sorted(item.keys() - _LEAF_KEYS)
        if unknown:
            _fail(source, f"{where(i)}: unknown key {unknown[0]!r}")
        for key in ("path", "shape"):
            if key not in item:
                _fail(source, f"{where(i)}: {key!r} is missing")
        path = _path(source, item["path"], _Where(prefix, i, ".path"))
        shape = _shape(source, item["shape"], _Where(prefix, i, ".shape"))
        dtype = _dtype(source, item.get("dtype", "float32"), _Where(prefix, i, ".dtype"))
        leaves.append(Leaf(path, shape, dtype))
    _check_unique(source, leaves, where)
    return leaves


def _is_leaf_object(value: dict[str, Any]) -> bool:
    return (
        isinstance(value.get("shape"), list)
        and set(value) <= {"shape", "dtype"}
        and isinstance(value.get("dtype", ""), str)
    )


def _nested(source: str, node: dict[str, Any], path: tuple[str, ...], out: list[Leaf]) -> None:
    for key, value in node.items():
        sub = (*path, key)
        where = "$" + "".join(f"[{json.dumps(k, ensure_ascii=False)}]" for k in sub)
        if key == "":
            _fail(source, f"{where}: empty key")
        if isinstance(value, list):
            out.append(Leaf(sub, _shape(source, value, where), "float32"))
        elif isinstance(value, dict) and _is_leaf_object(value):
            shape = _shape(source, value["shape"], where + ".shape")
            dtype = _dtype(source, value.get("dtype", "float32"), where + ".dtype")
            out.append(Leaf(sub, shape, dtype))
        elif isinstance(value, dict):
            _nested(source, value, sub, out)
        else:
            _fail(
                source,
                f'{where}: expected a shape list, {{"shape": ..., "dtype": ...}} or an object '
                f"of parameters, got {_brief(value)}",
            )


def dump_manifest(leaves: Iterable[Leaf]) -> str:
    """The stable ``partspec-manifest`` JSON text of ``leaves``, one leaf per line.

    The order is the order given; ``load_leaves`` reads the text back unchanged.
    """
    lines = [
        json.dumps(
            {"path": list(leaf.path), "shape": list(leaf.shape), "dtype": leaf.dtype},
            ensure_ascii=False,
        )
        for leaf in leaves
    ]
    body = ",\n".join("  " + line for line in lines)
    return (
        "{\n"
        f' "format": "{MANIFEST_FORMAT}",\n'
        f' "version": {MANIFEST_VERSION},\n'
        ' "leaves": [' + (f"\n{body}\n ]" if lines else "]") + "\n}\n"
    )


def leaves_to_shape_tree(leaves: Iterable[Leaf]) -> dict[str, Any]:
    """A nested dict of ``jax.ShapeDtypeStruct``, keyed by path segments.

    Raises :class:`TreeInputError` if a path is both a leaf and a prefix of another
    path (or a path is empty or repeated).
    """
    import jax
    import ml_dtypes
    import numpy as np

    root: dict[str, Any] = {}
    for leaf in leaves:
        if not leaf.path:
            raise TreeInputError("a leaf has an empty path")
        if leaf.dtype not in DTYPES:
            raise TreeInputError(f"{_show(leaf.path)!r}: unknown dtype {leaf.dtype!r}")
        dtype = np.dtype(getattr(ml_dtypes, leaf.dtype, None) or leaf.dtype)
        node = root
        for i, seg in enumerate(leaf.path[:-1]):
            child = node.setdefault(seg, {})
            if not isinstance(child, dict):
                raise TreeInputError(
                    f"{_show(leaf.path)!r} is inside {_show(leaf.path[: i + 1])!r}, a leaf"
                )
            node = child
        last = leaf.path[-1]
        if last in node:
            what = (
                "a duplicate"
                if not isinstance(node[last], dict)
                else "a leaf and a prefix of other paths"
            )
            raise TreeInputError(f"{_show(leaf.path)!r} is {what}")
        node[last] = jax.ShapeDtypeStruct(leaf.shape, dtype)
    return root


# ---------------------------------------------------------------- .npz headers


def _load_npz(source: str) -> list[Leaf]:
    import zipfile
    import zlib

    if importlib.util.find_spec("numpy") is None:  # it reads the .npy headers
        _fail(source, "reading .npz headers needs numpy: pip install 'partspec[jax]' (or numpy)")
    import numpy as np

    fmt = np.lib.format
    headers: list[tuple[str, tuple[int, ...], Any]] = []
    try:
        with open_regular(source) as raw, zipfile.ZipFile(raw) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                if not name.endswith(".npy"):
                    _fail(source, f"member {name!r} is not a .npy array")
                try:
                    with zf.open(info) as member:
                        version = fmt.read_magic(member)
                        if version == (1, 0):
                            shape, _, dtype = fmt.read_array_header_1_0(member)
                        else:
                            shape, _, dtype = fmt.read_array_header_2_0(member)
                except (ValueError, EOFError, OSError, zlib.error, zipfile.BadZipFile) as exc:
                    _fail(source, f"member {name!r}: not a readable .npy header ({exc})")
                except NotImplementedError as exc:
                    _fail(source, f"member {name!r}: {exc}")
                headers.append(
                    (name[: -len(".npy")], _shape(source, shape, f"member {name!r}"), dtype)
                )
    except zipfile.BadZipFile:
        _fail(source, "not an .npz file (not a zip archive)")
    sep = "/" if any("/" in key for key, _, _ in headers) else "."
    leaves = []
    for key, shape, dtype in headers:
        dtype_name = _dtype_from_typestr(str(dtype.name)) or _dtype_from_typestr(str(dtype.str))
        if dtype_name is None:
            hint = ""
            if dtype.kind == "V" and dtype.fields is None:
                hint = " (np.save writes bfloat16 and float8 arrays as raw bytes)"
            _fail(source, f"array {key!r}: dtype {dtype.str!r} is not numeric{hint}")
        leaves.append(Leaf(_split(source, key, sep, f"array {key!r}"), shape, dtype_name))
    _check_unique(source, leaves, lambda i: f"array {headers[i][0]!r}")
    return leaves


# ---------------------------------------------------------------- .safetensors headers


def _load_safetensors(source: str) -> list[Leaf]:
    with open_regular(source) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            _fail(source, f"{size} bytes is too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER:
            _fail(
                source,
                f"safetensors header length {n} exceeds {MAX_SAFETENSORS_HEADER} bytes: "
                "not a safetensors file",
            )
        if n > size - 8:
            _fail(source, f"truncated: the header claims {n} bytes but the file has {size - 8}")
        data = f.read(n)
    if len(data) < n:  # pragma: no cover - the file shrank while reading
        _fail(source, "truncated header")
    header = _parse_json(source, data, "safetensors header")
    if not isinstance(header, dict):
        _fail(source, f"safetensors header must be a JSON object, got {_brief(header)}")
    leaves = []
    names = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                _fail(source, f"__metadata__ must be an object, got {_brief(entry)}")
            continue
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            _fail(source, f"{where}: expected an object, got {_brief(entry)}")
        if "dtype" not in entry or "shape" not in entry:
            _fail(source, f'{where}: "dtype" and "shape" are required')
        code = entry["dtype"]
        if not isinstance(code, str) or code not in SAFETENSORS_DTYPES:
            _fail(source, f"{where}: unknown safetensors dtype {_brief(code)}")
        shape = _shape(source, entry["shape"], where)
        offsets = entry.get("data_offsets", [0, 0])
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            _fail(source, f"{where}: bad data_offsets {_brief(offsets)}")
        names.append(name)
        leaves.append(Leaf(_split(source, name, ".", where), shape, SAFETENSORS_DTYPES[code]))
    _check_unique(source, leaves, lambda i: f"tensor {names[i]!r}")
    return leaves


# ---------------------------------------------------------------- torch.save state dicts


def _load_torch(source: str) -> list[Leaf]:
    """The tensors of a ``torch.save``d state dict, read with ``weights_only=True``:
    torch's restricted loader, which builds tensors and plain containers and refuses
    any other object, so no code in the file runs. Nested dicts (a checkpoint's
    ``{"model": state_dict, ...}``) give their keys as leading segments; entries that
    are not tensors (an epoch number) and the normalization layers' buffers
    (:data:`NORM_BUFFERS`) are skipped: they are not parameters, as in
    ``model.named_parameters()``, which ``partspec.torch.compile`` labels."""
    if importlib.util.find_spec("torch") is None:
        _fail(source, "reading a torch.save file needs torch: pip install 'partspec[torch]'")
    import torch

    try:
        obj = torch.load(source, map_location="meta", weights_only=True)
    except Exception as exc:
        if isinstance(exc, OSError):
            raise
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split(". ")[0].splitlines()
        _fail(
            source,
            f"not a state dict torch loads with weights_only=True ({type(exc).__name__}"
            f"{': ' + first[0][:100] if first else ''}); save `model.state_dict()`, not the "
            "model object",
        )
    if not isinstance(obj, dict):
        _fail(source, f"expected a state dict (a dict of tensors), got {type(obj).__name__}")
    leaves: list[Leaf] = []
    names: list[str] = []

    def walk(node: dict[Any, Any], prefix: tuple[str, ...], shown: str) -> None:
        for key, value in node.items():
            where = f"entry {shown + str(key)!r}"
            if isinstance(value, dict):
                walk(value, prefix + _split(source, str(key), ".", where), f"{shown}{key}/")
            elif (
                isinstance(value, torch.Tensor) and str(key).rsplit(".", 1)[-1] not in NORM_BUFFERS
            ):
                dtype = _dtype(source, str(value.dtype).removeprefix("torch."), where)
                path = prefix + _split(source, str(key), ".", where)
                leaves.append(Leaf(path, _shape(source, list(value.shape), where), dtype))
                names.append(shown + str(key))

    walk(obj, (), "")
    _check_unique(source, leaves, lambda i: f"entry {names[i]!r}")
    return leaves


# ---------------------------------------------------------------- Orbax checkpoints

_METADATA = "_METADATA"
_EMPTY_TYPES = frozenset({"Dict", "List", "Tuple", "NamedTuple", "None"})
_SKIPPED_TYPES = _EMPTY_TYPES | {"string", "placeholder"}
_STEP_RE = re.compile(r"^(?:.*_)?(\d+)$")


def _subdirs(path: str) -> list[str]:
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n for n in names if os.path.isdir(os.path.join(path, n)))


def find_orbax_item(source: str) -> str:
    """The directory holding ``_METADATA``: ``source``, its one item, or its latest step's."""

    def resolve(path: str, steps_allowed: bool) -> str | None:
        if os.path.exists(os.path.join(path, _METADATA)):
            return path
        subdirs = _subdirs(path)
        steps = [(int(m.group(1)), n) for n in subdirs if (m := _STEP_RE.match(n))]
        step_names = {n for _, n in steps} if steps_allowed else set()
        items = [
            n
            for n in subdirs
            if n not in step_names and os.path.exists(os.path.join(path, n, _METADATA))
        ]
        if len(items) > 1:
            _fail(
                source,
                f"{path} holds several checkpoint items ({', '.join(items)}); name the one to read",
            )
        if items:
            return os.path.join(path, items[0])
        if steps_allowed and steps:
            _, latest = max(steps)
            found = resolve(os.path.join(path, latest), False)
            if found is None:
                _fail(source, f"the latest step directory {latest!r} has no {_METADATA} file")
            return found
        return None

    found = resolve(source, True)
    if found is None:
        _fail(
            source,
            f"not an Orbax checkpoint: no {_METADATA} file here, in an item subdirectory, "
            "or in a numbered step directory",
        )
    return found


def _load_orbax(source: str) -> list[Leaf]:
    item = find_orbax_item(source)
    meta_file = os.path.join(item, _METADATA)
    meta = _parse_json(meta_file, read_regular(meta_file, limit=MAX_MANIFEST_BYTES), _METADATA)
    tree = meta.get("tree_metadata") if isinstance(meta, dict) else None
    if not isinstance(tree, dict):
        _fail(meta_file, 'expected an object with "tree_metadata"')
    paths: list[tuple[str, ...]] = []
    for key, entry in tree.items():
        where = f"tree_metadata[{json.dumps(key)}]"
        if not isinstance(entry, dict):
            _fail(meta_file, f"{where}: expected an object")
        keys = entry.get("key_metadata")
        value = entry.get("value_metadata")
        if not (
            isinstance(keys, list)
            and keys
            and all(isinstance(k, dict) and isinstance(k.get("key"), str) for k in keys)
        ):
            _fail(meta_file, f"{where}: bad key_metadata")
        if not isinstance(value, dict) or not isinstance(value.get("value_type"), str):
            _fail(meta_file, f"{where}: bad value_metadata")
        if value["value_type"] in _SKIPPED_TYPES:
            continue
        paths.append(tuple(k["key"] for k in keys))
    names = [".".join(p) for p in paths]
    use_ocdbt = meta.get("use_ocdbt")
    if not isinstance(use_ocdbt, bool):
        use_ocdbt = os.path.exists(os.path.join(item, "manifest.ocdbt"))
    if use_ocdbt:
        blobs = _read_ocdbt(source, item, names)
    else:
        blobs = [_read_plain(item, name) for name in names]
    leaves = []
    for path, name, (file, blob) in zip(paths, names, blobs):
        if blob is None:
            _fail(source, f"no array metadata for {name!r} (.zarray or zarr.json) in {item}")
        leaves.append(_zarr_leaf(source, path, file, blob))
    return leaves


def _read_plain(item: str, name: str) -> tuple[str, bytes | None]:
    root = os.path.realpath(item)
    for meta in (".zarray", "zarr.json"):
        file = os.path.join(item, name, meta)
        if not os.path.realpath(file).startswith(root + os.sep):
            break
        if os.path.isfile(file):
            return file, read_regular(file, limit=MAX_MANIFEST_BYTES)
    return os.path.join(item, name), None


def _read_ocdbt(source: str, item: str, names: list[str]) -> list[tuple[str, bytes | None]]:
    if not os.path.isfile(os.path.join(item, "manifest.ocdbt")):
        _fail(source, f"{item} has no manifest.ocdbt (an unfinished checkpoint?)")
    try:
        import tensorstore as ts
    except ImportError:
        _fail(
            source,
            "reading shapes from an OCDBT Orbax checkpoint needs tensorstore "
            "(installed with orbax-checkpoint)",
        )
    spec = {"driver": "ocdbt", "base": {"driver": "file", "path": os.path.abspath(item)}}
    try:
        kv = ts.KvStore.open(spec).result()
        reads = {
            (name, meta): kv.read(f"{name}/{meta}")
            for name in names
            for meta in (".zarray", "zarr.json")
        }
        out: list[tuple[str, bytes | None]] = []
        for name in names:
            for meta in (".zarray", "zarr.json"):
                result = reads[name, meta].result()
                if result.state == "value":
                    out.append((f"{item}[ocdbt]/{name}/{meta}", bytes(result.value)))
                    break
            else:
                out.append((f"{item}[ocdbt]/{name}", None))
    except (ValueError, RuntimeError) as exc:
        _fail(source, f"cannot read the OCDBT store in {item}: {exc}")
    return out


def _zarr_leaf(source: str, path: tuple[str, ...], file: str, blob: bytes) -> Leaf:
    meta = _parse_json(file, blob, "array metadata")
    if not isinstance(meta, dict):
        _fail(file, "array metadata must be a JSON object")
    shape = _shape(file, meta.get("shape"), "shape")
    raw = meta.get("data_type", meta.get("dtype"))
    dtype = _dtype_from_typestr(raw) if isinstance(raw, str) else None
    if dtype is None:
        _fail(file, f"unsupported array dtype {_brief(raw)}")
    return Leaf(path, shape, dtype)


# ---------------------------------------------------------------- MODULE:CALLABLE


def _load_callable(source: str) -> list[Leaf]:
    import importlib

    try:
        needs("jax", "MODULE:CALLABLE")
    except MissingExtra as exc:
        _fail(source, str(exc))

    module_name, _, attr = source.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        _fail(source, f"cannot import {module_name!r} ({type(exc).__name__}: {exc})")
    for part in attr.split("."):
        if not hasattr(obj, part):
            _fail(source, f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        _fail(source, f"{attr!r} is not callable (it is a {type(obj).__name__})")
    tree = _eval_shape(source, obj)

    import numpy as np

    from partspec.jax.tree import leaf_segments

    leaves = []
    for path, leaf in leaf_segments(tree):
        shape = getattr(leaf, "shape", None)
        dtype = getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            _fail(source, f"leaf {_show(path)!r} is not an array ({type(leaf).__name__})")
        try:
            name = np.dtype(dtype).name
        except TypeError:  # JAX's extended dtypes: PRNG keys
            name = str(dtype)
        if name not in DTYPES:
            _fail(source, f"leaf {_show(path)!r} has unsupported dtype {name!r}")
        leaves.append(Leaf(tuple(path), _shape(source, tuple(map(int, shape)), _show(path)), name))
    _check_unique(source, leaves, lambda i: f"leaf {_show(leaves[i].path)!r}")
    return leaves


def _eval_shape(source: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` under ``jax.eval_shape``; NNX modules (via ``nnx.eval_shape``) as their Params."""
    import jax

    def has_module(tree: Any) -> bool:
        nnx = sys.modules.get("flax.nnx")
        if nnx is None:
            return False
        found = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Module))
        return any(isinstance(x, nnx.Module) for x in found)

    first: BaseException | None = None
    try:
        out = jax.eval_shape(fn)
        if not has_module(out):
            return out
    except (Exception, SystemExit) as exc:
        first = exc
    if "flax.nnx" not in sys.modules:
        assert first is not None
        _fail(source, f"raised {type(first).__name__}: {first}")
    from flax import nnx

    try:
        out = nnx.eval_shape(fn)
        return jax.tree_util.tree_map(
            lambda x: nnx.state(x, nnx.Param) if isinstance(x, nnx.Module) else x,
            out,
            is_leaf=lambda x: isinstance(x, nnx.Module),
        )
    except (Exception, SystemExit) as exc:
        err = first or exc
        _fail(source, f"raised {type(err).__name__}: {err}")
