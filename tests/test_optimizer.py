"""The optimizer the one training loop builds (lmkit.training.optim): AdamW's fused kernel on the CPU, which must
take exactly the steps the reference per-parameter loop takes (docs/benchmarks.md: 2 ms against 14 ms)."""

from __future__ import annotations

import torch

from lmkit.training.config import TrainConfig
from lmkit.training.optim import make_optimizer


class TwoGroups(torch.nn.Module):
    """A module with decayed matrices and undecayed vectors, as every family's optim_groups returns."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 6)
        self.b = torch.nn.Linear(6, 3)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        rest = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def cfg() -> TrainConfig:
    return TrainConfig(optimizer="adamw", lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)


def test_adamw_is_fused_on_the_cpu_and_steps_like_the_reference_loop():
    torch.manual_seed(0)
    net = TwoGroups()
    reference = TwoGroups()
    reference.load_state_dict(net.state_dict())
    fused = make_optimizer(net, cfg(), is_cuda=False)
    assert fused.defaults.get("fused") is True
    plain = torch.optim.AdamW(reference.optim_groups(0.1), lr=1e-2, betas=(0.9, 0.99), foreach=False)
    x = torch.randn(5, 8)
    for _ in range(4):
        for model, opt in ((net, fused), (reference, plain)):
            opt.zero_grad()
            model.b(torch.tanh(model.a(x))).pow(2).sum().backward()
            opt.step()
    for p, q in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(net.a.weight, TwoGroups().a.weight)  # it did move


def test_sgd_stays_plain():
    net = TwoGroups()
    opt = make_optimizer(net, TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.0, betas=(0.9, 0.99)), False)
    assert isinstance(opt, torch.optim.SGD)
