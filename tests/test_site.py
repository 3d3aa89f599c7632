"""The documentation site: `mkdocs build --strict` passes (no broken link or anchor) and
```pspec blocks are highlighted by partspec's lexer (tests/test_lexer.py checks that
every one lexes without an error token)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="mkdocs (the docs extra, in dev)")

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_strictly_and_highlights_specs_with_the_pspec_lexer(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    # Constructs only partspec's lexer knows: a named pattern, a case-insensitive
    # pattern, path segments (Pygments' own lexers would give error tokens or text).
    language = (tmp_path / "language" / "index.html").read_text(encoding="utf-8")
    assert '<span class="kp">(?i)</span>' in language
    assert re.search(r'<span class="nd">@\w+</span>', language)
    assert len(re.findall(r'<span class="nn">', language)) > 100
    for code in ("E401", "E105", "W601"):  # the anchors diagnostics link to
        assert f'id="{code}"' in language
