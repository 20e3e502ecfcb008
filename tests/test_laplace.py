"""DiagLaplace on Bayesian linear regression (exact answers) and on a classifier."""

import math

import pytest
import torch

from pybayes.laplace import DiagLaplace

SIGMA, LAM = 0.5, 2.0


def linear_problem(orthogonal, n=40, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if orthogonal:
        q, _ = torch.linalg.qr(a)
        x = q * torch.tensor([3.0, 1.0, 0.5, 2.0, 5.0], dtype=torch.float64)
    else:
        x = a
    w_true = torch.randn(d, generator=gen, dtype=torch.float64)
    y = x @ w_true + SIGMA * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y


def map_model(x, y, lam=LAM):
    d = x.shape[1]
    precision = x.T @ x / SIGMA ** 2 + lam * torch.eye(d, dtype=torch.float64)
    w_map = torch.linalg.solve(precision, x.T @ y / SIGMA ** 2)
    model = torch.nn.Linear(d, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w_map[None])
    return model, precision


def exact_log_evidence(x, y, lam):
    n = x.shape[0]
    cov = SIGMA ** 2 * torch.eye(n, dtype=torch.float64) + x @ x.T / lam
    return torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(y).item()


@pytest.mark.parametrize("orthogonal", [True, False])
def test_ggn_diagonal_equals_exact_posterior_precision_diagonal(orthogonal):
    x, y = linear_problem(orthogonal)
    model, precision = map_model(x, y)
    la = DiagLaplace(model, "regression", prior_precision=LAM, sigma_noise=SIGMA)
    la.fit([(x[:25], y[:25, None]), (x[25:], y[25:, None])])
    torch.testing.assert_close(la.posterior_precision["weight"].reshape(-1), precision.diagonal(),
                               rtol=1e-12, atol=0)
    assert la.n_data == 40


def test_log_marginal_likelihood_equals_closed_form_evidence_for_orthogonal_design():
    x, y = linear_problem(orthogonal=True)
    model, _ = map_model(x, y)
    la = DiagLaplace(model, "regression", prior_precision=LAM, sigma_noise=SIGMA).fit((x, y[:, None]))
    assert la.log_marginal_likelihood() == pytest.approx(exact_log_evidence(x, y, LAM), abs=1e-9)
    # and it is not the same number for a non-diagonal posterior (the test can fail)
    x2, y2 = linear_problem(orthogonal=False)
    model2, _ = map_model(x2, y2)
    la2 = DiagLaplace(model2, "regression", prior_precision=LAM, sigma_noise=SIGMA).fit((x2, y2[:, None]))
    assert abs(la2.log_marginal_likelihood() - exact_log_evidence(x2, y2, LAM)) > 1e-3


def test_optimize_prior_precision_maximises_the_evidence():
    x, y = linear_problem(orthogonal=True, seed=1)
    model, _ = map_model(x, y)
    la = DiagLaplace(model, "regression", prior_precision=LAM, sigma_noise=SIGMA).fit((x, y[:, None]))
    lam = la.optimize_prior_precision()
    best = la.log_marginal_likelihood()
    for f in (0.9, 0.99, 1.01, 1.1):
        assert la.log_marginal_likelihood(lam * f) < best
    grid = torch.logspace(-3, 3, 601).tolist()
    assert best >= max(la.log_marginal_likelihood(g) for g in grid) - 1e-12
    # layer-wise: one value per tensor, each at least as good
    lw = la.optimize_prior_precision(layerwise=True)
    assert set(lw) == {"weight"} and lw["weight"] == pytest.approx(lam, rel=1e-9)


def test_temperature_scales_the_posterior_variance_and_samples_match_it():
    x, y = linear_problem(orthogonal=False)
    model, precision = map_model(x, y)
    la = DiagLaplace(model, "regression", prior_precision=LAM, temperature=0.25, sigma_noise=SIGMA)
    la.fit((x, y[:, None]))
    var = 0.25 / precision.diagonal()
    torch.testing.assert_close(la.posterior_variance["weight"].reshape(-1), var, rtol=1e-12, atol=0)
    s = la.sample(20000, generator=torch.Generator().manual_seed(0))["weight"].reshape(20000, -1)
    # sample mean within 5 standard errors; sample variance within 5 SE (SE = var*sqrt(2/(n-1)))
    z_mean = (s.mean(0) - model.weight.detach().reshape(-1)) / (var / 20000).sqrt()
    z_var = (s.var(0) - var) / (var * math.sqrt(2 / 19999))
    assert (z_mean.abs() < 5).all() and (z_var.abs() < 5).all()


class WithUnused(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        self.unused = torch.nn.Parameter(torch.zeros(4))  # no effect on the output: Fisher 0

    def forward(self, x):
        return self.body(x)


def test_classification_zero_fisher_keeps_prior_variance_and_predictions_are_sane():
    torch.manual_seed(0)
    model = WithUnused()
    x, y = torch.randn(64, 2), torch.randint(0, 3, (64,))
    la = DiagLaplace(model, "classification", prior_precision=4.0).fit([(x[:32], y[:32]), (x[32:], y[32:])])
    torch.testing.assert_close(la.fisher["unused"], torch.zeros(4))
    torch.testing.assert_close(la.posterior_variance["unused"], torch.full((4,), 0.25))
    assert all(torch.isfinite(v).all() for v in la.posterior_variance.values())
    pred = la.predict(x[:10], n_samples=50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(10))
    assert (pred.epistemic > 0).all()
    assert math.isfinite(la.log_marginal_likelihood())
    # the log-likelihood is the training-set log-likelihood at the MAP
    expect = -torch.nn.functional.cross_entropy(model(x), y, reduction="sum").item()
    assert la.log_likelihood == pytest.approx(expect, rel=1e-5)
    assert "fitted on 64 examples" in repr(la)


def test_regression_predict_uses_sigma_noise_as_aleatoric():
    x, y = linear_problem(orthogonal=True)
    model, _ = map_model(x, y)
    la = DiagLaplace(model, "regression", prior_precision=LAM, sigma_noise=SIGMA).fit((x, y[:, None]))
    pred = la.predict(x[:5], n_samples=4000, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(pred.aleatoric, torch.full((5, 1), SIGMA ** 2, dtype=torch.float64))
    # epistemic variance of x.w under the diagonal posterior: sum_j x_j^2 var_j (MC within 5 SE)
    exact = (x[:5] ** 2 @ la.posterior_variance["weight"].reshape(-1))[:, None]
    se = exact * math.sqrt(2 / 3999)
    assert ((pred.epistemic - exact).abs() < 5 * se).all()


def test_errors():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="prior_precision"):
        DiagLaplace(model, "classification", prior_precision=0.0)
    with pytest.raises(ValueError, match="missing"):
        DiagLaplace(model, "classification", prior_precision={"weight": 1.0})
    with pytest.raises(ValueError, match="temperature"):
        DiagLaplace(model, "classification", temperature=0.0)
    with pytest.raises(RuntimeError, match="fit"):
        DiagLaplace(model, "classification").sample(3)
