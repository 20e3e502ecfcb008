"""Bayesian model averaging over parameter samples, with the uncertainty split
into its aleatoric and epistemic parts.

The model is evaluated once per sample with ``torch.func.functional_call``,
vectorised over a chunk of samples with ``torch.func.vmap`` (chunks bound the
memory: ``chunk_size`` samples x the batch at a time), and the statistics are
accumulated chunk by chunk.

Classification (model returns logits, or probabilities with ``outputs="probs"``),
with ``p_s`` the predictive of sample ``s`` and ``p = mean_s p_s`` (all in nats):

* ``total     = H[p]``                 (entropy of the averaged predictive)
* ``aleatoric = mean_s H[p_s]``        (expected entropy: noise the model believes is in the data)
* ``epistemic = total - aleatoric``    (mutual information between label and parameters, >= 0)

Regression, with ``mu_s`` the mean the model returns for sample ``s``
(law of total variance for the equal-weight mixture of the samples' predictives):

* ``mean      = mean_s mu_s``
* ``epistemic = mean_s (mu_s - mean)^2`` (variance of the means, ``1/S`` normalised)
* ``aleatoric = mean_s sigma_s^2`` — the observation noise: a fixed ``noise_std``
  (``likelihood="regression"``), or a heteroscedastic head
  (``likelihood="heteroscedastic"``: the model returns ``(mean, log_var)``)
* ``variance  = aleatoric + epistemic``
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.func import functional_call, vmap

from .samples import SampleSet, as_sample_set

__all__ = ["predict", "ClassificationPrediction", "RegressionPrediction", "LIKELIHOODS"]

LIKELIHOODS = ("classification", "regression", "heteroscedastic")


@dataclass
class ClassificationPrediction:
    """Bayesian-model-average classification output (entropies in nats)."""

    probs: torch.Tensor          # [N, C] mean predictive probabilities
    total: torch.Tensor          # [N] entropy of probs
    aleatoric: torch.Tensor      # [N] expected entropy of the samples' predictives
    epistemic: torch.Tensor      # [N] mutual information = total - aleatoric
    sample_probs: Optional[torch.Tensor] = None  # [S, N, C] when return_samples=True

    @property
    def prediction(self) -> torch.Tensor:
        return self.probs.argmax(-1)

    @property
    def confidence(self) -> torch.Tensor:
        return self.probs.max(-1).values


@dataclass
class RegressionPrediction:
    """Bayesian-model-average regression output (variances per output element)."""

    mean: torch.Tensor
    variance: torch.Tensor       # aleatoric + epistemic
    aleatoric: torch.Tensor
    epistemic: torch.Tensor
    sample_means: Optional[torch.Tensor] = None  # [S, ...] when return_samples=True

    @property
    def std(self) -> torch.Tensor:
        return self.variance.sqrt()


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module, enabled: bool = True):
    """Eval mode (when ``enabled``) for the duration, then every module's own mode back."""
    was_training = {m: m.training for m in model.modules()}
    if enabled:
        model.eval()
    try:
        yield
    finally:
        for m, t in was_training.items():
            m.training = t


def _entropy_from_log(logp: torch.Tensor) -> torch.Tensor:
    # -sum p log p over the last dim, with 0 log 0 = 0
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


class _Evaluator:
    """Runs the model under a chunk of stacked samples."""

    def __init__(self, model, args, kwargs, vectorize, randomness):
        self.model, self.args, self.kwargs = model, args, kwargs
        self.vectorize, self.randomness = vectorize, randomness
        self.device = next(iter(model.parameters())).device
        self.dtypes = {n: p.dtype for n, p in model.named_parameters()}

    def __call__(self, chunk: SampleSet):
        params = {}
        for n, t in chunk.items():
            if n not in self.dtypes:
                raise KeyError(f"the samples hold parameter {n!r}, which the model does not have "
                               f"(model parameters: {sorted(self.dtypes)[:8]}...)")
            params[n] = t.to(device=self.device, dtype=self.dtypes[n], non_blocking=True)

        def run(p):
            return functional_call(self.model, p, self.args, self.kwargs, strict=False)

        if self.vectorize:
            return vmap(run, randomness=self.randomness)(params)
        outs = [run({n: t[i] for n, t in params.items()}) for i in range(len(chunk))]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(o) for o in zip(*outs))
        return torch.stack(outs)


