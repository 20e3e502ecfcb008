"""The chip section: the last-layer Laplace posterior covariance of the SGD
network, inverted on the simulated thermodynamic chip.

With ``phi_i`` the last hidden layer of example ``i`` augmented by a 1 (bias),
``p_i`` the softmax output and ``lambda`` the prior precision, the posterior
precision of the last layer's ``C x (H+1)`` weights (class-major) is the exact
generalised Gauss-Newton plus the prior,

    P = sum_i (diag(p_i) - p_i p_i^T) kron (phi_i phi_i^T) + lambda I,

a dense symmetric positive-definite matrix of size ``d = C (H+1)``; the
posterior covariance is ``Sigma = P^-1``. The chip computes it with
:func:`pybayes.thermo.inv`. The prior precision maximises the
last-layer Laplace evidence. The matrix is programmed in Jacobi-scaled form
``A = D^-1/2 P D^-1/2 / s`` (``D = diag(P)``, ``s`` the largest eigenvalue of the
scaled matrix, so the chip's fastest mode relaxes in one RC time constant and its
ADC reads every ``dt`` = 10 ``tau``), and ``Sigma = D^-1/2 A^-1 D^-1/2 / s``.
The result is compared with ``numpy.linalg.inv`` (relative Frobenius error), and
both covariances are used for last-layer Laplace predictions so the effect of
the chip's error on the predictions is visible.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .. import metrics
from ..laplace import evidence_optimal_precision
from .. import thermo

__all__ = ["ChipResult", "last_layer_precision", "run_chip", "last_layer_predict"]


@dataclass
class ChipResult:
    d: int
    hidden: int
    n_classes: int
    prior_precision: float
    condition_number: float              # of P
    condition_number_programmed: float   # of the Jacobi-scaled matrix the chip sees
    rel_error: float                     # |Sigma_chip - Sigma_numpy|_F / |Sigma_numpy|_F
    rel_stderr: float                    # the chip's own estimate of that error
    tol: float
    converged: bool
    chip_time_s: float                   # simulated physical seconds, total
    chip_time_parts: dict                # programming / burn_in / sampling / readout (s)
    chip_wall_s: float                   # wall time of the simulation on this machine
    numpy_wall_s: float                  # wall time of numpy.linalg.inv
    n_samples: int
    integrator: str
    config: dict
    metrics_numpy: dict                  # last-layer Laplace with the numpy covariance
    metrics_chip: dict                   # ... with the chip covariance

    def as_dict(self):
        return {k: v for k, v in self.__dict__.items()}


@torch.no_grad()
def last_layer_precision(model, x, prior_precision: float):
    """``P`` (float64 numpy, ``d x d``), the last-layer MAP ``theta`` (class-major
    ``[W | b]`` rows flattened) and the feature map used."""
    phi = model.features(x).double()
    phi = torch.cat([phi, torch.ones_like(phi[:, :1])], dim=1)                 # [n, H+1]
    p = torch.softmax(model(x).double(), dim=-1)                               # [n, C]
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]                  # [n, C, C]
    c, h1 = p.shape[1], phi.shape[1]
    ggn = torch.einsum("nab,ni,nj->aibj", lam, phi, phi).reshape(c * h1, c * h1)
    P = ggn + prior_precision * torch.eye(c * h1, dtype=torch.float64, device=ggn.device)
    P = 0.5 * (P + P.T)
    W, b = model.head.weight.detach().double(), model.head.bias.detach().double()
    theta = torch.cat([W, b[:, None]], dim=1).reshape(-1)
    return P.cpu().numpy(), theta.cpu().numpy()


@torch.no_grad()
def last_layer_predict(model, theta, cov, x, n_samples: int, seed: int):
    """Monte-Carlo predictive of the last-layer Gaussian ``N(theta, cov)``: mean
    probabilities and the epistemic part (mutual information) of the entropy."""
    c = model.head.out_features
    h1 = model.head.in_features + 1
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(cov + 1e-12 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))
    z = rng.standard_normal((n_samples, theta.size))
    thetas = torch.as_tensor(theta[None, :] + z @ L.T)                          # [S, d]
    phi = model.features(x).double().cpu()
    phi = torch.cat([phi, torch.ones_like(phi[:, :1])], dim=1)                  # [n, H+1]
    logits = torch.einsum("ni,sci->snc", phi, thetas.reshape(n_samples, c, h1))
    logp = torch.log_softmax(logits, -1)
    ps = logp.exp()
    probs = ps.mean(0)
    aleatoric = -(ps * logp).sum(-1).mean(0)
    total = -(probs * torch.log(probs.clamp_min(1e-300))).sum(-1)
    return probs, (total - aleatoric).clamp_min(0)


def _metrics(model, theta, cov, data, n_samples, seed):
    probs, epi = last_layer_predict(model, theta, cov, data.x_test, n_samples, seed)
    _, epi_ood = last_layer_predict(model, theta, cov, data.x_ood, n_samples, seed + 1)
    y = data.y_test.cpu()
    return {"accuracy": metrics.accuracy(probs, y), "nll": metrics.nll(probs, y), "ece": metrics.ece(probs, y),
            "brier": metrics.brier(probs, y), "auroc_epistemic": metrics.auroc_ood(epi, epi_ood)}


def evidence_prior_precision(ggn_eigenvalues: np.ndarray, theta: np.ndarray, bounds=(1e-6, 1e8)) -> float:
    """The prior precision maximising the last-layer Laplace evidence, with the
    full GGN's eigenvalues as the curvature."""
    return evidence_optimal_precision(np.clip(ggn_eigenvalues, 0.0, None), float(theta @ theta), bounds)


