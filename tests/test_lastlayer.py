"""LastLayerLaplace: the exact last-layer GGN (= the Hessian, the output being linear
in the last layer) against torch.autograd.functional.hessian, the evidence of
Bayesian linear regression in closed form, the per-class-block GLM predictive
against the explicit Jacobian, sampling, the thermo backend and bad input."""

import math

import numpy as np
import pytest
import torch

from pybayes import thermo
from pybayes.glm import probit
from pybayes.lastlayer import LastLayerLaplace
from pybayes.predict import predict


class Net(torch.nn.Module):
    def __init__(self, n_in=3, hidden=4, n_out=3, bias=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(n_in, hidden, dtype=torch.float64), torch.nn.Tanh())
        self.head = torch.nn.Linear(hidden, n_out, bias=bias, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.body(x))


def data(n=40, n_in=3, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=gen, dtype=torch.float64), torch.randint(0, c, (n,), generator=gen)


def head_theta(model):
    w, b = model.head.weight.detach(), model.head.bias
    return (torch.cat([w, b.detach()[:, None]], 1) if b is not None else w).reshape(-1)


def nll_in_theta(model, x, y, lam):
    """Negative log posterior (up to a constant) as a function of the class-major [W | b] vector."""
    c, h = model.head.out_features, model.head.in_features
    phi = model.body(x).detach()
    bias = model.head.bias is not None

    def f(theta):
        t = theta.reshape(c, h + int(bias))
        logits = phi @ t[:, :h].T + (t[:, h] if bias else 0)
        return torch.nn.functional.cross_entropy(logits, y, reduction="sum") + 0.5 * lam * theta @ theta

    return f


