"""pybayes.fisher.diag_fisher against closed forms (logistic and linear regression)."""

import math

import pytest
import torch

from pybayes.fisher import diag_fisher


class Logistic(torch.nn.Module):
    """Binary logistic regression as a 2-class softmax with logits (0, w.x)."""

    def __init__(self, w):
        super().__init__()
        self.lin = torch.nn.Linear(w.numel(), 1, bias=False, dtype=w.dtype)
        with torch.no_grad():
            self.lin.weight.copy_(w.reshape(1, -1))

    def forward(self, x):
        z = self.lin(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def logistic_data(n=300, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    y = (torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(x @ w)).long()
    return x, y, w


def test_empirical_fisher_of_logistic_regression_is_closed_form():
    x, y, w = logistic_data()
    model = Logistic(w).double()
    loader = [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)]  # batches of a data set
    f = diag_fisher(model, loader, kind="empirical", chunk_size=50)["lin.weight"].reshape(-1)
    s = torch.sigmoid(x @ w)
    expect = ((s - y) ** 2)[:, None].mul(x ** 2).sum(0)
    torch.testing.assert_close(f, expect, rtol=1e-12, atol=0)


def test_ggn_of_logistic_regression_is_the_true_fisher():
    x, y, w = logistic_data()
    model = Logistic(w).double()
    f = diag_fisher(model, (x, y), kind="ggn")["lin.weight"].reshape(-1)
    s = torch.sigmoid(x @ w)
    torch.testing.assert_close(f, (s * (1 - s))[:, None].mul(x ** 2).sum(0), rtol=1e-12, atol=0)


def test_mc_fisher_converges_to_the_true_fisher_within_standard_error():
    x, y, w = logistic_data(n=200, d=3, seed=1)
    model = Logistic(w).double()
    n_mc = 200
    gen = torch.Generator().manual_seed(123)
    f = diag_fisher(model, (x, y), kind="mc", n_mc=n_mc, generator=gen)["lin.weight"].reshape(-1)
    s = torch.sigmoid(x @ w)
    true = (s * (1 - s))[:, None].mul(x ** 2).sum(0)
    # per example, (y~ - s)^2 with y~ ~ Bernoulli(s) has mean s(1-s) and variance s(1-s)(1-2s)^2
    var = (s * (1 - s) * (1 - 2 * s) ** 2)[:, None].mul(x ** 4).sum(0) / n_mc
    z = (f - true) / var.sqrt()
    assert (z.abs() < 5).all(), z
    # and it is a different estimator from the empirical Fisher
    emp = ((s - y) ** 2)[:, None].mul(x ** 2).sum(0)
    assert not torch.allclose(f, emp, rtol=1e-3)


def test_regression_fisher_kinds():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(100, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(100, 2, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(3, 2).double()
    sigma = 0.5
    ggn = diag_fisher(model, (x, y), likelihood="regression", kind="ggn", noise_std=sigma)
    # J of output d w.r.t. W[d, j] is x_j: diag GGN = sum_i x_ij^2 / sigma^2 on every row
    expect_w = (x ** 2).sum(0).expand(2, 3) / sigma ** 2
    torch.testing.assert_close(ggn["weight"], expect_w, rtol=1e-12, atol=0)
    torch.testing.assert_close(ggn["bias"], torch.full((2,), 100 / sigma ** 2, dtype=torch.float64))
    emp = diag_fisher(model, (x, y), likelihood="regression", kind="empirical", noise_std=sigma)
    with torch.no_grad():
        r = (model(x) - y) / sigma ** 2
    torch.testing.assert_close(emp["weight"], (r ** 2).T @ (x ** 2), rtol=1e-12, atol=0)


def test_ggn_classification_matches_explicit_jacobian_formula():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    f = diag_fisher(model, (x, y), kind="ggn", chunk_size=7)
    expect = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(20):
        logits = model(x[i:i + 1])[0]
        p = torch.softmax(logits, 0).detach()
        jac = [torch.autograd.grad(logits[c], list(model.parameters()), retain_graph=True) for c in range(3)]
        h = torch.diag(p) - torch.outer(p, p)
        for k, (n, _) in enumerate(model.named_parameters()):
            j = torch.stack([jac[c][k] for c in range(3)]).reshape(3, -1)
            expect[n] += torch.einsum("ap,ab,bp->p", j, h, j).reshape(expect[n].shape)
    for n in expect:
        torch.testing.assert_close(f[n], expect[n], rtol=1e-10, atol=1e-14)


def test_chunking_and_mode_restoration():
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    model.train()
    x, y = torch.randn(33, 3), torch.randint(0, 2, (33,))
    a = diag_fisher(model, (x, y), chunk_size=1)
    b = diag_fisher(model, (x, y), chunk_size=100)
    assert model.training
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-7)


def test_frozen_parameters_are_skipped_and_errors():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    assert set(diag_fisher(model, (x, y))) == {"1.weight", "1.bias"}
    with pytest.raises(ValueError, match="kind"):
        diag_fisher(model, (x, y), kind="kfac")
    with pytest.raises(ValueError, match="empty"):
        diag_fisher(model, [])
    with pytest.raises(ValueError, match="noise_std"):
        diag_fisher(model, (x, y.float()), likelihood="regression", noise_std=0.0)
