"""The linearised (GLM) predictive of DiagLaplace: exact on softmax / linear
regression against the closed form, on a tiny MLP against a brute-force
Jacobian (torch.autograd.functional.jacobian), chunking, the probit's
aleatoric part against quadrature, the defaults and bad input."""

import math

import numpy as np
import pytest
import torch

from pybayes import glm
from pybayes.laplace import DiagLaplace


def softmax_regression(n=60, d=4, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    model = torch.nn.Linear(d, c, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(c, d, generator=gen, dtype=torch.float64))
        model.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    return model, x, y


class TinyMLP(torch.nn.Module):
    def __init__(self, n_in=3, hidden=5, n_out=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.l1 = torch.nn.Linear(n_in, hidden, dtype=torch.float64)
        self.l2 = torch.nn.Linear(hidden, n_out, dtype=torch.float64)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


def brute_force_jacobian(model, params, x):
    """[N, K, P] by torch.autograd.functional.jacobian of the flattened output in the
    flattened parameters (names in ``params`` order)."""
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def f(v):
        p = {n: t.reshape(s) for n, t, s in zip(names, torch.split(v, sizes), shapes)}
        return torch.func.functional_call(model, p, (x,)).reshape(x.shape[0], -1)

    return torch.autograd.functional.jacobian(f, flat), flat


def flat(d, names):
    return torch.cat([d[n].reshape(-1) for n in names])


def centred_probit(mean, cov):
    """The probit on the centred logits f - mean(f): covariance M S M, M = I - 11^T/C."""
    c = mean.shape[-1]
    m = torch.eye(c, dtype=cov.dtype) - 1.0 / c
    var = torch.einsum("ab,nbc,cd->nad", m, cov, m).diagonal(dim1=1, dim2=2)
    mc = mean - mean.mean(-1, keepdim=True)
    return torch.softmax(mc / torch.sqrt(1 + math.pi / 8 * var), -1)


def fitted(model, x, y, likelihood="classification", prior=2.0, **kw):
    return DiagLaplace(model, likelihood, prior_precision=prior, **kw).fit((x, y))


def mlp_problem(seed, n, prior):
    """A TinyMLP, ``n`` inputs and labels, and its DiagLaplace fitted at ``prior``."""
    model = TinyMLP(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=gen)
    return model, x, y, gen, fitted(model, x, y, prior=prior)


def test_softmax_regression_variance_and_probit_equal_closed_form():
    model, x, y = softmax_regression()
    la = fitted(model, x, y)
    v = la.posterior_variance
    xt = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)         # [n, d+1]
    vc = torch.cat([v["weight"], v["bias"][:, None]], 1)                     # [c, d+1]
    exact_var = xt ** 2 @ vc.T                                               # sum_j x_j^2 var(w_cj)
    mean, var = la.glm_predictive_distribution(x)
    torch.testing.assert_close(mean, model(x).detach(), rtol=0, atol=0)
    torch.testing.assert_close(var, exact_var, rtol=1e-12, atol=0)
    # classes have disjoint weights: the logits are uncorrelated
    _, cov = la.glm_predictive_distribution(x, full_cov=True)
    torch.testing.assert_close(cov, torch.diag_embed(exact_var), rtol=1e-12, atol=1e-15)
    pred = la.predict(x)                                                     # the default: glm + probit
    # centred logits f_a - mean(f): variance var_a (1 - 2/C) + sum_b var_b / C^2 for independent logits
    cvar = exact_var * (1 - 2 / 3) + exact_var.sum(-1, keepdim=True) / 9
    expect = torch.softmax((mean - mean.mean(-1, keepdim=True)) / torch.sqrt(1 + math.pi / 8 * cvar), -1)
    torch.testing.assert_close(pred.probs, expect, rtol=1e-12, atol=0)
    torch.testing.assert_close(pred.probs, centred_probit(mean, cov), rtol=1e-12, atol=0)
    # the centring matters: the raw-logit probit (laplace-torch's) is a different number
    assert (pred.probs - glm.probit(mean, exact_var)).abs().max() > 1e-3


def test_linear_model_mc_glm_equals_nn_draw_for_draw():
    """The linearisation of a linear model is the model: the same posterior draws give
    the same probabilities (JVP path vs functional_call path)."""
    model, x, y = softmax_regression(seed=1)
    la = fitted(model, x, y)
    a = la.predict(x, link_approx="mc", n_samples=37, chunk_size=8, return_samples=True,
                   generator=torch.Generator().manual_seed(3))
    b = la.predict(x, pred_type="nn", n_samples=37, chunk_size=8, return_samples=True,
                   generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.sample_probs, b.sample_probs, rtol=1e-12, atol=1e-14)
    for f in ("probs", "aleatoric", "epistemic"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f), rtol=1e-10, atol=1e-13)


