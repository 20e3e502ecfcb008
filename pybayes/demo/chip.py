"""The chip section: the last-layer Laplace posterior covariance of the SGD
network, inverted on the simulated thermodynamic chip.

A use of :class:`pybayes.lastlayer.LastLayerLaplace` with ``backend="thermo"``:
the exact last-layer GGN of the ``C x (H+1)`` head weights plus the
evidence-optimal prior precision is a dense symmetric positive-definite matrix
``P`` of size ``d = C (H+1)``; the chip estimates ``Sigma = P^-1``
(:func:`pybayes.thermo.inv`, run until its own relative standard error is
``tol``; the exact OU integrator; one ADC reading every ``dt`` = 10 ``tau``) from
the Jacobi-scaled matrix (see :mod:`pybayes.lastlayer`). LAPACK's float64
inverse is the reference (relative Frobenius error), and both covariances are
used for last-layer Laplace predictions (the default GLM probit predictive) so
the effect of the chip's error on the predictions is visible.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .. import metrics
from .. import thermo
from ..lastlayer import LastLayerLaplace

__all__ = ["ChipResult", "run_chip"]


@dataclass
class ChipResult:
    d: int
    hidden: int
    n_classes: int
    prior_precision: float
    condition_number: float              # of P
    condition_number_programmed: float   # of the Jacobi-scaled matrix the chip sees
    rel_error: float                     # |Sigma_chip - Sigma_lapack|_F / |Sigma_lapack|_F
    rel_stderr: float                    # the chip's own estimate of that error
    tol: float
    converged: bool
    chip_time_s: float                   # simulated physical seconds, total
    chip_time_parts: dict                # programming / burn_in / sampling / readout (s)
    chip_wall_s: float                   # wall time of the simulation on this machine
    lapack_wall_s: float                 # wall time of the float64 LAPACK (Cholesky) inverse
    n_samples: int
    integrator: str
    config: dict
    metrics_lapack: dict                 # last-layer Laplace with the LAPACK covariance
    metrics_chip: dict                   # ... with the chip covariance

    def as_dict(self):
        return {k: v for k, v in self.__dict__.items()}


def _metrics(la, data, backend, n_samples, seed):
    pred = la.predict(data.x_test, backend=backend, n_samples=n_samples,
                      generator=torch.Generator().manual_seed(seed))
    pred_ood = la.predict(data.x_ood, backend=backend, n_samples=n_samples,
                          generator=torch.Generator().manual_seed(seed + 1))
    probs, y = pred.probs.cpu(), data.y_test.cpu()
    return {"accuracy": metrics.accuracy(probs, y), "nll": metrics.nll(probs, y), "ece": metrics.ece(probs, y),
            "brier": metrics.brier(probs, y),
            "auroc_epistemic": metrics.auroc_ood(pred.epistemic.cpu(), pred_ood.epistemic.cpu())}


def run_chip(model, data, *, seed: int, tol: float = 0.05, dt: float = 10.0, n_pred_samples: int = 100,
             config_overrides=None) -> ChipResult:
    """Fit the last-layer Laplace of ``model.head`` (evidence-tuned prior), invert
    its posterior precision on the chip and with LAPACK, compare (module docstring).

    ``tol``: the chip runs until its own relative standard error of ``A^-1``
    (Frobenius, batch means) is below ``tol``; a sample covariance of ``d``
    variables needs about ``(d + 1) / tol^2`` independent readings, so the chip
    time grows like ``d / tol^2`` slowest-mode time constants. ``dt``: ADC sample
    interval in units of ``tau`` (10: a 100 kHz ADC for a 1 µs chip; the slow modes
    that dominate the error decorrelate over ~1/lambda_min >> dt anyway)."""
    cfg_kw = dict(integrator="exact", dt=dt, seed=seed, chip_seed=seed)
    cfg_kw.update(config_overrides or {})
    cfg = thermo.ChipConfig(**cfg_kw)
    la = LastLayerLaplace(model, "classification", last_layer="head", backend="thermo", thermo_tol=tol,
                          thermo_config=cfg)
    la.fit((data.x_train, data.y_train))
    la.optimize_prior_precision(bounds=(1e-6, 1e8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # not converging within the cap is reported below
        info = la.inversion
    return ChipResult(
        d=la.d, hidden=la.n_features, n_classes=la.n_classes, prior_precision=float(la.prior_precision),
        condition_number=info.condition_number, condition_number_programmed=info.condition_number_programmed,
        rel_error=info.rel_error, rel_stderr=info.rel_stderr, tol=tol, converged=info.converged,
        chip_time_s=info.chip_time_s, chip_time_parts=dict(info.chip_time_parts), chip_wall_s=info.chip_wall_s,
        lapack_wall_s=info.lapack_wall_s, n_samples=info.n_samples, integrator=info.integrator,
        config={k: getattr(cfg, k) for k in ("tau", "beta", "integrator", "dt", "dac_bits", "adc_bits",
                                             "adc_range", "mismatch", "seed", "dac_rate", "readout_rate")},
        metrics_lapack=_metrics(la, data, "lapack", n_pred_samples, seed),
        metrics_chip=_metrics(la, data, "thermo", n_pred_samples, seed),
    )
