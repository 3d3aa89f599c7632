"""``partspec.torch.compile``: a spec and a ``torch.nn.Module`` to param groups, one
optimizer and one scheduler; ``partspec.torch.transfer``: load part of a state dict.

Paths are the module's parameter names split on ``.`` (``blocks.3.attn.qkv.weight`` is
``blocks/3/attn/qkv/weight``), so one spec serves a Flax model and its PyTorch twin
wherever their names agree. Compiling resolves the spec with the framework-neutral
resolver (:func:`partspec.resolution.resolve_paths`), then maps each label
(:mod:`partspec.torch.mapping`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from partspec.diagnostics import SpecWarning
from partspec.language import ast
from partspec.language.checker import CheckedSpec, check_spec
from partspec.language.load import parse
from partspec.language.values import LeafInfo
from partspec.resolution.result import Resolution, resolve_paths
from partspec.resolution.selection import Rename, TransferReport, plan_transfer
from partspec.torch.mapping import TorchGroup, global_clip, torch_group
from partspec.torch.optim import Optimizer, Scheduler

__all__ = ["TorchPlan", "compile", "leaf_info", "transfer"]


def leaf_info(t: torch.Tensor) -> LeafInfo:
    """A tensor's shape and dtype as specs see them (``torch.bfloat16`` is ``bfloat16``)."""
    return LeafInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."))


@dataclass(frozen=True)
class TorchPlan:
    """A spec compiled against a ``torch.nn.Module``.

    Attributes:
      spec: the spec.
      checked: the checked spec (``param`` values applied).
      resolution: the framework-neutral resolution over the module's parameters.
      labels: every named parameter's label, in ``named_parameters()`` order.
      groups: each trained label's param group as data (kind, options, learning rate).
      optimizer: one ``torch.optim.Optimizer`` over every trained label; each param
        group has a ``"label"`` key.
      scheduler: one ``LRScheduler`` for every group: call ``scheduler.step()`` after
        each ``optimizer.step()`` (or each epoch: schedules and ``frozen until`` count
        its steps).
      frozen: the names of the parameters that never train (``requires_grad`` off).
    """

    spec: ast.Spec
    checked: CheckedSpec
    resolution: Resolution
    labels: dict[str, str]
    groups: tuple[TorchGroup, ...]
    optimizer: Optimizer
    scheduler: Scheduler
    frozen: tuple[str, ...]

    def params_of(self, label: str) -> list[str]:
        """The names of the parameters with ``label``."""
        return [n for n, lab in self.labels.items() if lab == label]


