"""pybayes.diagnostics against closed forms and ArviZ.

* split-R̂ of i.i.d. normal chains: n R̂² - (n - 1) is exactly F(m - 1, m(n - 1))
  distributed (m split chains of n draws), so its mean is checked to 5 standard errors;
* ESS of i.i.d. and AR(1) chains against N (1 - ρ) / (1 + ρ), with the estimator's own
  variability measured over many independent parameters;
* chains with shifted means: R̂ against its large-n closed form, and R̂ >> 1;
* the numbers of ArviZ (the [test] extra), to rounding, on AR(1) draws with ties and odd lengths;
* the IMQ kernel Stein discrepancy: its Stein kernel against autograd, the Stein identity
  by quadrature, the population KSD of a shifted Gaussian by quadrature against the
  U-statistic, and target samples scoring lower than shifted ones.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from pybayes import diagnostics as D
from pybayes.samples import SampleSet


def ar1(seed, chains, draws, params, rho):
    """Stationary AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho²) e_t, unit variance."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((chains, draws, params))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    s = math.sqrt(1 - rho * rho)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + s * e[:, t]
    return x


# -- R̂ --------------------------------------------------------------------------------

def test_iid_split_rhat_is_exactly_F_distributed_and_rank_rhat_is_below_threshold():
    chains, draws, params = 4, 1000, 400
    a = ar1(0, chains, draws, params, 0.0)
    r = D.split_rhat(a)
    m, n = 2 * chains, draws // 2
    f = n * r ** 2 - (n - 1)           # = n var(split means) / W  ~  F(m - 1, m (n - 1))
    d1, d2 = m - 1, m * (n - 1)
    se = stats.f.std(d1, d2) / math.sqrt(params)
    assert abs(f.mean() - stats.f.mean(d1, d2)) < 5 * se, (f.mean(), stats.f.mean(d1, d2), se)
    rank = D.rhat(a)
    assert rank.shape == (params,)
    assert np.all(rank >= r - 0.02) and rank.max() < 1.01     # P(R̂ > 1.01) is ~1e-12 here
    s = D.summary(a[:, :, :50])
    assert s.frac_rhat_above == 0.0 and s.max_rhat == pytest.approx(rank[:50].max())


def test_shifted_chain_means_give_rhat_far_above_one_as_the_closed_form_says():
    chains, draws, params = 4, 2000, 50
    a = ar1(1, chains, draws, params, 0.0)
    a[3] += 2.0                        # one chain stuck elsewhere
    # split chains: 8 halves, two of them shifted by 2: var of the half-chain means
    delta = np.array([0, 0, 0, 0, 0, 0, 2.0, 2.0])
    expected = math.sqrt(1 + delta.var(ddof=1))
    r = D.split_rhat(a)
    # fluctuations: W to sqrt(2 / 8000), the half-chain means to 1/sqrt(1000) each
    assert np.all(np.abs(r - expected) < 0.05), (r.min(), r.max(), expected)
    rank = D.rhat(a)
    assert rank.min() > 1.3
    s = D.summary(a)
    assert s.frac_rhat_above == 1.0 and s.max_rhat > 1.3


def test_a_single_chain_is_compared_with_itself_by_its_halves():
    a = ar1(2, 1, 2000, 20, 0.0)
    assert D.rhat(a).max() < 1.01
    b = a.copy()
    b[0, 1000:] += 1.0                 # the second half drifted: halves' means differ by 1
    # the halves' mean difference is 1 ± sqrt(2/1000): R̂ = sqrt(1 + 1/2) to ± 0.018 (1 sd)
    np.testing.assert_allclose(D.split_rhat(b), math.sqrt(1 + 0.5), atol=5 * 0.018)
    assert D.rhat(b).min() > 1.1


