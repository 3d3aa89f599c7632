"""The Node.js tools some tests run (``tests/js/package.json``), found or skipped.

``.ci/run`` installs them (``npm ci --prefix tests/js``) and sets
``PARTSPEC_REQUIRE_JS=1``, so that in CI a missing tool fails the test instead of
skipping it. The README's test command runs without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent / "js"


def _missing(why: str) -> None:
    if os.environ.get("PARTSPEC_REQUIRE_JS"):
        pytest.fail(f"{why} (PARTSPEC_REQUIRE_JS is set: run `npm ci --prefix tests/js`)")
    pytest.skip(f"{why}: run `npm ci --prefix tests/js` (Node.js test tools)")


def node_module(relative: str) -> Path:
    """``tests/js/node_modules/RELATIVE``, or skip (fail in CI) when not installed."""
    path = JS / "node_modules" / relative
    if not path.exists():
        _missing(f"{relative} is not installed")
    return path


def node() -> str:
    """The ``node`` executable, or skip (fail in CI) when there is none."""
    exe = shutil.which("node")
    if exe is None:
        _missing("Node.js is not installed")
    assert exe is not None
    return exe
