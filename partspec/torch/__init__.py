"""The PyTorch backend: one spec, PyTorch param groups (``pip install 'partspec[torch]'``).

>>> import torch, partspec.torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
>>> plan = partspec.torch.compile("0/** -> frozen\\n1/* -> adam(1e-3)", model)
>>> type(plan.optimizer).__mro__[1] is torch.optim.Optimizer
True

See ``docs/torch.md``. The core and the JAX backend never import torch.
"""

from __future__ import annotations

from partspec._extras import needs

needs("torch", "partspec.torch")

from partspec.torch.mapping import TorchGroup  # noqa: E402
from partspec.torch.optim import Optimizer, Scheduler  # noqa: E402
from partspec.torch.plan import TorchPlan, compile, leaf_info, transfer  # noqa: E402

__all__ = [
    "Optimizer",
    "Scheduler",
    "TorchGroup",
    "TorchPlan",
    "compile",
    "leaf_info",
    "transfer",
]
