"""``pspec plot``: each label's learning rate against the update number.

The series come from :func:`partspec.jax.rates.rates_at`, the compiled schedules, so the
plot shows what the optimizer will do (a ``frozen until N`` label is 0 until update ``N``,
whose schedule then starts at its own step 0). As CSV or JSON it needs nothing more than
the ``jax`` extra; a PNG or SVG image needs matplotlib (``pip install 'partspec[plot]'``).

>>> from partspec.tools.manifest import Leaf
>>> spec = "a -> sgd(linear_schedule(1.0, 0.0, 4)) as a"
>>> series = lr_series(spec, [Leaf(("a",), (2,), "float32")], 5)
>>> series["labels"]["a"]["rates"]
[1.0, 0.75, 0.5, 0.25, 0.0]
>>> print(render_csv(series), end="")
step,a
0,1.0
1,0.75
2,0.5
3,0.25
4,0.0
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from typing import Any

from partspec.diagnostics import SpecWarning
from partspec.jax.rates import rates_at
from partspec.language import ast
from partspec.language.load import parse
from partspec.resolution.result import resolve_paths
from partspec.tools.manifest import Leaf, leaves_to_shape_tree

__all__ = ["MAX_POINTS", "lr_series", "render_csv", "render_json", "save_image"]

#: At most this many steps are evaluated per label (evenly spaced, ends included).
MAX_POINTS = 2000


def lr_series(
    spec: ast.Spec | str,
    leaves: list[Leaf],
    steps: int,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every label's learning rate at updates ``0 .. steps - 1`` (at most
    :data:`MAX_POINTS` of them, evenly spaced), with its unfreeze update.

    Raises:
      SpecError: the spec does not compile against ``leaves``.
    """
    from partspec.jax.plan import compile as compile_plan

    if isinstance(spec, str):
        spec = parse(spec)
    tree = leaves_to_shape_tree(leaves)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        plan = compile_plan(spec, tree, **dict(values or {}))
    res = resolve_paths(plan.checked, [leaf.path for leaf in leaves])
    if steps <= MAX_POINTS:
        xs = list(range(steps))
    else:
        xs = sorted({round(i * (steps - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)})
    rates = rates_at(res, xs)
    return {
        "spec": spec.filename,
        "steps": xs,
        "labels": {
            label: {
                "rates": rates[label],
                "frozen": la.frozen,
                "unfreeze_at": la.unfreeze_at,
            }
            for label, la in res.actions.items()
        },
    }


def render_csv(series: dict[str, Any]) -> str:
    """One row per step, one column per label (empty where a label has no rate)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    labels = list(series["labels"])
    writer.writerow(["step", *labels])
    for i, step in enumerate(series["steps"]):
        row = [series["labels"][lab]["rates"][i] for lab in labels]
        writer.writerow([step, *("" if v is None else repr(v) for v in row)])
    return out.getvalue()


def render_json(series: dict[str, Any]) -> str:
    return json.dumps(series, indent=2) + "\n"


def save_image(series: dict[str, Any], path: str) -> None:
    """A line per label (frozen labels left out), each unfreeze update marked; the format
    follows the file's suffix (``.png``, ``.svg``, ``.pdf``)."""
    from partspec._extras import needs

    needs("plot", "`pspec plot -o` with an image file")
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for label, s in series["labels"].items():
            if s["frozen"] or all(v is None for v in s["rates"]):
                continue
            (line,) = ax.plot(series["steps"], s["rates"], label=label, linewidth=1.5)
            if s["unfreeze_at"]:
                ax.axvline(s["unfreeze_at"], color=line.get_color(), linestyle=":", linewidth=1)
        ax.set_xlabel("update")
        ax.set_ylabel("learning rate")
        name = os.path.basename(series["spec"] or "") or "spec"
        ax.set_title(f"learning rate per label: {name}")
        ax.grid(True, alpha=0.3)
        if len(series["labels"]) <= 20:
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