def test_linear_regression_glm_is_the_exact_gaussian_predictive():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(4, 1, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(30, 1, generator=gen,
                                                                                     dtype=torch.float64)
    model = torch.nn.Linear(4, 1, bias=False, dtype=torch.float64)
    la = fitted(model, x, y, "regression", prior=1.5, sigma_noise=0.3)
    pred = la.predict(x[:7])
    exact = (x[:7] ** 2 @ la.posterior_variance["weight"].reshape(-1))[:, None]
    torch.testing.assert_close(pred.epistemic, exact, rtol=1e-12, atol=0)
    torch.testing.assert_close(pred.aleatoric, torch.full_like(exact, 0.09), rtol=1e-12, atol=0)
    torch.testing.assert_close(pred.variance, exact + 0.09, rtol=1e-12, atol=0)
    torch.testing.assert_close(pred.mean, model(x[:7]).detach(), rtol=0, atol=0)


@pytest.mark.parametrize("budget", [None, 1, 3 * 8 * 49])
def test_mlp_variance_and_covariance_equal_brute_force_jacobian(budget):
    """``budget`` 1 byte: one Jacobian row (example, class) at a time; 3 rows of the
    49-parameter MLP: class chunks of 3 over 4 classes (a ragged last chunk)."""
    model, x, y, _, la = mlp_problem(1, 11, 0.7)
    jac, _ = brute_force_jacobian(model, la.mean, x)                         # [N, C, P]
    v = flat(la.posterior_variance, list(la.mean))
    mean, var = la.glm_predictive_distribution(x, jacobian_bytes=budget)
    torch.testing.assert_close(var, (jac ** 2 * v).sum(-1), rtol=1e-10, atol=0)
    torch.testing.assert_close(mean, model(x).detach(), rtol=0, atol=0)
    if budget != 3 * 8 * 49:
        _, cov = la.glm_predictive_distribution(x, full_cov=True, jacobian_bytes=budget)
        torch.testing.assert_close(cov, torch.einsum("ncp,p,nkp->nck", jac, v, jac), rtol=1e-10, atol=1e-14)
        assert (cov - torch.diag_embed(var)).abs().max() > 1e-4   # hidden weights correlate the logits


def test_mlp_mc_draws_are_the_linearised_network_of_the_posterior_draws():
    model, x, y, _, la = mlp_problem(2, 9, 0.5)
    pred = la.predict(x, link_approx="mc", n_samples=13, chunk_size=5, return_samples=True,
                      generator=torch.Generator().manual_seed(7))
    draws = la.sample(13, generator=torch.Generator().manual_seed(7))      # the same draws
    jac, theta0 = brute_force_jacobian(model, la.mean, x)
    delta = torch.stack([flat(draws[s], list(la.mean)) for s in range(13)]) - theta0    # [S, P]
    logits = model(x).detach()[None] + torch.einsum("ncp,sp->snc", jac, delta)
    torch.testing.assert_close(pred.sample_probs, torch.softmax(logits, -1), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(pred.probs, torch.softmax(logits, -1).mean(0), rtol=1e-10, atol=1e-14)
    # and the network itself differs from its linearisation (the test can fail)
    nn = la.predict(x, pred_type="nn", n_samples=13, return_samples=True, generator=torch.Generator().manual_seed(7))
    assert (nn.sample_probs - pred.sample_probs).abs().max() > 1e-4


def test_default_is_glm_probit_for_classification_and_regression_mlp_matches_brute_force():
    model, x, y, gen, la = mlp_problem(3, 8, 1.0)
    jac, _ = brute_force_jacobian(model, la.mean, x)
    cov = torch.einsum("ncp,p,nkp->nck", jac, flat(la.posterior_variance, list(la.mean)), jac)
    pred = la.predict(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pred.probs, centred_probit(model(x).detach(), cov), rtol=1e-10, atol=0)
    assert (pred.epistemic > 0).all() and (pred.aleatoric > 0).all()
    torch.testing.assert_close(pred.total, -(pred.probs * pred.probs.log()).sum(-1), rtol=1e-12, atol=0)
    # regression with 4 outputs: the exact variance of the linearised outputs
    yr = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    lr = fitted(model, x, yr, "regression", prior=1.0, sigma_noise=0.5)
    jac_r, _ = brute_force_jacobian(model, lr.mean, x)
    var_r = (jac_r ** 2 * flat(lr.posterior_variance, list(lr.mean))).sum(-1)
    pr = lr.predict(x)
    torch.testing.assert_close(pr.epistemic, var_r, rtol=1e-10, atol=0)
    torch.testing.assert_close(pr.variance, var_r + 0.25, rtol=1e-10, atol=0)


def test_float32_model_and_prior_limit():
    """float32: matches the float64 numbers to float32 precision; an enormous prior
    precision leaves no epistemic uncertainty and the MAP's probabilities."""
    m64 = TinyMLP(seed=4)
    m32 = TinyMLP(seed=4).float()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=gen)
    a = fitted(m64, x, y, prior=0.3).glm_predictive_distribution(x)[1]
    b = fitted(m32, x.float(), y, prior=0.3).glm_predictive_distribution(x.float())[1]
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.double(), a, rtol=2e-4, atol=1e-6)
    la = fitted(m64, x, y, prior=1e12)
    pred = la.predict(x, n_samples=50)
    torch.testing.assert_close(pred.probs, torch.softmax(m64(x).detach(), -1), rtol=1e-9, atol=0)
    assert pred.epistemic.max() < 1e-9


