"""One ``torch.optim.Optimizer`` over every trained label, and one scheduler for them all.

:class:`Optimizer` holds one torch optimizer per kind (``SGD``, ``Adam``, ``AdamW``)
behind one object whose ``param_groups`` are all of theirs (each with a ``"label"``
key) and whose ``state`` they share, so ``torch.optim.lr_scheduler`` classes, gradient
scalers, Lightning and Hugging Face ``Trainer`` see one ordinary optimizer, and
``state_dict()`` / ``load_state_dict()`` are torch's own. Its ``step()`` clips the
trainable gradients first when the spec has ``global clip_by_global_norm``.

:class:`Scheduler` is an ``LRScheduler`` that sets each group's ``lr`` to the spec's
value at its step count (schedules, multipliers, ``with`` settings), and turns on the
gradients of a ``frozen until N`` group when its count reaches ``N``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from partspec.torch.mapping import TorchGroup

__all__ = ["Optimizer", "Scheduler"]

_CLASSES: dict[str, Any] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
}


class Optimizer(torch.optim.Optimizer):
    """The torch optimizer of a spec: one torch optimizer per kind, behind one object.

    Attributes:
      optimizers: the torch optimizer of each kind, in order of first use.
      max_norm: ``global clip_by_global_norm``'s bound, or ``None``.
    """

    def __init__(
        self,
        groups: Sequence[tuple[TorchGroup, list[torch.nn.Parameter]]],
        max_norm: float | None = None,
    ):
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for group, params in groups:
            entry: dict[str, Any] = {"params": params, "label": group.label, "lr": group.lr(0)}
            entry.update(group.options)
            by_kind.setdefault(group.kind, []).append(entry)
        self.optimizers: list[torch.optim.Optimizer] = [
            _CLASSES[kind](entries) for kind, entries in by_kind.items()
        ]
        self.max_norm = max_norm
        # Torch's base class keeps these very dicts: one list of groups, one state.
        super().__init__([g for o in self.optimizers for g in o.param_groups], {})
        self._share()

    def _share(self) -> None:
        """Give every inner optimizer its slice of the groups and the one state."""
        at = 0
        for o in self.optimizers:
            n = len(o.param_groups)
            o.param_groups = self.param_groups[at : at + n]
            o.state = self.state
            at += n

    @property
    def labels(self) -> list[str]:
        """The label of each param group, in order."""
        return [g["label"] for g in self.param_groups]

    @torch.no_grad()
    def clip_(self) -> torch.Tensor | None:
        """Clip the gradients as optax's ``clip_by_global_norm``: if their global norm
        is at least ``max_norm``, each becomes ``g / norm * max_norm``. Returns the norm."""
        if self.max_norm is None:
            return None
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        norm = torch.sqrt(torch.stack([torch.sum(g.float() ** 2) for g in grads]).sum())
        if norm >= self.max_norm:
            for g in grads:
                g.div_(norm.to(g.dtype)).mul_(self.max_norm)
        return norm

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every group (after clipping, with ``global clip_by_global_norm``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.clip_()
        for o in self.optimizers:
            o.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Torch's ``load_state_dict``, refusing a state saved under other labels."""
        saved = [g.get("label") for g in state_dict.get("param_groups", [])]
        if saved != self.labels:
            raise ValueError(
                "this optimizer state was saved with the param groups "
                f"{saved}, but this plan's are {self.labels}: it belongs to another spec "
                "or model (compare them with `pspec diff`)"
            )
        super().load_state_dict(state_dict)
        self._share()


class Scheduler(torch.optim.lr_scheduler.LRScheduler):
    """Every group's learning rate at the scheduler's step count, and the unfreezing.

    After ``n`` calls of :meth:`step`, a group's ``lr`` is its schedule at ``n`` (at
    ``n - N`` for a ``frozen until N`` group, whose optimizer starts at update ``N``), and
    a ``frozen until N`` group's parameters have ``requires_grad`` once ``n >= N``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        groups: Iterable[TorchGroup],
        waiting: dict[str, list[torch.nn.Parameter]],
        last_epoch: int = -1,
    ):
        self._partspec = ({g.label: g for g in groups}, waiting)
        super().__init__(optimizer, last_epoch)
        self._sync_grads()

    def get_lr(self) -> list[float]:  # type: ignore[override]
        groups, _ = self._partspec
        n = self.last_epoch
        out = []
        for pg in self.optimizer.param_groups:
            g = groups[pg["label"]]
            start = g.unfreeze_at or 0
            out.append(g.lr(max(n - start, 0)))
        return out

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        self._sync_grads()

    def _sync_grads(self) -> None:
        groups, waiting = self._partspec
        for label, params in waiting.items():
            on = self.last_epoch >= (groups[label].unfreeze_at or 0)
            for p in params:
                p.requires_grad_(on)

    def state_dict(self) -> dict[str, Any]:
        """Torch's scheduler state (the step count), without the plan's functions."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_partspec")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "_partspec"})
        self._sync_grads()
