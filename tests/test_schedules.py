"""Cyclical: cosine step size per cycle, temperature held at 0 while exploring,
sampling-phase collection, and its effect on the real samplers."""

import math

import pytest
import torch

from pybayes.optim import SGHMC, SGLD
from pybayes.samples import SampleCollector
from pybayes.schedules import Cyclical


def sgd_with_temperature(lr=0.5, temperature=1.0):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": [p], "temperature": temperature},
                           {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.1}], lr=lr)
    return p, opt


def test_cosine_lr_and_temperature_switch_follow_zhang_et_al():
    p, opt = sgd_with_temperature(temperature=0.7)
    sched = Cyclical(opt, cycles=3, total_steps=30, exploration=0.6)
    assert sched.cycle_length == 10
    for k in range(45):
        r = (k % 10) / 10
        assert opt.param_groups[0]["lr"] == pytest.approx(0.25 * (math.cos(math.pi * r) + 1), abs=1e-15)
        assert opt.param_groups[1]["lr"] == pytest.approx(0.05 * (math.cos(math.pi * r) + 1), abs=1e-15)
        assert sched.is_sampling == (r >= 0.6)
        assert opt.param_groups[0]["temperature"] == (0.7 if r >= 0.6 else 0.0)
        assert "temperature" not in opt.param_groups[1]
        assert sched.cycle == k // 10
        opt.step()
        sched.step()


def test_uneven_cycle_length_and_edge_fractions():
    _, opt = sgd_with_temperature()
    sched = Cyclical(opt, cycles=3, total_steps=10, exploration=0.0)
    assert sched.cycle_length == 4 and sched.is_sampling
    _, opt = sgd_with_temperature()
    sched = Cyclical(opt, cycles=1, total_steps=5, exploration=1.0)
    for _ in range(5):
        assert not sched.is_sampling and opt.param_groups[0]["temperature"] == 0.0
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="exploration"):
        Cyclical(opt, cycles=1, total_steps=5, exploration=1.5)
    with pytest.raises(ValueError, match="total_steps"):
        Cyclical(opt, cycles=6, total_steps=5)


def test_collector_collects_only_in_sampling_phases():
    p, opt = sgd_with_temperature()
    sched = Cyclical(opt, cycles=2, total_steps=20, exploration=0.8)
    col = SampleCollector(torch.nn.ParameterList([p]), schedule=sched)
    col.attach(opt)
    taken = []
    for k in range(20):
        p.grad = torch.ones(3)
        opt.param_groups[1]["params"][0].grad = torch.zeros(2)
        opt.step()  # the hook sees the phase of step k
        taken.append(col.collected_last_step)
        sched.step()
    assert [k for k, t in enumerate(taken) if t] == [8, 9, 18, 19]


def test_state_dict_round_trip_keeps_base_temperatures():
    _, opt = sgd_with_temperature(temperature=0.3)
    sched = Cyclical(opt, cycles=2, total_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    state = sched.state_dict()
    _, opt2 = sgd_with_temperature(temperature=9.0)
    sched2 = Cyclical(opt2, cycles=2, total_steps=10)
    sched2.load_state_dict(state)
    assert sched2.base_temperatures[0] == 0.3 and sched2.last_epoch == 3


def run(opt_cls, steps, **kw):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50))
    opt = opt_cls([w], **kw)
    sched = Cyclical(opt, cycles=2, total_steps=steps, exploration=0.5)
    traj, temps = [], []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (w ** 2).sum()).backward()
        temps.append(opt.param_groups[0].get("temperature"))
        opt.step()
        traj.append(w.detach().clone())
        sched.step()
    return traj, temps


@pytest.mark.parametrize("sampler,reference,kw", [
    (SGLD, torch.optim.SGD, {}),
    (SGHMC, torch.optim.SGD, {"momentum": 0.9}),
])
def test_real_samplers_are_noise_free_while_exploring(sampler, reference, kw):
    """During the first exploration phase the sampler at T=0 is its torch optimizer;
    once sampling starts, the noise makes the trajectories differ."""
    steps = 40
    a, temps = run(sampler, steps, lr=0.05, num_data=100, temperature=1.0, seed=3, **kw)
    b, _ = run(reference, steps, lr=0.05, **kw)
    assert temps[:10] == [0.0] * 10 and temps[10:20] == [1.0] * 10 and temps[20] == 0.0
    for k in range(10):
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    assert (a[12] - b[12]).abs().max() > 1e-3


def test_new_cycle_resets_sghmc_momentum():
    import torch
    from pybayes.optim import SGHMC

    w = torch.nn.Parameter(torch.ones(100))
    opt = SGHMC([w], lr=0.1, momentum=0.9, num_data=100, seed=0)
    sched = Cyclical(opt, cycles=2, total_steps=10, exploration=0.5)
    norms = []
    for _ in range(10):
        w.grad = w.detach().clone()
        opt.step()
        sched.step()
        norms.append(opt.state[w]["momentum_buffer"].abs().sum().item())
    assert norms[3] > 0 and norms[4] == 0.0  # step 5 starts cycle 2: buffer zeroed
    kept = Cyclical(SGHMC([w], lr=0.1, num_data=100, seed=0), cycles=2, total_steps=10,
                    reset_momentum=False)
    assert kept.reset_momentum is False
