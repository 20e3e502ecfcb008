"""pybayes.thermo: statistics against exact moments (DESIGN.md §7), imperfections,
timing, types, thread independence and bad inputs.

Statistical tolerances come from the estimator's own standard error (5 sigma), with
fixed seeds; each statistical test also checks a wrong answer is rejected where cheap.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from pybayes import thermo
from pybayes.thermo import ChipConfig

Z = 5.0  # sigmas


def spd(d, lo=0.5, hi=3.0, seed=0):
    """SPD matrix with eigenvalues evenly spread in [lo, hi] and a random eigenbasis."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.linspace(lo, hi, d)
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


def chain_stats(traj, lags):
    """traj (n, d, K): per-chain lag covariances -> (mean over chains, standard error)."""
    n, d, K = traj.shape
    out = []
    for L in lags:
        c = np.einsum("tik,tjk->kij", traj[L:], traj[: n - L]) / (n - L)
        out.append((c.mean(0), c.std(0, ddof=1) / math.sqrt(K)))
    return out


def zmax(est, se, exact):
    return float(np.max(np.abs(est - exact) / se))


# ---------------------------------------------------------------------------
# exact integrator: Lyapunov covariance and lag autocovariance


def test_exact_integrator_covariance_and_lag_autocovariance():
    d, K, n, beta, dt = 6, 128, 6000, 2.0, 0.3
    A = spd(d)
    cfg = ChipConfig(integrator="exact", dt=dt, beta=beta, seed=3)
    # start in equilibrium: x0 ~ N(0, A^-1/beta) per chain (mean 0 as b = 0)
    rng = np.random.default_rng(1)
    x0 = np.linalg.cholesky(np.linalg.inv(A) / beta) @ rng.standard_normal((d, K))
    traj = thermo.simulate(A, np.zeros((d, K)), n_samples=n, x0=x0, config=cfg)
    Sigma = np.linalg.inv(A) / beta
    (c0, s0), (c1, s1), (c3, s3) = chain_stats(traj, [0, 1, 3])
    assert zmax(c0, s0, Sigma) < Z
    assert zmax(c1, s1, scipy.linalg.expm(-A * dt) @ Sigma) < Z
    assert zmax(c3, s3, scipy.linalg.expm(-A * 3 * dt) @ Sigma) < Z
    # the test can fail: a wrong beta or a wrong lag are many sigma away
    assert zmax(c0, s0, Sigma * beta / (beta + 0.2)) > Z
    assert zmax(c1, s1, scipy.linalg.expm(-A * 2 * dt) @ Sigma) > Z


# ---------------------------------------------------------------------------
# Euler–Maruyama: exact stationary covariance of the discretised recursion; bias ∝ dt


def euler_stationary(A, h, beta):
    M = np.eye(len(A)) - h * A
    return scipy.linalg.solve_discrete_lyapunov(M, 2 * h / beta * np.eye(len(A)))


def test_euler_matches_discrete_lyapunov():
    d, K, n, beta = 6, 128, 5000, 1.0
    A = spd(d)
    h = 0.5 / 3.0  # h * lambda_max = 0.5: a large, clearly visible discretisation bias
    substeps = 2
    cfg = ChipConfig(integrator="euler", dt=h * substeps, substeps=substeps, beta=beta, seed=4)
    Sh = euler_stationary(A, h, beta)
    x0 = np.linalg.cholesky(Sh) @ np.random.default_rng(2).standard_normal((d, K))
    traj = thermo.simulate(A, np.zeros((d, K)), n_samples=n, x0=x0, config=cfg)
    (c0, s0), (c1, s1) = chain_stats(traj, [0, 1])
    M = np.eye(d) - h * A
    assert zmax(c0, s0, Sh) < Z
    assert zmax(c1, s1, np.linalg.matrix_power(M, substeps) @ Sh) < Z
    # ... and not the continuous-time answer
    assert zmax(c0, s0, np.linalg.inv(A) / beta) > Z


