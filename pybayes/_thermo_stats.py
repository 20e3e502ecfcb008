"""Standard errors of the chip's time averages (batch means with the OU bias correction).

The chip's readings form a stationary time series whose slowest component is the slowest
OU mode: per ADC sample its autocorrelation is ``rho = exp(-lambda_min dt)`` for the
voltages (``solve``) and ``rho^2`` for their products (``inv``; Euler: ``(1 - h
lambda_min)^substeps``). Plain batch means under-estimate the variance of the overall
mean when a batch spans only a few correlation times (neighbouring batch means are
correlated): the issue-14 measurements (42-87 % coverage of 2 SE). Here the batch-means
variance is multiplied by the exact factor ``F = Var(grand mean) / E[batch-means
estimate]`` of an AR(1) series with that ``rho`` (batch length ``L``, ``nb`` batches),
which is exact for the slowest mode and conservative for the faster ones (their factor
is closer to 1), and the result is widened by the Student-t quantile of the estimate's
effective degrees of freedom (exact for the same AR(1) model), so that ± 2 ``stderr``
covers ≳ 95 % even for windows of a few relaxation times.
"""

from __future__ import annotations

import math

import numpy as np

Z975 = 1.959963984540054  # standard normal 97.5 % quantile

_EXACT_NB = 256  # batch counts up to this use the exact nb x nb covariance of the batch means


def _batch_cov(rho: float, L: int, nb: int) -> np.ndarray:
    """Covariances C(m), m = 0..nb-1, of the means of consecutive length-L batches of a
    unit-variance AR(1) series with lag-1 correlation rho."""
    c = np.empty(nb)
    if rho <= 0.0:
        c[:] = 0.0
        c[0] = 1.0 / L
        return c
    h = np.arange(1, L)
    c[0] = (L + 2.0 * np.sum((L - h) * rho ** h)) / L**2
    if nb > 1:
        one = (1.0 - rho**L) ** 2 / (L**2 * (1.0 - rho) ** 2)
        m = np.arange(1, nb)
        with np.errstate(under="ignore"):
            c[1:] = one * rho ** ((m - 1) * float(L) + 1.0)
    return c


def batch_correction(rho: float, L: int, nb: int):
    """(F, dof): Var(grand mean) / E[s^2_batch / nb] and the effective degrees of freedom
    (2 E^2 / Var) of the batch-means variance estimate, for an AR(1) series."""
    if nb < 2:
        return math.inf, 0.0
    rho = float(min(max(rho, 0.0), 1.0 - 1e-15))
    n_exact = min(nb, _EXACT_NB)
    c = _batch_cov(rho, L, n_exact)
    if nb <= _EXACT_NB:
        idx = np.arange(nb)
        S = c[np.abs(idx[:, None] - idx[None, :])]
        var_mean = S.sum() / nb**2
        Mc = S - S.mean(0)[None, :] - S.mean(1)[:, None] + S.mean()  # M S M, M = I - 11^T/nb
        tr = float(np.trace(Mc))
        e_est = tr / (nb * (nb - 1))
        dof = tr**2 / float(np.sum(Mc * Mc))
        return var_mean / e_est, dof
    # many batches: the correlation of batch means decays geometrically (ratio rho^L)
    rL = rho**L
    c1 = c[1] if n_exact > 1 else 0.0
    tail = c1 / (1.0 - rL) if rL < 1 else math.inf
    F = (c[0] + 2.0 * tail) / c[0]
    r1 = c1 / c[0]
    dof = (nb - 1) / (1.0 + 2.0 * r1 * r1 / (1.0 - rL * rL))
    return F, dof


def t_factor(dof: float) -> float:
    """t_{dof}(0.975) / z(0.975): how much wider a 95 % interval is when the variance is
    estimated with `dof` degrees of freedom (Cornish–Fisher expansion of the t quantile;
    accurate to < 0.5 % for dof >= 3; for dof < 3 the exact closed forms are used)."""
    if not dof > 0:
        return math.inf
    if dof < 1.0:
        dof = 1.0
    if dof < 3.0:
        # exact quantiles: dof 1 (Cauchy) and 2, interpolated in 1/dof between them and 3
        q1, q2, q3 = 12.706204736, 4.302652730, 3.182446305
        if dof < 2.0:
            w = (1.0 / dof - 0.5) / 0.5
            return (w * q1 + (1 - w) * q2) / Z975
        w = (1.0 / dof - 1.0 / 3.0) / (1.0 / 6.0)
        return (w * q2 + (1 - w) * q3) / Z975
    z = Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    t = z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4
    return t / z


class BatchMeans:
    """Running batch means of an array-valued series, in place (no per-batch copies kept).

    ``add(batch_sum, length)`` takes the sum of one batch; ``total`` is the running sum,
    ``sq`` the running sum of squared (shifted) batch means. With ``shift=True`` the
    squares are taken about the first batch mean, so a mean much larger than its spread
    (a precise ``solve``) loses no digits to cancellation; that costs a third array, so
    ``inv`` (a zero-mean series whose second moments are not large against their spread)
    does without.
    """

    def __init__(self, shape, shift: bool = False):
        self.total = np.zeros(shape)
        self.sq = np.zeros(shape)
        self.K = None
        self._shift = shift
        self.n = 0
        self.nb = 0

    def add(self, batch_sum: np.ndarray, length: int, scratch: bool = False):
        """Add one batch. scratch=True: batch_sum may be overwritten (saves a temporary)."""
        self.total += batch_sum
        m = batch_sum if scratch else batch_sum.copy()
        m *= 1.0 / length
        if self._shift:
            if self.K is None:
                self.K = m.copy()
            m -= self.K
        np.multiply(m, m, out=m)
        self.sq += m
        self.n += length
        self.nb += 1

    def mean(self) -> np.ndarray:
        return self.total / self.n

    def stderr(self, rho: float, out=None):
        """(stderr array, F, dof): the corrected, t-widened standard error of mean()."""
        nb = self.nb
        L = max(1, int(round(self.n / nb)))
        F, dof = batch_correction(rho, L, nb)
        # var of batch means: (sq - nb (m - K)^2) / (nb - 1), m = total / n (batches of ~equal length)
        m = np.divide(self.total, self.n, out=out)
        if self.K is not None:
            m -= self.K
        np.multiply(m, m, out=m)
        m *= -float(nb)
        m += self.sq
        np.maximum(m, 0.0, out=m)
        m *= F * t_factor(dof) ** 2 / (nb * (nb - 1))
        np.sqrt(m, out=m)
        return m, F, dof
