"""The PyTorch backend: param groups, freezing, one scheduler, partial loading, and the
same trajectory as optax from the same weights and gradients."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the PyTorch backend needs torch (the test extra)")

import jax.numpy as jnp  # noqa: E402

import partspec  # noqa: E402
import partspec.torch  # noqa: E402
from partspec.diagnostics import SpecError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("backbone", "mid", "head")


def _model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return torch.nn.ModuleDict(
        {
            "backbone": torch.nn.Linear(4, 4),
            "mid": torch.nn.Linear(4, 4),
            "head": torch.nn.Linear(4, 3),
        }
    )


def _jax_params(model: Any) -> dict[str, Any]:
    sd = model.state_dict()
    return {
        a: {b: jnp.asarray(sd[f"{a}.{b}"].detach().numpy().copy()) for b in ("weight", "bias")}
        for a in NAMES
    }


def _grads(rng: np.random.Generator, model: Any) -> dict[str, dict[str, np.ndarray]]:
    return {
        a: {
            b: rng.normal(size=tuple(getattr(model[a], b).shape)).astype(np.float32)
            for b in ("weight", "bias")
        }
        for a in NAMES
    }


def _torch_update(plan: Any, model: Any, grads: dict[str, Any]) -> None:
    """One update as a training loop makes it: backward fills the grads of the
    parameters that require them (simulated here with given gradients)."""
    for name, p in model.named_parameters():
        a, b = name.split(".")
        p.grad = torch.tensor(grads[a][b]) if p.requires_grad else None
    plan.optimizer.step()
    plan.optimizer.zero_grad()
    plan.scheduler.step()


def _run_both(spec: str, steps: int = 20, seed: int = 0) -> tuple[Any, dict[str, Any], dict]:
    model = _model(seed)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tplan = partspec.torch.compile(spec, model)
    params = _jax_params(model)
    jplan = partspec.compile(spec, params)
    state = jplan.init(params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        grads = _grads(rng, model)
        _torch_update(tplan, model, grads)
        updates, state = jplan.tx.update(
            {a: {b: jnp.asarray(g) for b, g in d.items()} for a, d in grads.items()},
            state,
            params,
        )
        params = partspec.apply_updates(params, updates)
    return model, params, init


OPTIMIZERS = [
    "sgd(sched)",
    "sgd(sched, momentum=0.9)",
    "sgd(sched, momentum=0.9, nesterov=true)",
    "adam(sched, b1=0.8, b2=0.99, eps=1e-6)",
    "adamw(sched, weight_decay=0.1)",
    "chain(add_decayed_weights(1e-2), sgd(sched, momentum=0.9))",
    "chain(add_decayed_weights(1e-2), adam(sched))",
]

PARITY_SPEC = """\
let sched = warmup_cosine_decay_schedule(0.0, {lr}, 3, 20)
backbone/** -> frozen
mid/**      -> frozen until {until} then {opt}
**          -> {opt}
head/bias   with lr * {mult}
global clip_by_global_norm({clip})
"""


def _max_diff(model: Any, params: dict[str, Any]) -> float:
    sd = model.state_dict()
    return max(
        float(np.max(np.abs(sd[f"{a}.{b}"].numpy() - np.asarray(params[a][b]))))
        for a in NAMES
        for b in ("weight", "bias")
    )


# Tolerance. Both frameworks compute every update in float32, from the same float32
# weights and gradients, but round differently: optax evaluates the schedule in float32
# where torch gets a double, and orders Adam's bias correction and clipping's division
# differently. Each update then differs by a few float32 ulps of its size (lr * O(1) for
# Adam, whose normalised step amplifies a one-ulp difference in a tiny second moment),
# and 20 updates of at most 0.3 (lr 0.1, x3) sum to 2e-5 at worst: a real mismatch
# (a wrong momentum, decay or step count) is 1e-3 or more after 20 steps.
ATOL = 2e-5


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_same_trajectory_as_optax(opt: str) -> None:
    spec = PARITY_SPEC.format(opt=opt, lr=0.1, until=5, mult=3, clip=0.5)
    model, params, init = _run_both(spec)
    assert _max_diff(model, params) <= ATOL
    for b in ("weight", "bias"):  # frozen: bit for bit in both
        assert torch.equal(model.state_dict()[f"backbone.{b}"], init[f"backbone.{b}"])
        assert np.array_equal(np.asarray(params["backbone"][b]), init[f"backbone.{b}"].numpy())


@settings(max_examples=12)
@given(
    opt=st.sampled_from(OPTIMIZERS),
    lr=st.sampled_from([1e-3, 0.05, 0.2]),
    until=st.integers(0, 19),
    mult=st.sampled_from([0.1, 1, 10]),
    clip=st.sampled_from([0.1, 1.0, 100.0]),
    seed=st.integers(0, 3),
)
def test_same_trajectory_as_optax_property(
    opt: str, lr: float, until: int, mult: float, clip: float, seed: int
) -> None:
    spec = PARITY_SPEC.format(opt=opt, lr=lr, until=until, mult=mult, clip=clip)
    model, params, _ = _run_both(spec, seed=seed)
    assert _max_diff(model, params) <= ATOL * max(1.0, lr * mult / 0.3)


# ---------------------------------------------------------------- the seed recipe


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_seed_recipe_equals_hand_written_param_groups() -> None:
    """SGD(momentum 0.9, weight decay 1e-3), fc at 10x, StepLR(1, 0.1) stepped per epoch."""
    spec = """\
param lr = 0.01
let per_epoch = exponential_decay(lr, 1, 0.1, staircase=true)
** -> chain(add_decayed_weights(1e-3), sgd(per_epoch, momentum=0.9))
fc/** with lr * 10
"""
    torch.manual_seed(0)
    ours = _Net()
    theirs = copy.deepcopy(ours)
    plan = partspec.torch.compile(spec, ours)
    backbone = [p for n, p in theirs.named_parameters() if not n.startswith("fc.")]
    opt = torch.optim.SGD(
        [{"params": backbone}, {"params": theirs.fc.parameters(), "lr": 0.1}],
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-3,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    gen = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen))
        for _ in range(4)
    ]
    for _epoch in range(3):
        for x, y in data:
            for net, o in ((ours, plan.optimizer), (theirs, opt)):
                torch.nn.functional.cross_entropy(net(x), y).backward()
                o.step()
                o.zero_grad()
        plan.scheduler.step()
        sched.step()
        assert plan.scheduler.get_last_lr() == pytest.approx(sched.get_last_lr(), rel=1e-6)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert [g["label"] for g in plan.optimizer.param_groups] == [
        plan.labels["conv.weight"],
        plan.labels["fc.weight"],
    ]


# ---------------------------------------------------------------- freezing


def test_frozen_parameters_have_no_grad_no_group_no_state() -> None:
    model = _model()
    before = model["backbone"].weight.detach().clone()
    plan = partspec.torch.compile("backbone/** -> frozen\n** -> adamw(0.1)", model)
    x = torch.randn(2, 4)
    for _ in range(3):
        model["head"](model["mid"](model["backbone"](x))).sum().backward()
        plan.optimizer.step()
        plan.optimizer.zero_grad()
    assert torch.equal(model["backbone"].weight, before)
    assert model["backbone"].weight.grad is None and not model["backbone"].weight.requires_grad
    grouped = {id(p) for g in plan.optimizer.param_groups for p in g["params"]}
    assert id(model["backbone"].weight) not in grouped
    assert model["backbone"].weight not in plan.optimizer.state
    assert plan.frozen == ("backbone.weight", "backbone.bias")
    assert len(plan.optimizer.state) == 4


def test_frozen_until_trains_first_at_that_update_with_fresh_state() -> None:
    model = _model()
    plan = partspec.torch.compile("mid/** -> frozen until 3 then adam(0.1)\n** -> adam(0.1)", model)
    rng = np.random.default_rng(0)
    mid = model["mid"].weight
    start = mid.detach().clone()
    for update in range(5):
        assert mid.requires_grad == (update >= 3)
        _torch_update(plan, model, _grads(rng, model))
        if update < 3:
            assert torch.equal(mid, start) and mid not in plan.optimizer.state
        else:
            assert not torch.equal(mid, start)
            # Adam's step count of the label starts at its first update.
            assert int(plan.optimizer.state[mid]["step"]) == update - 2
    # The first update moves every weight by lr (Adam's first step is lr * sign(g)).
    model2 = _model()
    plan2 = partspec.torch.compile(
        "mid/** -> frozen until 3 then adam(0.1)\n** -> adam(0.1)", model2
    )
    rng = np.random.default_rng(0)
    for _ in range(4):
        _torch_update(plan2, model2, _grads(rng, model2))
    moved = (model2["mid"].weight - start).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, 0.1), rtol=1e-5, atol=1e-6)


def test_state_dicts_round_trip_mid_run() -> None:
    spec = PARITY_SPEC.format(
        opt="adamw(sched, weight_decay=0.1)", lr=0.1, until=12, mult=3, clip=0.5
    )
    spec = "head/weight -> sgd(0.1, momentum=0.9)\n" + spec  # two kinds behind one optimizer
    rng = np.random.default_rng(0)
    grads = [_grads(rng, _model()) for _ in range(20)]
    straight = _model()
    plan = partspec.torch.compile(spec, straight)
    for g in grads:
        _torch_update(plan, straight, g)

    first = _model()
    plan1 = partspec.torch.compile(spec, first)
    for g in grads[:10]:
        _torch_update(plan1, first, g)
    saved = copy.deepcopy(
        (first.state_dict(), plan1.optimizer.state_dict(), plan1.scheduler.state_dict())
    )
    resumed = _model(seed=7)  # other weights: everything comes from the checkpoint
    plan2 = partspec.torch.compile(spec, resumed)
    resumed.load_state_dict(saved[0])
    plan2.optimizer.load_state_dict(saved[1])
    plan2.scheduler.load_state_dict(saved[2])
    assert not resumed["mid"].weight.requires_grad  # frozen until 12, resumed at 10
    for g in grads[10:]:
        _torch_update(plan2, resumed, g)
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_a_state_saved_under_other_labels_is_refused() -> None:
    a = partspec.torch.compile("** -> adam(0.1)", _model())
    b = partspec.torch.compile("head/** -> sgd(0.1)\n** -> adam(0.1)", _model())
    with pytest.raises(ValueError, match="saved with the param groups"):
        b.optimizer.load_state_dict(a.optimizer.state_dict())


# ---------------------------------------------------------------- one optimizer object


def test_several_kinds_behind_one_torch_optimizer() -> None:
    model = _model()
    plan = partspec.torch.compile("head/** -> sgd(0.1, momentum=0.9)\n** -> adamw(1e-3)", model)
    opt = plan.optimizer
    assert isinstance(opt, torch.optim.Optimizer)
    # In rule order: one torch optimizer per kind, the groups of each together.
    assert [type(o).__name__ for o in opt.optimizers] == ["SGD", "AdamW"]
    assert [g["label"] for g in opt.param_groups] == ["sgd(0.1, momentum=0.9)", "adamw(0.001)"]
    # torch's own schedulers accept it and drive every group.
    step = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model["head"](model["mid"](model["backbone"](torch.randn(2, 4)))).sum().backward()
    opt.step()
    step.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 5e-4])
    assert all(p in opt.state for g in opt.param_groups for p in g["params"])


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_scheduler_sets_every_groups_rate_as_the_optax_schedules_give_it() -> None:
    from partspec.jax.rates import rates_at

    spec = (
        "mid/** -> frozen until 4 then sgd(linear_schedule(0.1, 0.0, 10))\n"
        "**     -> sgd(warmup_cosine_decay_schedule(0.0, 0.1, 3, 10))\n"
        "head/** with lr * 10\n"
    )
    plan = partspec.torch.compile(spec, _model())
    steps = list(range(14))
    want = rates_at(plan.resolution, steps)  # the compiled optax schedules
    labels = [g["label"] for g in plan.optimizer.param_groups]
    assert len(labels) == 3
    for n in steps:
        for label, rate in zip(labels, plan.scheduler.get_last_lr()):
            start = plan.resolution.actions[label].unfreeze_at or 0
            if n >= start:
                assert rate == pytest.approx(want[label][n], rel=1e-6, abs=1e-9), (label, n)
        plan.scheduler.step()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "call"),
    [
        ("** -> lion(1e-3)", "`lion(...)`"),
        ("** -> adam(1e-3, eps_root=1e-8)", "eps_root"),
        ("** -> adamw(1e-3, nesterov=true)", "nesterov"),
        ("** -> chain(clip_by_global_norm(1.0), sgd(0.1))", "chain(clip_by_global_norm, sgd)"),
        ("** -> chain(sgd(0.1), add_decayed_weights(1e-4))", "chain(sgd, add_decayed_weights)"),
        ("** -> sgd(0.1)\nglobal clip(1.0)", "`clip`"),
    ],
)
def test_no_faithful_equivalent_is_an_error_naming_the_call(spec: str, call: str) -> None:
    with pytest.raises(SpecError) as info:
        partspec.torch.compile(spec, _model())
    d = info.value.diagnostics[0]
    assert d.code == "E901"
    assert call in d.message and "no PyTorch equivalent" in d.message
    assert d.line is not None and d.source_line is not None and d.hint


# ---------------------------------------------------------------- timm's ViT in plain torch


def test_timm_style_vit_gets_timms_rates_and_decay() -> None:
    table = json.loads((ROOT / "examples/peers/timm_vit_b16_layer_decay.json").read_text())
    rows = table["params"]

    class Vit(torch.nn.Module):  # timm's parameter names and shapes, no download
        def __init__(self) -> None:
            super().__init__()
            for name, row in rows.items():
                *parents, leaf = name.split(".")
                mod: torch.nn.Module = self
                for p in parents:
                    if not hasattr(mod, p):
                        mod.add_module(p, torch.nn.Module())
                    mod = getattr(mod, p)
                mod.register_parameter(
                    leaf, torch.nn.Parameter(torch.zeros(row["shape"], device="meta"))
                )

    model = Vit()
    plan = partspec.torch.compile(partspec.load(ROOT / "examples/peers/timm_vit_b16.pspec"), model)
    group_of = {id(p): g for g in plan.optimizer.param_groups for p in g["params"]}
    assert len(group_of) == len(rows) == 152
    for name, p in model.named_parameters():
        g = group_of[id(p)]
        assert g["lr"] == pytest.approx(1e-3 * rows[name]["lr_scale"], rel=1e-12), name
        assert g["weight_decay"] == rows[name]["weight_decay"], name


# ---------------------------------------------------------------- transfer


class _Classifier(torch.nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
        self.classifier = torch.nn.Linear(4, classes)


def test_transfer_loads_the_backbone_with_buffers_renaming_a_prefix() -> None:
    pretrained = _Classifier(10)
    with torch.no_grad():
        for t in pretrained.state_dict().values():
            t.fill_(3) if t.is_floating_point() else t.fill_(7)
    ckpt = {
        "encoder." + k.removeprefix("backbone."): v
        for k, v in pretrained.state_dict().items()
        if k.startswith("backbone.")
    }
    ckpt["classifier.weight"] = pretrained.classifier.weight.detach()
    model = _Classifier(2)
    head = model.classifier.weight.detach().clone()
    report = partspec.torch.transfer(ckpt, model, "backbone/**", rename=("encoder/", "backbone/"))
    assert model.backbone[1].running_mean.tolist() == [3.0] * 4  # buffers too
    assert int(model.backbone[1].num_batches_tracked) == 7
    assert torch.equal(model.classifier.weight, head)
    assert [d for _, d in report.copied] == [
        "backbone/0/weight",
        "backbone/0/bias",
        "backbone/1/weight",
        "backbone/1/bias",
        "backbone/1/running_mean",
        "backbone/1/running_var",
        "backbone/1/num_batches_tracked",
    ]
    assert report.unused == ("classifier/weight",)
    # Buffers never get an optimizer: they are not parameters.
    plan = partspec.torch.compile("backbone/** -> frozen\n** -> sgd(0.1)", model)
    assert set(plan.labels) == {n for n, _ in model.named_parameters()}


def test_transfer_shape_mismatch_names_both_sides() -> None:
    src = _Classifier(10).state_dict()
    with pytest.raises(SpecError) as info:
        partspec.torch.transfer(src, _Classifier(2), "classifier/*")
    messages = [d.message for d in info.value.diagnostics]
    assert {d.code for d in info.value.diagnostics} == {"E702"}
    assert any("float32[10,4]" in m and "float32[2,4]" in m for m in messages)


def test_transfer_strict_and_nothing_to_copy() -> None:
    model = _Classifier(2)
    with pytest.raises(SpecError, match="nothing to copy") as info:
        partspec.torch.transfer({"other.weight": torch.zeros(1)}, model)
    assert info.value.diagnostics[0].code == "E703"
    src = {k: v for k, v in _Classifier(2).state_dict().items() if not k.startswith("classifier")}
    with pytest.raises(SpecError) as info:
        partspec.torch.transfer(src, model, strict=True)
    assert "missing: classifier/weight" in info.value.diagnostics[0].notes


# ---------------------------------------------------------------- pspec on a state dict


def test_pspec_check_reads_a_torch_saved_state_dict(tmp_path: Path) -> None:
    from partspec.tools.cli import main

    model = _Classifier(2)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(model, tmp_path / "whole.pt")
    spec = tmp_path / "s.pspec"
    spec.write_text("backbone/** -> frozen\nclassifier/* -> sgd(0.1)\n")
    assert main(["check", "--strict", str(spec), "--tree", str(tmp_path / "model.pt")]) == 0
    assert main(["check", str(spec), "--tree", str(tmp_path / "whole.pt")]) == 2
    from partspec.tools.manifest import load_leaves

    leaves = load_leaves(str(tmp_path / "model.pt"))
    # the BatchNorm buffers are not parameters
    assert [leaf.path for leaf in leaves] == [
        tuple(n.split(".")) for n, _ in model.named_parameters()
    ]
    assert math.prod(leaves[0].shape) == 16
