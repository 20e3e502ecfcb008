"""CUDA paths against the CPU kernel, bit for bit (issue 10): the noise, one
step of every sampler in every dtype, lists of more than one launch's worth of
tensors, misaligned views, shard offsets that are not a multiple of the 4-wide
Philox block, a second GPU, GradScaler overflow, torch.compile and CUDA-graph
capture. Every test needs a GPU and skips without one.

CPU and CUDA run the same float operations (csrc/*_math.h, no FMA contraction
on either side, IEEE sqrt and division), so results are compared with
torch.equal, not a tolerance."""

import copy

import pytest
import torch
from torch import nn

from pybayes import ops
from pybayes.optim import PSGLD, SGHMC, SGLD

from conftest import requires_cuda
from sampler_cases import KINDS, call_op, clone_all, hyper, make_tensors, run_both

pytestmark = requires_cuda

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SAMPLERS = {
    "sgld": lambda p, **kw: SGLD(p, lr=0.01, num_data=500, **kw),
    "sghmc": lambda p, **kw: SGHMC(p, lr=0.01, momentum=0.9, num_data=500, **kw),
    "psgld": lambda p, **kw: PSGLD(p, lr=0.001, num_data=500, **kw),
}


def on(device, *lists):
    return [[t.to(device, copy=True) for t in lst] for lst in lists]


def step_both(kind, params, grads, bufs, ids, steps, h, seed, offsets=None):
    """One op call on CPU copies and on CUDA copies; returns (cpu, cuda) lists."""
    pc, gc, bc = clone_all(params, grads, bufs)
    pg, gg, bg = on("cuda", params, grads, bufs)
    call_op(kind, pc, gc, bc, ids, steps, h, seed, offsets=offsets)
    call_op(kind, pg, gg, bg, ids, steps, h, seed, offsets=offsets)
    torch.cuda.synchronize()
    return pc + (bc if kind != "l" else []), pg + (bg if kind != "l" else [])


def assert_bitwise(cpu, cuda):
    assert len(cpu) == len(cuda)
    for i, (a, b) in enumerate(zip(cpu, cuda)):
        assert torch.equal(a, b.cpu()), f"tensor {i}: max |diff| {(a.double() - b.cpu().double()).abs().max()}"


@pytest.mark.parametrize("seed, stream, step, offset, n", [
    (0, 0, 0, 0, 1), (1234, 7, 3, 0, 4097), (2**63 - 1, 2**32 - 1, 2**32 - 1, 5, 70001),
    (42, 3, 11, 2**40 + 3, 1 << 20)])
def test_noise_and_uniforms_bitwise(seed, stream, step, offset, n):
    kw = dict(offset=offset, stream=stream, step=step)
    assert torch.equal(ops.philox_uint32(seed, n, device="cpu", **kw),
                       ops.philox_uint32(seed, n, device="cuda", **kw).cpu())
    assert torch.equal(ops.philox_normal(seed, n, device="cpu", **kw),
                       ops.philox_normal(seed, n, device="cuda", **kw).cpu())


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("flags", [{}, dict(maximize=True), dict(temperature=0.0),
                                   dict(weight_decay=0.0)], ids=str)
def test_one_step_bitwise(kind, dtype, flags):
    sizes = [1, 3, 4, 5, 4097, 70001]
    params, grads, bufs = make_tensors(sizes, dtype, kind=kind)
    ids = list(range(3, 3 + len(sizes)))
    steps = [0, 1, 2, 2**31, 5, 9]
    assert_bitwise(*step_both(kind, params, grads, bufs, ids, steps, hyper(kind, **flags), 77))


