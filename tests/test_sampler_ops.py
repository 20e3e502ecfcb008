"""The fused sampler ops against the plain-PyTorch reference path (same
equations, same Philox noise), per dtype and size; noise identity;
determinism; opcheck; bad inputs."""

import pytest
import torch

from pybayes import ops
from pybayes.optim._reference import step_reference

from conftest import requires_cuda
from sampler_cases import KINDS, call_op, clone_all, hyper, make_tensors, op_args, run_both

# fused vs reference: the same float operations in the same order (half types
# computed in float32, rounded to nearest), so every dtype is bitwise equal; a
# rounding difference of torch's own kernels (`scalar / tensor` computed as a
# reciprocal, MKL's sqrt) would fail here
TOL = {dt: dict(rtol=0, atol=0) for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16)}
DTYPES = list(TOL)
# CUDA against the CPU (normals within a few ulp) and against the reference on CUDA
TOL_CUDA = {torch.float32: dict(rtol=1e-6, atol=1e-7), torch.float64: dict(rtol=1e-13, atol=1e-15),
            torch.float16: dict(rtol=1e-3, atol=1e-5), torch.bfloat16: dict(rtol=8e-3, atol=1e-5)}
SIZES = [[0], [1], [3], [4097], [0, 5, 1, 300, 4097]]
MIXED = [(i * 37) % 1500 + (i % 4) for i in range(120)]  # 120 tensors, mixed sizes incl. 0..3


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES + [MIXED], ids=lambda s: f"n{len(s)}x{max(s)}")
def test_fused_matches_reference(kind, dtype, sizes):
    h = hyper(kind)
    (p1, b1), (p2, b2) = run_both(kind, sizes, dtype, h)
    for a, b in zip(p1 + b1, p2 + b2):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("flags", [dict(maximize=True), dict(temperature=0.0), dict(weight_decay=0.0),
                                   dict(temperature=0.3, lr=0.0)], ids=str)
def test_fused_matches_reference_variants(kind, flags):
    h = hyper(kind, **flags)
    (p1, b1), (p2, b2) = run_both(kind, [4097, 5], torch.float32, h, grad_scale=None)
    for a, b in zip(p1 + b1, p2 + b2):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


@pytest.mark.parametrize("kind", list(KINDS))
def test_grad_scale_is_divided_out(kind):
    # a power-of-two scale is exact: the scaled step equals the unscaled one bit for bit
    h = hyper(kind)
    params, grads, bufs = make_tensors([4097], torch.float32, kind=kind)
    p1, b1 = clone_all(params, bufs)
    p2, b2 = clone_all(params, bufs)
    call_op(kind, p1, grads, b1, [0], [0], h, 5)
    call_op(kind, p2, [g * 1024 for g in grads], b2, [0], [0], h, 5,
            grad_scale=torch.tensor([1024.0]))
    assert all(torch.equal(a, b) for a, b in zip(p1 + b1, p2 + b2))


def test_noise_is_the_philox_stream_bitwise():
    # theta = 0, grad = 0, no decay: SGLD's step is exactly -coef * z
    n, seed, pid, step = 4097, 99, 12, 30
    h = hyper("l", weight_decay=0.0)
    p = torch.zeros(n)
    call_op("l", [p], [torch.zeros(n)], [], [pid], [step], h, seed)
    coef = (2 * h["lr"] * h["temperature"] / h["num_data"]) ** 0.5
    z = ops.philox_normal(seed, n, stream=pid, step=step)
    assert torch.equal(p, -(z * coef))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
def test_a_shard_with_an_offset_gets_the_noise_of_its_global_indices(kind, device):
    """FSDP2 contract: updating a slice [o, o+n) of a parameter with offsets=[o]
    gives exactly the slice of the update of the whole parameter."""
    h = hyper(kind)
    params, grads, bufs = make_tensors([5000], torch.float32, device=device, kind=kind)
    full_p, full_b = clone_all(params, bufs)
    call_op(kind, full_p, grads, full_b, [3], [7], h, 21)
    for o, n in ((1, 100), (3, 998), (4, 4), (255, 1000), (256, 300), (1001, 3999)):
        sp = [params[0][o:o + n].clone()]
        sb = [bufs[0][o:o + n].clone()] if kind != "l" else []
        call_op(kind, sp, [grads[0][o:o + n].contiguous()], sb, [3], [7], h, 21, offsets=[o])
        assert torch.equal(sp[0], full_p[0][o:o + n]), (o, n)
        rp = [params[0][o:o + n].clone()]
        rb = [bufs[0][o:o + n].clone()] if kind != "l" else []
        step_reference(kind, rp, [grads[0][o:o + n]], rb, [3], [7], h, 21, None, [o])
        torch.testing.assert_close(rp[0], sp[0], **TOL[torch.float32])
    with pytest.raises(RuntimeError, match="offsets"):
        call_op(kind, full_p, grads, full_b, [3], [7], h, 21, offsets=[-1])


@pytest.mark.parametrize("kind", list(KINDS))
def test_found_inf_changes_nothing(kind):
    h = hyper(kind)
    params, grads, bufs = make_tensors([100, 7], torch.float32, kind=kind)
    p1, b1 = clone_all(params, bufs)
    call_op(kind, p1, grads, b1, [0, 1], [0, 0], h, 5, grad_scale=torch.tensor([8.0]),
            found_inf=torch.tensor([1.0]))
    assert all(torch.equal(a, b) for a, b in zip(p1 + b1, params + bufs))