def test_euler_bias_shrinks_linearly_in_dt():
    d, K, n, beta = 4, 64, 4000, 1.0
    A = spd(d, 0.5, 2.0, seed=5)
    lam, V = np.linalg.eigh(A)
    v = V[:, -1]  # stiffest mode: relative variance bias = h lam / 2 / (1 - h lam / 2)
    biases, ses, exact = [], [], []
    for h in (0.25, 0.125, 0.0625):
        sub = int(round(1.0 / h))
        cfg = ChipConfig(dt=1.0, substeps=sub, beta=beta, seed=6)
        Sh = euler_stationary(A, h, beta)
        x0 = np.linalg.cholesky(Sh) @ np.random.default_rng(3).standard_normal((d, K))
        traj = thermo.simulate(A, np.zeros((d, K)), n_samples=n, x0=x0, config=cfg)
        y = np.einsum("i,tik->tk", v, traj)
        var_c = (y * y).mean(0) * beta * lam[-1] - 1.0  # per-chain relative bias
        biases.append(var_c.mean())
        ses.append(var_c.std(ddof=1) / math.sqrt(K))
        hl = h * lam[-1]
        exact.append(hl / 2 / (1 - hl / 2))
    for b, s, e in zip(biases, ses, exact):
        assert abs(b - e) < Z * s
    # first order in dt: halving h halves the bias (ratios ~2.1-2.2 here), not quartering it
    for i in range(2):
        r = biases[i] / biases[i + 1]
        sr = r * math.hypot(ses[i] / biases[i], ses[i + 1] / biases[i + 1])
        assert abs(r - exact[i] / exact[i + 1]) < Z * sr
        assert 1.6 < r < 2.8


# ---------------------------------------------------------------------------
# solve / inv: error variance of the time average


def ar1_mean_var(rho, var, n):
    """Variance of the mean of n consecutive samples of a stationary AR(1)."""
    return var / n * ((1 + rho) / (1 - rho) - 2 * rho * (1 - rho**n) / (n * (1 - rho) ** 2))


@pytest.mark.parametrize("integrator", ["exact", "euler"])
def test_solve_error_matches_time_average_variance(integrator):
    d, K, beta = 8, 64, 1.0
    A = spd(d, seed=7)
    lam, V = np.linalg.eigh(A)
    b = np.random.default_rng(8).standard_normal(d)
    xs = np.linalg.solve(A, b)
    dt = 0.25
    sub = 1 if integrator == "exact" else 5
    mse = []
    for t in (100.0, 400.0):
        errs = []
        for seed in range(3):  # many seeds x many columns (independent chip runs)
            cfg = ChipConfig(integrator=integrator, dt=dt, substeps=sub if integrator == "euler" else None,
                             beta=beta, seed=seed)
            x = thermo.solve(A, np.repeat(b[:, None], K, axis=1), time=t, burn_in=30.0, config=cfg)
            errs.append(x - xs[:, None])
        e = np.concatenate(errs, axis=1)
        sq = (e * e).sum(0)
        n = int(math.ceil(t / dt - 1e-9))
        if integrator == "exact":
            rho, var = np.exp(-lam * dt), 1 / (beta * lam)
        else:
            h = dt / sub
            rho, var = (1 - h * lam) ** sub, 2 * h / beta / (1 - (1 - h * lam) ** 2)
        predicted = ar1_mean_var(rho, var, n).sum()
        continuous = np.trace(2 * np.linalg.inv(A @ A) / (beta * t))
        assert abs(sq.mean() - predicted) < Z * sq.std(ddof=1) / math.sqrt(sq.size)
        assert abs(predicted / continuous - 1) < 0.1  # ≈ 2 A^-2 / (beta t)
        mse.append((sq.mean(), sq.std(ddof=1) / math.sqrt(sq.size)))
    # falls like 1/t (error like 1/sqrt(t))
    r = mse[0][0] / mse[1][0]
    sr = r * math.hypot(mse[0][1] / mse[0][0], mse[1][1] / mse[1][0])
    assert abs(r - 4.0) < Z * sr + 0.2