# -- ESS ------------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, -0.3])
def test_ess_of_ar1_chains_is_n_times_1_minus_rho_over_1_plus_rho(rho):
    """ESS = N (1 - ρ) / (1 + ρ) for stationary AR(1) chains of N draws in all. Over
    P independent parameters: no estimate is more than 6 of the estimator's own standard
    deviations away; the mean is within 5 standard errors plus Geyer truncation's known
    downward bias, which is at most half the estimator's standard deviation (it includes
    positive pair sums of pure noise); and that standard deviation is what
    Madras–Sokal's variance of a windowed τ estimate, 2(2M+1)/N τ², gives for a window
    M between 1 and 20 τ."""
    chains, draws, params = 4, 2000, 300
    a = ar1(10 + int(rho * 10), chains, draws, params, rho)
    total = chains * draws
    truth = total * (1 - rho) / (1 + rho)
    for kind in ("bulk", "mean"):
        ratio = D.ess(a, kind) / truth
        sd = ratio.std(ddof=1)
        tau = (1 + rho) / (1 - rho)
        assert math.sqrt(2 * 3 / total) <= sd <= math.sqrt(2 * (2 * 20 * max(tau, 1) + 1) / total), (kind, sd)
        assert np.all(np.abs(ratio - 1) < 6 * sd), (kind, ratio.min(), ratio.max(), sd)
        se = sd / math.sqrt(params)
        assert abs(ratio.mean() - 1) < 5 * se + 0.5 * sd, (kind, ratio.mean(), se, sd)


def test_ess_of_iid_draws_is_about_the_number_of_draws_for_all_kinds():
    a = ar1(3, 4, 1000, 400, 0.0)
    for kind in ("bulk", "tail", "mean"):
        ratio = D.ess(a, kind) / 4000
        assert 0.9 < np.median(ratio) < 1.1, (kind, np.median(ratio))


def test_tail_ess_sees_a_chain_that_is_slow_only_in_the_tails():
    # same marginal N(0, 1): iid draws vs AR(1) draws; the tail ESS must drop with the AR chain
    iid = ar1(4, 4, 2000, 50, 0.0)
    slow = ar1(5, 4, 2000, 50, 0.9)
    assert np.median(D.ess_tail(slow)) < 0.3 * np.median(D.ess_tail(iid))


def test_mcse_of_the_mean_matches_the_spread_of_chain_means():
    # 200 parameters of AR(1) draws: the standardised error of the pooled mean is N(0, 1)
    a = ar1(6, 4, 2000, 200, 0.7)
    z = a.reshape(-1, 200).mean(0) / D.mcse_mean(a)
    assert abs(z.std() - 1) < 5 * math.sqrt(1 / (2 * 200)) + 0.05, z.std()


def test_ess_per_second_and_summary_with_seconds():
    a = ar1(7, 2, 500, 3, 0.0)
    e = D.ess(a)
    np.testing.assert_allclose(D.ess_per_second(e, 2.0), e / 2.0)
    s = D.summary({"w": a[:, :, :2], "b": a[:, :, 2]}, seconds=4.0)
    assert s.n_params == 3 and s.names == ["w[0]", "w[1]", "b"]
    assert s.min_ess_bulk_per_second == pytest.approx(s.min_ess_bulk / 4.0)
    assert s.min_ess_bulk == pytest.approx(np.min(e))
    assert "2 chains x 500 draws, 3 parameters" in str(s)
    d = s.as_dict()
    assert set(d) >= {"max_rhat", "min_ess_bulk", "min_ess_tail", "frac_rhat_above", "min_ess_bulk_per_second"}
    with pytest.raises(ValueError, match="seconds"):
        D.ess_per_second(e, 0.0)


def test_mapping_and_torch_inputs_keep_shapes():
    a = torch.from_numpy(ar1(8, 3, 100, 6, 0.2)).float().reshape(3, 100, 2, 3)
    r = D.rhat({"w": a, "b": a[:, :, 0, 0]})
    assert r["w"].shape == (2, 3) and isinstance(r["b"], float)
    np.testing.assert_allclose(r["w"], D.rhat(a.double().numpy()), rtol=1e-6)


