"""The shared Philox RNG (DESIGN.md §4) through the pybayes ops, checked
against an independent pure-NumPy Philox4x32-10 and Box–Muller."""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

import pybayes
from pybayes import ops

from conftest import requires_cuda

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF

# Random123 kat_vectors, philox4x32 10 rounds: (counter, key, expected)
KATS = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([MASK] * 4, [MASK] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


def np_philox(ctr, key):
    """Vectorised reference: ctr (n, 4) uint64 words, key (2,) -> (n, 4) uint64."""
    c = [ctr[:, i].astype(np.uint64) for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    m = np.uint64(MASK)
    for r in range(10):
        if r:
            k0 = (k0 + np.uint64(W0)) & m
            k1 = (k1 + np.uint64(W1)) & m
        p0 = np.uint64(M0) * c[0]
        p1 = np.uint64(M1) * c[2]
        c = [((p1 >> np.uint64(32)) ^ c[1] ^ k0) & m, p1 & m, ((p0 >> np.uint64(32)) ^ c[3] ^ k1) & m, p0 & m]
    return np.stack(c, axis=1)


def np_stream_words(seed, n, offset=0, stream=0, step=0):
    idx = np.arange(offset, offset + n, dtype=np.uint64)
    blocks = idx // np.uint64(4)
    ctr = np.stack([blocks & np.uint64(MASK), blocks >> np.uint64(32),
                    np.full_like(blocks, stream), np.full_like(blocks, step)], axis=1)
    words = np_philox(ctr, [seed & MASK, seed >> 32])
    return words[np.arange(n), (idx % np.uint64(4)).astype(np.int64)]


def np_normals_exact(seed, n, stream=0, step=0):
    """Box–Muller in float64 with NumPy's libm: the mathematically intended value."""
    w = np_stream_words(seed, 4 * ((n + 3) // 4), 0, stream, step).reshape(-1, 4)
    out = np.empty_like(w, dtype=np.float64)
    for a, b in ((0, 1), (2, 3)):
        # the uniform exactly as the kernel forms it in float32, then exact math
        u1 = ((w[:, a] >> np.uint64(1)).astype(np.float32) * np.float32(2.0**-31)
              + np.float32(2.0**-32)).astype(np.float64)
        u2 = (w[:, b] >> np.uint64(8)).astype(np.float64) * 2.0**-24
        r = np.sqrt(-2.0 * np.log(u1))
        out[:, a], out[:, b] = r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)
    return out.reshape(-1)[:n]


@pytest.mark.parametrize("ctr,key,expect", KATS)
def test_known_answer_vectors_op(ctr, key, expect):
    got = ops.philox4x32([ctr], key)[0].tolist()
    assert got == expect


@pytest.mark.parametrize("ctr,key,expect", KATS)
def test_known_answer_vectors_numpy_reference(ctr, key, expect):
    # the independent reference must itself reproduce Random123
    assert np_philox(np.array([ctr], dtype=np.uint64), key)[0].tolist() == expect


def test_raw_blocks_match_numpy_on_random_counters():
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(1000, 4), dtype=np.uint64)
    key = [int(x) for x in rng.integers(0, 2**32, size=2, dtype=np.uint64)]
    got = ops.philox4x32(torch.from_numpy(ctr.astype(np.int64)), key).numpy().astype(np.uint64)
    np.testing.assert_array_equal(got, np_philox(ctr, key))


@pytest.mark.parametrize("seed,stream,step", [(0, 0, 0), (2**64 - 1, 3, 7), (0x243F6A8885A308D3, 2**32 - 1, 2**32 - 1)])
def test_stream_words_match_numpy(seed, stream, step):
    got = ops.philox_uint32(seed, 1001, offset=13, stream=stream, step=step).numpy().astype(np.uint64)
    np.testing.assert_array_equal(got, np_stream_words(seed, 1001, 13, stream, step))


def test_normals_match_float64_box_muller():
    z = ops.philox_normal(1234, 1 << 16, stream=5, step=9).double().numpy()
    ref = np_normals_exact(1234, 1 << 16, stream=5, step=9)
    # float32 result of a ~1-ulp log and trig: error a few float32 ulps of |z|
    err = np.abs(z - ref) / np.maximum(np.abs(ref), 1.0)
    assert err.max() < 4e-6, err.max()


def test_normal_distribution():
    n = 1 << 22
    z = ops.philox_normal(20261124, n, stream=1, step=2).double().numpy()
    se = 1.0 / math.sqrt(n)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1.0) < 5 * math.sqrt(2.0 / n)
    kurt = ((z - z.mean()) ** 4).mean() / z.var() ** 2 - 3.0
    assert abs(kurt) < 5 * math.sqrt(24.0 / n)
    skew = ((z - z.mean()) ** 3).mean() / z.var() ** 1.5
    assert abs(skew) < 5 * math.sqrt(6.0 / n)
    # Kolmogorov–Smirnov against N(0, 1); at n = 4M the statistic's 1e-4 critical value
    d = stats.kstest(z, special.ndtr).statistic
    assert d < stats.kstwobign.isf(1e-4) / math.sqrt(n), d
    # lanes 0..3 of a block and neighbouring blocks are uncorrelated
    lanes = z.reshape(-1, 4)
    corr = np.corrcoef(lanes.T)
    assert np.abs(corr - np.eye(4)).max() < 5 / math.sqrt(n / 4)


def test_streams_are_distinct():
    a = ops.philox_normal(7, 4096, stream=0, step=0)
    for kw in ({"stream": 1}, {"step": 1}):
        b = ops.philox_normal(7, 4096, **kw)
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 5 / 64
    assert not torch.equal(a, ops.philox_normal(8, 4096))


@pytest.mark.parametrize("fill", [ops.philox_normal, ops.philox_uint32])
def test_any_chunking_and_thread_count_gives_same_values(fill, threads):
    full = fill(99, 5000, stream=4, step=1)
    for offset, n in ((0, 1), (1, 3), (3, 700), (255, 2), (256, 4096), (4095, 905)):
        assert torch.equal(fill(99, n, offset=offset, stream=4, step=1), full[offset:offset + n])
    pieces = torch.cat([fill(99, 77, offset=o, stream=4, step=1) for o in range(0, 5000, 77)])
    assert torch.equal(pieces[:5000], full)
    threads(1)
    one = fill(99, 300000, stream=4, step=1)
    threads(2)
    assert torch.equal(fill(99, 300000, stream=4, step=1), one)


def test_empty_and_bad_arguments():
    assert ops.philox_normal(0, 0).numel() == 0
    with pytest.raises(ValueError, match="offset"):
        ops.philox_normal(0, 4, offset=-1)
    with pytest.raises(ValueError, match="stream"):
        ops.philox_normal(0, 4, stream=2**32)
    with pytest.raises(ValueError, match="step"):
        ops.philox_uint32(0, 4, step=-1)
    with pytest.raises(ValueError, match="seed"):
        ops.philox_normal(2**64, 4)
    with pytest.raises(RuntimeError, match="out must be Float"):
        torch.ops.pybayes.philox_fill_normal_(torch.empty(3, dtype=torch.float64), 0, 0, 0, 0)
    with pytest.raises(RuntimeError, match="counters"):
        ops.philox4x32(torch.tensor([[0, 0, 0, 2**32]]), [0, 0])


def test_opcheck_fill_ops():
    for op, dtype in ((torch.ops.pybayes.philox_fill_normal_, torch.float32),
                      (torch.ops.pybayes.philox_fill_uint32_, torch.int64)):
        torch.library.opcheck(op, (torch.empty(1031, dtype=dtype), 5, 3, 1, 2))
    torch.library.opcheck(torch.ops.pybayes.philox4x32,
                          (torch.tensor([[1, 2, 3, 4]]), torch.tensor([5, 6])))


@requires_cuda
@pytest.mark.parametrize("offset,n", [(0, 1), (3, 4097), (0, 1 << 20)])
def test_cuda_stream_matches_cpu(offset, n):
    w_cpu = ops.philox_uint32(11, n, offset=offset, stream=2, step=3)
    w_gpu = ops.philox_uint32(11, n, offset=offset, stream=2, step=3, device="cuda")
    assert torch.equal(w_gpu.cpu(), w_cpu)
    z_cpu = ops.philox_normal(11, n, offset=offset, stream=2, step=3)
    z_gpu = ops.philox_normal(11, n, offset=offset, stream=2, step=3, device="cuda").cpu()
    # same operations in the same order, no FMA on either side: equal to a few ulp at most
    assert torch.allclose(z_gpu, z_cpu, rtol=4 * 2**-23, atol=4 * 2**-23)


def test_version_and_build_info():
    info = ops.build_info()
    assert set(info) >= {"cuda", "cuda_archs", "note", "cpu_noise_isa"}
    assert pybayes.__version__