def cov_estimator_var(A, beta, dt, n):
    """Var of each entry of the sample covariance of the exact sampled OU (Bartlett)."""
    lam, V = np.linalg.eigh(A)
    rho = np.exp(-lam * dt)
    s2 = 1 / (beta * lam)
    rr = np.outer(rho, rho)
    G = np.outer(s2, s2) * (1 + rr) / (1 - rr)
    W = V * V
    t1 = W @ G @ W.T
    t2 = np.einsum("ip,jp,pq,iq,jq->ij", V, V, G, V, V)
    return (t1 + t2) / n


def test_inv_error_matches_covariance_estimator_variance():
    d, beta, dt = 5, 1.0, 0.5
    A = spd(d, 0.5, 2.0, seed=9)
    Ainv = np.linalg.inv(A)
    mse = []
    for t in (200.0, 800.0):
        sq = []
        for seed in range(120):
            cfg = ChipConfig(integrator="exact", dt=dt, beta=beta, seed=seed)
            X = thermo.inv(A, time=t, burn_in=20.0, config=cfg)
            sq.append(((X - Ainv) ** 2).sum())
        sq = np.array(sq)
        n = int(math.ceil(t / dt - 1e-9))
        predicted = (beta**2 * cov_estimator_var(A, beta, dt, n)).sum()
        assert abs(sq.mean() - predicted) < Z * sq.std(ddof=1) / math.sqrt(sq.size)
        mse.append((sq.mean(), sq.std(ddof=1) / math.sqrt(sq.size)))
    r = mse[0][0] / mse[1][0]
    sr = r * math.hypot(mse[0][1] / mse[0][0], mse[1][1] / mse[1][0])
    assert abs(r - 4.0) < Z * sr + 0.2


def test_inv_is_symmetric_and_close():
    A = spd(6, seed=10)
    X, info = thermo.inv(A, time=3000.0, config=ChipConfig(integrator="exact", seed=1), return_info=True)
    assert np.array_equal(X, X.T)
    err = np.linalg.norm(X - np.linalg.inv(A)) / np.linalg.norm(np.linalg.inv(A))
    assert err < 5 * info.rel_stderr
    assert info.rel_stderr < 0.1


def test_tol_is_honoured_and_anytime():
    d = 8
    A = spd(d, seed=11)
    b = np.random.default_rng(12).standard_normal(d)
    xs = np.linalg.solve(A, b)
    ns, ratios = {}, []
    for tol in (0.01, 0.005):
        for seed in range(12):
            x, info = thermo.solve(A, b, tol=tol, config=ChipConfig(beta=50.0, seed=seed), return_info=True)
            assert info.converged is True
            assert info.rel_stderr < tol
            ratios.append(np.linalg.norm(x - xs) / (info.rel_stderr * np.linalg.norm(x)))
            ns.setdefault(tol, []).append(info.n_samples)
    # the reported standard error describes the actual error (RMS ratio ~1)
    assert np.sqrt(np.mean(np.square(ratios))) < 1.6
    # anytime: half the tolerance costs ~4x the samples
    r = np.mean(ns[0.005]) / np.mean(ns[0.01])
    assert 2.5 < r < 6.0
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        _, info = thermo.solve(A, b, tol=1e-6, time=50.0, return_info=True)
    assert info.converged is False


# ---------------------------------------------------------------------------
# imperfections


@pytest.mark.parametrize("bits", [3, 6, 10])
def test_dac_quantisation_bound(bits):
    A = spd(7, seed=13)
    b = np.random.default_rng(14).standard_normal(7)
    _, info = thermo.solve(A, b, time=5.0, config=ChipConfig(dac_bits=bits), return_info=True)
    fs = np.abs(A).max()
    assert np.abs(info.A_effective - A).max() <= fs * 2.0**-bits * (1 + 1e-12)
    assert np.abs(info.b_effective - b).max() <= np.abs(b).max() * 2.0**-bits * (1 + 1e-12)
    step = fs * 2.0 ** (1 - bits)
    assert np.allclose(info.A_effective / step, np.round(info.A_effective / step), atol=1e-9)


