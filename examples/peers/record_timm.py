"""Record timm's layer-decay table for ViT-B/16: each parameter's learning-rate scale and
weight decay, as timm's own optimizer factory groups them.

The test ``tests/test_peers.py`` reads the table; it never imports timm. To record it
again (timm and a CPU torch in a separate environment; no weights are downloaded)::

    python -m venv /tmp/timm && /tmp/timm/bin/pip install torch==2.13.0 numpy
    /tmp/timm/bin/pip install --no-deps timm
    /tmp/timm/bin/pip install huggingface_hub safetensors pyyaml pillow
    /tmp/timm/bin/python examples/peers/record_timm.py \
        > examples/peers/timm_vit_b16_layer_decay.json
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import types
from typing import Any


class _AnyAttr(type):
    """Stub classes whose every attribute is another stub class
    (``InterpolationMode.NEAREST``)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttr(name, (), {})


class _Stub(types.ModuleType):
    """A stand-in for torchvision, which timm imports at start-up (image transforms,
    datasets, ``FrozenBatchNorm2d``) but never uses to build a ViT or its optimizer.
    torchvision's wheels do not import beside the CPU build of torch."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyAttr(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _Stub(spec.name)
        module.__path__ = []  # a package: submodules are stubs too
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


sys.meta_path.insert(0, _StubFinder())

import timm  # noqa: E402
import torch  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402

LR, WEIGHT_DECAY, LAYER_DECAY = 1e-3, 0.05, 0.75


def main() -> None:
    model = timm.create_model("vit_base_patch16_224", pretrained=False)
    opt = create_optimizer_v2(
        model, opt="adamw", lr=LR, weight_decay=WEIGHT_DECAY, layer_decay=LAYER_DECAY
    )
    names = {id(p): n for n, p in model.named_parameters()}
    table = {}
    for group in opt.param_groups:
        for p in group["params"]:
            table[names[id(p)]] = {
                "lr_scale": group["lr_scale"],
                "weight_decay": group["weight_decay"],
                "shape": list(p.shape),
            }
    print(
        json.dumps(
            {
                "peer": f"timm {timm.__version__}, torch {torch.__version__}",
                "model": "vit_base_patch16_224",
                "call": f"create_optimizer_v2(model, opt='adamw', lr={LR}, "
                f"weight_decay={WEIGHT_DECAY}, layer_decay={LAYER_DECAY})",
                "params": dict(sorted(table.items())),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
