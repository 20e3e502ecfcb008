"""The linearised ("GLM") predictive of a Gaussian posterior over a network's
parameters, in bounded memory.

Around the posterior mean ``theta*`` the network is replaced by its first-order
Taylor expansion in the parameters,

    f_lin(x; theta) = f(x; theta*) + J(x) (theta - theta*),       J(x) = df/dtheta at theta*,

so a Gaussian posterior ``N(theta*, Sigma)`` gives Gaussian outputs
``N(f(x; theta*), J(x) Sigma J(x)^T)`` (Immer et al. 2021; laplace-torch's
``pred_type="glm"``). Two ways to use it without ever forming the Jacobian of
the whole batch:

* :func:`output_variance`: ``diag(J Sigma J^T)`` (or the full ``K x K`` output
  covariance) for a diagonal ``Sigma``, from per-example vector-Jacobian
  products, one per output, vmapped over a chunk of (examples x outputs) whose
  Jacobian rows fit in ``jacobian_bytes`` (default 256 MiB) and reduced at once;
* :class:`LinearizedEvaluator`: samples of ``f_lin`` for parameter draws
  ``theta_s``, each one forward-mode Jacobian-vector product
  ``J (theta_s - theta*)`` (``torch.func.jvp``), vmapped over a chunk of draws.

For classification, :func:`probit_prediction` turns the logits' mean and
variance into probabilities with the probit approximation
``softmax(mean / sqrt(1 + pi/8 var))`` (MacKay 1992; the multi-class form of
laplace-torch's ``link_approx="probit"``), applied to the *centred* logits
``f - mean_c f_c`` (the softmax ignores a common shift; see
:func:`probit_prediction`).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch.func import functional_call, jacrev, jvp, vmap

from .predict import ClassificationPrediction, _acc_dtype, _ClassStats

__all__ = ["probit", "probit_prediction", "output_variance", "LinearizedEvaluator", "DEFAULT_JACOBIAN_BYTES"]

DEFAULT_JACOBIAN_BYTES = 256 << 20


def probit(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """The probit approximation of ``E[softmax(f)]`` for ``f ~ N(mean, diag(var))``
    (last dimension = classes): ``softmax(mean / sqrt(1 + pi/8 var))``."""
    return torch.softmax(mean / torch.sqrt(1.0 + (math.pi / 8.0) * var), dim=-1)


def _normal(shape, generator: Optional[torch.Generator], dtype, device):
    z = torch.randn(shape, generator=generator, dtype=dtype,
                    device=generator.device if generator is not None else device)
    return z.to(device)


def probit_prediction(mean: torch.Tensor, var: torch.Tensor, *, n_samples: int = 100,
                      generator: Optional[torch.Generator] = None) -> ClassificationPrediction:
    """Classification prediction from Gaussian logits ``N(mean, diag(var))``
    (``[N, C]`` each; pass the *centred* logits' moments, see below): ``probs``
    by the probit approximation; the aleatoric part
    (expected entropy of the softmax) from ``n_samples`` draws of the logits
    from the same diagonal Gaussian (output space only: no network evaluation),
    in antithetic pairs ``mean +- std z`` (rounded up to an even number), which
    cancels the estimate's first-order noise: the mutual information is second
    order in ``std``, so without the pairs a small epistemic part would drown in
    noise;
    ``total = H[probs]``, ``epistemic = total - aleatoric`` clipped at 0.

    Centring: the softmax ignores a common shift of all logits, so the
    predictive depends on the centred logits ``f - mean_c f_c`` only, whose
    covariance is ``M S M`` (``M = I - 11^T/C``). The probit, which treats the
    logits as independent, is applied to those: the variance along the shift
    direction (large under a prior-dominated posterior: the likelihood's
    curvature is exactly zero there) would otherwise flatten every class's
    probability although it changes no prediction. (laplace-torch's probit uses
    the raw logits' variance.)"""
    n_samples = int(n_samples)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    mean = mean.to(_acc_dtype(mean))
    var = var.to(mean.dtype).clamp_min(0)
    stats = _ClassStats("logits")
    std = var.sqrt()
    half = (n_samples + 1) // 2
    step = max(1, (8 << 20) // max(1, mean.numel()))
    for s in range(0, half, step):
        z = _normal((min(step, half - s),) + tuple(mean.shape), generator, mean.dtype, mean.device)
        stats.add(mean + std * torch.cat([z, -z]))
    return stats.result(probit(mean, var))


def _centred(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(-1, keepdim=True)


def _call(model, params, inputs, kwargs):
    return functional_call(model, params, inputs, kwargs, strict=False)


def output_variance(model: torch.nn.Module, params: Dict[str, torch.Tensor], variance: Dict[str, torch.Tensor],
                    inputs: Tuple[torch.Tensor, ...], kwargs: Optional[dict] = None, *, full_cov: bool = False,
                    center: bool = False,
                    jacobian_bytes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the linearised outputs under ``N(params, diag(variance))``.

    ``params``, ``variance``: ``{name: tensor}`` for the parameters the posterior
    covers (the others keep the model's values). ``inputs``: tensors with the
    examples on dim 0 (evaluated one example at a time under ``vmap``, so the
    model must treat examples independently: eval mode). Returns ``mean`` =
    ``f(x; params)`` (shape of the model's output ``[N, *out]``) and ``var``:
    ``diag(J Sigma J^T)`` shaped like ``mean``, or with ``full_cov=True`` the
    ``[N, K, K]`` covariance of the ``K = prod(out)`` outputs of each example.
    ``center=True``: of the centred outputs ``f - mean_k f_k`` instead (logits
    ``[N, C]``; see :func:`probit_prediction`).

    Memory: the Jacobian rows of ``b`` examples x ``k`` outputs (``P`` numbers
    each) are held at once, with ``b * k * P * bytes <= jacobian_bytes``
    (at least one row; ``full_cov`` needs all ``K`` rows of one example)."""
    kwargs = dict(kwargs or {})
    budget = DEFAULT_JACOBIAN_BYTES if jacobian_bytes is None else int(jacobian_bytes)
    if budget < 1:
        raise ValueError(f"jacobian_bytes must be >= 1, got {jacobian_bytes}")
    names = list(variance)
    params = {n: params[n] for n in names}
    mean = _call(model, params, inputs, kwargs)
    if isinstance(mean, tuple):
        raise TypeError("the linearised predictive needs a model returning one tensor")
    if center:
        mean = _centred(mean)
    n_ex = mean.shape[0]
    k_out = mean[0].numel() if n_ex else 1
    acc = _acc_dtype(mean)
    row_bytes = max(1, sum(p.numel() * p.element_size() for p in params.values()))
    rows = max(1, budget // row_bytes)
    k_chunk = k_out if full_cov else min(k_out, rows)
    b_chunk = max(1, rows // k_chunk)
    out = torch.empty((n_ex, k_out, k_out) if full_cov else (n_ex, k_out), dtype=acc, device=mean.device)
    sqrt_v = {n: variance[n].to(acc).sqrt() for n in names}
    for s in range(0, n_ex, b_chunk):
        xs = tuple(t[s:s + b_chunk] for t in inputs)
        b = xs[0].shape[0]
        for c0 in range(0, k_out, k_chunk):
            c1 = min(k_out, c0 + k_chunk)

            def rows_of(p, *x, c0=c0, c1=c1):
                o = _call(model, p, tuple(t.unsqueeze(0) for t in x), kwargs)
                return (_centred(o) if center else o).reshape(-1)[c0:c1]

            jac = vmap(jacrev(rows_of), in_dims=(None,) + (0,) * len(xs))(params, *xs)  # {n: [b, k, *shape]}
            u = torch.cat([(jac[n].to(acc) * sqrt_v[n]).reshape(b, c1 - c0, -1) for n in names], dim=-1)
            if full_cov:
                out[s:s + b] = u @ u.transpose(1, 2)
            else:
                out[s:s + b, c0:c1] = u.square().sum(-1)
            del jac, u
    var = out if full_cov else out.reshape(mean.shape)
    return mean.to(acc), var


class LinearizedEvaluator:
    """``f_lin(x; theta_s) = f(x; theta*) + J(x) (theta_s - theta*)`` for a chunk
    of parameter draws (a :class:`~pybayes.samples.SampleSet` of the
    *deviations* ``theta_s - theta*``), one ``torch.func.jvp`` per draw, vmapped
    over the chunk: memory of ``len(chunk)`` forward passes, never a Jacobian.
    Returns ``[S, N, *out]``."""

    def __init__(self, model, params: Dict[str, torch.Tensor], inputs, kwargs=None):
        self.model, self.inputs, self.kwargs = model, tuple(inputs), dict(kwargs or {})
        self.params = dict(params)
        self.f0 = self._f(self.params)
        if isinstance(self.f0, tuple):
            raise TypeError("the linearised predictive needs a model returning one tensor")

    def _f(self, p):
        return _call(self.model, p, self.inputs, self.kwargs)

    def __call__(self, deltas) -> torch.Tensor:
        names = list(self.params)
        tangents = {n: deltas[n].to(self.params[n].dtype) for n in names}

        def one(t):
            return jvp(self._f, (self.params,), (t,))[1]

        return self.f0.unsqueeze(0) + vmap(one)(tangents)