def test_probit_aleatoric_part_is_the_expected_entropy_of_the_gaussian_logits():
    """Two classes, independent Gaussian logits: E[H(softmax(f))] by 2-D Gauss-Hermite
    quadrature (numpy) against the estimate from 20000 draws (10000 antithetic pairs),
    within 5 standard errors (the pairs' worst case: sd / sqrt(pairs))."""
    mean = torch.tensor([[0.3, -0.4], [2.0, 0.0]], dtype=torch.float64)
    var = torch.tensor([[0.5, 1.2], [0.1, 2.0]], dtype=torch.float64)
    n = 20000
    pred = glm.probit_prediction(mean, var, n_samples=n, generator=torch.Generator().manual_seed(5))
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    for i in range(2):
        f0 = mean[i, 0].item() + math.sqrt(var[i, 0].item()) * z[:, None]
        f1 = mean[i, 1].item() + math.sqrt(var[i, 1].item()) * z[None, :]
        p = 1 / (1 + np.exp(f1 - f0))
        h = -(p * np.log(p) + (1 - p) * np.log1p(-p))
        exact = float((w[:, None] * w[None, :] * h).sum())
        sd = math.sqrt(float((w[:, None] * w[None, :] * (h - exact) ** 2).sum()))
        assert abs(pred.aleatoric[i].item() - exact) < 5 * sd / math.sqrt(n // 2)
    torch.testing.assert_close(pred.probs, glm.probit(mean, var), rtol=0, atol=0)


def test_errors_and_nothing_changes():
    model, x, y = softmax_regression()
    la = fitted(model, x, y)
    before = {n: t.clone() for n, t in la.mean.items()}
    with pytest.raises(ValueError, match="pred_type"):
        la.predict(x, pred_type="laplace")
    with pytest.raises(ValueError, match="link_approx"):
        la.predict(x, link_approx="bridge")
    with pytest.raises(ValueError, match="return_samples"):
        la.predict(x, return_samples=True)
    with pytest.raises(ValueError, match="outputs"):
        la.predict(x, outputs="probs")
    with pytest.raises(ValueError, match="jacobian_bytes"):
        la.predict(x, jacobian_bytes=0)
    with pytest.raises(ValueError, match="inputs"):
        la.predict()
    with pytest.raises(ValueError, match="n_samples"):
        la.predict(x, n_samples=0)
    with pytest.raises(RuntimeError, match="fit"):
        DiagLaplace(model, "classification").predict(x)
    for n, t in la.mean.items():
        assert torch.equal(t, before[n])
    assert model.training  # eval mode only for the call


def test_memory_is_bounded_by_the_jacobian_budget():
    """The per-example Jacobian of the whole batch (16 x 10 x 9.6k params x 4 B = 6 MB)
    is never allocated: with a 400 KiB budget (one example's 10 rows) no single
    allocation exceeds the budget plus the activations, while the one-shot budget
    allocates the whole thing."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    la = DiagLaplace(model, "classification", prior_precision=1.0).fit((x, y))
    p_bytes = sum(p.numel() for p in model.parameters()) * 4

    def biggest(budget):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            la.glm_predictive_distribution(x, jacobian_bytes=budget)
        return max(e.cpu_memory_usage for e in prof.events())

    small = biggest(400 << 10)
    large = biggest(1 << 40)
    assert small <= (400 << 10) + 10 * 128 * 4 * 16, small
    assert large >= 16 * 10 * p_bytes // 2, large
