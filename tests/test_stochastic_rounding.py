"""Stochastic rounding of 16-bit parameters and buffers (issue 15, DESIGN.md §4
extension): the rounding itself (unbiased, exact probabilities, inf/NaN), its
documented Philox words, fused == reference bit for bit, fp32 untouched, the
T=0 / torch.optim.SGD relation with it off, opcheck, the optimizer argument,
and bf16/fp16 chains against the exact moments of the fp32 chain."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov

from pybayes import ops
from pybayes.optim import PSGLD, SGHMC, SGLD

from sampler_cases import KINDS, call_op, clone_all, hyper, make_tensors, op_args, run_both

HALF = [torch.bfloat16, torch.float16]


def ulps_apart(a, b):
    """Distance in bf16 grid steps (same sign, finite)."""
    ia = a.view(torch.int16).int()
    ib = b.view(torch.int16).int()
    return (ia - ib).abs()


def sgd_round(dtype, start, delta, n, seed=3, sr=True):
    """One SGLD T=0 step x = start + delta on n elements (lr a power of two,
    grad = -delta / lr: both exact, so x is exact in float32); returns the
    stored results as float64."""
    lr = 1.0 if abs(delta) >= 2.0 ** -20 or delta == 0 else 2.0 ** -20
    p = torch.full((n,), start, dtype=dtype)
    g = torch.full((n,), -delta / lr, dtype=dtype)
    assert p.double()[0].item() == start and g.double()[0].item() * lr == -delta
    h = hyper("l", lr=lr, temperature=0.0, weight_decay=0.0, stochastic_rounding=sr)
    call_op("l", [p], [g], [], [5], [1], h, seed)
    return p.double()


# (dtype, grid point, gap above it, fractions of the gap), covering binades,
# negative values (rounding away from zero), fp16's subnormal grid (2^-24)
# and values below the smallest fp16 subnormal.
CASES = [
    (torch.bfloat16, 1.0, 2.0 ** -7, [1 / 512, 0.25, 0.5, 0.75, 255 / 256]),
    (torch.bfloat16, -3.0, -2.0 ** -6, [0.125, 0.625]),
    (torch.bfloat16, 2.0 ** -130, 2.0 ** -133, [0.3125]),  # float32 subnormal range
    (torch.float16, 1.0, 2.0 ** -10, [1 / 64, 0.5, 0.875]),
    (torch.float16, -1000.0, -0.5, [0.25]),
    (torch.float16, 2.0 ** -20, 2.0 ** -24, [0.5, 0.1875]),  # subnormal half
    (torch.float16, 0.0, 2.0 ** -24, [0.25, 1 / 65536]),      # below the smallest subnormal
]


@pytest.mark.parametrize("dtype,start,gap,fracs", CASES, ids=lambda v: str(v))
def test_rounds_up_with_probability_equal_to_the_fraction_of_the_gap(dtype, start, gap, fracs):
    n = 200_000
    for f in fracs:
        delta = f * gap
        out = sgd_round(dtype, start, delta, n)
        lo, hi = start, start + gap
        assert set(torch.unique(out).tolist()) <= {lo, hi}, (f, torch.unique(out))
        frac_up = (out == hi).double().mean().item()
        se = math.sqrt(f * (1 - f) / n)
        assert abs(frac_up - f) < 5 * se, (dtype, start, f, frac_up, se)
        # unbiased: the mean of the rounded values is x
        assert abs(out.mean().item() - (start + delta)) < 5 * se * abs(gap)
    # a value on the grid is never moved
    assert torch.equal(sgd_round(dtype, start, 0.0, 1000), torch.full((1000,), start, dtype=torch.float64))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_inf_and_nan_pass_through_and_overflow_rounds_to_inf(dtype):
    p = torch.tensor([float("inf"), float("-inf"), float("nan")], dtype=dtype)
    g = torch.zeros(3, dtype=dtype)
    call_op("l", [p], [g], [], [0], [0], hyper("l", lr=1.0, temperature=0.0, weight_decay=0.0,
                                             stochastic_rounding=True), 1)
    assert p[0].item() == float("inf") and p[1].item() == float("-inf") and math.isnan(p[2].item())
    # from the largest finite value, x = max + gap/2: up (to inf) with probability 1/2
    big = torch.finfo(dtype).max
    gap = big * (2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11)
    out = sgd_round(dtype, big, gap / 2, 100_000)
    up = torch.isinf(out).double().mean().item()
    assert set(out[~torch.isinf(out)].tolist()) == {big}
    assert abs(up - 0.5) < 5 * math.sqrt(0.25 / 100_000)


def test_rounding_words_are_the_documented_stream():
    # element i's word: element 2^63 + i of the stream = lane i%4 of the block
    # with counter (2^61 + i//4, stream, step); none of them is a noise word
    seed, stream, step = 2**64 - 5, 9, 77
    for offset, n in ((0, 9), (6, 11), (2**40 + 1, 5)):
        w = ops.philox_rounding_uint32(seed, n, offset=offset, stream=stream, step=step)
        for k in range(n):
            i = offset + k
            j = (1 << 61) + i // 4
            blk = ops.philox4x32([[j & 0xFFFFFFFF, j >> 32, stream, step]],
                                 [seed & 0xFFFFFFFF, seed >> 32])
            assert blk[0, i % 4].item() == w[k].item()
    # the words the rounding of one parameter uses are not its noise words
    noise_words = ops.philox_uint32(seed, 4096, stream=stream, step=step)
    round_words = ops.philox_rounding_uint32(seed, 4096, stream=stream, step=step)
    assert not torch.equal(noise_words, round_words)
    assert len(set(noise_words.tolist()) & set(round_words.tolist())) < 5  # chance collisions only


SIZES = [[0], [1], [3], [4097], [0, 5, 1, 300, 4097]]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("flags", [{}, dict(temperature=0.0), dict(maximize=True), dict(lr=0.0),
                                   dict(weight_decay=0.0)], ids=str)
def test_fused_equals_reference_bitwise(kind, dtype, flags):
    h = hyper(kind, stochastic_rounding=True, **flags)
    for sizes in SIZES:
        (p1, b1), (p2, b2) = run_both(kind, sizes, dtype, h)
        for a, b in zip(p1 + b1, p2 + b2):
            assert torch.equal(a, b), (kind, dtype, sizes)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_shards_round_with_the_words_of_their_global_indices(kind, dtype):
    h = hyper(kind, stochastic_rounding=True)
    params, grads, bufs = make_tensors([5000], dtype, kind=kind)
    full_p, full_b = clone_all(params, bufs)
    call_op(kind, full_p, grads, full_b, [3], [7], h, 21)
    for o, n in ((1, 100), (3, 998), (255, 1000), (256, 300), (1001, 3999)):
        sp = [params[0][o:o + n].clone()]
        sb = [bufs[0][o:o + n].clone()] if kind != "l" else []
        call_op(kind, sp, [grads[0][o:o + n].contiguous()], sb, [3], [7], h, 21, offsets=[o])
        assert torch.equal(sp[0], full_p[0][o:o + n]), (o, n)
        if kind != "l":
            assert torch.equal(sb[0], full_b[0][o:o + n]), (o, n)
    (p1, b1), (p2, b2) = run_both(kind, [700, 9], dtype, h, offsets=[2**40 + 3, 5])
    assert all(torch.equal(a, b) for a, b in zip(p1 + b1, p2 + b2))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_stochastic_result_is_a_grid_neighbour_of_the_float_result(kind, dtype):
    # same noise as round-to-nearest: the stochastic result is RN's value or its neighbour
    (sr, sb), _ = run_both(kind, [4097], dtype, hyper(kind, stochastic_rounding=True))
    (rn, rb), _ = run_both(kind, [4097], dtype, hyper(kind, stochastic_rounding=False))
    if kind == "l":  # SGLD has no buffer (run_both hands back the untouched one)
        sb, rb = [], []
    for a, b in zip(sr + sb, rn + rb):
        differ = (a != b).double().mean().item()
        assert 0.05 < differ < 0.95
        assert ulps_apart(a, b).max().item() <= 1


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_flag_leaves_fp32_and_fp64_bitwise_unchanged(kind, dtype):
    (p1, b1), _ = run_both(kind, [4097, 5], dtype, hyper(kind, stochastic_rounding=True))
    (p2, b2), _ = run_both(kind, [4097, 5], dtype, hyper(kind, stochastic_rounding=False))
    assert all(torch.equal(a, b) for a, b in zip(p1 + b1, p2 + b2))


@pytest.mark.parametrize("kind", list(KINDS))
def test_opcheck_with_stochastic_rounding(kind):
    params, grads, bufs = make_tensors([33, 4097], torch.bfloat16, kind=kind)
    torch.library.opcheck(*op_args(kind, params, grads, bufs, [0, 1], [0, 0],
                                   hyper(kind, stochastic_rounding=True), 11, offsets=[0, 5]))


# -- temperature 0 and torch.optim.SGD ------------------------------------

def bf16_state(n=100_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** torch.randint(-3, 2, (n,), generator=g).float()
    p = (torch.randn(n, generator=g) * scale).bfloat16()
    grad = (torch.randn(n, generator=g) * scale).bfloat16()
    buf = (torch.randn(n, generator=g) * scale).bfloat16()
    return p, grad, buf


@pytest.mark.parametrize("foreach", [False, True])
def test_t0_without_rounding_is_torch_bf16_sgd(foreach):
    """SGLD T=0, stochastic_rounding=False on bf16 is torch.optim.SGD's bf16 step:
    the same bits on all but a few elements (torch's CPU bf16 `add_(alpha=-lr)`
    rounds lr*grad to bf16 first on some of them), and never more than one
    bf16 step apart. lr is a bf16 value, as torch rounds alpha to bf16."""
    lr = 0.046875
    p, grad, _ = bf16_state()
    ours = p.clone().requires_grad_()
    ref = p.clone().requires_grad_()
    ours.grad, ref.grad = grad.clone(), grad.clone()
    SGLD([ours], lr=lr, temperature=0, stochastic_rounding=False).step()
    torch.optim.SGD([ref], lr=lr, foreach=foreach).step()
    d = ulps_apart(ours.detach(), ref.detach())
    assert d.max().item() <= 1
    assert (d != 0).double().mean().item() < 1e-3
    # with stochastic rounding (the default) the step is a different, unbiased one
    sr = p.clone().requires_grad_()
    sr.grad = grad.clone()
    SGLD([sr], lr=lr, temperature=0, seed=0).step()
    assert (ulps_apart(sr.detach(), ref.detach()) != 0).double().mean().item() > 0.2


def test_t0_without_rounding_is_the_fp32_torch_step_rounded_once():
    """With momentum and weight decay torch's bf16 SGD rounds every
    intermediate to bf16; the fused kernel computes in float32 and rounds the
    stored parameter and buffer once: it is torch's float32 SGD step on the
    upcast state, rounded to bf16 (bitwise, up to float32 ties)."""
    lr, mu, wd = 0.03, 0.9, 1e-2
    p, grad, buf = bf16_state()
    ours = p.clone().requires_grad_()
    ours.grad = grad.clone()
    opt = SGHMC([ours], lr=lr, momentum=mu, weight_decay=wd, temperature=0, stochastic_rounding=False)
    opt.state[ours]["step"] = 1
    opt.state[ours]["momentum_buffer"] = buf.clone()
    opt.step()
    ref = p.float().requires_grad_()
    ref.grad = grad.float()
    sgd = torch.optim.SGD([ref], lr=lr, momentum=mu, weight_decay=wd)
    sgd.state[ref]["momentum_buffer"] = buf.float()
    sgd.step()
    for a, b in ((ours.detach(), ref.detach().bfloat16()),
                 (opt.state[ours]["momentum_buffer"], sgd.state[ref]["momentum_buffer"].bfloat16())):
        d = ulps_apart(a, b)
        assert d.max().item() <= 1 and (d != 0).sum().item() <= 20


# -- the optimizer argument -------------------------------------------------

@pytest.mark.parametrize("cls", [SGLD, SGHMC, PSGLD])
def test_optimizer_argument_default_state_dict_and_validation(cls):
    p = torch.zeros(10, dtype=torch.bfloat16, requires_grad=True)
    opt = cls([p], lr=1e-3, num_data=10, seed=0)
    assert opt.param_groups[0]["stochastic_rounding"] is True
    assert opt.state_dict()["param_groups"][0]["stochastic_rounding"] is True
    off = cls([p], lr=1e-3, num_data=10, seed=0, stochastic_rounding=False)
    off.load_state_dict(opt.state_dict())
    assert off.param_groups[0]["stochastic_rounding"] is True
    with pytest.raises(TypeError, match="stochastic_rounding must be a bool"):
        cls([p], lr=1e-3, num_data=10, stochastic_rounding=1)
    # fused and reference paths agree through the optimizer, bit for bit
    outs = []
    for fused in (None, False):
        q = torch.linspace(-1, 1, 999).bfloat16().requires_grad_()
        o = cls([q], lr=1e-3, num_data=10, seed=4, fused=fused)
        for _ in range(3):
            q.grad = (q.detach().float() * 0.5).bfloat16()
            o.step()
        outs.append(q.detach())
    assert torch.equal(outs[0], outs[1])


# -- chains -----------------------------------------------------------------

def run_chain(dtype, make, m, curv, n, burn_in, snapshots, spacing, start=None):
    theta = torch.full((n,), m if start is None else start, dtype=dtype).requires_grad_()
    opt = make([theta])
    snaps = []
    for t in range(burn_in + snapshots * spacing):
        theta.grad = (curv * (theta.detach().float() - m)).to(dtype)
        opt.step()
        if t >= burn_in and (t - burn_in) % spacing == 0:
            snaps.append(theta.detach().double().clone())
    return torch.stack(snaps)


def lyapunov_var(M, B):
    M, B = np.atleast_2d(M), np.atleast_2d(B).reshape(-1, 1)
    return solve_discrete_lyapunov(M, B @ B.T)[0, 0]


NUM_DATA = 1000.0
MEAN, SD = 1.9, 0.019  # sd = 1/100 of the parameter (bf16 grid step here: 2^-7 = 0.41 sd)
CURV = 1.0 / (NUM_DATA * SD * SD)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("sampler", ["sgld", "sghmc"])
def test_16bit_chains_reach_the_fp32_stationary_moments(dtype, sampler):
    """A 1-D Gaussian N(1.9, 0.019²) (sd = 1/100 of the parameter), 4000
    coordinates as independent chains, 10 snapshots each 5+ relaxation times
    apart: mean and variance equal the exact stationary moments of the fp32
    discretised chain within 5 standard errors (variance ratio: se = sqrt(2/n)).
    The grid adds a variance of about E[f(1-f)]·ulp² per step; at these step
    sizes that is < 2 % for bf16 (below the test's 3.5 % resolution) and
    < 0.1 % for fp16; smaller steps make it larger (see the README)."""
    lrp = 1.0 if dtype == torch.bfloat16 else 0.1  # lr * curvature
    lr = lrp / CURV
    if sampler == "sgld":
        make = lambda ps: SGLD(ps, lr=lr, num_data=NUM_DATA, seed=31)
        var = 1.0 / (NUM_DATA * CURV * (1 - lrp / 2))
        relax = max(2.0, 1 / lrp)
    else:
        mu = 0.3 if dtype == torch.bfloat16 else 0.9
        make = lambda ps: SGHMC(ps, lr=lr, momentum=mu, num_data=NUM_DATA, seed=32)
        c = math.sqrt(2 * (1 - mu) / (lr * NUM_DATA))
        var = lyapunov_var([[1 - lr * CURV, -lr * mu], [CURV, mu]], [-lr * c, c])
        relax = 2.0 / (lrp * (1 - mu)) + 2
    x = run_chain(dtype, make, MEAN, CURV, 4000, int(20 * relax), 10, int(5 * relax) + 1)
    n = x.numel()
    ratio = (((x - MEAN) ** 2).mean() / var).item()
    assert abs(ratio - 1) < 5 * math.sqrt(2 / n), f"{dtype} {sampler}: variance ratio {ratio:.4f}"
    assert abs((x.mean().item() - MEAN) / math.sqrt(var / n)) < 5
    assert torch.unique(x).numel() > 10


def test_bf16_small_steps_keep_the_mean_only_with_stochastic_rounding():
    """lr·curvature = 2e-3: every step is far below half a bf16 step (the noise
    is 0.063 sd = 0.15 grid steps; the drift smaller still). Round-to-nearest
    moves a chain only on a >3.2-sigma noise draw, symmetrically, so the
    chains stay where they start (2 sd above the mean); stochastic rounding
    keeps E[θ] exact, so the chains' mean relaxes to the target (within 5 se
    over 4000 chains; the relaxation's remaining bias is 2 sd·e^-6)."""
    lrp, steps = 2e-3, 3000
    common = dict(lr=lrp / CURV, num_data=NUM_DATA, seed=33)
    start = float(torch.tensor(MEAN + 2 * SD, dtype=torch.bfloat16))
    rn = run_chain(torch.bfloat16, lambda ps: SGLD(ps, stochastic_rounding=False, **common), MEAN, CURV,
                   4000, steps - 1, 1, 1, start=start)
    assert rn.mean().item() > MEAN + 1.5 * SD, rn.mean().item()
    sr = run_chain(torch.bfloat16, lambda ps: SGLD(ps, **common), MEAN, CURV, 4000, steps - 1, 1, 1,
                   start=start)
    se = sr.std().item() / math.sqrt(sr.numel())
    bias = 2 * SD * (1 - lrp) ** steps
    assert abs(sr.mean().item() - MEAN) < 5 * se + bias, (sr.mean().item(), se)
    assert 5 * se < 0.5 * SD  # the test resolves the rounding-to-nearest failure by far


@pytest.mark.parametrize("cls", [SGLD, SGHMC, PSGLD])
def test_channels_last_parameters_round_in_memory_order(cls):
    # the kernels stream any dense layout in memory order; word k rounds the k-th element in memory
    outs = []
    for fused in (None, False):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(2, 3, 4, 5, generator=g).bfloat16().to(memory_format=torch.channels_last).requires_grad_()
        o = cls([q], lr=1e-2, num_data=10, seed=4, fused=fused)
        for _ in range(3):
            q.grad = (q.detach().float() * 0.5).bfloat16().to(memory_format=torch.channels_last)
            o.step()
        outs.append(q.detach())
    assert not outs[0].is_contiguous()
    assert torch.equal(outs[0], outs[1])
