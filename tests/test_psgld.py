"""pSGLD safe to start anywhere and honest at its defaults (issue 15): the
bound on its preconditioner (no first-step explosion from a zero or tiny
gradient, exactly RMSprop at T=0), and the variance at the default alpha
against the exact conjugate posterior of a Bayesian linear regression."""

import math

import pytest
import torch

from pybayes import ops
from pybayes.optim import PSGLD

NUM_DATA = 1000.0


@pytest.mark.parametrize("fused", [None, False])
def test_issue_reproducer_first_step_is_bounded_and_exact(fused):
    # issue 15: θ = 0 at the mode of 0.5 θ², g = 0, square_avg = 0. Without a
    # bound the first noise has sd sqrt(2 lr T / (N eps)) = 14; the bound
    # makes it lr / (2 sqrt(1 - alpha)) = 0.005 = 0.16 posterior sd.
    th = torch.zeros(5, requires_grad=True)
    opt = PSGLD([th], lr=1e-3, num_data=NUM_DATA, seed=0, fused=fused)
    (0.5 * th.pow(2).sum()).backward()
    opt.step()
    z = ops.philox_normal(0, 5, stream=0, step=0)
    torch.testing.assert_close(th.detach(), -(1e-3 / (2 * math.sqrt(1 - 0.99))) * z, rtol=1e-6, atol=0)
    assert th.detach().abs().max() < 3 * math.sqrt(1 / NUM_DATA)


@pytest.mark.parametrize("start", ["mode", "tiny"])
def test_started_at_the_mode_the_chain_stays_within_a_few_posterior_sd(start):
    """10^4 coordinates of L = θ²/2 (posterior sd 1/sqrt(N) = 0.032) started at
    the mode (g = 0) or within 1e-7 of it: over 2000 steps no coordinate leaves
    6 sd (the largest of 2·10^7 N(0,1) draws is ~5.6) and the RMS stays ~1 sd."""
    n, sd = 10_000, 1 / math.sqrt(NUM_DATA)
    th = torch.zeros(n) if start == "mode" else 1e-7 * torch.randn(n, generator=torch.Generator().manual_seed(0))
    th.requires_grad_()
    opt = PSGLD([th], lr=1e-3, num_data=NUM_DATA, seed=1)
    worst, sq = 0.0, 0.0
    for t in range(2000):
        th.grad = th.detach().clone()
        opt.step()
        worst = max(worst, th.detach().abs().max().item())
        if t >= 1000:
            sq += th.detach().double().pow(2).mean().item()
    assert worst < 6 * sd, worst / sd
    rms = math.sqrt(sq / 1000)
    assert 0.8 * sd < rms < 1.2 * sd, rms / sd


def test_default_pSGLD_at_temperature_zero_is_rmsprop_from_a_zero_gradient():
    # the bound is 0 at T = 0: from a zero first gradient (where it would bind
    # at T > 0) the trajectory is torch's RMSprop at the same defaults
    torch.manual_seed(0)
    w = torch.zeros(50, requires_grad=True)
    r = torch.zeros(50, requires_grad=True)
    ours = PSGLD([w], lr=1e-3, temperature=0)
    ref = torch.optim.RMSprop([r], lr=1e-3)
    target = torch.randn(50)
    for t in range(100):
        for p, o in ((w, ours), (r, ref)):
            o.zero_grad()
            (0.5 * ((p - target) ** 2).sum() if t > 0 else 0.0 * p.sum()).backward()
            o.step()
        torch.testing.assert_close(w.detach(), r.detach(), rtol=1e-6, atol=1e-7)
    assert w.detach().abs().max() > 0.05


def blr_problem(n=500, d=10, sigma=1.0, seed=0):
    """Bayesian linear regression y = X w + N(0, sigma²), prior N(0, 1): the
    mean loss L = |y - X w|² / (2 n sigma²) and weight_decay = 1/n give the
    target exp(-n (L + wd/2 |w|²)); its exact posterior is N(mean, cov)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64) + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    wd = 1.0 / n
    prec = X.T @ X / sigma**2 + n * wd * torch.eye(d, dtype=torch.float64)  # posterior precision
    cov = torch.linalg.inv(prec)
    mean = cov @ (X.T @ y) / sigma**2
    grad_A = (X.T @ X / (n * sigma**2)).float()  # grad of L: grad_A w - grad_b
    grad_b = (X.T @ y / (n * sigma**2)).float()
    return dict(n=n, wd=wd, mean=mean, cov=cov, A=grad_A, b=grad_b)


def psgld_variance_ratio(lr, chains=200, burn_in=3000, steps=20000, **kw):
    """Mean over coordinates of (sampled variance / exact posterior variance),
    and its standard error from the independent chains (each chain's time
    average is one estimate, so autocorrelation needs no model)."""
    prob = blr_problem()
    theta = prob["mean"].float().repeat(chains, 1).requires_grad_()  # start at the mode
    opt = PSGLD([theta], lr=lr, num_data=prob["n"], weight_decay=prob["wd"], seed=5, **kw)
    mean, var = prob["mean"], prob["cov"].diag()
    acc = torch.zeros(chains, dtype=torch.float64)
    for t in range(burn_in + steps):
        theta.grad = theta.detach() @ prob["A"] - prob["b"]
        opt.step()
        if t >= burn_in:
            acc += ((theta.detach().double() - mean) ** 2 / var).mean(1)
    per_chain = acc / steps
    return per_chain.mean().item(), per_chain.std().item() / math.sqrt(chains)


@pytest.mark.parametrize("lr", [2e-3, 1e-3, 5e-4])
def test_default_alpha_variance_within_5_percent_of_the_exact_posterior(lr):
    """Full-batch BLR (n = 500, d = 10), exact conjugate posterior, default
    alpha = 0.99 and eps: the sampled variance is within 5 % of the exact one.
    (Without the preconditioner bound the issue measured +13 / +20 / +31 % at
    these step sizes: RMSprop's v follows the chain's own state when the chain
    mixes slower than the EMA's memory.) Measured here: README, pSGLD."""
    ratio, se = psgld_variance_ratio(lr, steps=int(20000 * max(1.0, 1e-3 / lr)))  # ~30 mixing times
    print(f"lr={lr}: variance ratio {ratio:.4f} (se {se:.4f})")
    assert 5 * se < 0.025, se  # the estimate resolves the 5 % claim
    assert abs(ratio - 1) < 0.05, (lr, ratio, se)


def test_noise_bound_argument():
    # None restores the unbounded rule of Li et al. (the issue's explosion);
    # another bound b scales the first step to b lr / sqrt(1 - alpha)
    for bound, expect in ((None, math.sqrt(2 * 1e-3 / (NUM_DATA * 1e-8))), (0.1, 0.1 * 1e-3 / math.sqrt(0.01))):
        th = torch.zeros(5, requires_grad=True)
        opt = PSGLD([th], lr=1e-3, num_data=NUM_DATA, seed=0, noise_bound=bound)
        th.grad = torch.zeros(5)
        opt.step()
        torch.testing.assert_close(th.detach(), -expect * ops.philox_normal(0, 5), rtol=1e-5, atol=0)
        assert opt.state_dict()["param_groups"][0]["noise_bound"] == bound
    p = torch.zeros(3, requires_grad=True)
    for bad, err in ((0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), ("x", TypeError)):
        with pytest.raises(err, match="noise_bound"):
            PSGLD([p], lr=1e-3, num_data=10, noise_bound=bad)
