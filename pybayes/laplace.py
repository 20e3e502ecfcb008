"""Diagonal Laplace approximation around a trained (MAP) network.

With ``theta*`` the current parameters, ``F`` the diagonal Fisher / GGN of the
negative log-likelihood summed over the training set
(:func:`pybayes.fisher.diag_fisher`) and an isotropic Gaussian prior
``N(0, 1/lambda)`` (``lambda`` = ``prior_precision``, a float or one value per
parameter tensor), the posterior is approximated by

    q(theta) = N(theta*, T / (F + lambda))          (diagonal)

``temperature = T`` follows the samplers' convention (DESIGN.md §3): the
tempered posterior ``[p(D|theta) p(theta)]^(1/T)``, so ``T = 1`` is the Bayesian
posterior and ``T < 1`` a cold one. (laplace-torch tempers the likelihood only:
its precision is ``F/T + lambda``.) A parameter with ``F ~ 0`` keeps the prior
variance ``T / lambda``: finite, never infinite.

The evidence (:meth:`DiagLaplace.log_marginal_likelihood`, at ``T = 1``) is the
Laplace estimate

    log p(D) ~ log p(D|theta*) - lambda/2 |theta*|^2 + 1/2 sum log lambda - 1/2 sum log(F + lambda)

(the ``2 pi`` terms of prior and posterior cancel), exact for a linear-Gaussian
model whose posterior precision is diagonal.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Union

import torch

from . import fisher as _fisher
from .predict import predict as _predict
from .samples import SampleSet

__all__ = ["DiagLaplace"]

Prior = Union[float, Dict[str, float]]


def evidence_optimal_precision(curvature, sq_norm: float, bounds=(1e-8, 1e8)) -> float:
    """The prior precision lambda maximising the Laplace evidence of a Gaussian
    posterior with curvature eigenvalues ``curvature`` (a diagonal Fisher/GGN, or
    the eigenvalues of a full one) around a mode of squared norm ``sq_norm``:
    ``P/2 log lambda - lambda/2 |theta*|^2 - 1/2 sum_j log(F_j + lambda)``.
    In ``s = log lambda`` its derivative ``P/2 - lambda |theta*|^2/2 -
    sum_j lambda / (2 (F_j + lambda))`` decreases, so the maximiser is unique; it
    is found by bisection in float64 and clipped to ``bounds``."""
    f = torch.as_tensor(curvature, dtype=torch.float64).reshape(-1).clamp_min(0.0)
    p_tot, sq = f.numel(), float(sq_norm)
    lo, hi = (math.log(float(b)) for b in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must be increasing, got {bounds}")

    def deriv(s):
        lam = math.exp(s)
        return 0.5 * p_tot - 0.5 * lam * sq - 0.5 * (lam / (f + lam)).sum().item()

    if deriv(lo) <= 0:
        return math.exp(lo)
    if deriv(hi) >= 0:
        return math.exp(hi)
    a, b = lo, hi
    for _ in range(200):
        m = 0.5 * (a + b)
        if deriv(m) > 0:
            a = m
        else:
            b = m
        if b - a < 1e-13:
            break
    return math.exp(0.5 * (a + b))


class DiagLaplace:
    """Diagonal Laplace approximation of ``model``'s posterior.

    ``likelihood``: ``"classification"`` (logits, cross-entropy) or
    ``"regression"`` (Gaussian with standard deviation ``sigma_noise``).
    ``prior_precision``: a float, or ``{parameter name: float}`` (layer-wise).

    Usage::

        la = DiagLaplace(model, "classification", prior_precision=1.0)
        la.fit(train_loader)                 # at the current (MAP) parameters
        la.optimize_prior_precision()        # maximise the evidence over lambda
        pred = la.predict(x, n_samples=100)  # ClassificationPrediction
    """

    def __init__(self, model: torch.nn.Module, likelihood: str, prior_precision: Prior = 1.0,
                 temperature: float = 1.0, *, sigma_noise: float = 1.0):
        if likelihood not in _fisher.LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {_fisher.LIKELIHOODS}, got {likelihood!r}")
        temperature = float(temperature)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        sigma_noise = float(sigma_noise)
        if not (sigma_noise > 0 and math.isfinite(sigma_noise)):
            raise ValueError(f"sigma_noise must be a finite number > 0, got {sigma_noise}")
        self.model = model
        self.likelihood = likelihood
        self.temperature = temperature
        self.sigma_noise = sigma_noise
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self._names:
            raise ValueError("the model has no parameters that require grad")
        self.prior_precision = prior_precision
        self.mean: Optional[Dict[str, torch.Tensor]] = None
        self.fisher: Optional[Dict[str, torch.Tensor]] = None
        self.log_likelihood: Optional[float] = None
        self.n_data = 0

    # -- prior -------------------------------------------------------------------------

    @property
    def prior_precision(self) -> Prior:
        return self._prior

    @prior_precision.setter
    def prior_precision(self, value: Prior):
        if isinstance(value, dict):
            missing = set(self._names) - set(value)
            extra = set(value) - set(self._names)
            if missing or extra:
                raise ValueError(f"prior_precision dict must name every trainable parameter: missing "
                                 f"{sorted(missing)}, unknown {sorted(extra)}")
            value = {n: float(v) for n, v in value.items()}
            vals = value.values()
        else:
            value = float(value)
            vals = [value]
        for v in vals:
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"prior_precision must be finite and > 0, got {v}")
        self._prior = value

    def _lam(self, name, prior=None) -> float:
        prior = self._prior if prior is None else prior
        return prior[name] if isinstance(prior, dict) else float(prior)

    # -- fit ---------------------------------------------------------------------------

    def fit(self, data, *, kind: str = "ggn", n_mc: int = 1, chunk_size: Optional[int] = None,
            generator: Optional[torch.Generator] = None, progress: bool = False) -> "DiagLaplace":
        """Fit at the model's current parameters: record them as the posterior
        mean, compute the diagonal Fisher (``kind``: ``"ggn"`` (default, exact
        expected Fisher), ``"empirical"`` or ``"mc"``; see
        :func:`pybayes.fisher.diag_fisher`) and the log-likelihood over ``data``."""
        fp = _fisher._run_pass(self.model, data, likelihood=self.likelihood, kind=kind,
                               noise_std=self.sigma_noise, n_mc=n_mc, chunk_size=chunk_size,
                               generator=generator, progress=progress, compute_nll=True)
        self.mean = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self.fisher = fp.fisher
        self.log_likelihood = -fp.nll_sum
        self.n_data = fp.n_examples
        return self

    def _require_fit(self):
        if self.fisher is None:
            raise RuntimeError("call DiagLaplace.fit(data) first")

    @property
    def n_params(self) -> int:
        return sum(p.numel() for n, p in self.model.named_parameters() if p.requires_grad)

    @property
    def posterior_precision(self) -> Dict[str, torch.Tensor]:
        """``(F + lambda) / T`` per parameter."""
        self._require_fit()
        return {n: (f + self._lam(n)) / self.temperature for n, f in self.fisher.items()}

    @property
    def posterior_variance(self) -> Dict[str, torch.Tensor]:
        return {n: 1.0 / p for n, p in self.posterior_precision.items()}

    @property
    def posterior_std(self) -> Dict[str, torch.Tensor]:
        return {n: v.sqrt() for n, v in self.posterior_variance.items()}

    # -- samples and predictions -------------------------------------------------------

    def sample(self, n_samples: int = 100, *, generator: Optional[torch.Generator] = None) -> SampleSet:
        """``n_samples`` draws from the posterior as a :class:`~pybayes.samples.SampleSet`
        (on the parameters' device, in their dtype)."""
        self._require_fit()
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        out = {}
        for n, std in self.posterior_std.items():
            mu = self.mean[n]
            z = torch.randn((n_samples,) + tuple(mu.shape), generator=generator, dtype=mu.dtype,
                            device=generator.device if generator is not None else mu.device)
            out[n] = mu + std * z.to(mu.device)
        return SampleSet(out)

    def predict(self, *inputs, n_samples: int = 100, generator: Optional[torch.Generator] = None,
                chunk_size: int = 32, **kwargs):
        """Monte-Carlo Bayesian model average over ``n_samples`` posterior draws
        (:func:`pybayes.predict.predict`); regression uses ``sigma_noise`` as the
        aleatoric noise."""
        samples = self.sample(n_samples, generator=generator)
        if self.likelihood == "regression":
            kwargs.setdefault("noise_std", self.sigma_noise)
        return _predict(self.model, samples, *inputs, likelihood=self.likelihood,
                        chunk_size=chunk_size, **kwargs)

    # -- evidence ----------------------------------------------------------------------

    def _group_stats(self):
        """Per parameter tensor: (P, |theta*|^2, F as float64)."""
        return {n: (self.mean[n].numel(), self.mean[n].double().pow(2).sum().item(), self.fisher[n].double())
                for n in self.fisher}

    def log_marginal_likelihood(self, prior_precision: Optional[Prior] = None) -> float:
        """Laplace estimate of ``log p(D)`` (T = 1) at ``prior_precision`` (default:
        the current one), keeping the fitted ``theta*`` and Fisher."""
        self._require_fit()
        if prior_precision is not None:
            saved = self._prior
            self.prior_precision = prior_precision  # validates
            prior, self._prior = self._prior, saved
        else:
            prior = self._prior
        total = self.log_likelihood
        for n, (p, sq, f) in self._group_stats().items():
            lam = self._lam(n, prior)
            total += 0.5 * p * math.log(lam) - 0.5 * lam * sq - 0.5 * torch.log(f + lam).sum().item()
        return total

    def optimize_prior_precision(self, *, layerwise: bool = False, bounds=(1e-8, 1e8)) -> Prior:
        """Set ``prior_precision`` to the maximiser of :meth:`log_marginal_likelihood`
        (one value, or one per parameter tensor with ``layerwise=True``) and return it.

        The maximiser is unique (see :func:`evidence_optimal_precision`) and
        clipped to ``bounds``."""
        self._require_fit()
        stats = self._group_stats()
        groups = [[n] for n in stats] if layerwise else [list(stats)]
        result = {}
        for names in groups:
            sq = sum(stats[n][1] for n in names)
            fs = torch.cat([stats[n][2].reshape(-1) for n in names])
            lam = evidence_optimal_precision(fs, sq, bounds)
            for n in names:
                result[n] = lam
        self.prior_precision = result if layerwise else result[self._names[0]]
        return self.prior_precision

    def __repr__(self):
        state = "not fitted" if self.fisher is None else f"fitted on {self.n_data} examples"
        prior = (f"{len(self._prior)} layer-wise values" if isinstance(self._prior, dict)
                 else f"{self._prior:.4g}")
        return (f"DiagLaplace({self.likelihood}, {self.n_params} parameters, prior_precision={prior}, "
                f"temperature={self.temperature:g}, {state})")