def compile(
    spec: ast.Spec | str,
    model: torch.nn.Module,
    /,
    *,
    strict: bool = False,
    values: Mapping[str, Any] | None = None,
    **kwvalues: Any,
) -> TorchPlan:
    """Compile a spec against a PyTorch module: labels, one optimizer, one scheduler.

    Frozen parameters get ``requires_grad_(False)`` and are in no param group (no
    gradient, no optimizer state, no weight decay); ``frozen until N`` parameters start
    with gradients off and the scheduler turns them on when its count reaches ``N``, so
    that update ``N`` (counting from 0) is their first, with fresh optimizer state. Every
    other parameter gets ``requires_grad_(True)``.

    Args:
      spec: a spec or rule text.
      model: the module; its ``named_parameters()`` are the leaves.
      strict: make warnings (unused or shadowed rules) errors.
      values: values for the spec's ``param`` declarations, as a mapping.
      **kwvalues: the same, as keyword arguments (``lr=1e-3``).

    Raises:
      SpecError: a bad spec, parameters no rule covers, or an action without a
        faithful PyTorch equivalent (``E901``, naming the call).

    >>> import torch, partspec.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> plan = partspec.torch.compile("0/** -> frozen\\n1/* -> sgd(0.1, momentum=0.9)", model)
    >>> plan.labels["0.weight"], plan.labels["1.bias"]
    ('frozen', 'sgd(0.1, momentum=0.9)')
    >>> [(g["label"], g["lr"], len(g["params"])) for g in plan.optimizer.param_groups]
    [('sgd(0.1, momentum=0.9)', 0.1, 2)]
    >>> model[0].weight.requires_grad
    False
    """
    if isinstance(spec, str):
        spec = parse(spec)
    elif not isinstance(spec, ast.Spec):
        raise TypeError(f"spec must be a partspec.Spec or str, not {type(spec).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    checked = check_spec(spec, {**(values or {}), **kwvalues})
    named = list(model.named_parameters())
    res = resolve_paths(
        checked, [name.split(".") for name, _ in named], [leaf_info(p) for _, p in named]
    )
    res.raise_for_errors(strict=strict)
    for w in res.warnings:
        warnings.warn(w.render(), SpecWarning, stacklevel=2)
    labels = {name: lab for (name, _), lab in zip(named, res.labels) if lab is not None}
    max_norm = global_clip(res)
    mapped = {lab: torch_group(res, act) for lab, act in res.actions.items()}
    members: dict[str, list[torch.nn.Parameter]] = {}
    for (_, p), lab in zip(named, res.labels):
        assert lab is not None
        members.setdefault(lab, []).append(p)
    groups = [(g, members[lab]) for lab, g in mapped.items() if g is not None]
    frozen = tuple(name for name, lab in labels.items() if mapped[lab] is None)
    waiting = {g.label: ps for g, ps in groups if g.unfreeze_at is not None}
    for lab, ps in members.items():
        for p in ps:
            p.requires_grad_(mapped[lab] is not None and lab not in waiting)
    optimizer = Optimizer(groups, max_norm)
    scheduler = Scheduler(optimizer, [g for g, _ in groups], waiting)
    return TorchPlan(
        spec,
        res.checked,
        res,
        labels,
        tuple(g for g, _ in groups),
        optimizer,
        scheduler,
        frozen,
    )


def transfer(
    state_dict: Mapping[str, Any],
    model: torch.nn.Module,
    pattern: str = "**",
    *,
    rename: Rename | None = None,
    strict: bool = False,
) -> TransferReport:
    """Copy matching entries of a state dict into ``model``, in place: load pretrained
    weights into part of a model.

    The model's parameters and persistent buffers (BatchNorm statistics) are the
    destinations, by their ``state_dict`` names split on ``.``; each source entry's path
    (its key split on ``.``) is rewritten by ``rename`` and fills the destination with
    that path if ``pattern`` selects it. Shapes and dtypes must agree (``E702`` lists
    every leaf that differs, both sides). Copies run under ``torch.no_grad()`` into the
    existing tensors, so an optimizer built on them keeps working.

    Args:
      state_dict: the pretrained entries (``torch.load(..., weights_only=True)``, a
        safetensors ``load_file``); entries that are not tensors are reported unused.
      model: the module to fill.
      pattern: globs over *destination* paths (``backbone/**``, ``** except head/**``).
      rename: ``(old_prefix, new_prefix)`` over ``/``-joined paths, a sequence of such
        pairs, or a function (``None`` drops an entry), as for ``partspec.transfer``.
      strict: also fail when a selected destination has no source or a source entry
        is unused (``load_state_dict(strict=True)``).

    Returns:
      A :class:`~partspec.resolution.selection.TransferReport` (``print`` it).

    >>> import torch, partspec.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    >>> ckpt = {"encoder.weight": torch.ones(2, 2), "encoder.bias": torch.ones(2)}
    >>> report = partspec.torch.transfer(ckpt, model, "0/*", rename=("encoder/", "0/"))
    >>> model[0].bias.tolist(), len(report.copied)
    ([1.0, 1.0], 2)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    sources = [(k, v) for k, v in state_dict.items() if isinstance(v, torch.Tensor)]
    others = sorted(
        str(k).replace(".", "/") for k, v in state_dict.items() if not isinstance(v, torch.Tensor)
    )
    dests = list(model.state_dict(keep_vars=True).items())
    pairs, report = plan_transfer(
        [(k.replace(".", "/"), leaf_info(v)) for k, v in sources],
        [name.split(".") for name, _ in dests],
        [leaf_info(t) for _, t in dests],
        pattern,
        rename=rename,
        strict=strict and not others,
        where="partspec.torch.transfer",
    )
    if strict and others:  # pragma: no cover - only tensors in the usual state dict
        raise TypeError(f"state_dict entries that are not tensors: {', '.join(others)}")
    with torch.no_grad():
        for i, k in pairs:
            dests[i][1].copy_(sources[k][1])
    if others:
        report = dataclasses.replace(report, unused=tuple(sorted(report.unused + tuple(others))))
    return report
