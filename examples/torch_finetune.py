"""PyTorch fine-tuning with partspec: one spec, torch param groups, one scheduler.

Loads the "pretrained" stem and body from a checkpoint whose keys carry another prefix
(`partspec.torch.transfer` with a rename), freezes the stem, trains the body with SGD and
the new classifier at 10x its rate (torch_finetune.pspec), steps the scheduler per epoch,
and checks the result against the hand-written param-group code. Then times
`plan.optimizer.step()` against the hand-written `torch.optim.SGD` on the same groups.
CPU, a few seconds.

    python examples/torch_finetune.py
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

import partspec
import partspec.torch

SPEC = Path(__file__).with_name("torch_finetune.pspec")


class Net(torch.nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8))
        self.body = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU())
        self.classifier = torch.nn.Linear(8 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(torch.relu(self.stem(x))).flatten(1))


def main() -> None:
    torch.manual_seed(0)
    pretrained = {f"encoder.{k}": v for k, v in Net(10).state_dict().items()}
    model = Net(3)
    report = partspec.torch.transfer(
        pretrained, model, "** except classifier/**", rename=("encoder/", "")
    )
    print(f"transfer: {len(report.copied)} entries copied, unused {list(report.unused)}")

    plan = partspec.torch.compile(partspec.load(SPEC), model)
    for g in plan.optimizer.param_groups:
        print(f"group {g['label']}: {len(g['params'])} tensors, lr {g['lr']:g}")
    print("frozen:", ", ".join(plan.frozen))

    # The hand-written equivalent, from the same weights.
    theirs = copy.deepcopy(model)
    body = [p for n, p in theirs.named_parameters() if n.startswith("body.")]
    opt = torch.optim.SGD(
        [{"params": body}, {"params": theirs.classifier.parameters(), "lr": 0.1}],
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-3,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    gen = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen))
        for _ in range(5)
    ]
    stem = model.stem[0].weight.detach().clone()
    for epoch in range(3):
        for x, y in data:
            for net, o in ((model, plan.optimizer), (theirs, opt)):
                torch.nn.functional.cross_entropy(net(x), y).backward()
                o.step()
                o.zero_grad()
        plan.scheduler.step()
        sched.step()
        print(
            f"epoch {epoch}: lr {plan.scheduler.get_last_lr()} (hand-written {sched.get_last_lr()})"
        )
    assert torch.equal(model.stem[0].weight, stem), "the frozen stem moved"
    for (name, a), b in zip(model.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    print("same weights as the hand-written param groups after 3 epochs")

    # plan.optimizer.step() against torch.optim.SGD on the same groups (same run).
    for net in (model, theirs):
        torch.nn.functional.cross_entropy(net(data[0][0]), data[0][1]).backward()

    def best(o: torch.optim.Optimizer) -> float:
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(200):
                o.step()
            times.append((time.perf_counter() - t0) / 200)
        return min(times)

    ours, hand = best(plan.optimizer), best(opt)
    print(
        f"optimizer step: partspec {ours * 1e6:.1f} us, hand-written {hand * 1e6:.1f} us "
        f"({ours / hand:.2f}x)"
    )


if __name__ == "__main__":
    main()
