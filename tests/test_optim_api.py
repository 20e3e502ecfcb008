"""The samplers as torch.optim citizens: state_dict resume (bitwise), AMP
GradScaler, torch.compile, hooks, deepcopy, param groups, schedulers of
temperature, named parameters, DDP, and clear errors that modify nothing."""

import copy
import io
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from pybayes.optim import PSGLD, SGHMC, SGLD

from conftest import requires_cuda

SAMPLERS = {
    "sgld": lambda p, **kw: SGLD(p, lr=0.01, num_data=500, **kw),
    "sghmc": lambda p, **kw: SGHMC(p, lr=0.01, momentum=0.9, num_data=500, **kw),
    "psgld": lambda p, **kw: PSGLD(p, lr=0.001, num_data=500, **kw),
}


def model_and_data(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(20)]
    return model, data


def train_steps(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_state_dict_resume_is_bitwise(name):
    model, data = model_and_data()
    ref_model = copy.deepcopy(model)
    opt = SAMPLERS[name](model.parameters(), seed=5)
    train_steps(model, opt, data[:10])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    # uninterrupted run
    ref_opt = SAMPLERS[name](ref_model.parameters(), seed=5)
    train_steps(ref_model, ref_opt, data)
    # resumed run: a fresh optimizer with another seed takes the checkpoint's
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2, _ = model_and_data(seed=1)
    model2.load_state_dict(ckpt["model"])
    opt2 = SAMPLERS[name](model2.parameters(), seed=999)
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.param_groups[0]["seed"] == 5
    train_steps(model2, opt2, data[10:])
    assert torch.equal(flat(model2), flat(ref_model))


@requires_cuda
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_cpu_checkpoint_into_cuda_optimizer(name):
    model, data = model_and_data()
    opt = SAMPLERS[name](model.parameters(), seed=5)
    train_steps(model, opt, data[:10])
    sd = copy.deepcopy(opt.state_dict())
    cuda_model = copy.deepcopy(model).cuda()
    cuda_opt = SAMPLERS[name](cuda_model.parameters(), seed=1)
    cuda_opt.load_state_dict(sd)
    train_steps(model, opt, data[10:])
    train_steps(cuda_model, cuda_opt, [(x.cuda(), y.cuda()) for x, y in data[10:]])
    torch.testing.assert_close(flat(cuda_model).cpu(), flat(model), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_grad_scaler_skips_overflow_and_unscales(name):
    model, data = model_and_data()
    plain = copy.deepcopy(model)
    opt = SAMPLERS[name](model.parameters(), seed=3)
    opt_plain = SAMPLERS[name](plain.parameters(), seed=3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    x, y = data[0]
    # a normal scaled step equals the unscaled step (the scale is a power of two)
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    opt_plain.zero_grad()
    nn.functional.cross_entropy(plain(x), y).backward()
    opt_plain.step()
    assert torch.equal(flat(model), flat(plain))
    # an overflowing step changes no parameter, no buffer and no step counter
    before = flat(model).clone()
    state_before = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y) * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(flat(model), before)
    after = opt.state_dict()
    for k, st in state_before["state"].items():
        for key, v in st.items():
            assert (torch.equal(v, after["state"][k][key]) if torch.is_tensor(v) else v == after["state"][k][key])
    assert scaler.get_scale() == 2.0**9


def test_found_inf_set_by_hand_changes_nothing():
    model, data = model_and_data()
    opt = SGHMC(model.parameters(), lr=0.01, num_data=100, seed=1)
    train_steps(model, opt, data[:2])
    before = flat(model).clone()
    steps = [opt.state[p]["step"] for p in model.parameters()]
    x, y = data[3]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.grad_scale = torch.tensor(4.0)
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    del opt.grad_scale, opt.found_inf
    assert torch.equal(flat(model), before)
    assert [opt.state[p]["step"] for p in model.parameters()] == steps == [2] * 4


def test_sample_collector_ignores_amp_skipped_steps():
    from pybayes.samples import SampleCollector

    model, data = model_and_data()
    opt = SGHMC(model.parameters(), lr=0.01, num_data=100, seed=1)
    collector = SampleCollector(model, burn_in=0, thin=1, max_samples=10)
    collector.attach(opt)
    train_steps(model, opt, data[:2])
    x, y = data[3]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    del opt.found_inf
    assert collector.steps_seen == 2 and opt.last_step_skipped
    train_steps(model, opt, data[4:5])
    assert collector.steps_seen == 3 and not opt.last_step_skipped


def test_torch_compile_of_a_training_step():
    model, data = model_and_data()
    ref = copy.deepcopy(model)
    opt = SGHMC(model.parameters(), lr=0.01, num_data=500, seed=4)
    ref_opt = SGHMC(ref.parameters(), lr=0.01, num_data=500, seed=4)

    def step(m, o, x, y):
        o.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        o.step()
        return loss

    compiled = torch.compile(step)
    for x, y in data[:6]:
        compiled(model, opt, x, y)
        step(ref, ref_opt, x, y)
    torch.testing.assert_close(flat(model), flat(ref), rtol=1e-6, atol=1e-7)
    assert opt.state[next(model.parameters())]["step"] == 6


def test_hooks_deepcopy_repr_add_param_group_and_lr_tensor():
    model, data = model_and_data()
    extra = nn.Parameter(torch.zeros(5))
    opt = SGHMC(model.parameters(), lr=torch.tensor(0.01), num_data=500, seed=2)
    calls = []
    opt.register_step_post_hook(lambda o, a, k: calls.append(1))
    opt.add_param_group({"params": [extra], "temperature": 0.5})
    assert opt.param_groups[1]["param_ids"] == [4]
    assert opt.param_groups[1]["temperature"] == 0.5 and opt.param_groups[1]["momentum"] == 0.9
    twin = copy.deepcopy(opt)
    assert twin.param_groups[0]["seed"] == 2
    text = repr(opt)
    assert "SGHMC" in text and "temperature: 0.5" in text and "param_ids" not in text
    extra.grad = torch.ones(5)
    opt.step()  # only `extra` has a gradient
    assert opt.state[extra]["step"] == 1 and len(opt.state) == 1
    train_steps(model, opt, data[:3])  # zero_grad sets extra.grad to None: skipped from now on
    assert len(calls) == 4
    assert opt.state[extra]["step"] == 1
    assert opt.state[next(model.parameters())]["step"] == 3


def test_temperature_change_between_steps_and_named_parameters():
    theta = nn.Parameter(torch.zeros(10000))
    opt = SGLD([theta], lr=0.1, num_data=100, temperature=1.0, seed=8)
    theta.grad = torch.zeros(10000)
    opt.step()
    spread = theta.detach().std().item()
    assert abs(spread - (2 * 0.1 / 100) ** 0.5) < 5 * spread / (2 * 10000) ** 0.5
    opt.param_groups[0]["temperature"] = 0.0
    before = theta.detach().clone()
    opt.step()
    assert torch.equal(theta.detach(), before)  # T = 0, zero gradient: no move
    # named parameters: the noise stream follows the name, not the position
    a, b = nn.Parameter(torch.zeros(64)), nn.Parameter(torch.zeros(64))
    o1 = SGLD([("w", a), ("v", b)], lr=0.1, num_data=10, seed=1)
    c, d = nn.Parameter(torch.zeros(64)), nn.Parameter(torch.zeros(64))
    o2 = SGLD([("v", d), ("w", c)], lr=0.1, num_data=10, seed=1)
    for p in (a, b, c, d):
        p.grad = torch.zeros(64)
    o1.step()
    o2.step()
    assert torch.equal(a, c) and torch.equal(b, d) and not torch.equal(a, b)


@pytest.mark.parametrize("make,msg,exc", [
    (lambda p: SGLD(p, lr=0.1), "num_data", ValueError),
    (lambda p: SGLD(p, lr=-0.1, num_data=10), "lr must be", ValueError),
    (lambda p: SGLD(p, lr=0.1, num_data=10, temperature=-1), "temperature must be", ValueError),
    (lambda p: SGLD(p, lr=0.1, num_data=-5), "num_data must be", ValueError),
    (lambda p: SGHMC(p, lr=0.1, momentum=1.0, num_data=10), "momentum must be in", ValueError),
    (lambda p: SGHMC(p, lr=0.1, momentum=-0.1, num_data=10), "momentum must be", ValueError),
    (lambda p: PSGLD(p, lr=0.1, alpha=1.5, num_data=10), "alpha must be in", ValueError),
    (lambda p: PSGLD(p, lr=0.1, eps=0.0, num_data=10), "eps must be > 0", ValueError),
    (lambda p: SGLD(p, lr=float("nan"), num_data=10), "lr must be", ValueError),
    (lambda p: SGLD(p, lr=0.1, num_data=10, seed=-1), "seed", ValueError),
    (lambda p: SGLD(p, lr=0.1, num_data=10, fused="yes"), "fused", TypeError),
])
def test_bad_constructor_arguments(make, msg, exc):
    with pytest.raises(exc, match=msg):
        make([nn.Parameter(torch.zeros(3))])


def test_bad_step_inputs_modify_nothing():
    good = nn.Parameter(torch.randn(6))
    emb = nn.Embedding(10, 4, sparse=True)
    opt = SGHMC([good] + list(emb.parameters()), lr=0.1, num_data=10, seed=1)
    good.grad = torch.ones(6)
    emb(torch.tensor([1, 2])).sum().backward()
    before = good.detach().clone()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    assert torch.equal(good.detach(), before) and len(opt.state) == 0
    cplx = nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    opt = SGLD([good, cplx], lr=0.1, num_data=10)
    cplx.grad = torch.zeros(3, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="complex"):
        opt.step()
    assert torch.equal(good.detach(), before)
    # a bad gradient in a later group: the first group is not updated either
    other = nn.Parameter(torch.zeros(4))
    opt = SGLD([{"params": [good]}, {"params": [other]}], lr=0.1, num_data=10)
    other.grad_dtype = None  # torch would refuse a float64 grad otherwise
    other.grad = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="does not match its parameter"):
        opt.step()
    assert torch.equal(good.detach(), before) and len(opt.state) == 0
    # a group's temperature set to an invalid value between steps: caught before any update
    opt = SGLD([good], lr=0.1, num_data=10)
    opt.param_groups[0]["temperature"] = -1.0
    with pytest.raises(ValueError, match="temperature"):
        opt.step()
    assert torch.equal(good.detach(), before)


DDP_WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from torch import nn
    from pybayes.optim import SGHMC
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=__import__("datetime").timedelta(seconds=60))
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)))
    torch.manual_seed(100 + rank)  # different default generators per rank: the seed must still agree
    opt = SGHMC(model.parameters(), lr=0.01, num_data=1000)
    g = torch.Generator().manual_seed(rank)
    for _ in range(20):
        x = torch.randn(16, 6, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    torch.save([p.detach() for p in model.parameters()], f"{out}.{rank}")
    dist.destroy_process_group()
""")


def run_two_ranks(tmp_path, name, source):
    """Runs `source` as ranks 0 and 1 (gloo over loopback, bounded time); each
    gets (rank, world, port, out) on its command line. Returns `out`."""
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / f"{name}_out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(port), str(out)], env=env)
             for r in range(2)]
    for p in procs:
        assert p.wait(timeout=180) == 0
    return out


def test_ddp_replicas_stay_bitwise_identical(tmp_path):
    out = run_two_ranks(tmp_path, "ddp_worker", DDP_WORKER)
    p0 = torch.load(f"{out}.0", weights_only=True)
    p1 = torch.load(f"{out}.1", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert not torch.equal(p0[0], torch.zeros_like(p0[0]))


FSDP_WORKER = textwrap.dedent("""
    import copy, sys, datetime, torch, torch.distributed as dist
    from torch import nn
    from torch.distributed.fsdp import fully_shard
    from pybayes.optim import PSGLD, SGHMC, SGLD
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    results = {}
    for name, cls, kw in (("sgld", SGLD, {}), ("sghmc", SGHMC, {"momentum": 0.9}),
                          ("psgld", PSGLD, {"alpha": 0.9})):
        torch.manual_seed(0)
        # odd sizes: shards of 7 rows x 5, 13 elements... start at offsets that are not multiples of 4
        full = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 13), nn.Tanh(), nn.Linear(13, 1))
        ref = copy.deepcopy(full)
        fully_shard(full)
        opt = cls(full.parameters(), lr=0.01, num_data=1000, seed=7, **kw)
        ref_opt = cls(ref.parameters(), lr=0.01, num_data=1000, seed=7, **kw)
        g = torch.Generator().manual_seed(3)
        for _ in range(5):
            x = torch.randn(8, 5, generator=g)  # the same batch on every rank
            for m, o in ((full, opt), (ref, ref_opt)):
                o.zero_grad()
                m(x).pow(2).mean().backward()
                o.step()
        gathered = [p.full_tensor() for p in full.parameters()]
        results[name] = all(torch.equal(a, b) for a, b in zip(gathered, ref.parameters()))
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()
""")


def test_fsdp2_sharded_parameters_follow_the_unsharded_trajectory(tmp_path):
    """DESIGN §4: a sharded parameter (FSDP2 DTensor) draws the noise of its
    elements' global indices, so the sharded run is bitwise the unsharded one."""
    out = run_two_ranks(tmp_path, "fsdp_worker", FSDP_WORKER)
    assert torch.load(out, weights_only=True) == {"sgld": True, "sghmc": True, "psgld": True}
