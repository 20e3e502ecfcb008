"""The two diagonal-Fisher ops against plain-PyTorch references of the same
equations (csrc/fisher_math.h): dtypes, odd sizes, batch 1, many tensors,
thread-count invariance, bad inputs (nothing modified) and opcheck."""

import pytest
import torch

from pybayes import ops

from conftest import requires_cuda

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SIZES = [0, 1, 7, 4097]


def acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def ref_ema(f, g, decay, scale):
    """The kernel's arithmetic in torch: decay*f + (scale*g)*g in the accumulation type."""
    a = acc_dtype(f.dtype)
    fa, ga = f.to(a), g.reshape(f.shape).to(a)
    return (decay * fa + (scale * ga) * ga).to(f.dtype)


def ref_per_sample(f, g, scale):
    """Same order as the kernel: a running sum over b = 0..B-1, then f + scale*sum."""
    a = acc_dtype(f.dtype)
    rows = g.reshape(g.shape[0], f.numel()).to(a)
    s = torch.zeros(f.numel(), dtype=a)
    for b in range(rows.shape[0]):
        s = s + rows[b] * rows[b]
    return (f.reshape(-1).to(a) + scale * s).to(f.dtype).reshape(f.shape)


def rand(shape, dtype, gen, device="cpu"):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_ema_matches_reference_bitwise(dtype, n):
    gen = torch.Generator().manual_seed(n)
    f = rand(n, dtype, gen).abs()
    g = rand(n, dtype, gen)
    expect = ref_ema(f, g, 0.9, 0.1)
    ops.fisher_diag_accumulate_(f, g, decay=0.9, scale=0.1)
    torch.testing.assert_close(f, expect, rtol=0, atol=0)


def test_ema_defaults_sum_squares_and_match_independent_formula():
    gen = torch.Generator().manual_seed(0)
    g = rand((5, 3), torch.float64, gen)
    f = torch.ones(5, 3, dtype=torch.float64)
    ops.fisher_diag_accumulate_(f, g)
    torch.testing.assert_close(f, 1 + g * g, rtol=1e-15, atol=0)
    # decay=0, scale=1: F is exactly G^2 whatever it held before
    f.fill_(float("nan"))
    ops.fisher_diag_accumulate_(f, g, decay=0.0, scale=1.0)
    assert torch.isnan(f).all()  # 0 * nan is nan: the op is a true EMA, not an overwrite
    f.zero_()
    ops.fisher_diag_accumulate_(f, g, decay=0.0)
    torch.testing.assert_close(f, g * g, rtol=0, atol=0)


def test_ema_equals_rmsprop_square_avg():
    """decay=alpha, scale=1-alpha is torch's RMSprop second moment. torch's CPU
    addcmul_ fuses (scale*g)*g + decay*v into an FMA, the op does not (bitwise
    CPU/CUDA agreement), so they agree to rounding: 1e-6 relative (DESIGN §3)."""
    gen = torch.Generator().manual_seed(1)
    alpha = 0.99
    v = torch.zeros(1000)
    v_ref = torch.zeros(1000)
    for _ in range(5):
        g = rand(1000, torch.float32, gen)
        ops.fisher_diag_accumulate_(v, g, decay=alpha, scale=1 - alpha)
        v_ref.mul_(alpha).addcmul_(g, g, value=1 - alpha)
    torch.testing.assert_close(v, v_ref, rtol=1e-6, atol=0)
    # and exactly the unfused formula, evaluated by torch op by op
    v2 = torch.zeros(1000)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        g = rand(1000, torch.float32, gen)
        v2 = alpha * v2 + ((1 - alpha) * g) * g
    torch.testing.assert_close(v, v2, rtol=0, atol=0)


def test_ema_grad_shape_only_needs_same_numel():
    f = torch.zeros(6)
    g = torch.arange(6.0).reshape(2, 3)
    ops.fisher_diag_accumulate_(f, g)
    torch.testing.assert_close(f, torch.arange(6.0) ** 2)