def test_dac_answer_converges_to_quantised_system():
    d = 6
    A = spd(d, 1.0, 3.0, seed=15)
    b = np.random.default_rng(16).standard_normal(d)
    cfg = ChipConfig(integrator="exact", dac_bits=4, beta=1e4, seed=2)
    x, info = thermo.solve(A, b, time=2000.0, config=cfg, return_info=True)
    xq = np.linalg.solve(info.A_effective, info.b_effective)
    se = np.sqrt(np.diag(2 * np.linalg.inv(info.A_effective) @ np.linalg.inv(info.A_effective) / (1e4 * 2000.0)))
    assert np.max(np.abs(x - xq) / se) < Z
    assert np.max(np.abs(x - np.linalg.solve(A, b)) / se) > 10 * Z  # the ideal answer is not what the chip gives


def test_mismatch_reproducible_per_chip():
    d, m = 40, 0.03
    A = spd(d, seed=17) + 0.5 * np.ones((d, d))  # every entry nonzero
    b = np.ones(d)

    def eff(chip_seed, seed=0):
        _, info = thermo.solve(A, b, time=2.0, config=ChipConfig(mismatch=m, chip_seed=chip_seed, seed=seed),
                               return_info=True)
        return info.A_effective

    E1, E1b, E1s, E2 = eff(1), eff(1), eff(1, seed=9), eff(2)
    assert np.array_equal(E1, E1b) and np.array_equal(E1, E1s)  # fixed per chip, not per run
    assert not np.array_equal(E1, E2)
    assert np.array_equal(E1, E1.T)
    rel = (E1 / A - 1)[np.triu_indices(d)]
    n = rel.size
    assert abs(rel.std() - m) < Z * m / math.sqrt(2 * n)
    assert abs(rel.mean()) < Z * m / math.sqrt(n)


def test_adc_clipping_counted_and_quantised():
    d = 10
    A = np.eye(d)
    b = np.full(d, 1.0)  # x ~ N(1, 1): P(|x| > 2) = P(z > 1) + P(z < -3)
    R, bits = 2.0, 6
    cfg = ChipConfig(integrator="exact", dt=6.0, adc_range=R, seed=5)
    traj, info = thermo.simulate(A, b, n_samples=20000, x0=b, config=cfg, return_info=True)
    p = 0.5 * math.erfc(1 / math.sqrt(2)) + 0.5 * math.erfc(3 / math.sqrt(2))
    se = math.sqrt(p * (1 - p) / info.readings)
    assert info.readings == 20000 * d
    assert info.clipped == int(np.sum(np.abs(traj) == R)) > 0
    assert abs(info.clipped_fraction - p) < Z * se
    cfg = ChipConfig(integrator="exact", dt=6.0, adc_range=R, adc_bits=bits, seed=5)
    traj_q, info_q = thermo.simulate(A, b, n_samples=20000, x0=b, config=cfg, return_info=True)
    assert info_q.clipped == info.clipped  # same noise, same clipping; quantisation comes after
    step = R * 2.0 ** (1 - bits)
    assert np.abs(traj_q - np.clip(traj, -R, R)).max() <= step / 2 * (1 + 1e-12)
    traj = traj_q
    assert np.array_equal(traj / step, np.round(traj / step))
    assert np.abs(traj).max() <= R
    _, info = thermo.solve(A, b, time=200.0, config=cfg, return_info=True)
    assert abs(info.clipped_fraction - p) < Z * math.sqrt(p * (1 - p) / info.readings)


# ---------------------------------------------------------------------------
# timing model, determinism, types