@torch.no_grad()
def predict(model: torch.nn.Module, samples, *inputs, likelihood: str = "classification",
            noise_std=None, outputs: str = "logits", chunk_size: int = 32, vectorize: bool = True,
            eval_mode: bool = True, return_samples: bool = False, randomness: str = "error", **kwargs):
    """Bayesian model average of ``model(*inputs, **kwargs)`` over parameter ``samples``.

    ``samples``: a :class:`~pybayes.samples.SampleSet` (from
    :class:`~pybayes.samples.SampleCollector` or
    :meth:`~pybayes.laplace.DiagLaplace.sample`), a collector, a
    ``{name: tensor[S, ...]}`` dict or a list of ``{name: tensor}`` dicts.
    Parameters missing from the samples keep the model's values; buffers are the
    model's. ``likelihood``: ``"classification"`` (returns
    :class:`ClassificationPrediction`), ``"regression"`` with a fixed observation
    noise ``noise_std`` (a float or a tensor broadcastable to the output; ``0``
    for epistemic only) or ``"heteroscedastic"`` where the model returns
    ``(mean, log_var)`` (both return :class:`RegressionPrediction`).

    ``chunk_size`` samples are evaluated at once with ``vmap``
    (``vectorize=False``: one call per sample, for models vmap cannot handle).
    The model is put in eval mode for the call (``eval_mode=False`` keeps its
    mode; then pass ``randomness="different"`` for dropout under vmap).
    Statistics are computed in at least float32 (float64 for float64 models).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if outputs not in ("logits", "probs"):
        raise ValueError(f"outputs must be 'logits' or 'probs', got {outputs!r}")
    if likelihood == "regression" and noise_std is None:
        raise ValueError("likelihood='regression' needs noise_std (the observation noise sigma; "
                         "0.0 for the epistemic part only), or use likelihood='heteroscedastic'")
    if not inputs:
        raise ValueError("predict needs the model's inputs: predict(model, samples, x)")
    samples = as_sample_set(samples)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    with _eval_mode(model, eval_mode):
        evaluate = _Evaluator(model, inputs, kwargs, vectorize, randomness)
        if likelihood == "classification":
            return _classify(evaluate, samples, chunk_size, outputs, return_samples)
        return _regress(evaluate, samples, chunk_size, likelihood, noise_std, return_samples)


def _acc_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class _ClassStats:
    """Running sums of the predictive and of the samples' entropies over chunks
    of per-sample outputs ``[S, N, C]`` (logits, or probabilities with
    ``outputs="probs"``); :meth:`result` gives the prediction."""

    def __init__(self, outputs: str = "logits", keep: bool = False):
        self.outputs, self.keep = outputs, keep
        self.sum_p = self.sum_h = None
        self.count = 0
        self.kept = []

    def add(self, out: torch.Tensor) -> None:
        out = out.to(_acc_dtype(out))
        logp = torch.log_softmax(out, -1) if self.outputs == "logits" else torch.log(out)
        p = logp.exp() if self.outputs == "logits" else out
        h = _entropy_from_log(logp)
        if self.sum_p is None:
            self.sum_p, self.sum_h = p.sum(0), h.sum(0)
        else:
            self.sum_p += p.sum(0)
            self.sum_h += h.sum(0)
        self.count += out.shape[0]
        if self.keep:
            self.kept.append(p)

    def result(self, probs: Optional[torch.Tensor] = None) -> ClassificationPrediction:
        """The prediction; ``probs`` replaces the sample average as the predictive
        (e.g. a probit approximation) while the samples still give the expected
        entropy (the aleatoric part)."""
        probs = self.sum_p / self.count if probs is None else probs
        aleatoric = self.sum_h / self.count
        total = _entropy_from_log(torch.log(probs))
        epistemic = (total - aleatoric).clamp_min(0)
        return ClassificationPrediction(probs, total, aleatoric, epistemic,
                                        torch.cat(self.kept) if self.keep else None)


def _classify(evaluate, samples: SampleSet, chunk_size, outputs, return_samples):
    stats = _ClassStats(outputs, return_samples)
    for chunk in samples.chunks(chunk_size):
        out = evaluate(chunk)
        if isinstance(out, tuple):
            raise TypeError("for classification the model must return one tensor of logits [N, C]")
        stats.add(out)
    return stats.result()


def _regress(evaluate, samples: SampleSet, chunk_size, likelihood, noise_std, return_samples):
    n = 0
    mean = m2 = noise = None
    kept = []
    for chunk in samples.chunks(chunk_size):
        out = evaluate(chunk)
        if likelihood == "heteroscedastic":
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError("likelihood='heteroscedastic' needs a model returning (mean, log_var)")
            mu, log_var = out
            mu = mu.to(_acc_dtype(mu))
            var_c = torch.exp(log_var.to(mu.dtype)).sum(0)
        else:
            if isinstance(out, tuple):
                raise TypeError("likelihood='regression' needs a model returning one tensor (the mean); "
                                "for (mean, log_var) use likelihood='heteroscedastic'")
            mu = out.to(_acc_dtype(out))
            var_c = None
        k = mu.shape[0]
        mean_c = mu.mean(0)
        m2_c = ((mu - mean_c) ** 2).sum(0)
        if mean is None:
            n, mean, m2, noise = k, mean_c, m2_c, var_c
        else:  # Chan et al. merge of (count, mean, M2)
            tot = n + k
            delta = mean_c - mean
            mean = mean + delta * (k / tot)
            m2 = m2 + m2_c + delta ** 2 * (n * k / tot)
            n = tot
            if var_c is not None:
                noise = noise + var_c
        if return_samples:
            kept.append(mu)
    epistemic = m2 / n
    if likelihood == "heteroscedastic":
        aleatoric = noise / n
    else:
        sigma = torch.as_tensor(noise_std, dtype=mean.dtype, device=mean.device)
        if (sigma < 0).any():
            raise ValueError("noise_std must be >= 0")
        aleatoric = torch.broadcast_to(sigma ** 2, mean.shape).clone()
    return RegressionPrediction(mean, aleatoric + epistemic, aleatoric, epistemic,
                                torch.cat(kept) if return_samples else None)