def test_constant_parameters_are_undefined_and_disagreeing_constant_chains_are_inf():
    a = ar1(9, 2, 100, 2, 0.0)
    a[:, :, 1] = 3.0
    assert math.isnan(D.rhat(a)[1]) and math.isnan(D.ess(a)[1]) and math.isnan(D.ess(a, "tail")[1])
    s = D.summary(a)
    assert s.n_undefined == 1 and math.isfinite(s.max_rhat)
    b = np.zeros((2, 10, 1))
    b[1] = 1.0
    assert D.split_rhat(b)[0] == math.inf


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[chains, draws"):
        D.rhat(np.zeros(10))
    with pytest.raises(ValueError, match="at least 4 draws"):
        D.ess(np.zeros((2, 3)))
    bad = np.ones((2, 10))
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        D.rhat(bad)
    with pytest.raises(ValueError, match="kind"):
        D.ess(np.random.default_rng(0).standard_normal((2, 10)), kind="median")
    with pytest.raises(TypeError, match="no chain dimension"):
        D.summary(SampleSet({"w": torch.zeros(10, 2)}))
    with pytest.raises(ValueError, match="same"):
        D.summary({"a": np.zeros((2, 10)) + np.arange(10), "b": np.zeros((2, 12)) + np.arange(12)})


def test_agrees_with_arviz():
    az = pytest.importorskip("arviz", reason="ArviZ comparison needs the [test] extra (pip install -e '.[test]')")
    cases = [((4, 1000, 4), 0.0), ((4, 1001, 4), 0.7), ((3, 57, 4), 0.95), ((2, 9, 3), 0.5), ((4, 10, 3), -0.6),
             ((2, 4, 2), 0.1)]
    worst = 0.0
    for i, (shape, rho) in enumerate(cases):
        a = ar1(20 + i, *shape, rho)
        a[0, :, 0] += 0.5
        a[:, :, -1] = np.round(2 * a[:, :, -1])        # ties
        mine = {"rhat": D.rhat(a), "bulk": D.ess(a), "tail": D.ess(a, "tail"), "mean": D.ess(a, "mean"),
                "mcse": D.mcse_mean(a)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = {
                "rhat": [az.rhat(a[:, :, j], method="rank") for j in range(shape[2])],
                "bulk": [az.ess(a[:, :, j], method="bulk") for j in range(shape[2])],
                "tail": [az.ess(a[:, :, j], method="tail") for j in range(shape[2])],
                "mean": [az.ess(a[:, :, j], method="mean") for j in range(shape[2])],
                "mcse": [az.mcse(a[:, :, j], method="mean") for j in range(shape[2])],
            }
        for k, v in theirs.items():
            np.testing.assert_allclose(mine[k], np.asarray(v, dtype=float), rtol=1e-10, err_msg=f"{shape} {k}")
            worst = max(worst, float(np.max(np.abs(mine[k] / np.asarray(v, dtype=float) - 1))))
    assert worst < 1e-10


def test_average_ranks_match_scipy_with_ties():
    x = np.round(np.random.default_rng(0).standard_normal((500, 7)) * 2)
    np.testing.assert_array_equal(D._average_ranks(x), stats.rankdata(x, axis=0))


# -- kernel Stein discrepancy -----------------------------------------------------------------

def _stein_kernel_autograd(x, y, sx, sy, c, beta):
    """k0 from the base kernel by automatic differentiation (independent of the algebra)."""
    def k(a, b):
        return (c * c + ((a - b) ** 2).sum()) ** beta

    x = x.clone().requires_grad_(True)
    y = y.clone().requires_grad_(True)
    kv = k(x, y)
    gx, gy = torch.autograd.grad(kv, (x, y), create_graph=True)
    trace = sum(torch.autograd.grad(gy[i], x, retain_graph=True)[0][i] for i in range(x.numel()))
    return float((sx @ sy * kv + sx @ gy + sy @ gx + trace).detach())


def test_imq_stein_kernel_matches_autograd():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    sx, sy = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    for c, beta in ((1.0, -0.5), (0.7, -0.3)):
        k0 = D.imq_stein_kernel(x, y, sx, sy, c, beta)
        ref = torch.tensor([[_stein_kernel_autograd(x[i], y[j], sx[i], sy[j], c, beta) for j in range(5)]
                            for i in range(4)], dtype=torch.float64)
        torch.testing.assert_close(k0, ref, rtol=1e-12, atol=1e-12)


def test_ksd_of_one_point_has_its_closed_form():
    # n = 1: KSD² = k0(x, x) = |s(x)|² c^(2 beta) - 2 beta d c^(2 beta - 2); N(0, I): s = -x
    x = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64).repeat(2, 1)   # two equal points: same value
    c = 1.5
    expected = (x[0] @ x[0]).item() / c + 3 / c ** 3
    assert D.ksd(x, lambda t: -t, c=c, squared=True) == pytest.approx(expected, rel=1e-12)


def test_stein_identity_by_quadrature():
    # E_{x ~ p} k0(x, y) = 0 for every y: the kernel is a valid Stein kernel of N(0, 1)
    for yv in (-1.3, 0.0, 0.4, 2.5):
        y = torch.tensor([[yv]], dtype=torch.float64)

        def integrand(xv):
            x = torch.tensor([[xv]], dtype=torch.float64)
            return float(D.imq_stein_kernel(x, y, -x, -y)) * math.exp(-xv * xv / 2) / math.sqrt(2 * math.pi)

        val, err = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-12)
        assert abs(val) < 1e-9, (yv, val)


