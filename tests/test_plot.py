"""``pspec plot``: each label's learning rate against the update, as an image or data."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from partspec.tools.cli import main

SPEC = """\
let sched = warmup_cosine_decay_schedule(0.0, 1e-2, 5, 20)
backbone/** -> frozen until 10 then sgd(sched) as backbone
head/**     -> sgd(2 * sched) as head
stem/**     -> frozen as stem
"""
TREE = [
    {"path": "backbone/w", "shape": [4]},
    {"path": "head/w", "shape": [2]},
    {"path": "stem/w", "shape": [3]},
]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "s.pspec"
    spec.write_text(SPEC)
    tree = tmp_path / "t.json"
    tree.write_text(json.dumps(TREE))
    return spec, tree


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_csv_has_a_column_per_label_from_the_compiled_schedules(files: tuple[Path, Path]) -> None:
    import optax

    spec, tree = files
    code, out = run("plot", str(spec), "--tree", str(tree), "--steps", "30", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["step"]) for r in rows] == list(range(30))
    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 20)
    for r in rows:
        s = int(r["step"])
        assert float(r["head"]) == pytest.approx(2 * float(sched(s)), abs=1e-9)
        # frozen until 10: nothing before, then the schedule from its own step 0
        want = 0.0 if s < 10 else float(sched(s - 10))
        assert float(r["backbone"]) == pytest.approx(want, abs=1e-9)
        assert float(r["stem"]) == 0.0


def test_json_is_the_same_series_with_unfreeze_points(files: tuple[Path, Path]) -> None:
    spec, tree = files
    code, out = run("plot", str(spec), "--tree", str(tree), "--steps", "5")
    assert code == 0
    series = json.loads(out)
    assert series["steps"] == [0, 1, 2, 3, 4]
    assert series["labels"]["backbone"]["unfreeze_at"] == 10
    assert series["labels"]["stem"]["frozen"] is True


def test_long_runs_are_sampled_not_evaluated_at_every_step(files: tuple[Path, Path]) -> None:
    from partspec.tools.plot import MAX_POINTS

    spec, tree = files
    code, out = run("plot", str(spec), "--tree", str(tree), "--steps", "1000000")
    steps = json.loads(out)["steps"]
    assert code == 0 and len(steps) <= MAX_POINTS and steps[0] == 0 and steps[-1] == 999_999


def test_an_image_is_written(files: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the `plot` extra is not installed")
    spec, tree = files
    for name, magic in (("lr.png", b"\x89PNG"), ("lr.svg", b"<?xml")):
        target = tmp_path / name
        assert (
            run("plot", str(spec), "--tree", str(tree), "--steps", "40", "-o", str(target))[0] == 0
        )
        assert target.read_bytes().startswith(magic), name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "5", "--format", "image"], "an image needs a file"),
    ],
)
def test_usage_errors(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    spec, tree = files
    assert run("plot", str(spec), "--tree", str(tree), *argv)[0] == 2
    assert message in capsys.readouterr().err


def test_an_image_without_matplotlib_names_the_extra(
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    spec, tree = files
    code, _ = run(
        "plot", str(spec), "--tree", str(tree), "--steps", "5", "-o", str(tmp_path / "x.png")
    )
    assert code == 2
    assert "pip install 'partspec[plot]'" in capsys.readouterr().err
