"""Loud mistakes: the slips behind a rule that matches nothing are named (hints), a spec
under which nothing trains is an error (E502), and so is an integer leaf that a wildcard
hands an optimizer (E503)."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import partspec
from partspec.jax.tree import leaf_segments
from partspec.language.parser import parse_selector
from partspec.resolution.hints import unmatched_hint

PARAMS = {
    "params": {
        "backbone": {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
        "head": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
    }
}
INNER = PARAMS["params"]


def errors_of(spec: str, tree: Any) -> list[partspec.Diagnostic]:
    with pytest.raises(partspec.SpecError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        partspec.compile(spec, tree)
    return list(info.value.diagnostics)


def warnings_of(spec: str, tree: Any) -> list[partspec.Diagnostic]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", partspec.SpecWarning)
        plan = partspec.compile(spec, tree)
    return [d for d in plan.diagnostics if d.severity == "warning"]


def written(hint: str | None) -> str:
    """The pattern a hint says to write."""
    assert hint is not None
    found = re.search(r"write `([^`]*)`", hint)
    assert found, hint
    return found.group(1)


def test_dotted_names_under_a_frozen_catch_all_are_an_error_not_a_warning() -> None:
    """`head.kernel -> adam(1e-3)` then `** -> frozen` passed with two warnings and
    trained nothing."""
    (diag,) = errors_of("head.kernel -> adam(1e-3)\n** -> frozen", PARAMS)
    assert diag.code == "E502" and diag.line == 1
    assert "nothing trains" in diag.message
    assert "not `.`" in (diag.hint or "") and written(diag.hint) == "params/head/kernel"


def test_a_module_without_globstar_is_named() -> None:
    """`backbone -> frozen` for a module only said "rule matches no parameter"."""
    (warn,) = warnings_of("backbone -> frozen\nhead/** -> adam(1e-3)\n** -> sgd(0.1)", INNER)
    assert warn.code == "W601" and written(warn.hint) == "backbone/**"
    assert "MODULE/**" in (warn.hint or "")
    (diag,) = errors_of("backbone -> frozen\nhead/** -> adam(1e-3)", INNER)
    assert diag.code == "E501" and written(diag.hint) == "backbone/**"


def test_the_wrong_prefix_is_named_and_no_catch_all_is_suggested() -> None:
    """Checked without the `params/` prefix, the advice was "add a catch-all", which gives
    a spec that passes and trains nothing."""
    (diag,) = errors_of("backbone/** -> frozen\nhead/** -> adam(1e-3)", PARAMS)
    assert diag.code == "E501"
    assert "wrong tree, or wrong prefix?" in diag.message
    assert "catch-all" not in (diag.hint or "") and "** -> frozen" not in (diag.hint or "")
    assert written(diag.hint) == "params/backbone/**"


def test_an_extra_leading_segment_is_named() -> None:
    (warn,) = warnings_of("model/head/** -> adam(1e-3)\n** -> sgd(0.1)", INNER)
    assert written(warn.hint) == "head/**" and "`model/`" in (warn.hint or "")


def test_partly_uncovered_leaves_point_at_the_rule_that_was_meant_for_them() -> None:
    (diag,) = errors_of("params/backbone -> frozen\nparams/head/* -> adam(1e-3)", PARAMS)
    assert diag.code == "E501" and "line 1" in (diag.hint or "")
    assert written(diag.hint) == "params/backbone/**"


def test_a_misspelling_gets_the_nearest_real_paths() -> None:
    (warn,) = warnings_of("hed/* -> adam(1e-3)\n** -> sgd(0.1)", INNER)
    assert "nearest parameter paths" in (warn.hint or "")
    assert "`head/kernel`" in (warn.hint or "")


def test_a_wrong_tree_is_one_error_without_a_catch_all() -> None:
    other = {"encoder": {"w": jnp.ones(2)}, "decoder": {"w": jnp.ones(2)}}
    (diag,) = errors_of("backbone/** -> frozen\nhead/** -> adam(1e-3)", other)
    assert diag.code == "E501" and "wrong tree" in diag.message
    assert "catch-all" not in (diag.hint or "")


def test_all_frozen_on_purpose_is_fine() -> None:
    plan = partspec.compile("backbone/** -> frozen\nhead/** -> frozen", INNER)
    assert set(jax.tree.leaves(plan.labels)) == {"frozen"}


def test_a_shadowed_optimizer_rule_with_everything_frozen_is_an_error() -> None:
    (diag,) = errors_of("** -> frozen\nhead/** -> adam(1e-3)", INNER)
    assert diag.code == "E502" and diag.line == 2 and "gets none" in diag.message


# ---------------------------------------------------------------- integer leaves

BN = {
    "bn": {"scale": jnp.ones(2), "num_batches_tracked": jnp.zeros((), jnp.int32)},
    "head": {"kernel": jnp.ones((2, 2)), "mask": jnp.ones(2, bool)},
}


def test_integer_and_boolean_leaves_given_an_optimizer_by_a_wildcard_are_an_error() -> None:
    (diag,) = errors_of("** -> adam(1e-3)", BN)
    assert diag.code == "E503" and diag.line == 1
    assert diag.notes == (
        "integer leaf: bn/num_batches_tracked (int32)",
        "integer leaf: head/mask (bool)",
    )
    assert "**/num_batches_tracked -> frozen" in (diag.hint or "")


@pytest.mark.parametrize(
    "spec",
    [
        "bn/num_batches_tracked -> frozen\nhead/mask -> frozen\n** -> adam(1e-3)",
        "**/num_batches_tracked -> sgd(1.0)\n**/mask -> sgd(1.0)\n** -> adam(1e-3)",  # named
        '** where dtype == "float32" -> adam(1e-3)\n** -> frozen',  # chosen by dtype
    ],
)
def test_integer_leaves_frozen_or_named_are_fine(spec: str) -> None:
    partspec.compile(spec, BN)


def test_a_manifest_checks_integer_leaves_too(tmp_path: Path) -> None:
    from partspec.tools.cli import main

    tree = tmp_path / "t.json"
    tree.write_text(
        '[{"path": "w", "shape": [2], "dtype": "float32"},'
        ' {"path": "step", "shape": [], "dtype": "int64"}]'
    )
    spec = tmp_path / "s.pspec"
    spec.write_text("** -> adam(1e-3)\n")
    out = io.StringIO()
    assert main(["check", str(spec), "--tree", str(tree)], out=out) == 1
    assert "E503" in out.getvalue() and "step (int64)" in out.getvalue()


def test_the_cli_fails_the_dotted_spec(tmp_path: Path) -> None:
    from partspec.tools.cli import main

    tree = tmp_path / "t.json"
    tree.write_text('[{"path": "head/kernel", "shape": [2]}, {"path": "body/w", "shape": [2]}]')
    spec = tmp_path / "s.pspec"
    spec.write_text("head.kernel -> adam(1e-3)\n** -> frozen\n")
    out = io.StringIO()
    assert main(["check", str(spec), "--tree", str(tree)], out=out) == 1
    assert "E502" in out.getvalue() and "write `head/kernel`" in out.getvalue()


# ---------------------------------------------------------------- properties

_SEGMENT = st.text("abcxyz_019", min_size=1, max_size=5)
_TREES = st.recursive(
    st.just(np.zeros(1, np.float32)),
    lambda kids: st.dictionaries(_SEGMENT, kids, min_size=1, max_size=3),
    max_leaves=10,
).filter(lambda t: isinstance(t, dict))


def _matches(pattern: str, path: tuple[str, ...]) -> bool:
    return path in [tuple(p.split("/")) for p in partspec.select(pattern, _tree_of([path]))]


def _tree_of(paths: list[tuple[str, ...]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in paths:
        node = root
        for s in p[:-1]:
            node = node.setdefault(s, {})
        node[p[-1]] = np.zeros(1, np.float32)
    return root


@given(_TREES, st.data(), _SEGMENT)
def test_each_recognised_slip_is_corrected_to_a_pattern_that_matches(
    tree: dict[str, Any], data: st.DataObject, prefix: str
) -> None:
    """Over random trees: a real path written with dots, or a real module written
    without `/**`, or a path given without the tree's leading segment, gets a hint whose
    `write ...` pattern matches that path."""
    paths = [segs for segs, _ in leaf_segments(tree)]
    target = data.draw(st.sampled_from(paths))
    cases = []
    if len(target) > 1:
        cases.append((".".join(target), target, paths))  # dotted
        cases.append(("/".join(target[:-1]), target, paths))  # a module alone
    wrapped = [(prefix, *p) for p in paths]
    cases.append(("/".join(target), (prefix, *target), wrapped))  # a missing prefix
    for text, path, pool in cases:
        pattern = parse_selector(text).patterns[0]
        if any(_matches(text, p) for p in pool):
            continue  # the slip happens to match something real: nothing to correct
        hint = unmatched_hint(pattern, pool)
        assert hint is not None, text
        assert _matches(written(hint), path), (text, hint)


def test_the_hint_search_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 60-rule spec on the wrong tree searched corrections for every rule over every
    path: seconds on a big model. At most MAX_HINTED_RULES rules, MAX_HINT_PATHS paths."""
    import partspec.resolution.coverage as coverage
    import partspec.resolution.hints as hints

    seen: list[int] = []
    real = hints._first_match

    def counting(text: str, paths: Any) -> Any:
        seen.append(len(paths))
        return real(text, paths)

    monkeypatch.setattr(hints, "_first_match", counting)
    tree = {"params": {f"m{i}": {"w": np.zeros(1, np.float32)} for i in range(3000)}}
    spec = "\n".join(f"x{i}/** -> sgd(0.1)" for i in range(60)) + "\n** -> frozen"
    errors_of(spec, tree)
    assert seen and max(seen) <= hints.MAX_HINT_PATHS
    # Each hinted rule tries at most a couple of dozen corrections.
    assert len(seen) <= coverage.MAX_HINTED_RULES * 24, len(seen)
