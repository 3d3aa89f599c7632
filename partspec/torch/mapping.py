"""Which ``torch.optim`` update is the same function of the gradient as a label's action.

Pure data, no torch: a :class:`~partspec.resolution.LabelAction` becomes a
:class:`TorchGroup` (the torch optimizer class by name, its per-group options, the
learning rate as a function of the step count, the unfreeze step), or a
:class:`~partspec.diagnostics.SpecError` (``E901``) naming the call that has no faithful
equivalent. Nothing is approximated:

- ``sgd(lr, momentum, nesterov)`` is ``torch.optim.SGD`` (optax's trace starts at zero,
  so its first momentum buffer is the gradient, as torch's is);
- ``adam`` / ``adamw`` are ``Adam`` / ``AdamW`` (the same bias-corrected moments, ``eps``
  outside the square root; ``adamw``'s decay ``-lr * wd * p`` is torch's decoupled decay);
- ``chain(add_decayed_weights(wd), sgd(...))`` (and ``adam``) is the optimizer with
  ``weight_decay=wd``: torch adds ``wd * p`` to the gradient first, as the chain does.

>>> import partspec
>>> from partspec.resolution import resolve_paths
>>> checked = partspec.check("** -> chain(add_decayed_weights(1e-3), sgd(0.1, momentum=0.9))")
>>> res = resolve_paths(checked, [("w",)])
>>> g = torch_group(res, res.actions[res.labels[0]])
>>> g.kind, g.options, g.lr(0)
('SGD', (('momentum', 0.9), ('nesterov', False), ('dampening', 0.0), ('weight_decay', 0.001)), 0.1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partspec.diagnostics import Diagnostic, Span, SpecError
from partspec.language.values import OptaxCall, ScaledSchedule, Until
from partspec.resolution.hyper import named_args
from partspec.resolution.result import LabelAction, Resolution
from partspec.torch.schedules import NoEquivalent, Schedule, schedule_fn

__all__ = ["MAPPED", "TorchGroup", "global_clip", "torch_group"]

#: What maps, as the error message lists it.
MAPPED = (
    "sgd (momentum, nesterov), adam, adamw, chain(add_decayed_weights(wd), sgd(...) or "
    "adam(...)), and the allow-listed schedules"
)


@dataclass(frozen=True)
class TorchGroup:
    """One label as a torch param group.

    Attributes:
      label: the label (the group's ``"label"`` key).
      kind: the ``torch.optim`` class name: ``"SGD"``, ``"Adam"`` or ``"AdamW"``.
      options: the group's options other than ``lr``, in a fixed order.
      lr: the learning rate at each step count of the label's optimizer.
      unfreeze_at: ``frozen until N``: ``N``; ``None`` otherwise.
    """

    label: str
    kind: str
    options: tuple[tuple[str, Any], ...]
    lr: Schedule
    unfreeze_at: int | None = None


class _Unmapped(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def torch_group(res: Resolution, action: LabelAction) -> TorchGroup | None:
    """The param group of a trained label; ``None`` for a frozen one.

    Raises:
      SpecError: ``E901`` at the rule whose action has no PyTorch equivalent.
    """
    if action.frozen:
        return None
    act = action.action
    at = None
    if isinstance(act, Until):
        assert isinstance(act.at, int)
        at, act = act.at, act.then
    assert isinstance(act, OptaxCall)
    try:
        kind, options, lr = _map(act)
        fn = schedule_fn(lr)
    except _Unmapped as bad:
        raise _error(res, action, bad.message, bad.hint) from None
    except NoEquivalent as bad:
        raise _error(res, action, f"{bad}: it has no PyTorch equivalent") from None
    except ValueError as bad:  # arguments optax rejects as well
        raise _error(res, action, str(bad)) from None
    return TorchGroup(action.label, kind, options, fn, at)


def global_clip(res: Resolution) -> float | None:
    """``max_norm`` of ``global clip_by_global_norm(max_norm)``; ``None`` without one.

    Raises:
      SpecError: ``E901`` for any other ``global`` transform, or more than one.
    """
    clip: float | None = None
    spans = [g.span for g in res.checked.spec.globals]
    for call, span in zip(res.globals, spans):
        if call.name != "clip_by_global_norm" or clip is not None:
            what = "a second `global`" if call.name == "clip_by_global_norm" else f"`{call.name}`"
            raise SpecError(
                [
                    res.checked.spec.attach(
                        Diagnostic.at(
                            "E901",
                            f"{what} has no PyTorch equivalent: partspec.torch applies one "
                            "`global clip_by_global_norm(max_norm)` inside the optimizer's step",
                            span,
                            hint="remove it, or train with optax (partspec.compile)",
                        )
                    )
                ]
            )
        clip = _number(named_args(call)["max_norm"], "max_norm", call.name)
    return clip


def _error(
    res: Resolution, action: LabelAction, message: str, hint: str | None = None
) -> SpecError:
    rule = res.checked.rules[action.rules[0]].rule if action.rules else None
    span = rule.action.span if rule is not None else Span(0, 0, 0, 0)
    diag = Diagnostic.at(
        "E901",
        f"label `{action.label}`: {message}",
        span,
        hint=hint or f"partspec.torch maps {MAPPED}; use one of them, or train with optax",
        label="no PyTorch equivalent",
    )
    return SpecError([res.checked.spec.attach(diag)])


def _number(v: Any, name: str, call: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Unmapped(f"`{name}` of `{call}` must be a number for PyTorch, not a schedule")
    return float(v)


def _map(call: OptaxCall) -> tuple[str, tuple[tuple[str, Any], ...], Any]:
    """``(torch class name, options, learning rate)`` of an optimizer call."""
    if call.name == "chain":
        parts = list(call.args)
        if len(parts) == 1 and isinstance(parts[0], OptaxCall):
            return _map(parts[0])
        if (
            len(parts) == 2
            and isinstance(parts[0], OptaxCall)
            and parts[0].name == "add_decayed_weights"
            and isinstance(parts[1], OptaxCall)
            and parts[1].name in ("sgd", "adam")
        ):
            decay = named_args(parts[0])
            if decay.get("mask") is not None:
                raise _Unmapped("`add_decayed_weights(mask=...)` has no PyTorch equivalent")
            kind, options, lr = _map(parts[1])
            wd = _number(decay["weight_decay"], "weight_decay", "add_decayed_weights")
            return kind, tuple((k, wd if k == "weight_decay" else v) for k, v in options), lr
        names = ", ".join(p.name if isinstance(p, OptaxCall) else repr(p) for p in parts)
        raise _Unmapped(
            f"`chain({names})` has no PyTorch equivalent",
            hint="partspec.torch maps chain(add_decayed_weights(wd), sgd(...)) and "
            "chain(add_decayed_weights(wd), adam(...)) (torch's coupled weight decay); "
            "clip with `global clip_by_global_norm(...)`",
        )
    args = named_args(call)
    if call.name == "sgd":
        if args.get("accumulator_dtype") is not None:
            raise _Unmapped("`sgd(accumulator_dtype=...)` has no PyTorch equivalent")
        m = args.get("momentum")
        momentum = 0.0 if m is None else _number(m, "momentum", "sgd")
        nesterov = bool(args.get("nesterov")) and momentum != 0.0
        options = (
            ("momentum", momentum),
            ("nesterov", nesterov),
            ("dampening", 0.0),
            ("weight_decay", 0.0),
        )
        return "SGD", options, args["learning_rate"]
    if call.name in ("adam", "adamw"):
        torch_name = "AdamW" if call.name == "adamw" else "Adam"
        for name, plain in (("eps_root", 0.0), ("mu_dtype", None), ("nesterov", False)):
            value = args.get(name, plain)
            if value != plain:
                raise _Unmapped(
                    f"`{call.name}({name}={value!r})` has no PyTorch equivalent",
                    hint=f"torch.optim.{torch_name} has no `{name}`; leave it at its "
                    f"default ({plain!r})",
                )
        if call.name == "adamw" and args.get("mask") is not None:
            raise _Unmapped(
                "`adamw(mask=...)` has no PyTorch equivalent",
                hint="give the leaves without decay their own weight decay: "
                "`** where ndim <= 1 with weight_decay = 0`",
            )
        options = (
            ("betas", (_number(args["b1"], "b1", call.name), _number(args["b2"], "b2", call.name))),
            ("eps", _number(args["eps"], "eps", call.name)),
            (
                "weight_decay",
                _number(args["weight_decay"], "weight_decay", call.name)
                if call.name == "adamw"
                else 0.0,
            ),
        )
        return torch_name, options, args["learning_rate"]
    if call.kind == "schedule" or isinstance(call, ScaledSchedule):  # pragma: no cover
        raise _Unmapped(f"`{call.name}` is a schedule, not an optimizer")
    raise _Unmapped(f"`{call.name}(...)` has no PyTorch equivalent")
