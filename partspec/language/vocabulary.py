"""The language's vocabulary: keywords, leaf properties, dtype names, reserved labels.

One place for the words every stage must agree on: the grammar's keywords (which the
parser refuses as names and the formatter quotes as path segments), the leaf
properties a ``where`` condition may use, the label of ``frozen`` rules, and the
dtype names.


A leaf's dtype is named as NumPy and ``ml_dtypes`` name it (``float32``, ``bfloat16``,
``float8_e4m3fn``). Every tree reader accepts exactly :data:`LEAF_DTYPES`, a ``where``
condition may compare ``dtype`` with exactly these names, and ``pspec explain`` sizes
each of them; optax's dtype arguments (``mu_dtype="bfloat16"``) take
:data:`OPTAX_DTYPES`. Nothing here imports NumPy.

>>> "float4_e2m1fn" in LEAF_DTYPES, OPTAX_DTYPES <= LEAF_DTYPES
(True, True)
"""

from __future__ import annotations

__all__ = ["FROZEN_LABEL", "KEYWORDS", "LEAF_DTYPES", "LEAF_PROPERTIES", "OPTAX_DTYPES"]

#: The grammar's keywords: never names, and quoted when they are path segments.
KEYWORDS = frozenset(
    {
        *("let", "param", "except", "as", "frozen", "true", "false", "none", "include"),
        *("global", "where", "with", "until", "then", "and", "or", "not", "in"),
    }
)
#: The leaf properties a ``where`` condition can use.
LEAF_PROPERTIES = ("ndim", "shape", "size", "dtype")
#: The label of every ``frozen`` rule (reserved: no other action may take it).
FROZEN_LABEL = "frozen"

#: The dtype names a leaf may have: NumPy's names, plus the ``ml_dtypes`` names JAX
#: uses for bfloat16 and the narrow float and int types.
LEAF_DTYPES = frozenset(
    {
        "bool",
        *("int2", "int4", "int8", "int16", "int32", "int64"),
        *("uint2", "uint4", "uint8", "uint16", "uint32", "uint64"),
        *("float16", "float32", "float64", "float128", "bfloat16"),
        *("complex64", "complex128", "complex256"),
        *("float8_e3m4", "float8_e4m3", "float8_e4m3fn", "float8_e4m3fnuz"),
        *("float8_e4m3b11fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"),
        *("float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"),
    }
)

#: dtype names accepted where optax takes a dtype (``mu_dtype="bfloat16"``).
OPTAX_DTYPES = frozenset(
    {
        *("bfloat16", "float16", "float32", "float64"),
        *("int8", "int16", "int32", "int64", "uint8", "uint32"),
    }
)