@pytest.mark.parametrize("kind", list(KINDS))
def test_more_tensors_than_one_launch(kind):
    # 600 tensors: three launches of at most 256, sizes 0..4100 mixed
    sizes = [(i * 131) % 4101 for i in range(600)]
    params, grads, bufs = make_tensors(sizes, torch.float32, kind=kind)
    ids = list(range(len(sizes)))
    assert_bitwise(*step_both(kind, params, grads, bufs, ids, [4] * len(sizes), hyper(kind), 5))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_misaligned_views(kind, dtype):
    # views into flat buffers (DDP gradient_as_bucket_view, FSDP2) at element
    # offsets 1, 2, 3, 5, ...: not 16-byte aligned, so the vector path must not be taken blindly
    sizes = [7, 4097, 1, 300, 33]
    starts = [1, 10, 4200, 4202, 4503]
    total = starts[-1] + sizes[-1] + 3
    g = torch.Generator().manual_seed(0)
    flats = [torch.randn(total, generator=g).to(dtype) for _ in range(3)]
    if kind == "p":
        flats[2] = flats[2].abs()

    def views(device):
        fp, fg, fb = (f.to(device) for f in flats)

        def cut(f):
            return [f[s:s + n] for s, n in zip(starts, sizes)]

        return fp, cut(fp), cut(fg), cut(fb)

    ids, steps, h = list(range(len(sizes))), [2] * len(sizes), hyper(kind)
    _, pc, gc, bc = views("cpu")
    flat_param_cuda, pg, gg, bg = views("cuda")
    assert any(v.data_ptr() % 16 for v in pg)
    call_op(kind, pc, gc, bc, ids, steps, h, 9)
    call_op(kind, pg, gg, bg, ids, steps, h, 9)
    assert_bitwise(pc + (bc if kind != "l" else []), pg + (bg if kind != "l" else []))
    # the elements between the views are untouched
    mask = torch.ones(total, dtype=torch.bool)
    for s, n in zip(starts, sizes):
        mask[s:s + n] = False
    assert torch.equal(flat_param_cuda.cpu()[mask], flats[0][mask])


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("offset", [1, 5, 4098, 2**33 + 3])
def test_shard_offsets_not_a_multiple_of_four(kind, offset):
    # a DTensor shard draws the noise of its global indices (DESIGN.md §4): the
    # CUDA kernel with offsets equals the CPU kernel, and a shard starting at
    # `offset` equals that slice of the whole tensor's step when it fits
    params, grads, bufs = make_tensors([4097, 3], torch.float32, kind=kind)
    h = hyper(kind)
    cpu, cuda = step_both(kind, params, grads, bufs, [1, 2], [3, 3], h, 21, offsets=[offset, offset + 7])
    assert_bitwise(cpu, cuda)
    if offset < 100:
        whole_p, whole_g, whole_b = make_tensors([offset + 4097], torch.float32, kind=kind)
        whole_p[0][offset:] = params[0]
        whole_g[0][offset:] = grads[0]
        whole_b[0][offset:] = bufs[0]
        wp, wg, wb = on("cuda", whole_p, whole_g, whole_b)
        call_op(kind, wp, wg, wb, [1], [3], h, 21)
        assert torch.equal(wp[0][offset:].cpu(), cuda[0].cpu())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_second_gpu(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    m0, m1 = copy.deepcopy(model).to("cuda:0"), copy.deepcopy(model).to("cuda:1")
    o0, o1 = SAMPLERS[name](m0.parameters(), seed=2), SAMPLERS[name](m1.parameters(), seed=2)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    torch.cuda.set_device(0)  # the step must put itself on its parameters' device
    for m, o in ((m0, o0), (m1, o1)):
        for _ in range(3):
            o.zero_grad()
            nn.functional.cross_entropy(m(x.to(next(m.parameters()).device)),
                                        y.to(next(m.parameters()).device)).backward()
            o.step()
    for a, b in zip(m0.parameters(), m1.parameters()):
        assert b.device == torch.device("cuda:1")
        assert torch.equal(a.cpu(), b.cpu())


def mlp_and_data(device="cuda"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)).to(device)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(32, 8, generator=g).to(device), torch.randint(0, 3, (32,), generator=g).to(device))
            for _ in range(8)]
    return model, data


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_grad_scaler_inf_gradients(name):
    model, data = mlp_and_data()
    opt = SAMPLERS[name](model.parameters(), seed=3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10, growth_interval=1000)
    x, y = data[0]
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    before, state = flat(model).clone(), copy.deepcopy(opt.state_dict()["state"])
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    next(model.parameters()).grad.view(-1)[0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert torch.equal(flat(model), before)
    for k, st in state.items():
        for key, v in st.items():
            now = opt.state_dict()["state"][k][key]
            assert torch.equal(v, now) if torch.is_tensor(v) else v == now
    assert scaler.get_scale() == 2.0**9
    # and the next finite step goes ahead
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    assert not torch.equal(flat(model), before)


def test_torch_compile_training_step():
    model, data = mlp_and_data()
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
    for x, y in data:
        compiled(model, opt, x, y)
        step(ref, ref_opt, x, y)
    torch.testing.assert_close(flat(model), flat(ref), rtol=1e-6, atol=1e-7)
    assert opt.state[next(model.parameters())]["step"] == len(data)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_cuda_graph_capture_of_step(name):
    """opt.step() captures (no host synchronisation inside it) and a replay
    performs exactly the eager step it recorded."""
    model, data = mlp_and_data()
    opt = SAMPLERS[name](model.parameters(), seed=6)
    x, y = data[0]
    loss_fn = nn.functional.cross_entropy
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs recommends
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            loss_fn(model(x), y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    twin, twin_opt = copy.deepcopy((model, opt))
    opt.zero_grad(set_to_none=False)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss_fn(model(x), y).backward()
        opt.step()
    graph.replay()
    torch.cuda.synchronize()
    twin_opt.zero_grad(set_to_none=False)
    loss_fn(twin(x), y).backward()
    twin_opt.step()
    assert torch.equal(flat(model), flat(twin))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("flags", [{}, dict(temperature=0.0), dict(maximize=True)], ids=str)
def test_stochastic_rounding_bitwise(kind, dtype, flags):
    # issue 15: the rounding words (element 2^63 + i of the stream) and the
    # rounding arithmetic (csrc/sampler_math.h) are the same on both sides
    sizes = [1, 3, 4, 5, 4097, 70001]
    params, grads, bufs = make_tensors(sizes, dtype, kind=kind)
    ids = list(range(3, 3 + len(sizes)))
    steps = [0, 1, 2, 2**31, 5, 9]
    h = hyper(kind, stochastic_rounding=True, **flags)
    cpu, cuda = step_both(kind, params, grads, bufs, ids, steps, h, 77)
    assert_bitwise(cpu, cuda)
    # shards whose offset is not a multiple of 4 (two Philox blocks per thread)
    cpu, cuda = step_both(kind, params, grads, bufs, ids, steps, h, 77, offsets=[1, 2, 3, 5, 4098, 2**33 + 3])
    assert_bitwise(cpu, cuda)
    # the reference path on CUDA draws the same words
    (pf, bf), (pr, br) = run_both(kind, [4097, 5], dtype, h, device="cuda")
    assert_bitwise(pf + (bf if kind != "l" else []), pr + (br if kind != "l" else []))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bf16_model_with_stochastic_rounding_matches_cpu(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).bfloat16()
    mc, mg = copy.deepcopy(model), copy.deepcopy(model).cuda()
    oc, og = SAMPLERS[name](mc.parameters(), seed=2), SAMPLERS[name](mg.parameters(), seed=2)
    assert oc.param_groups[0]["stochastic_rounding"] is True
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(32, 8, generator=g).bfloat16(), torch.randint(0, 3, (32,), generator=g)
        for m, o, dev in ((mc, oc, "cpu"), (mg, og, "cuda")):
            o.zero_grad()
            nn.functional.cross_entropy(m(x.to(dev)).float(), y.to(dev)).backward()
            # the forward/backward differ between devices: feed both the CPU gradients
            if dev == "cuda":
                for pc, pg in zip(mc.parameters(), mg.parameters()):
                    pg.grad.copy_(pc.grad)
            o.step()
        for a, b in zip(mc.parameters(), mg.parameters()):
            assert torch.equal(a, b.cpu())
