"""Every code block of the README and docs/ runs as written.

``python`` blocks run in order, one namespace per file (a page's examples build on each
other), from the repository root; ``pspec`` blocks parse. A block that cannot run says why
just above its fence: ``<!-- not run: REASON -->``; a ``pspec`` block that shows an error
names it: ``<!-- error: E414 -->``. Pages with a runner of their own (checkpoints,
sharding, surgery: tests/test_checkpoints.py, test_sharding.py, test_surgery.py) are run
there.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest

import partspec

ROOT = Path(__file__).resolve().parent.parent
OWN_RUNNERS = {"checkpoints.md", "sharding.md", "surgery.md"}
PAGES = [ROOT / "README.md"] + [
    p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in OWN_RUNNERS
]
FENCE = re.compile(r"(?:<!-- (not run|error): ([^>]*?) -->\n)?```(python|pspec)\n(.*?)```", re.S)


def blocks(page: Path) -> list[tuple[int, str, str | None, str | None, str]]:
    """(line, kind, marker, marker text, code) for each python or pspec block."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text[: m.start(3) if m.group(1) is None else m.start()].count("\n") + 1
        out.append((line, m.group(3), m.group(1), m.group(2), m.group(4)))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_runs(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    if page.name == "torch.md":
        pytest.importorskip("torch", reason="docs/torch.md runs PyTorch (the test extra)")
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    found = blocks(page)
    for line, kind, marker, why, code in found:
        where = f"{page.name}:{line}"
        if marker == "not run":
            assert why and why.strip(), f"{where}: say why the block is not run"
            continue
        if kind == "pspec":
            if marker == "error":
                with pytest.raises(partspec.SpecError) as info:
                    partspec.check(partspec.parse(code))
                assert why in [d.code for d in info.value.diagnostics], where
            else:
                partspec.parse(code)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", partspec.SpecWarning)
            exec(compile(code, where, "exec"), namespace)


def test_a_not_run_marker_needs_a_reason() -> None:
    """The marker grammar itself: a marker without a reason does not hide a block."""
    assert FENCE.search("<!-- not run:  -->\n```python\nx\n```").group(2) == ""
    total = sum(len(blocks(p)) for p in PAGES)
    skipped = sum(1 for p in PAGES for b in blocks(p) if b[2] == "not run")
    assert total > 50 and skipped <= 10, (total, skipped)