def test_timing_model():
    d, k = 12, 3
    A = spd(d, seed=18)
    cfg = ChipConfig(tau=2e-6, dt=0.2, dac_rate=1e6, readout_rate=5e5)
    x, info = thermo.solve(A, np.ones((d, k)), time=40.0, burn_in=4.0, config=cfg, return_info=True)
    assert info.n_samples == 200 and info.n_burn_in == 20
    assert info.time_programming == pytest.approx((d * d + d * k) / 1e6)
    assert info.time_burn_in == pytest.approx(k * 20 * 0.2 * 2e-6)
    assert info.time_sampling == pytest.approx(k * 200 * 0.2 * 2e-6)
    assert info.time_readout == pytest.approx(d * k / 5e5)
    assert info.time_total == pytest.approx(
        info.time_programming + info.time_burn_in + info.time_sampling + info.time_readout)
    _, info = thermo.inv(A, time=40.0, burn_in=4.0, config=cfg, return_info=True)
    assert info.time_readout == pytest.approx(d * d / 5e5)


def test_defaults_from_spectrum_estimates():
    A = spd(10, 0.5, 3.0, seed=19)
    _, info = thermo.solve(A, np.ones(10), return_info=True)
    assert info.lambda_min_est == pytest.approx(0.5, rel=1e-6)  # exact for d <= 40 Lanczos steps
    assert info.lambda_max_est == pytest.approx(3.0, rel=1e-6)
    assert info.dt == pytest.approx(1 / 3.0)
    assert info.substeps == 10
    assert info.burn_in == pytest.approx(10 / 0.5, abs=info.dt)
    assert info.sampling_time == pytest.approx(100 / 0.5, abs=info.dt)
    lo, hi = thermo.spectrum_estimate(spd(200, 0.1, 5.0, seed=20))
    assert hi == pytest.approx(5.0, rel=1e-3) and 0.1 <= lo < 0.5


@pytest.mark.parametrize("integrator", ["euler", "exact"])
def test_bitwise_identical_for_1_and_2_threads(integrator):
    d, k = 96, 3
    A = spd(d, seed=21)
    B = np.random.default_rng(22).standard_normal((d, k))
    out = []
    for th in (1, 2):
        cfg = ChipConfig(integrator=integrator, threads=th, seed=7, adc_bits=12, adc_range=5.0, mismatch=0.01)
        x = thermo.solve(A, B, time=30.0, config=cfg)
        X = thermo.inv(A, time=30.0, config=cfg)
        tr = thermo.simulate(A, B, n_samples=50, config=cfg)
        out.append((x, X, tr))
    for a, b in zip(*out):
        assert np.array_equal(a, b)
    # and a different seed does change the result
    x3 = thermo.solve(A, B, time=30.0, config=ChipConfig(integrator=integrator, seed=8, threads=2))
    assert not np.array_equal(out[0][0], x3)


def test_types_and_shapes():
    d = 5
    A = spd(d, seed=23)
    b = np.arange(1.0, d + 1)
    cfg = ChipConfig(seed=1)
    kw = dict(time=20.0, config=cfg)
    for dt in (np.float32, np.float64):
        x = thermo.solve(A.astype(dt), b.astype(dt), **kw)
        assert isinstance(x, np.ndarray) and x.dtype == dt and x.shape == (d,)
        X = thermo.inv(A.astype(dt), **kw)
        assert isinstance(X, np.ndarray) and X.dtype == dt and X.shape == (d, d)
    for dt in (torch.float32, torch.float64):
        At, bt = torch.tensor(A, dtype=dt), torch.tensor(b, dtype=dt)
        x = thermo.solve(At, bt, **kw)
        assert isinstance(x, torch.Tensor) and x.dtype == dt and x.shape == (d,)
        xk = thermo.solve(At, bt[:, None].repeat(1, 3), **kw)
        assert xk.shape == (d, 3)
        X = thermo.inv(At, **kw)
        assert isinstance(X, torch.Tensor) and X.dtype == dt
        tr = thermo.simulate(At, bt, n_samples=7, config=cfg)
        assert isinstance(tr, torch.Tensor) and tr.shape == (7, d) and tr.dtype == dt
    # mixed precision promotes like numpy; column 0 of a (d, k) solve is a (d,) solve's twin
    assert thermo.solve(A.astype(np.float32), b, **kw).dtype == np.float64
    assert thermo.simulate(A, np.ones((d, 2)), n_samples=3).shape == (3, d, 2)
    # same seed, same answer; float32 input is the float64 answer rounded
    x64 = thermo.solve(A, b, **kw)
    assert np.array_equal(x64, thermo.solve(A, b, **kw))
    assert np.array_equal(thermo.solve(A.astype(np.float32).astype(np.float64), b, **kw).astype(np.float32),
                          thermo.solve(A.astype(np.float32), b.astype(np.float32), **kw))


