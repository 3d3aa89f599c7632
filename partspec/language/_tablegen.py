"""Generates ``partspec/language/_optax_table.py`` from the installed optax's signatures.

The checker validates optimizer names, keywords and argument types from that table,
so checking a spec never imports optax. ``tests/test_optax_table.py`` regenerates the
table and compares it with the committed one; after upgrading optax, run::

    python -m partspec.language._tablegen > partspec/language/_optax_table.py
"""

from __future__ import annotations

import inspect
import pprint
from typing import Any

#: Allow-listed optax functions by kind. Anything not listed cannot be called.
ALLOWED: dict[str, tuple[str, ...]] = {
    "optimizer": (
        "adabelief",
        "adadelta",
        "adafactor",
        "adagrad",
        "adam",
        "adamax",
        "adamaxw",
        "adamw",
        "adan",
        "amsgrad",
        "fromage",
        "lamb",
        "lars",
        "lion",
        "nadam",
        "nadamw",
        "noisy_sgd",
        "novograd",
        "optimistic_adam",
        "optimistic_adam_v2",
        "optimistic_gradient_descent",
        "radam",
        "rmsprop",
        "rprop",
        "sgd",
        "sign_sgd",
        "signum",
        "sm3",
        "yogi",
    ),
    "transform": (
        "adaptive_grad_clip",
        "add_decayed_weights",
        "add_noise",
        "apply_every",
        "centralize",
        "clip",
        "clip_by_block_rms",
        "clip_by_global_norm",
        "ema",
        "identity",
        "keep_params_nonnegative",
        "normalize_by_update_norm",
        "scale",
        "scale_by_adadelta",
        "scale_by_adam",
        "scale_by_adamax",
        "scale_by_adan",
        "scale_by_amsgrad",
        "scale_by_belief",
        "scale_by_learning_rate",
        "scale_by_lion",
        "scale_by_novograd",
        "scale_by_optimistic_gradient",
        "scale_by_param_block_norm",
        "scale_by_param_block_rms",
        "scale_by_radam",
        "scale_by_rms",
        "scale_by_rprop",
        "scale_by_rss",
        "scale_by_schedule",
        "scale_by_sign",
        "scale_by_sm3",
        "scale_by_stddev",
        "scale_by_trust_ratio",
        "scale_by_yogi",
        "set_to_zero",
        "trace",
        "zero_nans",
    ),
    "combinator": ("chain", "apply_if_finite"),
    "schedule": (
        "constant_schedule",
        "cosine_decay_schedule",
        "cosine_onecycle_schedule",
        "exponential_decay",
        "join_schedules",
        "linear_onecycle_schedule",
        "linear_schedule",
        "polynomial_schedule",
        "warmup_constant_schedule",
        "warmup_cosine_decay_schedule",
        "warmup_exponential_decay_schedule",
    ),
}

#: Deprecated in optax: function -> what to use instead (checking warns, W603).
#: ``tests/test_optax_table.py`` checks this against the warnings optax itself gives.
DEPRECATED: dict[str, str] = {
    "optimistic_adam": "use `optimistic_adam_v2`",
}
#: Deprecated keyword arguments: (function, keyword) -> what to use instead.
#: The test checks this against the ``# deprecated`` comments in optax's signatures.
DEPRECATED_KEYWORDS: dict[tuple[str, str], str] = {
    ("noisy_sgd", "seed"): "use `key=` (an integer seed)",
    ("add_noise", "seed"): "use `key=` (an integer seed)",
}

#: Types that annotations alone do not tell.
OVERRIDES: dict[tuple[str, str], tuple[str, ...] | None] = {
    ("join_schedules", "schedules"): ("list[schedule]",),
    ("join_schedules", "boundaries"): ("list[int]",),
    ("add_noise", "key"): ("int", "none"),
    ("noisy_sgd", "key"): ("int", "none"),
    ("adaptive_grad_clip", "axis"): ("int", "list[int]", "none"),
    ("scale_by_schedule", "step_size_fn"): ("schedule",),
}


def classify(func: str, name: str, annotation: Any) -> tuple[str, ...] | None:
    """The spec value types a parameter accepts; ``None`` when a spec cannot express it."""
    if (func, name) in OVERRIDES:
        return OVERRIDES[(func, name)]
    s = annotation if isinstance(annotation, str) else repr(annotation)
    optional = "NoneType" in s or "Optional" in s or "None" in s.split("|")[-1]
    types: tuple[str, ...]
    if "ArrayTree" in s or "ConditionFn" in s:
        return None  # masks and callbacks are Python functions or pytrees
    if "GradientTransformation" in s:
        types = ("transform",)
    elif name.endswith("dtype") or "SupportsDType" in s:
        types = ("dtype",)
    elif "Callable" in s:
        types = (
            ("number", "schedule")
            if ("float" in s or "numpy.number" in s.split("Callable")[0])
            else ("schedule",)
        )
    elif s in ("<class 'bool'>", "bool"):
        types = ("bool",)
    elif s in ("<class 'int'>", "int") or s.startswith("int |"):
        types = ("int",)
    elif s in ("<class 'str'>", "str"):
        types = ("str",)
    elif "numpy.number" in s or "float" in s or "Array" in s:
        types = ("number",)
    elif s.startswith("typing.Optional[int]") or s == "typing.Optional[int]":
        types = ("int",)
    else:
        return None
    if optional and "none" not in types:
        types = (*types, "none")
    return types


def generate() -> dict[str, dict[str, Any]]:
    """Read the allow-listed functions' signatures from the installed optax."""
    import optax

    table: dict[str, dict[str, Any]] = {}
    for kind, names in ALLOWED.items():
        for fname in names:
            fn = getattr(optax, fname, None)
            if fn is None:
                continue
            params = []
            for p in inspect.signature(fn).parameters.values():
                kinds: dict[Any, str] = {
                    inspect.Parameter.POSITIONAL_ONLY: "pos",
                    inspect.Parameter.POSITIONAL_OR_KEYWORD: "pos",
                    inspect.Parameter.KEYWORD_ONLY: "kw",
                    inspect.Parameter.VAR_POSITIONAL: "varargs",
                }
                pkind = kinds.get(p.kind)
                if pkind is None:
                    continue
                required = p.default is inspect.Parameter.empty and pkind != "varargs"
                default = None if p.default is inspect.Parameter.empty else p.default
                if not isinstance(default, (int, float, str, bool, type(None))):
                    default = getattr(default, "__name__", repr(default))
                entry = {
                    "name": p.name,
                    "kind": pkind,
                    "required": required,
                    "types": classify(fname, p.name, p.annotation),
                    "default": default,
                }
                if (fname, p.name) in DEPRECATED_KEYWORDS:
                    entry["deprecated"] = DEPRECATED_KEYWORDS[fname, p.name]
                params.append(entry)
            table[fname] = {"kind": kind, "params": params}
            if fname in DEPRECATED:
                table[fname]["deprecated"] = DEPRECATED[fname]
    return table


def render(table: dict[str, dict[str, Any]]) -> str:
    import optax

    body = pprint.pformat(table, width=100, sort_dicts=False)
    return (
        '"""Allow-listed optax functions and their signatures.\n\n'
        f"Generated by ``python -m partspec.language._tablegen`` from optax {optax.__version__}; "
        "do not edit.\n"
        '"""\n\n'
        "from typing import Any\n\n"
        f"OPTAX_VERSION = {optax.__version__!r}\n\n"
        f"TABLE: dict[str, dict[str, Any]] = {body}\n"
    )


if __name__ == "__main__":  # pragma: no cover
    print(render(generate()), end="")
