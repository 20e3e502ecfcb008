"""Bayesian model averaging and the uncertainty decomposition of pybayes.predict."""

import math

import pytest
import torch

from pybayes.predict import predict
from pybayes.samples import SampleSet


def make_model(out=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, out))


def random_samples(model, s, scale, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return SampleSet({n: p.detach() + scale * torch.randn((s,) + p.shape, generator=gen)
                      for n, p in model.named_parameters()})


def hand_loop(model, samples, x):
    """One plain forward pass per sample, parameters copied into the model."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    outs = []
    with torch.no_grad():
        for i in range(len(samples)):
            for n, p in model.named_parameters():
                p.copy_(samples[n][i])
            outs.append(model(x))
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    return torch.stack(outs)


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_bma_classification_equals_hand_loop(chunk):
    model = make_model()
    samples = random_samples(model, 20, 0.5)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    r = predict(model, samples, x, chunk_size=chunk, return_samples=True)
    logits = hand_loop(model, samples, x)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(r.sample_probs, p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.probs, p.mean(0), rtol=1e-5, atol=1e-6)
    ent = lambda q: -(q * q.log()).sum(-1)
    torch.testing.assert_close(r.aleatoric, ent(p).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.total, ent(p.mean(0)), rtol=1e-5, atol=1e-6)
    assert torch.equal(r.prediction, r.probs.argmax(-1))


def test_decomposition_identities():
    model = make_model(out=10)
    samples = random_samples(model, 30, 1.0).to(torch.float64)
    model.double()
    x = torch.randn(200, 3, dtype=torch.float64)
    r = predict(model, samples, x)
    torch.testing.assert_close(r.total, r.aleatoric + r.epistemic, rtol=0, atol=1e-12)
    assert (r.epistemic >= 0).all()
    assert (r.epistemic > 1e-3).any()  # the samples disagree: some epistemic uncertainty
    assert (r.total <= math.log(10) + 1e-12).all() and (r.aleatoric >= 0).all()


def test_epistemic_is_zero_when_all_samples_equal():
    model = make_model()
    one = {n: p.detach() for n, p in model.named_parameters()}
    samples = SampleSet({n: p.expand((9,) + p.shape).clone() for n, p in one.items()})
    x = torch.randn(40, 3)
    r = predict(model, samples, x, chunk_size=4)
    torch.testing.assert_close(r.epistemic, torch.zeros(40), rtol=0, atol=2e-6)
    p = torch.softmax(model(x), -1).detach()
    torch.testing.assert_close(r.probs, p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r.aleatoric, -(p * p.log()).sum(-1), rtol=1e-5, atol=1e-6)


def test_probability_outputs_and_loop_path_agree():
    model = torch.nn.Sequential(make_model(), torch.nn.Softmax(-1))
    samples = SampleSet({n: t for n, t in random_samples(model, 6, 0.3).items()})
    x = torch.randn(10, 3)
    a = predict(model, samples, x, outputs="probs")
    b = predict(model, samples, x, outputs="probs", vectorize=False)
    torch.testing.assert_close(a.probs, b.probs)
    torch.testing.assert_close(a.epistemic, b.epistemic, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_regression_mean_and_variance_split(chunk):
    model = make_model(out=2)
    samples = random_samples(model, 25, 0.4)
    x = torch.randn(30, 3)
    r = predict(model, samples, x, likelihood="regression", noise_std=0.3, chunk_size=chunk,
                return_samples=True)
    mu = hand_loop(model, samples, x).double()
    torch.testing.assert_close(r.mean.double(), mu.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.epistemic.double(), mu.var(0, unbiased=False), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r.aleatoric, torch.full((30, 2), 0.09), rtol=1e-6, atol=0)
    torch.testing.assert_close(r.variance, r.aleatoric + r.epistemic, rtol=0, atol=0)
    torch.testing.assert_close(r.std, r.variance.sqrt())


class Hetero(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = make_model(out=2)

    def forward(self, x):
        out = self.body(x)
        return out[:, 0], out[:, 1]


def test_heteroscedastic_aleatoric_is_mean_noise_variance():
    model = Hetero()
    samples = random_samples(model, 12, 0.3)
    x = torch.randn(20, 3)
    r = predict(model, samples, x, likelihood="heteroscedastic", chunk_size=5)
    out = hand_loop(model.body, SampleSet({n[5:]: t for n, t in samples.items()}), x)
    torch.testing.assert_close(r.mean, out[..., 0].mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.aleatoric, out[..., 1].exp().mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.epistemic, out[..., 0].var(0, unbiased=False), rtol=1e-4, atol=1e-6)


def test_model_mode_is_restored_and_dropout_is_off_in_eval():
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    model.train()
    samples = random_samples(model, 3, 0.0)
    x = torch.randn(5, 3)
    r = predict(model, samples, x)
    assert model.training and model[1].training
    torch.testing.assert_close(r.epistemic, torch.zeros(5), rtol=0, atol=2e-6)  # no dropout noise


def test_partial_samples_keep_the_other_parameters():
    model = make_model()
    last = {n: t for n, t in random_samples(model, 5, 0.5).items() if n.startswith("2.")}
    x = torch.randn(8, 3)
    r = predict(model, last, x, return_samples=True)
    full = SampleSet({**{n: p.detach().expand((5,) + p.shape) for n, p in model.named_parameters()}, **last})
    torch.testing.assert_close(r.sample_probs, torch.softmax(hand_loop(model, full, x), -1))


def test_errors():
    model = make_model()
    samples = random_samples(model, 2, 0.1)
    x = torch.randn(3, 3)
    with pytest.raises(ValueError, match="noise_std"):
        predict(model, samples, x, likelihood="regression")
    with pytest.raises(ValueError, match="likelihood"):
        predict(model, samples, x, likelihood="poisson")
    with pytest.raises(KeyError, match="nope"):
        predict(model, {"nope": torch.zeros(2, 3)}, x)
    with pytest.raises(TypeError, match="heteroscedastic"):
        predict(model, samples, x, likelihood="heteroscedastic")
    with pytest.raises(ValueError, match="leading sample dimension"):
        SampleSet({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)})
