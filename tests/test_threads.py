"""Compiling is thread-safe: one Spec, compiled from many threads, labels like a serial run."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import pytest

import partspec
from partspec.resolution import resolver as coverage

THREADS = 8


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as possible, so that a race shows up in a few trials."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _tree(seed: int, trial: int) -> dict[str, Any]:
    """A tree whose leaves differ per thread: other layers, other shapes."""
    layers = {
        f"layer_{i}": {
            "w": jax.ShapeDtypeStruct((2 + (i + seed) % 3, 3), jnp.float32),
            "b": jax.ShapeDtypeStruct((3 + (i * seed) % 4,), jnp.float32),
        }
        for i in range(seed % 5, 40 + seed)
    }
    return {f"enc{trial}": layers, "head": {"w": jax.ShapeDtypeStruct((seed + 1, 2), jnp.float32)}}


def _spec(trial: int) -> str:
    # Patterns unique to the trial: every trial starts from a matcher no thread has built.
    return f"""
    param base = 1e-3
    enc{trial}/layer_<i>/** where ndim > 1 and shape[0] > 2 -> adamw(base * 0.9 ** i)
    enc{trial}/layer_<i>/b -> adam(base * i)
    ** where size > 4 -> sgd(0.1)
    ** -> frozen
    """


def _labels(spec: partspec.Spec, trees: list[Any]) -> list[Any]:
    return [partspec.compile(spec, tree).labels for tree in trees]


def _compile_in_threads(spec: partspec.Spec, trees: list[Any]) -> list[Any]:
    """Each tree's labels, compiled by its own thread, all threads starting at once."""
    got: list[Any] = [None] * len(trees)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(trees))

    def work(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                got[k] = partspec.compile(spec, trees[k]).labels
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(trees))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return got


@pytest.mark.usefixtures("fast_switching")
def test_one_spec_compiled_from_8_threads_labels_like_a_serial_run() -> None:
    """A mutable evaluator cached on the checked spec had its scope swapped per leaf,
    and the lazily built DFA numbered its states without a lock: threads mislabelled."""
    for trial in range(4):
        trees = [_tree(seed, trial) for seed in range(THREADS)]
        got = _compile_in_threads(partspec.parse(_spec(trial)), trees)
        coverage._matcher.cache_clear()
        assert got == _labels(partspec.parse(_spec(trial)), trees)


def test_every_module_cache_has_an_owner_a_bound_and_a_way_to_clear_it() -> None:
    import warnings

    import partspec.tools.surgery

    tree = {"enc": {f"layer_{i}": {"w": jnp.ones(2)} for i in range(3)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partspec.compile("enc/layer_<i>/** -> sgd(0.1 * i)\n** -> frozen", tree)
    partspec.select("enc/**", tree)
    infos = {c.name: c for c in partspec.cache_info()}
    assert {"language.parser", "matching.extractors", "resolution.matchers"} <= set(infos)
    assert {"surgery.selectors", "jax.leaf_kinds", "jax.leaf_infos"} <= set(infos)
    for c in infos.values():
        assert c.owner.startswith("partspec.") and c.bound >= 1 and 0 <= c.size <= c.bound
    assert infos["resolution.matchers"].size >= 1
    partspec.clear_caches()
    assert all(c.size == 0 or c.name == "jax.leaf_kinds" for c in partspec.cache_info())
    plan = partspec.compile("** -> sgd(0.1)", tree)  # everything is rebuilt on demand
    assert plan.labels["enc"]["layer_0"]["w"] == "sgd(0.1)"
