"""pybayes.chains: K stacked chains, one fused sampler, per-chain draws."""

import math

import pytest
import torch
import torch.nn.functional as F

import pybayes
from pybayes import ops
from pybayes.chains import Chains, ChainSamples
from pybayes.diagnostics import summary
from pybayes.optim import PSGLD, SGHMC, SGLD


class Vec(torch.nn.Module):
    """theta in R^d; loss = p/2 |theta|^2 (Gaussian target)."""

    def __init__(self, d, dtype=torch.float64):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.empty(d, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.normal_(self.theta)

    def forward(self):
        return self.theta


def mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(dtype)


SAMPLERS = [(SGLD, {}), (SGHMC, {"momentum": 0.9}), (PSGLD, {"alpha": 0.99})]


def test_init_per_chain_from_seed_and_global_rng_untouched():
    model = mlp()
    before = torch.get_rng_state()
    ch = Chains(model, 3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    for k in range(3):
        ref = mlp()
        torch.manual_seed(7 + k)
        for m in ref.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for n, p in ref.named_parameters():
            assert torch.equal(ch.chain_parameters(k)[n], p)
    assert not torch.equal(ch.chain_parameters(0)["0.weight"], ch.chain_parameters(1)["0.weight"])
    same = Chains(model, 2, init="copy")
    for n, p in model.named_parameters():
        assert torch.equal(same.chain_parameters(1)[n], p)


@pytest.mark.parametrize("cls,kw", SAMPLERS)
def test_chain0_is_the_single_run_bitwise_elementwise_loss(cls, kw):
    d, K, p, N = 257, 4, 2.0, 100
    ch = Chains(Vec(d), K, seed=3)
    single = Vec(d)
    with torch.no_grad():
        single.theta.copy_(ch.chain_parameters(0)["theta"])
    opt_k = cls(ch.parameters(), lr=0.01, num_data=N, seed=11, **kw)
    opt_1 = cls(single.parameters(), lr=0.01, num_data=N, seed=11, **kw)
    for _ in range(25):
        for opt, out in ((opt_k, ch()), (opt_1, single())):
            opt.zero_grad()
            (0.5 * p * (out ** 2).sum()).backward()
            opt.step()
    assert torch.equal(ch.chain_parameters(0)["theta"], single.theta.detach())


def test_chain_k_is_the_single_run_at_element_offset_bitwise():
    d, K, p, N, seed, lr = 129, 3, 2.0, 50, 5, 0.02
    ch = Chains(Vec(d), K, seed=1)
    opt = SGLD(ch.parameters(), lr=lr, num_data=N, seed=seed)
    singles = [ch.chain_parameters(k)["theta"].detach().clone() for k in range(K)]
    for t in range(20):
        opt.zero_grad()
        (0.5 * p * (ch() ** 2).sum()).backward()
        opt.step()
        for k, th in enumerate(singles):
            torch.ops.pybayes.sgld_([th], [p * th], [0], [t], lr, 0.0, 1.0, N, ops.seed_to_int64(seed),
                                    False, None, None, [k * d], True)
    for k, th in enumerate(singles):
        assert torch.equal(ch.chain_parameters(k)["theta"], th)


def test_mlp_chains_match_separate_runs():
    """vmapped forward: gradients equal a single-module forward up to rounding."""
    K, N = 3, 64
    torch.manual_seed(1)
    x, y = torch.randn(N, 5, dtype=torch.float64), torch.randint(0, 3, (N,))
    ch = Chains(mlp(), K, seed=2)
    opt = SGHMC(ch.named_parameters(), lr=1e-3, momentum=0.9, num_data=N, seed=4, fused=True)
    singles = []
    for k in range(K):
        m = mlp()
        m.load_state_dict(ch.chain_parameters(k))
        singles.append(m)
    o1 = SGHMC(singles[0].named_parameters(), lr=1e-3, momentum=0.9, num_data=N, seed=4)
    T0 = SGHMC(singles[1].named_parameters(), lr=1e-3, momentum=0.9, num_data=N, temperature=0.0)
    opt_t0 = SGHMC(ch.named_parameters(), lr=1e-3, momentum=0.9, num_data=N, temperature=0.0)
    for _ in range(20):
        opt.zero_grad()
        Chains.loss(ch(x), y, F.cross_entropy).backward()
        opt.step()
        o1.zero_grad()
        F.cross_entropy(singles[0](x), y).backward()
        o1.step()
    for n, p in singles[0].named_parameters():
        torch.testing.assert_close(ch.chain_parameters(0)[n], p.detach(), rtol=1e-12, atol=1e-12)
    # T = 0: every chain is plain SGD-momentum on its own loss
    ch0 = [dict((n, t.detach().clone()) for n, t in ch.chain_parameters(k).items()) for k in range(K)]
    singles[1].load_state_dict(ch0[1])
    for _ in range(10):
        opt_t0.zero_grad()
        Chains.loss(ch(x), y, F.cross_entropy).backward()
        opt_t0.step()
        T0.zero_grad()
        F.cross_entropy(singles[1](x), y).backward()
        T0.step()
    for n, p in singles[1].named_parameters():
        torch.testing.assert_close(ch.chain_parameters(1)[n], p.detach(), rtol=1e-12, atol=1e-12)


def test_per_chain_stationary_moments_gaussian():
    """SGLD on L = p/2 θ², every chain: Var = T / (N p (1 - lr p / 2)) exactly (DESIGN §7)."""
    d, K, p, N, lr = 20000, 4, 1.0, 10, 0.1
    ch = Chains(Vec(d), K, seed=0)
    opt = SGLD(ch.parameters(), lr=lr, num_data=N, seed=123)
    for _ in range(300):                # contraction 0.9^300 ~ 2e-14: the start is forgotten
        opt.zero_grad()
        (0.5 * p * (ch() ** 2).sum()).backward()
        opt.step()
    var = 1.0 / (N * p * (1 - lr * p / 2))
    th = ch.parameters()[0].detach()
    for k in range(K):
        m, v = th[k].mean().item(), th[k].var().item()
        assert abs(m) < 5 * math.sqrt(var / d)
        assert abs(v - var) < 5 * var * math.sqrt(2 / d)
    # chains are independent: the correlation of two chains' coordinates is ~ N(0, 1/d)
    c = torch.corrcoef(th[:2])[0, 1].item()
    assert abs(c) < 5 / math.sqrt(d)


def test_collector_predict_summary():
    K, N = 4, 32
    torch.manual_seed(0)
    x, y = torch.randn(N, 5, dtype=torch.float64), torch.randint(0, 3, (N,))
    ch = Chains(mlp(), K, seed=0)
    opt = SGLD(ch.parameters(), lr=1e-3, num_data=N, seed=0)
    col = ch.collector(burn_in=5, thin=2).attach(opt)
    for _ in range(25):
        opt.zero_grad()
        Chains.loss(ch(x), y, F.cross_entropy).backward()
        opt.step()
    draws = col.samples()
    assert isinstance(draws, ChainSamples) and (draws.num_chains, draws.num_samples) == (K, 10)
    assert draws.chain_tensors["0.weight"].shape == (K, 10, 16, 5)
    # draw 0 of chain k is chain k after step 6
    assert len(col) == 10
    s = ch.summary(draws)
    assert s.n_chains == K and s.n_draws == 10 and s.n_params == 16 * 5 + 16 + 3 * 16 + 3
    assert s.max_rhat == summary(draws.chain_tensors).max_rhat
    pred = ch.predict(draws, x)
    # the model average over all K*10 draws, by hand
    probs = torch.zeros(N, 3, dtype=torch.float64)
    flat = draws.flatten()
    for i in range(len(flat)):
        probs += torch.func.functional_call(ch.module, flat[i], (x,)).softmax(-1)
    torch.testing.assert_close(pred.probs.to(torch.float64), probs / len(flat), rtol=1e-6, atol=1e-7)
    assert draws.chain(2)["2.bias"].shape == (10, 3)


def test_dropout_and_buffers():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.register_buffer("scale", torch.full((4,), 2.0))
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.lin(x)) * self.scale

    ch = Chains(M(), 3)
    out = ch(torch.ones(8, 4))
    assert out.shape == (3, 8, 4)
    assert (out == 0).any()
    assert not torch.equal(out[0] == 0, out[1] == 0)   # dropout masks differ per chain


def test_bad_inputs():
    bn = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="running statistics"):
        Chains(bn, 2)
    Chains(bn.eval(), 2)
    with pytest.raises(ValueError, match="num_chains"):
        Chains(mlp(), 0)
    with pytest.raises(ValueError, match="seed"):
        Chains(mlp(), 2, seed=-1)
    with pytest.raises(ValueError, match="init"):
        Chains(mlp(), 2, init="zeros")
    with pytest.raises(TypeError, match="model"):
        Chains("mlp", 2)
    ch = Chains(mlp(), 2)
    with pytest.raises(ValueError, match="thin"):
        ch.collector(thin=0)
    with pytest.raises(IndexError):
        ch.chain_parameters(2)
    with pytest.raises(RuntimeError, match="no draws"):
        ch.collector().samples()
    with pytest.raises(ValueError, match="chain_tensors"):
        ChainSamples({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)})
    assert "2 chains" in repr(ch) and pybayes.chains is not None