@pytest.mark.parametrize("bias", [True, False])
def test_classification_precision_is_the_exact_hessian(bias):
    model = Net(bias=bias)
    x, y = data()
    la = LastLayerLaplace(model, "classification", prior_precision=0.8)
    la.fit([(x[:15], y[:15]), (x[15:], y[15:])])
    assert la.layer_name == "head" and la.d == 3 * (4 + int(bias))
    hess = torch.autograd.functional.hessian(nll_in_theta(model, x, y, 0.8), head_theta(model))
    torch.testing.assert_close(la.posterior_precision, hess, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(la.mean, head_theta(model), rtol=0, atol=0)
    expect = -torch.nn.functional.cross_entropy(model(x), y, reduction="sum").item()
    assert la.log_likelihood == pytest.approx(expect, rel=1e-12)
    assert la.n_data == 40


def blr(n=30, h=3, sigma=0.4, lam=1.7, seed=0):
    """Bayesian linear regression with a bias: data, the MAP model, the design matrix."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=gen, dtype=torch.float64)
    y = (x @ torch.randn(h, generator=gen, dtype=torch.float64) + 0.5
         + sigma * torch.randn(n, generator=gen, dtype=torch.float64))[:, None]
    xt = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    prec = xt.T @ xt / sigma ** 2 + lam * torch.eye(h + 1, dtype=torch.float64)
    w = torch.linalg.solve(prec, xt.T @ y[:, 0] / sigma ** 2)
    model = torch.nn.Linear(h, 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w[:h][None])
        model.bias.copy_(w[h:])
    return model, x, y, xt, prec


def exact_log_evidence(xt, y, sigma, lam):
    n = xt.shape[0]
    cov = sigma ** 2 * torch.eye(n, dtype=torch.float64) + xt @ xt.T / lam
    return torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(y[:, 0]).item()


def test_regression_evidence_and_predictive_equal_bayesian_linear_regression():
    model, x, y, xt, prec = blr()
    la = LastLayerLaplace(model, "regression", prior_precision=1.7, sigma_noise=0.4).fit((x, y))
    torch.testing.assert_close(la.posterior_precision, prec, rtol=1e-12, atol=1e-12)
    assert la.log_marginal_likelihood() == pytest.approx(exact_log_evidence(xt, y, 0.4, 1.7), abs=1e-9)
    cov = torch.linalg.inv(prec)
    torch.testing.assert_close(la.posterior_covariance, cov, rtol=1e-10, atol=1e-14)
    pred = la.predict(x[:6])
    torch.testing.assert_close(pred.epistemic, torch.einsum("ni,ij,nj->n", xt[:6], cov, xt[:6])[:, None],
                               rtol=1e-10, atol=0)
    torch.testing.assert_close(pred.variance, pred.epistemic + 0.16, rtol=1e-12, atol=0)
    torch.testing.assert_close(pred.mean, model(x[:6]).detach(), rtol=0, atol=0)


def test_optimize_prior_precision_maximises_the_closed_form_evidence():
    from scipy.optimize import minimize_scalar

    model, x, y, xt, _ = blr(seed=3)
    la = LastLayerLaplace(model, "regression", sigma_noise=0.4).fit((x, y))
    lam = la.optimize_prior_precision()
    # the model is refitted at each lambda for the exact evidence; at the MAP of lambda = lam
    # the Laplace estimate and the closed form agree, and no lambda on a grid is better
    best = la.log_marginal_likelihood()
    for f in (0.9, 0.99, 1.01, 1.1):
        assert la.log_marginal_likelihood(lam * f) < best
    # the MAP moves with lambda; the evidence-optimal lambda of the closed form is a fixed point:
    res = minimize_scalar(lambda s: -exact_log_evidence(xt, y, 0.4, math.exp(s)), bounds=(-10, 10),
                          method="bounded", options={"xatol": 1e-10})
    lam_exact = math.exp(res.x)
    model2, x2, y2, _, _ = blr(seed=3, lam=lam_exact)
    la2 = LastLayerLaplace(model2, "regression", sigma_noise=0.4).fit((x2, y2))
    assert la2.optimize_prior_precision() == pytest.approx(lam_exact, rel=1e-5)


def explicit_jacobian(phi_aug, c):
    """J_n = I_C kron phi_n^T: [N, C, C*H1] (what the class-block predictive avoids)."""
    eye = torch.eye(c, dtype=phi_aug.dtype)
    return torch.einsum("ab,ni->nabi", eye, phi_aug).reshape(phi_aug.shape[0], c, -1)


def test_glm_predictive_per_class_block_equals_the_explicit_jacobian_product():
    model = Net(seed=1)
    x, y = data(seed=1)
    la = LastLayerLaplace(model, prior_precision=0.5).fit((x, y))
    sigma = la.posterior_covariance
    phi = torch.cat([model.body(x).detach(), torch.ones(40, 1, dtype=torch.float64)], 1)
    jac = explicit_jacobian(phi, 3)
    cov_exact = jac @ sigma @ jac.transpose(1, 2)
    mean, var = la.glm_predictive_distribution(x)
    torch.testing.assert_close(var, cov_exact.diagonal(dim1=1, dim2=2), rtol=1e-10, atol=0)
    _, cov = la.glm_predictive_distribution(x, full_cov=True)
    torch.testing.assert_close(cov, cov_exact, rtol=1e-10, atol=1e-14)
    pred = la.predict(x, generator=torch.Generator().manual_seed(0))
    m = torch.eye(3, dtype=torch.float64) - 1.0 / 3                         # centred logits: M S M
    cvar = (m @ cov_exact @ m).diagonal(dim1=1, dim2=2)
    torch.testing.assert_close(pred.probs, probit(mean - mean.mean(-1, keepdim=True), cvar), rtol=1e-10, atol=0)
    assert (pred.probs - probit(mean, var)).abs().max() > 1e-3               # centring matters
    assert (pred.epistemic > 0).all()


def test_mc_predictive_equals_predict_with_the_sampled_last_layer():
    model = Net(seed=2)
    x, y = data(seed=2)
    la = LastLayerLaplace(model, prior_precision=0.5).fit((x, y))
    a = la.predict(x, link_approx="mc", n_samples=25, chunk_size=25, return_samples=True,
                   generator=torch.Generator().manual_seed(4))
    s = la.sample(25, generator=torch.Generator().manual_seed(4))
    assert set(s.names()) == {"head.weight", "head.bias"} and s["head.weight"].shape == (25, 3, 4)
    b = predict(model, s, x, return_samples=True)
    torch.testing.assert_close(a.sample_probs, b.sample_probs, rtol=1e-10, atol=1e-14)
    # the draws have the posterior covariance (sample covariance within 5 SE per entry)
    big = la.sample(20000, generator=torch.Generator().manual_seed(5))
    theta = torch.cat([big["head.weight"], big["head.bias"][:, :, None]], 2).reshape(20000, -1)
    emp = torch.cov(theta.T)
    sig = la.posterior_covariance
    se = torch.sqrt((sig.diagonal()[:, None] * sig.diagonal()[None, :] + sig ** 2) / 20000)
    assert ((emp - sig).abs() < 5 * se).all()


def test_temperature_scales_the_covariance():
    model = Net(seed=3)
    x, y = data(seed=3)
    a = LastLayerLaplace(model, prior_precision=0.5).fit((x, y))
    b = LastLayerLaplace(model, prior_precision=0.5, temperature=0.1).fit((x, y))
    torch.testing.assert_close(b.posterior_covariance, 0.1 * a.posterior_covariance, rtol=1e-12, atol=0)
    assert b.log_marginal_likelihood() == a.log_marginal_likelihood()  # the evidence is at T = 1


def test_thermo_backend_inverts_on_the_chip_and_reports_time_and_error():
    model = Net(n_in=3, hidden=5, n_out=3, seed=4)
    x, y = data(n=80, seed=4)
    cfg = thermo.ChipConfig(integrator="exact", dt=5.0, seed=1)
    la = LastLayerLaplace(model, backend="thermo", thermo_tol=0.1, thermo_config=cfg).fit((x, y))
    la.optimize_prior_precision()
    info = la.inversion
    ref = la.covariance("lapack")
    exact = torch.linalg.inv(la.posterior_precision)
    torch.testing.assert_close(ref, exact, rtol=1e-9, atol=1e-12)
    assert info.backend == "thermo" and info.d == 18 and info.converged
    assert info.rel_stderr < 0.1
    rel = float(torch.linalg.norm(la.posterior_covariance - ref) / torch.linalg.norm(ref))
    assert 0 < info.rel_error < 0.3 and rel < 0.3           # the chip's own error estimate, within a factor
    assert info.chip_time_s == pytest.approx(sum(info.chip_time_parts.values()), rel=1e-12)
    assert info.chip_time_s > 0 and info.chip_wall_s > 0 and info.lapack_wall_s > 0 and info.n_samples > 0
    assert info.integrator == "exact" and info.condition_number >= 1 and info.condition_number_programmed >= 1
    assert torch.linalg.eigvalsh(la.posterior_covariance).min() >= -1e-12   # projected to PSD
    p_chip = la.predict(x).probs
    p_ref = la.predict(x, backend="lapack").probs
    assert (p_chip - p_ref).abs().max() < 0.05
    assert la.inversion is info                               # cached: the chip runs once per prior


def test_errors():
    model = Net()
    x, y = data()
    with pytest.raises(ValueError, match="backend"):
        LastLayerLaplace(model, backend="gpu")
    with pytest.raises(ValueError, match="last_layer"):
        LastLayerLaplace(model, last_layer="body.1")
    with pytest.raises(ValueError, match="last_layer"):
        LastLayerLaplace(model, last_layer="nope")
    with pytest.raises(ValueError, match="prior_precision"):
        LastLayerLaplace(model, prior_precision=-1.0)
    with pytest.raises(ValueError, match="likelihood"):
        LastLayerLaplace(model, "poisson")
    with pytest.raises(ValueError, match="thermo_config"):
        LastLayerLaplace(model, thermo_config={"dt": 1})
    with pytest.raises(RuntimeError, match="fit"):
        LastLayerLaplace(model).predict(x)
    with pytest.raises(ValueError, match="output of its last layer"):
        LastLayerLaplace(torch.nn.Sequential(model, torch.nn.LogSoftmax(-1)), last_layer="0.head").fit((x, y))
    with pytest.raises(ValueError, match="empty"):
        LastLayerLaplace(model).fit([])
    la = LastLayerLaplace(model).fit((x, y))
    with pytest.raises(ValueError, match="link_approx"):
        la.predict(x, link_approx="laplace")
    with pytest.raises(ValueError, match="return_samples"):
        la.predict(x, return_samples=True)
    with pytest.raises(ValueError, match="backend"):
        la.covariance("gpu")
    assert model.training and "fitted on 40 examples" in repr(la)
    np.testing.assert_array_equal(la.mean.numpy(), head_theta(model).numpy())