# ---------------------------------------------------------------------------
# bad input


def test_bad_inputs():
    A = spd(4, seed=24)
    b = np.ones(4)
    cases = [
        (lambda: thermo.solve(np.ones((3, 4)), np.ones(3)), "square"),
        (lambda: thermo.solve(A + np.triu(np.ones((4, 4)), 1) * 0.1, b), "symmetric"),
        (lambda: thermo.solve(np.diag([1.0, 2.0, -0.5, 3.0]), b), r"not positive definite \(smallest eigenvalue -0.5"),
        (lambda: thermo.inv(np.diag([1.0, 0.0, 1.0])), "not positive definite"),
        (lambda: thermo.solve(np.where(np.eye(4) > 0, np.nan, A), b), "A contains NaN"),
        (lambda: thermo.solve(A, np.array([1.0, np.inf, 0, 0])), "b contains NaN or inf"),
        (lambda: thermo.solve(A, np.ones(5)), r"b must have shape \(4,\)"),
        (lambda: thermo.solve(A, np.ones((4, 2, 1))), "b must have shape"),
        (lambda: ChipConfig(tau=0.0), "tau"),
        (lambda: ChipConfig(beta=-1.0), "beta"),
        (lambda: ChipConfig(dt=0.0), "dt"),
        (lambda: ChipConfig(integrator="rk4"), "integrator"),
        (lambda: ChipConfig(adc_bits=8), "adc_range"),
        (lambda: ChipConfig(dac_bits=0), "dac_bits"),
        (lambda: ChipConfig(mismatch=-0.1), "mismatch"),
        (lambda: ChipConfig(substeps=0), "substeps"),
        (lambda: thermo.solve(np.diag([1.0, 4.0]), np.ones(2), config=ChipConfig(dt=1.0, substeps=2)),
         "stability limit"),
        (lambda: thermo.solve(A, b, time=0.0), "time"),
        (lambda: thermo.solve(A, b, burn_in=-1.0), "burn_in"),
        (lambda: thermo.solve(A, b, tol=0.0), "tol"),
        (lambda: thermo.solve(A.astype(np.float16), b), "float32 or float64|float32/float64"),
        (lambda: thermo.solve(torch.tensor(A, dtype=torch.bfloat16), b), "float32 or float64"),
        (lambda: thermo.solve(A, b, config={"tau": 1}), "ChipConfig"),
        (lambda: thermo.simulate(A, b, n_samples=-1), "n_samples"),
        (lambda: thermo.simulate(A, b, n_samples=3, x0=np.ones(3)), "x0"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()
    # mismatch can make a nearly singular A indefinite: some chips of this design cannot run it
    near = np.array([[1.0, 0.999], [0.999, 1.0]])
    msgs = []
    for chip in range(10):
        try:
            thermo.solve(near, np.ones(2), time=1.0, config=ChipConfig(mismatch=0.01, chip_seed=chip))
        except ValueError as e:
            msgs.append(str(e))
    assert 0 < len(msgs) < 10
    assert all("effective (DAC-quantised / mismatched) A is not positive definite" in m for m in msgs)