@pytest.mark.parametrize("kind", list(KINDS))
def test_bitwise_identical_for_any_thread_count_and_grouping(kind, threads):
    h = hyper(kind)
    sizes = [300000, 17, 4097, 1]
    params, grads, bufs = make_tensors(sizes, torch.float32, kind=kind)
    ids, steps = [3, 1, 2, 0], [5, 5, 5, 5]
    results = []
    for nthreads in (1, 2):
        threads(nthreads)
        p, b = clone_all(params, bufs)
        call_op(kind, p, grads, b, ids, steps, h, 77)
        results.append(p + b)
    # one call per tensor, in another order: same bits
    p, b = clone_all(params, bufs)
    for i in reversed(range(len(sizes))):
        call_op(kind, [p[i]], [grads[i]], [b[i]] if kind != "l" else [], [ids[i]], [steps[i]], h, 77)
    results.append(p + b)
    for other in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(results[0], other))


@pytest.mark.parametrize("kind", list(KINDS))
def test_opcheck(kind):
    params, grads, bufs = make_tensors([33, 4097], torch.float32, kind=kind)
    torch.library.opcheck(*op_args(kind, params, grads, bufs, [0, 1], [0, 0], hyper(kind), 11,
                                   offsets=[0, 5]))


BAD = [
    (lambda P, G, B: ([P[0].double()], [G[0]]), "grads\\[1\\] is Float"),
    (lambda P, G, B: ([P[0][:, ::2]], [G[0][:, ::2]]), "params\\[1\\] must be dense without gaps"),
    (lambda P, G, B: ([P[0].t()], [G[0]]), "grads\\[1\\] has strides"),
    (lambda P, G, B: ([P[0]], [G[0].to_sparse()]), "sparse"),
    (lambda P, G, B: ([P[0].to(torch.complex64)], [G[0].to(torch.complex64)]), "complex"),
    (lambda P, G, B: ([P[0].int()], [G[0].int()]), "must be float32"),
    (lambda P, G, B: ([P[0]], [G[0][:3]]), "shape"),
]


@pytest.mark.parametrize("make,msg", BAD)
def test_bad_tensors_raise_and_modify_nothing(make, msg):
    P = [torch.randn(4, 4)]
    G = [torch.randn(4, 4)]
    p, g = make(P, G, None)
    before = [t.clone() for t in p]
    good = torch.randn(8)
    good_before = good.clone()
    with pytest.raises(RuntimeError, match=msg):
        # a valid tensor first: it must not be touched either
        call_op("l", [good] + p, [torch.ones(8)] + g, [], [0, 1], [0, 0], hyper("l"), 1)
    assert all(torch.equal(a, b) for a, b in zip(p, before))
    assert torch.equal(good, good_before)


@pytest.mark.parametrize("field,value,msg", [
    ("lr", -1.0, "lr must be"), ("temperature", -0.5, "temperature must be"),
    ("num_data", 0.0, "num_data must be"), ("weight_decay", float("nan"), "weight_decay"),
    ("momentum", 1.0, "momentum must be in"),
])
def test_bad_hyperparameters_raise_and_modify_nothing(field, value, msg):
    h = hyper("h")
    h[field] = value
    params, grads, bufs = make_tensors([10], torch.float32)
    p, b = clone_all(params, bufs)
    with pytest.raises(RuntimeError, match=msg):
        call_op("h", p, grads, b, [0], [0], h, 1)
    assert torch.equal(p[0], params[0]) and torch.equal(b[0], bufs[0])


def test_bad_ids_and_steps():
    params, grads, _ = make_tensors([10], torch.float32)
    with pytest.raises(RuntimeError, match="param_ids"):
        call_op("l", params, grads, [], [2**32], [0], hyper("l"), 1)
    with pytest.raises(RuntimeError, match="steps"):
        call_op("l", params, grads, [], [0], [-1], hyper("l"), 1)
    with pytest.raises(RuntimeError, match="grads has 0 tensors"):
        call_op("l", params, [], [], [0], [0], hyper("l"), 1)


@requires_cuda
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[1], [3], [4097], MIXED, [1 << 20]], ids=lambda s: f"n{len(s)}x{max(s)}")
def test_cuda_matches_cpu_and_reference(kind, dtype, sizes):
    h = hyper(kind)
    (pc, bc), _ = run_both(kind, sizes, dtype, h)
    (pg, bg), (pr, br) = run_both(kind, sizes, dtype, h, device="cuda")
    for a, b, r in zip(pg + bg, pc + bc, pr + br):
        # same arithmetic and same uniforms; normals within a few ulp
        torch.testing.assert_close(a.cpu(), b, **TOL_CUDA[dtype])
        torch.testing.assert_close(a, r, **TOL_CUDA[dtype])


@requires_cuda
def test_cuda_found_inf_and_mixed_devices():
    h = hyper("h")
    params, grads, bufs = make_tensors([5000, 3], torch.float32, device="cuda", kind="h")
    p, b = clone_all(params, bufs)
    call_op("h", p, grads, b, [0, 1], [0, 0], h, 1, grad_scale=torch.tensor([4.0], device="cuda"),
            found_inf=torch.tensor([1.0], device="cuda"))
    assert all(torch.equal(x, y) for x, y in zip(p + b, params + bufs))
    with pytest.raises(RuntimeError, match="one call takes one device"):
        call_op("h", [p[0], torch.zeros(3)], [grads[0], torch.zeros(3)], [b[0], torch.zeros(3)],
                [0, 1], [0, 0], h, 1)