def test_ksd_u_statistic_estimates_the_population_value_by_quadrature():
    # Q = N(mu, 1) against p = N(0, 1): KSD² = E_{x,x' ~ Q} k0(x, x') by Gauss–Hermite quadrature
    mu = 0.7
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    x = torch.tensor(nodes + mu, dtype=torch.float64)[:, None]
    pop = float((torch.tensor(weights)[:, None] * torch.tensor(weights)[None, :]
                 * D.imq_stein_kernel(x, x, -x, -x)).sum())
    assert pop > 0
    g = torch.Generator().manual_seed(1)
    reps = [D.ksd(torch.randn(800, 1, generator=g, dtype=torch.float64) + mu, lambda t: -t, statistic="u",
                  squared=True) for _ in range(12)]
    se = np.std(reps, ddof=1) / math.sqrt(len(reps))
    assert abs(np.mean(reps) - pop) < 5 * se, (np.mean(reps), pop, se)
    # exact samples: the U-statistic is zero in expectation
    exact = [D.ksd(torch.randn(800, 1, generator=g, dtype=torch.float64), lambda t: -t, statistic="u",
                   squared=True) for _ in range(12)]
    assert abs(np.mean(exact)) < 5 * np.std(exact, ddof=1) / math.sqrt(len(exact))


def test_ksd_is_smaller_for_target_samples_than_for_shifted_ones():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(400, 3, generator=g, dtype=torch.float64)
    score = (lambda t: -t)
    k_target = D.ksd(target, score)
    for shift in (0.3, 1.0):
        assert D.ksd(target + shift, score) > 2 * k_target
    # a SampleSet input is flattened per sample; blocks do not change the value
    s = SampleSet({"a": target[:, :2], "b": target[:, 2]})
    assert D.ksd(s, score) == pytest.approx(k_target, rel=1e-12)
    assert D.ksd(target, score, block_size=7) == pytest.approx(k_target, rel=1e-12)
    with pytest.raises(ValueError, match="squared=True"):
        D.ksd(target, score, statistic="u")
    with pytest.raises(ValueError, match="shape"):
        D.ksd(target, torch.zeros(3, 3))