def run_chip(model, data, *, seed: int, tol: float = 0.05, dt: float = 10.0, n_pred_samples: int = 100,
             config_overrides=None) -> ChipResult:
    """Build ``P`` (prior precision from the last-layer evidence), invert it with
    numpy and on the chip, compare (see module docstring).

    ``tol``: the chip runs until its own relative standard error of ``A^-1``
    (Frobenius, batch means) is below ``tol``; a sample covariance of ``d``
    variables needs about ``(d + 1) / tol^2`` independent readings, so the chip
    time grows like ``d / tol^2`` slowest-mode time constants. ``dt``: ADC sample
    interval in units of ``tau`` (10: a 100 kHz ADC for a 1 µs chip; the slow modes
    that dominate the error decorrelate over ~1/lambda_min >> dt anyway)."""
    x_train = data.x_train
    ggn, theta = last_layer_precision(model, x_train, 0.0)
    prior_precision = evidence_prior_precision(np.linalg.eigvalsh(ggn), theta)
    P = ggn + prior_precision * np.eye(ggn.shape[0])
    d = P.shape[0]

    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        sigma_ref = np.linalg.inv(P)
        walls.append(time.perf_counter() - t0)
    numpy_wall = float(np.median(walls))

    dinv = 1.0 / np.sqrt(np.diag(P))
    scaled = P * dinv[:, None] * dinv[None, :]
    ev = np.linalg.eigvalsh(scaled)
    s = float(ev[-1])
    A = scaled / s
    lam_min = float(ev[0]) / s
    cfg_kw = dict(integrator="exact", dt=dt, seed=seed, chip_seed=seed)
    cfg_kw.update(config_overrides or {})
    cfg = thermo.ChipConfig(**cfg_kw)
    t0 = time.perf_counter()
    cap = 50.0 * (d + 1) / tol ** 2 / lam_min
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # not converging within the cap is reported below
        a_inv, info = thermo.inv(A, tol=tol, time=cap, burn_in=10.0 / lam_min, config=cfg, return_info=True)
    chip_wall = time.perf_counter() - t0
    sigma_chip = a_inv * dinv[:, None] * dinv[None, :] / s
    sigma_chip = 0.5 * (sigma_chip + sigma_chip.T)
    rel = float(np.linalg.norm(sigma_chip - sigma_ref) / np.linalg.norm(sigma_ref))

    ev_p = np.linalg.eigvalsh(P)
    m_ref = _metrics(model, theta, sigma_ref, data, n_pred_samples, seed)
    # the chip's estimate is a sample covariance: symmetric PSD up to its noise
    w, V = np.linalg.eigh(sigma_chip)
    sigma_chip_psd = (V * np.clip(w, 0, None)) @ V.T
    m_chip = _metrics(model, theta, sigma_chip_psd, data, n_pred_samples, seed)
    return ChipResult(
        d=d, hidden=model.head.in_features, n_classes=model.head.out_features,
        prior_precision=float(prior_precision),
        condition_number=float(ev_p[-1] / ev_p[0]), condition_number_programmed=float(ev[-1] / ev[0]),
        rel_error=rel, rel_stderr=float(info.rel_stderr), tol=tol, converged=bool(info.converged), chip_time_s=float(info.time_total),
        chip_time_parts={"programming": info.time_programming, "burn_in": info.time_burn_in,
                         "sampling": info.time_sampling, "readout": info.time_readout},
        chip_wall_s=chip_wall, numpy_wall_s=numpy_wall, n_samples=int(info.n_samples),
        integrator=info.integrator,
        config={k: getattr(cfg, k) for k in ("tau", "beta", "integrator", "dt", "dac_bits", "adc_bits",
                                             "adc_range", "mismatch", "seed", "dac_rate", "readout_rate")},
        metrics_numpy=m_ref, metrics_chip=m_chip,
    )
