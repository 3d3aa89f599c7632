"""Every example spec passes `pspec check --strict` against the manifest beside it.

`examples/X.pspec` is checked against `examples/X.tree.json`, which `pspec tree` wrote from
the example's `params()` function (see each example script's docstring), exactly as
`.ci/run` does from the shell. Checking a manifest never builds the model.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from partspec.tools.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SPECS = sorted(EXAMPLES.glob("*.pspec"))


def manifest_for(spec: Path) -> Path:
    return spec.with_name(spec.name.removesuffix(".pspec") + ".tree.json")


def test_there_are_example_specs():
    assert {"transfer_learning", "haiku_subset", "param_groups", "vit_finetune"} <= {
        p.stem for p in SPECS
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_example_spec_checks_strictly_against_its_manifest(spec: Path):
    manifest = manifest_for(spec)
    assert manifest.is_file(), (
        f"{manifest.name} is missing: write it with "
        f"`pspec tree examples.MODULE:params -o examples/{manifest.name}`"
    )
    out = io.StringIO()
    code = main(["check", "--strict", str(spec), "--tree", str(manifest)], out=out)
    assert code == 0, out.getvalue()
    assert out.getvalue() == "All checks passed (1 spec).\n"


def test_vit_finetune_manifest_is_the_vit_b16_manifest():
    # vit_finetune.pspec is written against ViT-B/16; its manifest is a copy of
    # vit_b16.tree.json (both written by `pspec tree examples.vit_b16:params`).
    a = (EXAMPLES / "vit_finetune.tree.json").read_bytes()
    assert a == (EXAMPLES / "vit_b16.tree.json").read_bytes()


#: The example module whose `params()` each manifest records, where it is not the spec's name.
SOURCES = {"vit_finetune": "vit_b16"}


@pytest.mark.parametrize("manifest", sorted(EXAMPLES.glob("*.tree.json")), ids=lambda p: p.name)
def test_manifest_is_up_to_date(manifest: Path, monkeypatch: pytest.MonkeyPatch):
    # What `pspec tree examples.MODULE:params -o examples/X.tree.json` writes today.
    from partspec.tools.manifest import dump_manifest, load_leaves

    stem = manifest.name.removesuffix(".tree.json")
    module = SOURCES.get(stem, stem)
    monkeypatch.chdir(ROOT)
    if stem == "torch_finetune":  # a PyTorch model: its named parameters
        pytest.importorskip("torch", reason="the torch example's model needs torch")
        import importlib

        from partspec.tools.manifest import Leaf

        model = importlib.import_module("examples.torch_finetune").Net(3)
        fresh = dump_manifest(
            Leaf(tuple(n.split(".")), tuple(p.shape), str(p.dtype).removeprefix("torch."))
            for n, p in model.named_parameters()
        )
        assert manifest.read_text(encoding="utf-8") == fresh
        return
    fresh = dump_manifest(load_leaves(f"examples.{module}:params"))
    assert manifest.read_text(encoding="utf-8") == fresh, (
        f"{manifest.name} is stale: run "
        f"`pspec tree examples.{module}:params -o examples/{manifest.name}`"
    )


def test_vit_manifest_is_vit_b16():
    from partspec.tools.manifest import load_leaves

    leaves = load_leaves(str(EXAMPLES / "vit_b16.tree.json"))
    total = 0
    for leaf in leaves:
        n = 1
        for d in leaf.shape:
            n *= d
        total += n
    assert total == 86_567_656  # ViT-B/16 with a 1000-way head
    paths = {"/".join(leaf.path) for leaf in leaves}
    assert "Transformer/encoderblock_11/MultiHeadDotProductAttention_1/query/kernel" in paths
    assert "Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias" in paths
    assert {"cls", "embedding/kernel", "head/kernel", "Transformer/encoder_norm/scale"} <= paths


def test_explain_vit_finetune():
    out = io.StringIO()
    code = main(
        [
            "explain",
            str(EXAMPLES / "vit_finetune.pspec"),
            "--tree",
            str(EXAMPLES / "vit_b16.tree.json"),
        ],
        out=out,
    )
    text = out.getvalue()
    assert code == 0, text
    assert re.search(r"^\s*head\s", text, re.MULTILINE), text  # the `as head` label
    trainable = re.search(r"trainable:\s*([\d,]+)", text)
    frozen = re.search(r"frozen:\s*([\d,]+)", text)
    assert trainable and frozen, text
    n_trainable, n_frozen = (int(m.group(1).replace(",", "")) for m in (trainable, frozen))
    # Frozen: the patch embedding, cls, position embedding and blocks 0-5.
    assert n_frozen == 16 * 16 * 3 * 768 + 768 + 768 + 197 * 768 + 6 * 7_087_872
    assert n_trainable + n_frozen == 86_567_656