def test_many_tensors_mixed_dtypes_and_shapes():
    gen = torch.Generator().manual_seed(2)
    fs, gs = [], []
    for i in range(150):
        dtype = DTYPES[i % 4]
        shape = [(0,), (1,), (3, 5), (4097,), (2, 3, 4)][i % 5]
        fs.append(rand(shape, dtype, gen).abs())
        gs.append(rand(shape, dtype, gen))
    expect = [ref_ema(f, g, 0.5, 2.0) for f, g in zip(fs, gs)]
    ops.fisher_diag_accumulate_(fs, gs, decay=0.5, scale=2.0)
    for f, e in zip(fs, expect):
        torch.testing.assert_close(f, e, rtol=0, atol=0)

    ps = [rand((3,) + f.shape, f.dtype, gen) for f in fs]
    expect = [ref_per_sample(f, g, 0.25) for f, g in zip(fs, ps)]
    ops.fisher_diag_accumulate_per_sample_(fs, ps, scale=0.25)
    for f, e in zip(fs, expect):
        torch.testing.assert_close(f, e, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,batch", [(0, 3), (1, 1), (4097, 1), (4097, 5), (33, 0), (1030, 17)])
def test_per_sample_matches_reference_bitwise(dtype, n, batch):
    gen = torch.Generator().manual_seed(10 * n + batch)
    f = rand(n, dtype, gen).abs()
    g = rand((batch, n), dtype, gen)
    expect = ref_per_sample(f, g, 0.5)
    ops.fisher_diag_accumulate_per_sample_(f, g, scale=0.5)
    torch.testing.assert_close(f, expect, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_sample_agrees_with_squared_sum(dtype):
    """Against an independent formula (torch's own reduction order): within
    B*eps relative, since all terms are non-negative."""
    gen = torch.Generator().manual_seed(3)
    g = rand((64, 4, 257), dtype, gen)
    f = torch.full((4, 257), 0.5, dtype=dtype)
    ops.fisher_diag_accumulate_per_sample_(f, g, scale=3.0)
    expect = 0.5 + 3.0 * (g.double() ** 2).sum(0)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(f.double(), expect, rtol=70 * eps, atol=0)


def test_per_sample_equals_ema_over_rows():
    """Summing per-sample squares = accumulating each row's square with decay 1."""
    gen = torch.Generator().manual_seed(4)
    g = rand((6, 100), torch.float64, gen)
    a = torch.zeros(100, dtype=torch.float64)
    b = torch.zeros(100, dtype=torch.float64)
    ops.fisher_diag_accumulate_per_sample_(a, g, scale=1.0)
    for row in g:
        ops.fisher_diag_accumulate_(b, row, decay=1.0, scale=1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_results_do_not_depend_on_thread_count(threads):
    gen = torch.Generator().manual_seed(5)
    g = rand((37, 300_001), torch.float32, gen)
    g2 = rand(300_001, torch.float32, gen)
    out = []
    for t in (1, 2):
        threads(t)
        f = torch.ones(300_001)
        ops.fisher_diag_accumulate_per_sample_(f, g, scale=0.1)
        ops.fisher_diag_accumulate_(f, g2, decay=0.7, scale=0.3)
        out.append(f)
    assert torch.equal(out[0], out[1])


def test_empty_lists_are_a_no_op():
    ops.fisher_diag_accumulate_([], [])
    ops.fisher_diag_accumulate_per_sample_([], [])


# --- bad inputs: clear errors naming the argument, and nothing modified ------------------

def _bad_cases():
    good_f, good_g = torch.ones(4), torch.ones(4)
    return [
        ("ema", [torch.ones(3)], [torch.ones(4)], "grads\\[1\\] has shape"),
        ("ema", [torch.ones(4)], [torch.ones(4, dtype=torch.float64)], "grads\\[1\\] is Double"),
        ("ema", [torch.ones(4, dtype=torch.int64)], [torch.ones(4, dtype=torch.int64)], "fisher\\[1\\] must be float32"),
        ("ema", [torch.ones(4, 2).t()], [torch.ones(2, 4)], "fisher\\[1\\] must be contiguous"),
        ("ema", [torch.ones(4)], [torch.ones(8)[::2]], "grads\\[1\\] must be contiguous"),
        ("ema", [torch.ones(4)], [torch.ones(4, device="meta")], "grads\\[1\\] is on meta but fisher\\[0\\] is on cpu"),
        ("ps", [torch.ones(4)], [torch.ones(2, 3)], "per-sample shape \\[3\\] has 3 elements but fisher\\[1\\] has 4"),
        ("ps", [torch.ones(())], [torch.ones(())], "leading batch dimension"),
        ("ps", [torch.ones(4)], [torch.ones(2, 4, dtype=torch.float16)], "grads\\[1\\] is Half"),
    ], good_f, good_g


def test_bad_inputs_raise_and_modify_nothing():
    cases, good_f, good_g = _bad_cases()
    for kind, bad_f, bad_g, msg in cases:
        f0 = torch.ones(4)
        g0 = torch.full((2, 4) if kind == "ps" else (4,), 3.0)
        fisher = [f0] + bad_f
        grads = [g0] + bad_g
        fn = (lambda: ops.fisher_diag_accumulate_(fisher, grads, decay=0.5, scale=1.0)) if kind == "ema" \
            else (lambda: ops.fisher_diag_accumulate_per_sample_(fisher, grads, scale=1.0))
        with pytest.raises((RuntimeError, ValueError), match=msg):
            fn()
        assert torch.equal(f0, torch.ones(4)), f"{msg}: fisher[0] was modified before raising"


def test_list_length_and_scalar_errors():
    with pytest.raises(ValueError, match="grads has 1 tensors, fisher has 2"):
        ops.fisher_diag_accumulate_([torch.ones(2), torch.ones(2)], [torch.ones(2)])
    with pytest.raises(ValueError, match="decay must be finite"):
        ops.fisher_diag_accumulate_(torch.ones(2), torch.ones(2), decay=float("nan"))
    with pytest.raises(ValueError, match="scale must be finite"):
        ops.fisher_diag_accumulate_per_sample_(torch.ones(2), torch.ones(1, 2), scale=float("inf"))
    with pytest.raises(TypeError, match="grads\\[0\\] must be a tensor"):
        ops.fisher_diag_accumulate_([torch.ones(2)], [[1.0, 2.0]])
    # the raw op validates its arguments too
    with pytest.raises(RuntimeError, match="grads has 1 tensors, fisher has 2"):
        torch.ops.pybayes.fisher_diag_accumulate_([torch.ones(2), torch.ones(2)], [torch.ones(2)], 1.0, 1.0)
    with pytest.raises(RuntimeError, match="scale must be finite"):
        torch.ops.pybayes.fisher_diag_accumulate_([torch.ones(2)], [torch.ones(2)], 1.0, float("inf"))


def test_tensors_that_require_grad_are_accepted():
    w = torch.nn.Parameter(torch.ones(3))
    f = torch.zeros(3)
    g = torch.full((3,), 2.0, requires_grad=True)
    ops.fisher_diag_accumulate_(f, g)
    torch.testing.assert_close(f, torch.full((3,), 4.0))
    del w


# --- opcheck -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_ema(dtype):
    gen = torch.Generator().manual_seed(6)
    fs = [rand(s, dtype, gen).abs() for s in [(3, 4), (1,), (0,), (17,)]]
    gs = [rand(s, dtype, gen) for s in [(3, 4), (1,), (0,), (17,)]]
    torch.library.opcheck(torch.ops.pybayes.fisher_diag_accumulate_.default, (fs, gs, 0.9, 0.1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_per_sample(dtype):
    gen = torch.Generator().manual_seed(7)
    fs = [rand(s, dtype, gen).abs() for s in [(3, 4), (1,), (17,)]]
    gs = [rand((5,) + s, dtype, gen) for s in [(3, 4), (1,), (17,)]]
    torch.library.opcheck(torch.ops.pybayes.fisher_diag_accumulate_per_sample_.default, (fs, gs, 0.5))


def test_works_under_torch_compile():
    def step(f, g):
        torch.ops.pybayes.fisher_diag_accumulate_([f], [g], 0.9, 0.1)
        return f * 2

    f = torch.ones(8)
    g = torch.arange(8.0)
    out = torch.compile(step, backend="eager", fullgraph=True)(f, g)
    expect = 0.9 + 0.1 * torch.arange(8.0) ** 2
    torch.testing.assert_close(f, expect)
    torch.testing.assert_close(out, 2 * expect)


# --- CUDA: same arithmetic as the CPU kernels ------------------------------------------

@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_ema_matches_cpu(dtype):
    gen = torch.Generator().manual_seed(8)
    shapes = [(0,), (1,), (4097,), (3, 5), (1 << 20,)] * 30
    fs = [rand(s, dtype, gen).abs() for s in shapes]
    gs = [rand(s, dtype, gen) for s in shapes]
    fc = [f.cuda() for f in fs]
    gc = [g.cuda() for g in gs]
    ops.fisher_diag_accumulate_(fs, gs, decay=0.9, scale=0.1)
    ops.fisher_diag_accumulate_(fc, gc, decay=0.9, scale=0.1)
    for a, b in zip(fs, fc):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, 5, 64])
def test_cuda_per_sample_matches_cpu(dtype, batch):
    gen = torch.Generator().manual_seed(9 + batch)
    shapes = [(0,), (1,), (4097,), (3, 5), (2, 4096), (3,)] * 20
    fs = [rand(s, dtype, gen).abs() for s in shapes]
    gs = [rand((batch,) + s, dtype, gen) for s in shapes]
    # unaligned views exercise the scalar path
    gs[-1] = rand((batch * 3 + 1,), dtype, gen)[1:].reshape(batch, 3)
    fc = [f.cuda() for f in fs]
    gc = [g.cuda() for g in gs]
    ops.fisher_diag_accumulate_per_sample_(fs, gs, scale=0.5)
    ops.fisher_diag_accumulate_per_sample_(fc, gc, scale=0.5)
    for a, b in zip(fs, fc):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)


@requires_cuda
def test_cuda_mixed_batch_sizes_and_errors():
    f = [torch.zeros(10, device="cuda"), torch.zeros(10, device="cuda", dtype=torch.float64)]
    g = [torch.ones(3, 10, device="cuda"), torch.ones(7, 10, device="cuda", dtype=torch.float64)]
    ops.fisher_diag_accumulate_per_sample_(f, g)
    assert f[0].eq(3).all() and f[1].eq(7).all()
    with pytest.raises(ValueError, match="grads\\[0\\] is on cpu"):
        ops.fisher_diag_accumulate_([torch.ones(2, device="cuda")], [torch.ones(2)])


@requires_cuda
def test_cuda_opcheck():
    fs = [torch.rand(3, 4, device="cuda"), torch.rand(17, device="cuda")]
    gs = [torch.randn(3, 4, device="cuda"), torch.randn(17, device="cuda")]
    torch.library.opcheck(torch.ops.pybayes.fisher_diag_accumulate_.default, (fs, gs, 0.9, 0.1))
    ps = [torch.randn(5, 3, 4, device="cuda"), torch.randn(5, 17, device="cuda")]
    torch.library.opcheck(torch.ops.pybayes.fisher_diag_accumulate_per_sample_.default, (fs, ps, 0.5))
