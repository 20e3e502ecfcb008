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

Predictions (:meth:`DiagLaplace.predict`) default to the linearised ("GLM")
predictive of :mod:`pybayes.glm` (probit, or Monte Carlo by Jacobian-vector
products); ``pred_type="nn"`` averages the network itself over posterior draws.
The full-covariance last-layer approximation is :mod:`pybayes.lastlayer`.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Union

import torch

from . import fisher as _fisher
from . import glm as _glm
from .predict import RegressionPrediction, _ClassStats, _eval_mode
from .predict import predict as _predict
from .samples import SampleSet

__all__ = ["DiagLaplace", "evidence_optimal_precision"]

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

    def predict(self, *inputs, pred_type: str = "glm", link_approx: str = "probit", n_samples: int = 100,
                generator: Optional[torch.Generator] = None, chunk_size: int = 32,
                jacobian_bytes: Optional[int] = None, **kwargs):
        """Bayesian predictive at ``inputs``.

        ``pred_type="glm"`` (default): the linearised network
        ``f(x; theta*) + J(x)(theta - theta*)`` under the posterior
        (:mod:`pybayes.glm`). Classification: ``link_approx="probit"`` (default)
        gives the probabilities from the logits' mean and variance
        ``diag(J Sigma J^T)`` (per-example vector-Jacobian products, chunked to
        ``jacobian_bytes``, default 256 MiB) and the aleatoric/epistemic split
        from ``n_samples`` draws of those Gaussian logits; ``link_approx="mc"``
        averages ``n_samples`` posterior draws pushed through the linearised
        network, one Jacobian-vector product each (``chunk_size`` at a time).
        Regression: the exact Gaussian predictive of the linearised model, mean
        ``f(x; theta*)``, epistemic ``diag(J Sigma J^T)``, aleatoric
        ``sigma_noise^2``.

        ``pred_type="nn"``: Monte-Carlo average of the network itself over
        ``n_samples`` posterior draws (:func:`pybayes.predict.predict`, which
        receives the remaining keyword arguments).

        Other keyword arguments are passed to the model (``glm``); ``return_samples=True``
        (classification, ``link_approx="mc"``) keeps the draws' probabilities.
        The model is evaluated in eval mode and restored."""
        self._require_fit()
        if pred_type not in ("glm", "nn"):
            raise ValueError(f"pred_type must be 'glm' or 'nn', got {pred_type!r}")
        if link_approx not in ("probit", "mc"):
            raise ValueError(f"link_approx must be 'probit' or 'mc', got {link_approx!r}")
        if not inputs:
            raise ValueError("predict needs the model's inputs: la.predict(x)")
        if pred_type == "nn":
            samples = self.sample(n_samples, generator=generator)
            if self.likelihood == "regression":
                kwargs.setdefault("noise_std", self.sigma_noise)
            return _predict(self.model, samples, *inputs, likelihood=self.likelihood,
                            chunk_size=chunk_size, **kwargs)
        bad = sorted(set(kwargs) & {"outputs", "vectorize", "randomness", "eval_mode", "likelihood", "noise_std"})
        if bad:
            raise ValueError(f"pred_type='glm' does not take {bad}: the linearised predictive evaluates the "
                             "logits (or regression mean) in eval mode with vmap; use pred_type='nn' for these")
        return_samples = bool(kwargs.pop("return_samples", False))
        if return_samples and not (self.likelihood == "classification" and link_approx == "mc"):
            raise ValueError("return_samples=True needs likelihood='classification' and link_approx='mc' "
                             "(the probit and the regression predictive are closed-form)")
        with _eval_mode(self.model), torch.no_grad():
            if self.likelihood == "classification" and link_approx == "mc":
                n_samples = int(n_samples)
                chunk_size = int(chunk_size)
                if chunk_size < 1:
                    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
                draws = self.sample(n_samples, generator=generator)
                deltas = SampleSet({n: t - self.mean[n] for n, t in draws.items()})
                evaluate = _glm.LinearizedEvaluator(self.model, self.mean, inputs, kwargs)
                if evaluate.f0.dim() != 2:
                    raise ValueError(f"classification needs logits of shape [N, C], got {tuple(evaluate.f0.shape)}")
                stats = _ClassStats("logits", return_samples)
                for chunk in deltas.chunks(chunk_size):
                    stats.add(evaluate(chunk))
                return stats.result()
            classify = self.likelihood == "classification"
            mean, var = self._glm_distribution(inputs, kwargs, False, jacobian_bytes, center=classify)
            if classify:
                if mean.dim() != 2:
                    raise ValueError(f"classification needs logits of shape [N, C], got {tuple(mean.shape)}")
                return _glm.probit_prediction(mean, var, n_samples=n_samples, generator=generator)
            aleatoric = torch.full_like(var, self.sigma_noise ** 2)
            return RegressionPrediction(mean, aleatoric + var, aleatoric, var)

    def glm_predictive_distribution(self, *inputs, full_cov: bool = False, jacobian_bytes: Optional[int] = None,
                                    **kwargs):
        """Mean ``f(x; theta*)`` and variance ``diag(J Sigma J^T)`` (shaped like the
        output; ``full_cov=True``: ``[N, K, K]`` per example) of the linearised
        outputs (logits for classification) under the posterior; see
        :func:`pybayes.glm.output_variance` for the memory bound."""
        self._require_fit()
        if not inputs:
            raise ValueError("glm_predictive_distribution needs the model's inputs")
        with _eval_mode(self.model), torch.no_grad():
            return self._glm_distribution(inputs, kwargs, full_cov, jacobian_bytes)

    def _glm_distribution(self, inputs, kwargs, full_cov, jacobian_bytes, center=False):
        return _glm.output_variance(self.model, self.mean, self.posterior_variance, inputs, kwargs,
                                    full_cov=full_cov, center=center, jacobian_bytes=jacobian_bytes)

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
