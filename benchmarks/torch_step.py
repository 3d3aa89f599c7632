"""PyTorch backend benchmark: ``partspec.torch`` against hand-written param groups.

Two recipes on a ViT-like ``torch.nn.Module`` (patch embedding, ``blocks.{i}`` of
LayerNorm + attention-sized and MLP-sized ``Linear`` layers, a final norm and a head),
each against the torch code people write by hand for it, from the same weights and
gradients, in one process:

* ``seed``: the stem frozen, SGD with momentum and coupled weight decay, the head at
  10x; by hand, two ``torch.optim.SGD`` param groups and ``requires_grad_(False)``.
* ``layer decay``: timm's layer-wise decay for AdamW (one label per block, 0.75 per
  block from the top, no decay on biases and norms); by hand, timm's
  ``param_groups_layer_decay``-style groups (two per block) for one ``torch.optim.AdamW``.

For each it times, as the median over ``-n`` rounds of 100 calls: ``optimizer.step()``
and ``scheduler.step()`` (partspec's ``LRScheduler`` against a ``LambdaLR`` with one
lambda per group), and, once, building the optimizer (``partspec.torch.compile``, parse
included, after a warm-up compile that imports the parser and the backend, against the
hand-written group construction). Report only in CI; ``--check``
exits 1 if a step costs more than 1.25x the hand-written one.

    python benchmarks/torch_step.py
    python benchmarks/torch_step.py --depth 24 -n 9 --check
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if importlib.util.find_spec("partspec") is None:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import partspec.torch

TARGET_STEP = 1.25


class Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.norm2 = torch.nn.LayerNorm(width)
        self.fc1 = torch.nn.Linear(width, 4 * width)
        self.fc2 = torch.nn.Linear(4 * width, width)


class ViT(torch.nn.Module):
    def __init__(self, depth: int, width: int, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = torch.nn.Conv2d(3, width, 4, 4)
        self.blocks = torch.nn.ModuleList(Block(width) for _ in range(depth))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, classes)


SEED_SPEC = """
patch_embed/** -> frozen
** -> chain(add_decayed_weights(1e-4), sgd(exponential_decay(0.01, 1000, 0.1), momentum=0.9))
head/** with lr * 10
"""

LAYER_DECAY_SPEC = """
param depth = 12
let lr = 1e-3
patch_embed/** -> adamw(lr * 0.75 ** (depth + 1), weight_decay=0.05) as embed
blocks/<i>/** -> adamw(lr * 0.75 ** (depth - i), weight_decay=0.05) as block
** -> adamw(lr, weight_decay=0.05) as top
**/bias, **/norm*/** with weight_decay = 0
"""


def seed_by_hand(model: ViT) -> tuple[torch.optim.Optimizer, Any]:
    model.patch_embed.requires_grad_(False)
    head = list(model.head.parameters())
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.SGD(
        [{"params": rest}, {"params": head, "lr": 0.1}], lr=0.01, momentum=0.9, weight_decay=1e-4
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 0.1 ** (n / 1000))
    return opt, sched


def layer_decay_by_hand(model: ViT, depth: int) -> tuple[torch.optim.Optimizer, Any]:
    groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if name.startswith("patch_embed."):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = depth + 1
        no_decay = p.ndim <= 1 or ".norm" in f".{name}"
        groups.setdefault((layer, no_decay), []).append(p)
    opt = torch.optim.AdamW(
        [
            {
                "params": ps,
                "lr": 1e-3 * 0.75 ** (depth + 1 - layer),
                "weight_decay": 0.0 if no_decay else 0.05,
            }
            for (layer, no_decay), ps in sorted(groups.items())
        ]
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 1.0)
    return opt, sched


def _median_per_call(fn: Callable[[], Any], rounds: int, calls: int = 100) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def _once(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(name: str, depth: int, width: int, rounds: int) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    # A first compile imports the parser and the backend: not what this row compares.
    spec = SEED_SPEC if name == "seed" else LAYER_DECAY_SPEC
    partspec.torch.compile(spec, ViT(1, 8), **({} if name == "seed" else {"depth": 1}))
    ours_model = ViT(depth, width)
    hand_model = copy.deepcopy(ours_model)
    if name == "seed":
        t_ours, plan = _once(lambda: partspec.torch.compile(SEED_SPEC, ours_model))
        t_hand, (opt, sched) = _once(lambda: seed_by_hand(hand_model))
    else:
        t_ours, plan = _once(
            lambda: partspec.torch.compile(LAYER_DECAY_SPEC, ours_model, depth=depth)
        )
        t_hand, (opt, sched) = _once(lambda: layer_decay_by_hand(hand_model, depth))
    for model in (ours_model, hand_model):
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.randn_like(p) * 1e-3
    rows = [("build the optimizer", t_ours, t_hand)]
    rows.append(
        (
            "optimizer.step()",
            _median_per_call(plan.optimizer.step, rounds),
            _median_per_call(opt.step, rounds),
        )
    )
    rows.append(
        (
            "scheduler.step()",
            _median_per_call(plan.scheduler.step, rounds),
            _median_per_call(sched.step, rounds),
        )
    )
    groups = (len(plan.optimizer.param_groups), len(opt.param_groups))
    print(
        f"\n{name}: depth {depth}, width {width}, "
        f"{sum(p.numel() for p in ours_model.parameters()):,} parameters, "
        f"param groups: partspec {groups[0]}, hand-written {groups[1]}"
    )
    print(f"{'':<22}{'partspec':>14}{'hand-written':>14}{'ratio':>9}")
    for what, ours, hand in rows:
        print(f"{what:<22}{ours * 1e6:>12.1f}us{hand * 1e6:>12.1f}us{ours / hand:>8.2f}x")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=12, help="blocks (default 12)")
    parser.add_argument("--width", type=int, default=64, help="model width (default 64)")
    parser.add_argument("-n", type=int, default=7, help="rounds of 100 calls (default 7)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a step > {TARGET_STEP}x")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    missed = []
    for name in ("seed", "layer decay"):
        for what, ours, hand in run(name, args.depth, args.width, args.n):
            if what == "optimizer.step()" and ours / hand > TARGET_STEP:
                missed.append(f"{name}: {what} {ours / hand:.2f}x > {TARGET_STEP}x")
    for m in missed:
        print("missed:", m)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
