"""temperature=0: the samplers are torch.optim.SGD / RMSprop step for step
(DESIGN.md §3 "≡": same trajectory within 1e-6 relative in fp32), on a real
multi-layer model with param groups, weight decay, maximize, LR schedulers
and parameters that get no gradient at some steps."""

import pytest
import torch
from torch import nn

from pybayes.optim import PSGLD, SGHMC, SGLD


class Net(nn.Module):
    """Two heads on a shared trunk: head b gets no gradient on odd steps."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.head_a = nn.Linear(32, 4)
        self.head_b = nn.Linear(32, 4)

    def forward(self, x, use_b):
        h = self.trunk(x)
        out = self.head_a(h)
        return out + self.head_b(h) if use_b else out


def groups(model, wd):
    return [
        {"params": list(model.trunk.parameters()), "weight_decay": wd},
        {"params": list(model.head_a.parameters()) + list(model.head_b.parameters()), "lr": 0.02},
    ]


PAIRS = {
    "sgld": (lambda g, **kw: SGLD(g, lr=0.05, temperature=0, **kw),
             lambda g, **kw: torch.optim.SGD(g, lr=0.05, **kw)),
    "sghmc": (lambda g, **kw: SGHMC(g, lr=0.05, momentum=0.8, temperature=0, **kw),
              lambda g, **kw: torch.optim.SGD(g, lr=0.05, momentum=0.8, **kw)),
    "psgld": (lambda g, **kw: PSGLD(g, lr=0.005, alpha=0.9, eps=1e-6, temperature=0, **kw),
              lambda g, **kw: torch.optim.RMSprop(g, lr=0.005, alpha=0.9, eps=1e-6, **kw)),
}

SCHEDULERS = {
    "none": None,
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=30, gamma=0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=120),
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=[2 * g["lr"] for g in o.param_groups], total_steps=121, cycle_momentum=o.defaults.get("momentum", 0) > 0,  # SGHMC / SGD(momentum)
        base_momentum=0.7, max_momentum=0.9),
}


def train(model, opt, sched, steps=120, maximize=False):
    gen = torch.Generator().manual_seed(1)
    traj = []
    for t in range(steps):
        x = torch.randn(64, 12, generator=gen)
        y = torch.randint(0, 4, (64,), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x, use_b=(t % 2 == 0)), y)
        (-loss if maximize else loss).backward()
        opt.step()
        if sched is not None:
            sched.step()
        traj.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return traj


@pytest.mark.parametrize("sched", list(SCHEDULERS))
@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("fused", [None, False])
def test_temperature_zero_is_the_torch_optimizer(name, sched, fused):
    torch.manual_seed(0)
    ours_model = Net()
    ref_model = Net()
    ref_model.load_state_dict(ours_model.state_dict())
    make_ours, make_ref = PAIRS[name]
    maximize = name == "sgld"  # maximize on the negated loss is the same trajectory
    ours = make_ours(groups(ours_model, 1e-3), maximize=maximize, fused=fused)
    ref = make_ref(groups(ref_model, 1e-3), maximize=maximize)
    s1 = SCHEDULERS[sched](ours) if SCHEDULERS[sched] else None
    s2 = SCHEDULERS[sched](ref) if SCHEDULERS[sched] else None
    t1 = train(ours_model, ours, s1, maximize=maximize)
    t2 = train(ref_model, ref, s2, maximize=maximize)
    assert len(t1) == 120
    for step, (a, b) in enumerate(zip(t1, t2)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=lambda m: f"step {step}: {m}")
    # the no-grad steps really skipped head_b: it moved on even steps only
    assert not torch.equal(t1[0], t1[1])


def test_onecycle_drives_sghmc_momentum():
    model = nn.Linear(3, 1)
    opt = SGHMC(model.parameters(), lr=0.1, momentum=0.9, temperature=0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, base_momentum=0.5, max_momentum=0.95)
    seen = set()
    for _ in range(9):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        sched.step()
        seen.add(round(opt.param_groups[0]["momentum"], 6))
    assert len(seen) > 3 and min(seen) >= 0.5 and max(seen) <= 0.95
