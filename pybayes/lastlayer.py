"""Last-layer Laplace approximation with a full covariance.

The network up to its last ``nn.Linear`` is a fixed feature map ``phi(x)``
(``H`` features, augmented by a 1 when the layer has a bias: ``H1 = H + 1``);
only the last layer's ``C x H1`` weights ``theta`` (class-major: row ``a`` of
``[W | b]``, flattened; ``d = C H1``) get a Gaussian posterior. The output is
linear in ``theta``, ``f(x) = (I_C kron phi(x)^T) theta``, so the generalised
Gauss-Newton is the exact Hessian of the negative log-likelihood in ``theta``
for softmax and Gaussian likelihoods:

    classification:  G = sum_i (diag(p_i) - p_i p_i^T) kron phi_i phi_i^T
    regression:      G = I_C kron (sum_i phi_i phi_i^T) / sigma^2

(accumulated as ``C`` diagonal ``H1 x H1`` blocks minus ``U^T U`` with
``U_i = p_i kron phi_i``: ``O(n d^2)`` in all, in float64). With an isotropic
prior ``N(0, 1/lambda)`` the posterior is ``N(theta*, T (G + lambda I)^-1)``
(``temperature = T`` as in :class:`~pybayes.laplace.DiagLaplace`). The Laplace
evidence uses the eigenvalues of ``G`` (computed once by :meth:`fit`), and
:meth:`optimize_prior_precision` maximises it with
:func:`pybayes.laplace.evidence_optimal_precision` (unique maximiser).

Predictions are the linearised (GLM) predictive, which for a last layer is the
network itself (it is linear in ``theta``). Per input, the logits are Gaussian
with covariance ``S_ab = phi^T Sigma_ab phi`` (``Sigma_ab`` the ``H1 x H1`` block
of classes ``a, b``): the probit needs only the variances of the centred logits,
``phi^T (Sigma_aa - 2/C sum_b Sigma_ab + 1/C^2 sum_bc Sigma_bc) phi``, i.e. ``C``
blocks formed once (``O(C H1^2)`` per input, never a ``C x d`` Jacobian or a
``d x d`` product per input); ``link_approx="mc"`` draws ``theta`` from the posterior once
(``O(d^2)`` per draw) and evaluates ``phi^T theta_s`` (``O(d)`` per input and draw).

Backends for ``Sigma = T (G + lambda I)^-1``:

* ``"lapack"``: float64 Cholesky inverse (``torch.linalg``);
* ``"thermo"``: the simulated thermodynamic chip (:func:`pybayes.thermo.inv`
  with ``tol``). The matrix is programmed in Jacobi-scaled form
  ``A = D^-1/2 P D^-1/2 / s`` (``P = G + lambda I``, ``D = diag(P)``, ``s`` the
  largest eigenvalue of the scaled matrix, so the chip's fastest mode relaxes in
  one RC time constant) and ``Sigma = T D^-1/2 A^-1 D^-1/2 / s``. The chip's
  estimate is a sample covariance: it is symmetrised and projected onto the
  positive semi-definite cone before it is used. LAPACK's inverse is computed
  too, and :attr:`LastLayerLaplace.inversion` reports the chip's simulated time,
  its error against LAPACK and both wall times.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from . import thermo as _thermo
from .fisher import _batches
from .glm import probit_prediction
from .laplace import evidence_optimal_precision
from .predict import RegressionPrediction, _acc_dtype, _ClassStats, _eval_mode
from .samples import SampleSet

__all__ = ["LastLayerLaplace", "InversionInfo", "BACKENDS"]

BACKENDS = ("lapack", "thermo")
LIKELIHOODS = ("classification", "regression")
_CHUNK_ELEMS = 1 << 22


@dataclass
class InversionInfo:
    """How the posterior covariance was computed.

    ``lapack_wall_s``: median wall time of the float64 Cholesky inverse over
    ``repeats`` runs; for ``backend="thermo"`` also: ``rel_error`` =
    ``|Sigma_chip - Sigma_lapack|_F / |Sigma_lapack|_F`` (before the PSD
    projection), ``rel_stderr`` (the chip's own estimate of its relative error of
    ``A^-1``), ``tol``, ``converged``, ``chip_time_s`` (simulated seconds) and
    ``chip_time_parts`` (programming / burn_in / sampling / readout),
    ``chip_wall_s`` (wall time of the simulation), ``n_samples`` (ADC samples),
    ``integrator``, ``condition_number_programmed`` (of ``A``) and ``info``
    (the :class:`pybayes.thermo.ThermoInfo`)."""

    backend: str
    d: int
    condition_number: float
    lapack_wall_s: float
    repeats: int
    rel_error: Optional[float] = None
    rel_stderr: Optional[float] = None
    tol: Optional[float] = None
    converged: Optional[bool] = None
    chip_time_s: Optional[float] = None
    chip_time_parts: dict = field(default_factory=dict)
    chip_wall_s: Optional[float] = None
    n_samples: Optional[int] = None
    integrator: Optional[str] = None
    condition_number_programmed: Optional[float] = None
    info: object = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "info"}


def _positive(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    v = float(v)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    return v


def _find_last_linear(model):
    last = None
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            last = (name, m)
    if last is None:
        raise ValueError("the model has no torch.nn.Linear module; pass last_layer=<module name>")
    return last


class LastLayerLaplace:
    """Laplace approximation of the last linear layer's posterior, full covariance.

    ``likelihood``: ``"classification"`` (the model returns the layer's logits)
    or ``"regression"`` (Gaussian, standard deviation ``sigma_noise``).
    ``last_layer``: the module name of that ``nn.Linear`` (default: the last
    ``nn.Linear`` in ``model.named_modules()``); the model's output must be
    this layer's output. ``prior_precision``: ``lambda`` of the isotropic prior.
    ``backend``: ``"lapack"`` or ``"thermo"`` (``thermo_tol``: the chip's target
    relative standard error; ``thermo_config``: a
    :class:`pybayes.thermo.ChipConfig`, default ``ChipConfig()``; ``thermo_time``:
    cap on the simulated window in units of ``tau``, default
    ``50 (d + 1) / tol^2 / lambda_min(A)``).

    Usage::

        la = LastLayerLaplace(model, "classification")
        la.fit(train_loader)                 # at the current (MAP) weights
        la.optimize_prior_precision()        # maximise the evidence over lambda
        pred = la.predict(x)                 # GLM predictive, probit
    """

    def __init__(self, model: torch.nn.Module, likelihood: str = "classification", *,
                 last_layer: Optional[str] = None, prior_precision: float = 1.0, temperature: float = 1.0,
                 sigma_noise: float = 1.0, backend: str = "lapack", thermo_tol: float = 0.05,
                 thermo_config: Optional["_thermo.ChipConfig"] = None, thermo_time: Optional[float] = None):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if last_layer is None:
            name, layer = _find_last_linear(model)
        else:
            modules = dict(model.named_modules())
            if last_layer not in modules:
                raise ValueError(f"last_layer={last_layer!r} is not a module of the model")
            name, layer = last_layer, modules[last_layer]
            if not isinstance(layer, torch.nn.Linear):
                raise ValueError(f"last_layer={last_layer!r} must be a torch.nn.Linear, got {type(layer).__name__}")
        if thermo_config is not None and not isinstance(thermo_config, _thermo.ChipConfig):
            raise ValueError(f"thermo_config must be a pybayes.thermo.ChipConfig, got {type(thermo_config).__name__}")
        self.model, self.likelihood = model, likelihood
        self.layer_name, self.layer = name, layer
        self.temperature = _positive(temperature, "temperature")
        self.sigma_noise = _positive(sigma_noise, "sigma_noise")
        self.prior_precision = prior_precision
        self.backend = backend
        self.thermo_tol = _positive(thermo_tol, "thermo_tol")
        self.thermo_config = thermo_config
        self.thermo_time = None if thermo_time is None else _positive(thermo_time, "thermo_time")
        self.n_classes = layer.out_features
        self.n_features = layer.in_features
        self.has_bias = layer.bias is not None
        self.h1 = self.n_features + int(self.has_bias)
        self.d = self.n_classes * self.h1
        self.ggn: Optional[torch.Tensor] = None
        self.mean: Optional[torch.Tensor] = None
        self.log_likelihood: Optional[float] = None
        self.n_data = 0
        self._eig = None
        self._cache = {}

    # -- prior -------------------------------------------------------------------------

    @property
    def prior_precision(self) -> float:
        return self._prior

    @prior_precision.setter
    def prior_precision(self, value):
        self._prior = _positive(value, "prior_precision")

    # -- features ----------------------------------------------------------------------

    def _forward(self, inputs, kwargs=None):
        """``(phi augmented [n, H1] float64, model output)`` in eval mode."""
        got = {}

        def hook(module, args, out):
            got["phi"], got["out"] = args[0], out

        handle = self.layer.register_forward_hook(hook)
        try:
            with _eval_mode(self.model), torch.no_grad():
                out = self.model(*inputs, **(kwargs or {}))
        finally:
            handle.remove()
        if "phi" not in got:
            raise RuntimeError(f"the last layer {self.layer_name!r} was not called by the model's forward")
        if isinstance(out, tuple) or out is not got["out"]:
            raise ValueError(f"the model's output must be the output of its last layer {self.layer_name!r} "
                             "(pass last_layer= if another nn.Linear is the output layer)")
        phi = got["phi"]
        if phi.dim() != 2:
            raise ValueError(f"the last layer's input must be [N, features], got {tuple(phi.shape)}")
        phi = phi.detach().double()
        if self.has_bias:
            phi = torch.cat([phi, torch.ones_like(phi[:, :1])], dim=1)
        return phi, out

    # -- fit ---------------------------------------------------------------------------

    def fit(self, data) -> "LastLayerLaplace":
        """Exact last-layer GGN and log-likelihood over ``data`` (an iterable of
        ``(inputs, targets)`` batches or one pair of tensors) at the current weights."""
        c, h1 = self.n_classes, self.h1
        dev = self.layer.weight.device
        g = torch.zeros(self.d, self.d, dtype=torch.float64, device=dev)
        g4 = g.view(c, h1, c, h1)
        idx = torch.arange(c, device=dev)
        nll, n = 0.0, 0
        for x, y in _batches(data):
            x, y = x.to(dev), y.to(dev)
            phi, out = self._forward((x,))
            if y.shape[0] != phi.shape[0]:
                raise ValueError(f"inputs have {phi.shape[0]} examples, targets {y.shape[0]}")
            out = out.double()
            if self.likelihood == "classification":
                p = torch.softmax(out, -1)
                g4[idx, :, idx, :] += torch.einsum("na,ni,nj->aij", p, phi, phi)
                u = (p[:, :, None] * phi[:, None, :]).reshape(phi.shape[0], self.d)
                g -= u.T @ u
                nll += torch.nn.functional.cross_entropy(out, y.long(), reduction="sum").item()
            else:
                g4[idx, :, idx, :] += (phi.T @ phi / self.sigma_noise ** 2)[None]
                r = out - y.reshape(out.shape).double()
                nll += (0.5 * (r * r).sum() / self.sigma_noise ** 2
                        + 0.5 * r.numel() * math.log(2 * math.pi * self.sigma_noise ** 2)).item()
            n += phi.shape[0]
        if n == 0:
            raise ValueError("the data set is empty")
        self.ggn = 0.5 * (g + g.T)
        w = self.layer.weight.detach().double()
        theta = torch.cat([w, self.layer.bias.detach().double()[:, None]], 1) if self.has_bias else w
        self.mean = theta.reshape(-1).clone()
        self.log_likelihood = -nll
        self.n_data = n
        self._eig = torch.linalg.eigvalsh(self.ggn).clamp_min(0.0)
        self._cache = {}
        return self

    def _require_fit(self):
        if self.ggn is None:
            raise RuntimeError("call LastLayerLaplace.fit(data) first")

    # -- evidence ----------------------------------------------------------------------

    def log_marginal_likelihood(self, prior_precision: Optional[float] = None) -> float:
        """Laplace estimate of ``log p(D)`` (T = 1) at ``prior_precision`` (default: the current one):
        ``log p(D|theta*) - lambda/2 |theta*|^2 + d/2 log lambda - 1/2 log det(G + lambda I)``."""
        self._require_fit()
        lam = self._prior if prior_precision is None else _positive(prior_precision, "prior_precision")
        sq = float(self.mean @ self.mean)
        return (self.log_likelihood - 0.5 * lam * sq + 0.5 * self.d * math.log(lam)
                - 0.5 * torch.log(self._eig + lam).sum().item())

    def optimize_prior_precision(self, *, bounds=(1e-8, 1e8)) -> float:
        """Set ``prior_precision`` to the maximiser of :meth:`log_marginal_likelihood` and return it."""
        self._require_fit()
        self.prior_precision = evidence_optimal_precision(self._eig, float(self.mean @ self.mean), bounds)
        return self.prior_precision

    # -- posterior ---------------------------------------------------------------------

    @property
    def posterior_precision(self) -> torch.Tensor:
        """``(G + lambda I) / T``, ``d x d`` float64."""
        self._require_fit()
        return (self.ggn + self._prior * torch.eye(self.d, dtype=torch.float64, device=self.ggn.device)) \
            / self.temperature

    def _lapack(self, prec):
        chol = torch.linalg.cholesky(prec)
        return torch.cholesky_inverse(chol)

    def _compute(self, backend):
        key = (backend, self._prior, self.temperature)
        if key in self._cache:
            return self._cache[key]
        p = self.ggn + self._prior * torch.eye(self.d, dtype=torch.float64, device=self.ggn.device)
        repeats = 1 if backend == "lapack" else 5
        walls = []
        for _ in range(repeats):
            t0 = _time.perf_counter()
            sigma_ref = self._lapack(p)
            walls.append(_time.perf_counter() - t0)
        ev_p = torch.linalg.eigvalsh(p)
        info = InversionInfo(backend=backend, d=self.d, condition_number=float(ev_p[-1] / ev_p[0]),
                             lapack_wall_s=float(np.median(walls)), repeats=repeats)
        sigma_ref = self.temperature * 0.5 * (sigma_ref + sigma_ref.T)
        sigma = sigma_ref if backend == "lapack" else self._thermo(p, sigma_ref, info)
        chol, bad = torch.linalg.cholesky_ex(sigma)
        jitter = 1e-12 * float(sigma.diagonal().mean())
        while int(bad) != 0:  # the chip's PSD-projected estimate can be singular: smallest jitter that works
            eye = torch.eye(self.d, dtype=sigma.dtype, device=sigma.device)
            chol, bad = torch.linalg.cholesky_ex(sigma + jitter * eye)
            jitter *= 10.0
        self._cache[key] = (sigma, chol, info)
        return self._cache[key]

    def _thermo(self, p, sigma_ref, info: InversionInfo):
        pn = p.cpu().numpy()
        dinv = 1.0 / np.sqrt(np.diag(pn))
        scaled = pn * dinv[:, None] * dinv[None, :]
        ev = np.linalg.eigvalsh(scaled)
        s = float(ev[-1])
        a = scaled / s
        lam_min = float(ev[0]) / s
        tol = self.thermo_tol
        cap = self.thermo_time if self.thermo_time is not None else 50.0 * (self.d + 1) / tol ** 2 / lam_min
        cfg = self.thermo_config if self.thermo_config is not None else _thermo.ChipConfig()
        t0 = _time.perf_counter()
        a_inv, tinfo = _thermo.inv(a, tol=tol, time=cap, burn_in=10.0 / lam_min, config=cfg, return_info=True)
        info.chip_wall_s = _time.perf_counter() - t0
        sigma = self.temperature * a_inv * dinv[:, None] * dinv[None, :] / s
        sigma = torch.as_tensor(0.5 * (sigma + sigma.T), dtype=torch.float64, device=p.device)
        info.rel_error = float(torch.linalg.norm(sigma - sigma_ref) / torch.linalg.norm(sigma_ref))
        info.rel_stderr = float(tinfo.rel_stderr)
        info.tol, info.converged = tol, bool(tinfo.converged)
        info.chip_time_s = float(tinfo.time_total)
        info.chip_time_parts = {"programming": float(tinfo.time_programming), "burn_in": float(tinfo.time_burn_in),
                                "sampling": float(tinfo.time_sampling), "readout": float(tinfo.time_readout)}
        info.n_samples = int(tinfo.n_samples)
        info.integrator = tinfo.integrator
        info.condition_number_programmed = float(ev[-1] / ev[0])
        info.info = tinfo
        # a sample covariance: symmetric, positive semi-definite only up to its noise
        w, v = torch.linalg.eigh(sigma)
        return (v * w.clamp_min(0.0)) @ v.T

    def covariance(self, backend: Optional[str] = None) -> torch.Tensor:
        """``Sigma = T (G + lambda I)^-1`` (``d x d`` float64) from ``backend``
        (default: the approximation's); cached per prior precision and temperature."""
        self._require_fit()
        return self._compute(self._backend(backend))[0]

    @property
    def posterior_covariance(self) -> torch.Tensor:
        return self.covariance()

    @property
    def inversion(self) -> InversionInfo:
        """:class:`InversionInfo` of the backend's covariance (computes it if needed)."""
        self._require_fit()
        return self._compute(self.backend)[2]

    def _backend(self, backend):
        backend = self.backend if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        return backend

    # -- samples and predictions -------------------------------------------------------

    def _normal(self, shape, generator):
        dev = self.ggn.device
        z = torch.randn(shape, generator=generator, dtype=torch.float64,
                        device=generator.device if generator is not None else dev)
        return z.to(dev)

    def sample(self, n_samples: int = 100, *, generator: Optional[torch.Generator] = None,
               backend: Optional[str] = None) -> SampleSet:
        """``n_samples`` draws of the last layer as a :class:`~pybayes.samples.SampleSet`
        (``{"<layer>.weight": [S, C, H], "<layer>.bias": [S, C]}``, the layer's dtype):
        :func:`pybayes.predict.predict` with it gives the same predictive as
        ``predict(link_approx="mc")``."""
        self._require_fit()
        n_samples = int(n_samples)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        _, chol, _ = self._compute(self._backend(backend))
        theta = (self.mean + self._normal((n_samples, self.d), generator) @ chol.T)
        theta = theta.reshape(n_samples, self.n_classes, self.h1).to(self.layer.weight.dtype)
        out = {f"{self.layer_name}.weight" if self.layer_name else "weight": theta[:, :, :self.n_features]}
        if self.has_bias:
            out[f"{self.layer_name}.bias" if self.layer_name else "bias"] = theta[:, :, -1]
        return SampleSet(out)

    def _block_variance(self, phi, sigma, full_cov, center=False):
        c, h1 = self.n_classes, self.h1
        s4 = sigma.view(c, h1, c, h1)
        n = phi.shape[0]
        if full_cov:
            out = torch.empty(n, c, c, dtype=torch.float64, device=phi.device)
            step = max(1, _CHUNK_ELEMS // (c * c * h1))
            for s in range(0, n, step):
                f = phi[s:s + step]
                out[s:s + step] = torch.einsum("naib,ni->nab", torch.einsum("aibj,nj->naib", s4, f), f)
            return out
        idx = torch.arange(c, device=phi.device)
        blocks = s4[idx, :, idx, :]                              # [C, H1, H1]: the class blocks
        if center:  # var(f_a - mean_b f_b): Sigma_aa - (2/C) sum_b Sigma_ab + (1/C^2) sum_bc Sigma_bc
            rows = s4.sum(2)                                     # [C, H1, H1]
            rows = 0.5 * (rows + rows.transpose(1, 2))
            blocks = blocks - (2.0 / c) * rows + rows.sum(0)[None] / c ** 2
        out = torch.empty(n, c, dtype=torch.float64, device=phi.device)
        step = max(1, _CHUNK_ELEMS // (c * h1))
        for s in range(0, n, step):
            f = phi[s:s + step]
            out[s:s + step] = (torch.einsum("aij,nj->nai", blocks, f) * f[:, None, :]).sum(-1)
        return out

    def glm_predictive_distribution(self, *inputs, full_cov: bool = False, backend: Optional[str] = None,
                                    **kwargs):
        """Mean (the model's output, ``[N, C]``) and variance ``phi^T Sigma_aa phi``
        (``[N, C]``; ``full_cov=True``: ``[N, C, C]``) of the outputs, float64."""
        self._require_fit()
        if not inputs:
            raise ValueError("glm_predictive_distribution needs the model's inputs")
        sigma = self._compute(self._backend(backend))[0]
        phi, out = self._forward(inputs, kwargs)
        return out.double(), self._block_variance(phi, sigma, full_cov)

    def predict(self, *inputs, link_approx: str = "probit", n_samples: int = 100,
                generator: Optional[torch.Generator] = None, chunk_size: int = 32,
                backend: Optional[str] = None, return_samples: bool = False, **kwargs):
        """Bayesian predictive at ``inputs`` (keyword arguments go to the model).

        Classification: ``link_approx="probit"`` (default) from the class blocks'
        variances of the centred logits (:func:`pybayes.glm.probit_prediction`), with the aleatoric/epistemic split from ``n_samples`` draws of
        the diagonal Gaussian logits; ``"mc"``: ``n_samples`` posterior draws of the
        last layer (``chunk_size`` at a time; ``return_samples=True`` keeps their
        probabilities). Regression: mean, epistemic ``phi^T Sigma_aa phi``,
        aleatoric ``sigma_noise^2``. ``backend``: which covariance (default: the
        approximation's; ``"lapack"`` to compare with the chip's)."""
        self._require_fit()
        if link_approx not in ("probit", "mc"):
            raise ValueError(f"link_approx must be 'probit' or 'mc', got {link_approx!r}")
        if not inputs:
            raise ValueError("predict needs the model's inputs: la.predict(x)")
        if return_samples and not (self.likelihood == "classification" and link_approx == "mc"):
            raise ValueError("return_samples=True needs likelihood='classification' and link_approx='mc'")
        backend = self._backend(backend)
        sigma, chol, _ = self._compute(backend)
        phi, out = self._forward(inputs, kwargs)
        acc = _acc_dtype(out)
        f0 = out.double()
        if self.likelihood == "classification" and link_approx == "mc":
            n_samples, chunk_size = int(n_samples), int(chunk_size)
            if n_samples < 1 or chunk_size < 1:
                raise ValueError(f"n_samples and chunk_size must be >= 1, got {n_samples}, {chunk_size}")
            stats = _ClassStats("logits", return_samples)
            for s in range(0, n_samples, chunk_size):
                k = min(chunk_size, n_samples - s)
                delta = (self._normal((k, self.d), generator) @ chol.T).reshape(k, self.n_classes, self.h1)
                stats.add((f0[None] + torch.einsum("ni,sci->snc", phi, delta)).to(acc))
            return stats.result()
        classify = self.likelihood == "classification"
        var = self._block_variance(phi, sigma, False, center=classify)
        if classify:
            f0 = f0 - f0.mean(-1, keepdim=True)
            return probit_prediction(f0.to(acc), var.to(acc), n_samples=n_samples, generator=generator)
        mean, var = f0.to(acc), var.to(acc).reshape(out.shape)
        aleatoric = torch.full_like(var, self.sigma_noise ** 2)
        return RegressionPrediction(mean, aleatoric + var, aleatoric, var)

    def __repr__(self):
        state = "not fitted" if self.ggn is None else f"fitted on {self.n_data} examples"
        return (f"LastLayerLaplace({self.likelihood}, layer {self.layer_name!r}: {self.n_classes} x {self.h1} = "
                f"{self.d} weights, prior_precision={self._prior:.4g}, temperature={self.temperature:g}, "
                f"backend={self.backend!r}, {state})")

