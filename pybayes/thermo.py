"""Thermodynamic linear algebra: a simulator of the analog "thermodynamic" chip.

The chip is a network of ``d`` coupled noisy RC cells. Programmed with a symmetric
positive-definite matrix ``A`` (the couplings) and a vector ``b`` (the drives), the
cell voltages ``x`` follow the overdamped Ornstein–Uhlenbeck SDE

    tau dx = -(A x - b) dt + sqrt(2 tau / beta) dW,

whose equilibrium is ``N(A^-1 b, A^-1 / beta)``. Hence

* :func:`solve` — time-average ``x`` after a burn-in: ``A^-1 b``;
* :func:`inv`   — ``beta`` × the time-averaged covariance of ``x`` (with ``b = 0``): ``A^-1``;
* :func:`simulate` — the sampled trajectory itself (like ``thermox.sample``).

The dynamics are simulated in C++ (``pybayes._thermo``): Euler–Maruyama with
``substeps`` steps per ADC sample (what a circuit simulator does) or the exact OU
transition from the eigendecomposition of ``A`` (the oracle). The chip's
imperfections (DAC programming precision, component mismatch, ADC precision and
range) are each off by default, and every call reports the *physical* time the
chip would take (programming, burn-in, sampling, read-out) in seconds.

Units: ``dt``, ``time`` and ``burn_in`` are in units of the RC time constant ``tau``
(dimensionless); the reported ``time_*`` fields are seconds (``tau`` × those).
"""

from __future__ import annotations

import math
import time as _time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["ChipConfig", "ThermoInfo", "solve", "inv", "simulate", "spectrum_estimate"]

_INTEGRATORS = ("euler", "exact")


def _ext():
    try:
        from . import _thermo
    except ImportError as e:  # pragma: no cover - only on a broken build
        raise ImportError(
            "pybayes._thermo (the C++ chip simulator) is not built: "
            "run `pip install --no-build-isolation -e .` (see `python -m pybayes info`)"
        ) from e
    return _thermo


@dataclass(frozen=True)
class ChipConfig:
    """The chip and how it is run. Every imperfection is off by default.

    Physics
        tau: RC time constant in seconds (published RC prototypes: ~1 µs).
        beta: inverse noise temperature; the equilibrium covariance is ``A^-1 / beta``.
    Integration
        integrator: ``"euler"`` (Euler–Maruyama, ``substeps`` steps per ADC sample) or
            ``"exact"`` (exact OU transition from the eigendecomposition of the symmetric
            ``A``: O(d^3) set-up, then O(d^2 k) per sample).
        dt: ADC sample interval in units of ``tau``. ``None``: ``1 / lambda_max`` (estimated).
        substeps: Euler steps per sample. ``None``: ``ceil(10 * dt * lambda_max)``, i.e. an
            Euler step ``h = dt / substeps <= 0.1 / lambda_max`` (stationary-variance bias
            ``<= h lambda / 2 <= 5 %`` in the stiffest direction, less in the others).
            ``h * lambda_max >= 2`` is unstable and rejected.
    Imperfections
        dac_bits: k-bit programming of ``A`` (full scale max|A|) and of each column of ``b``
            (full scale its max |entry|): mid-tread quantiser, step ``FS * 2^(1-k)``, error
            ``<= FS * 2^-k``. ``None``: ideal.
        adc_bits: k-bit ADC over ``[-adc_range, adc_range]`` (needs ``adc_range``). ``None``: ideal.
        adc_range: ADC full scale (volts, in the units of ``x``); readings outside are clipped
            and counted (``info.clipped``). ``None``: no clipping.
        mismatch: relative standard deviation of the fixed component mismatch:
            ``A_ij (1 + m E_ij)`` with ``E`` symmetric N(0,1), ``b_i (1 + m e_i)``.
        chip_seed: which physical chip, i.e. the mismatch pattern (fixed per chip).
    Noise and threads
        seed: thermal-noise seed (Philox; results are bitwise reproducible for any thread count).
        threads: CPU threads of the simulator (``None``: all, when the problem is large enough).
    Timing model (documented assumptions, not published figures)
        dac_rate: values per second through the DAC bank when programming (``d^2 + d`` values).
        readout_rate: values per second when reading the result out (``d`` per right-hand side
            for ``solve``, ``d^2`` for ``inv``).
    """

    tau: float = 1e-6
    beta: float = 1.0
    integrator: str = "euler"
    dt: Optional[float] = None
    substeps: Optional[int] = None
    dac_bits: Optional[int] = None
    adc_bits: Optional[int] = None
    adc_range: Optional[float] = None
    mismatch: float = 0.0
    chip_seed: int = 0
    seed: int = 0
    threads: Optional[int] = None
    dac_rate: float = 1e8
    readout_rate: float = 1e8

    def __post_init__(self):
        def positive(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"ChipConfig.{name} must be a finite number > 0, got {v!r}")

        for name in ("tau", "beta", "dac_rate", "readout_rate"):
            positive(name)
        positive("dt", allow_none=True)
        positive("adc_range", allow_none=True)
        if self.integrator not in _INTEGRATORS:
            raise ValueError(f"ChipConfig.integrator must be one of {_INTEGRATORS}, got {self.integrator!r}")
        for name, lo, hi in (("substeps", 1, 2**31 - 1), ("dac_bits", 1, 52), ("adc_bits", 1, 52),
                             ("threads", 1, 4096)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi):
                raise ValueError(f"ChipConfig.{name} must be None or an integer in [{lo}, {hi}], got {v!r}")
        if self.adc_bits is not None and self.adc_range is None:
            raise ValueError("ChipConfig.adc_bits needs adc_range (the ADC full-scale voltage)")
        if not isinstance(self.mismatch, (int, float)) or not math.isfinite(self.mismatch) or self.mismatch < 0:
            raise ValueError(f"ChipConfig.mismatch must be >= 0, got {self.mismatch!r}")
        for name in ("seed", "chip_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 2**64:
                raise ValueError(f"ChipConfig.{name} must be an integer in [0, 2^64), got {v!r}")


@dataclass
class ThermoInfo:
    """What a run cost and how good its answer is.

    Times are simulated physical seconds: ``time_programming`` (DAC programming of ``A`` and
    ``b``), ``time_burn_in`` (relaxation before averaging), ``time_sampling`` (the averaging
    window), ``time_readout`` (reading the result out); ``time_total`` is their sum.
    ``stderr`` is the estimated standard error of each entry of the answer (batch means),
    ``rel_stderr`` its norm relative to the answer's (worst column for ``solve``, Frobenius
    for ``inv``). ``clipped_fraction`` is the fraction of ADC readings outside ``adc_range``.
    ``A_effective``/``b_effective`` are what the chip realised (after DAC quantisation and
    mismatch); the estimate converges to the solution of that system.
    """

    time_programming: float
    time_burn_in: float
    time_sampling: float
    time_readout: float
    n_samples: int
    n_burn_in: int
    stderr: Any
    rel_stderr: float
    clipped: int
    readings: int
    A_effective: np.ndarray
    b_effective: np.ndarray
    dt: float
    substeps: int
    burn_in: float
    sampling_time: float
    lambda_min_est: float
    lambda_max_est: float
    integrator: str
    converged: Optional[bool] = None
    n_batches: int = 0
    threads: int = 1
    wall_time: float = 0.0

    @property
    def time_total(self) -> float:
        return self.time_programming + self.time_burn_in + self.time_sampling + self.time_readout

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / self.readings if self.readings else 0.0


# ---------------------------------------------------------------------------
# input handling


@dataclass
class _Kind:
    torch: bool
    dtype: Any
    device: Any = None


def _to_numpy(x, name):
    """(float64 ndarray, torch?, dtype, device)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype in (torch.float16, torch.bfloat16):
            raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
        if x.layout != torch.strided:
            raise ValueError(f"{name} must be a dense tensor, got layout {x.layout}")
        dtype = x.dtype if x.is_floating_point() else torch.float64
        return x.detach().to("cpu", torch.float64).numpy(), True, dtype, x.device
    arr = np.asarray(x)
    if arr.dtype.kind == "c" or arr.dtype in (np.float16,) or arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a real float32/float64 array, got dtype {arr.dtype}")
    dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    return np.ascontiguousarray(arr, dtype=np.float64), False, dtype, None


def _result_kind(*kinds):
    """The output type: torch if any input is torch; dtype float32 only if all are float32."""
    is_torch = any(k[0] for k in kinds)
    if is_torch:
        import torch

        dtypes = [k[1] for k in kinds]
        f32 = all(d in (torch.float32, np.float32, np.dtype(np.float32)) for d in dtypes)
        device = next(k[2] for k in kinds if k[0])
        return _Kind(True, torch.float32 if f32 else torch.float64, device)
    f32 = all(np.dtype(k[1]) == np.float32 for k in kinds)
    return _Kind(False, np.float32 if f32 else np.float64)


def _out(x: np.ndarray, kind: _Kind):
    if kind.torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).to(device=kind.device, dtype=kind.dtype)
    return np.asarray(x, dtype=kind.dtype)


def _check_A(A, name="A"):
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be a square matrix (d, d), got shape {tuple(A.shape)}")
    if A.shape[0] == 0:
        raise ValueError(f"{name} must have d >= 1 rows, got shape {tuple(A.shape)}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or inf")
    scale = float(np.max(np.abs(A)))
    asym = float(np.max(np.abs(A - A.T)))
    if asym > 1e-6 * max(scale, np.finfo(np.float64).tiny):
        raise ValueError(
            f"{name} must be symmetric: max|A - A^T| = {asym:.3g} (relative {asym / scale:.3g} > 1e-6). "
            "The chip's couplings are reciprocal and only a symmetric positive-definite A "
            "has the equilibrium N(A^-1 b, A^-1/beta)"
        )
    A = 0.5 * (A + A.T)
    _check_pd(A, name)
    return A


def _check_pd(A, name):
    try:
        np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        lam = float(np.linalg.eigvalsh(A)[0])
        raise ValueError(
            f"{name} is not positive definite (smallest eigenvalue {lam:.4g}): the chip's "
            "dynamics would diverge instead of settling to an equilibrium"
        ) from None


def _check_b(b, d, name="b"):
    if b.ndim not in (1, 2) or b.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d},) or ({d}, k) to match A, got {tuple(b.shape)}")
    if b.ndim == 2 and b.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {tuple(b.shape)}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name} contains NaN or inf")
    return b.reshape(d, -1)


def _check_time(v, name):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (units of tau), got {v!r}")
    return float(v)


def _check_burn_in(v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"burn_in must be a finite number >= 0 (units of tau), got {v!r}")
    return float(v)


# ---------------------------------------------------------------------------
# spectrum estimates (cheap: Lanczos, O(m d^2))


def spectrum_estimate(A, iters: int = 40):
    """(lambda_min, lambda_max) estimates of a symmetric matrix from ``iters`` Lanczos steps
    (full reorthogonalisation, fixed start vector). Exact when ``iters >= d``; otherwise
    the extreme Ritz values, which lie inside the spectrum: lambda_max is accurate after a
    few tens of steps, lambda_min can be overestimated for ill-conditioned A."""
    A = np.asarray(A, dtype=np.float64)
    d = A.shape[0]
    m = min(d, iters)
    rng = np.random.default_rng(0x7E57)  # own generator: never the global one
    q = rng.standard_normal(d)
    q /= np.linalg.norm(q)
    Q = np.zeros((m, d))
    alpha, beta_ = [], []
    for j in range(m):
        Q[j] = q
        w = A @ q
        a = float(q @ w)
        alpha.append(a)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        nb = float(np.linalg.norm(w))
        if j == m - 1 or nb <= 1e-12 * max(abs(a), 1e-300):
            break
        beta_.append(nb)
        q = w / nb
    T = np.diag(alpha) + np.diag(beta_[: len(alpha) - 1], 1) + np.diag(beta_[: len(alpha) - 1], -1)
    ev = np.linalg.eigvalsh(T)
    return float(ev[0]), float(ev[-1])


# ---------------------------------------------------------------------------
# the run


@dataclass
class _Plan:
    dt: float
    substeps: int
    lam_min: float
    lam_max: float


def _plan(cfg: ChipConfig, A_eff: np.ndarray) -> _Plan:
    lam_min, lam_max = spectrum_estimate(A_eff)
    dt = cfg.dt if cfg.dt is not None else 1.0 / lam_max
    if cfg.integrator == "exact":
        substeps = 1
    else:
        substeps = cfg.substeps if cfg.substeps is not None else max(1, math.ceil(10.0 * dt * lam_max - 1e-9))
        h = dt / substeps
        if h * lam_max >= 2.0:
            raise ValueError(
                f"dt / substeps = {h:.4g} (units of tau) is beyond the Euler stability limit "
                f"2 / lambda_max = {2.0 / lam_max:.4g}: use more substeps, a smaller dt or "
                "integrator='exact'"
            )
    return _Plan(dt, substeps, lam_min, lam_max)


def _make_sim(A, B, cfg: ChipConfig, dt: float, substeps: int):
    ext = _ext()
    return ext.Simulator(
        A, B, float(cfg.beta), cfg.integrator, float(dt), int(substeps),
        int(cfg.dac_bits or 0), int(cfg.adc_bits or 0), float(cfg.adc_range or 0.0),
        float(cfg.mismatch), int(cfg.chip_seed), int(cfg.seed), int(cfg.threads or 0),
    )


def _prepare(A, B, cfg):
    """Build the chip: effective program, spectrum estimates, dt/substeps, simulator."""
    imperfect = cfg.dac_bits is not None or cfg.mismatch > 0
    # dt/substeps do not change the effective program: probe it with a 1-step Euler chip
    probe = _make_sim(A, B, ChipConfig(dac_bits=cfg.dac_bits, mismatch=cfg.mismatch, chip_seed=cfg.chip_seed,
                                       seed=cfg.seed, beta=cfg.beta), 1.0, 1) if imperfect else None
    A_eff = probe.A_eff if probe is not None else A
    if imperfect:
        _check_pd(A_eff, "the effective (DAC-quantised / mismatched) A")
    plan = _plan(cfg, A_eff)
    sim = _make_sim(A, B, cfg, plan.dt, plan.substeps)
    return sim, plan


def _run_mean(sim, plan, cfg, burn_in, time, tol, want_cov):
    """Burn in, then average in batches. Returns dict of sums and batch statistics."""
    dt = plan.dt
    n_burn = int(math.ceil(burn_in / dt - 1e-9)) if burn_in > 0 else 0
    if n_burn:
        sim.advance(n_burn, False, False, False)
    n_max = max(2, int(math.ceil(time / dt - 1e-9)))
    d, k = sim.d, sim.k
    if tol is None:
        nb = min(32, n_max)
        edges = [round(i * n_max / nb) for i in range(nb + 1)]
        lengths = [edges[i + 1] - edges[i] for i in range(nb)]
    else:
        L = max(1, int(math.ceil(5.0 / (plan.lam_min * dt))))
        L = min(L, max(1, n_max // 16))
        lengths = None
    S = np.zeros((d, k))
    Sxx = np.zeros((d, d)) if want_cov else None
    bm1 = np.zeros((d, k)) if not want_cov else np.zeros((d, d))
    bm2 = np.zeros_like(bm1)
    n = nb_done = clipped = readings = 0
    converged = None
    estimate = None
    se = None
    rel = float("nan")
    while True:
        length = lengths[nb_done] if lengths is not None else min(L, n_max - n)
        if length <= 0:
            break
        r = sim.advance(length, True, want_cov, False)
        n += length
        nb_done += 1
        clipped += r["clipped"]
        readings += r["readings"]
        S += r["sum"]
        mb = r["sum"] / length
        if want_cov:
            Sxx += r["sxx"]
            cb = r["sxx"] / (length * k) - (mb.mean(axis=1)[:, None] * mb.mean(axis=1)[None, :])
            bm1 += cb
            bm2 += cb * cb
        else:
            bm1 += mb
            bm2 += mb * mb
        done = lengths is not None and nb_done == len(lengths)
        check = tol is not None and nb_done >= 16
        if done or check or (tol is not None and n >= n_max):
            estimate, se, rel = _estimate(S, Sxx, bm1, bm2, n, nb_done, k, want_cov)
            if check and rel < tol:
                converged = True
                break
            if tol is not None and n >= n_max:
                converged = False
                break
            if done:
                break
    if tol is not None and not converged:
        warnings.warn(
            f"thermo: relative standard error {rel:.3g} did not reach tol={tol:g} within "
            f"time={time:g} tau; returning the estimate so far (info.converged=False)",
            RuntimeWarning,
            stacklevel=3,
        )
    return dict(estimate=estimate, se=se, rel=rel, n=n, n_burn=n_burn, nb=nb_done, clipped=clipped,
                readings=readings, converged=converged)


def _estimate(S, Sxx, bm1, bm2, n, nb, k, want_cov):
    mean = S / n
    if want_cov:
        m = mean.mean(axis=1)
        est = Sxx / (n * k) - np.outer(m, m)
    else:
        est = mean
    if nb >= 2:
        var = np.maximum(bm2 / nb - (bm1 / nb) ** 2, 0.0) * nb / (nb - 1)
        se = np.sqrt(var / nb)
    else:
        se = np.full_like(est, np.nan)
    if want_cov:
        rel = float(np.linalg.norm(se) / max(np.linalg.norm(est), 1e-300))
    else:
        rel = float(np.max(np.linalg.norm(se, axis=0) / np.maximum(np.linalg.norm(est, axis=0), 1e-300)))
    return est, se, rel


def _defaults(plan, time, burn_in, tol):
    burn = burn_in if burn_in is not None else 10.0 / plan.lam_min
    if time is None:
        time = (1e4 if tol is not None else 100.0) / plan.lam_min
    return burn, time


def _check_tol(tol):
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0 (relative standard error), got {tol!r}")
    return float(tol)


def _config(config):
    if config is None:
        return ChipConfig()
    if not isinstance(config, ChipConfig):
        raise ValueError(f"config must be a pybayes.thermo.ChipConfig, got {type(config).__name__}")
    return config


def _make_info(cfg, plan, sim, res, t0, *, runs, values_programmed, values_read, stderr,
               b_effective) -> "ThermoInfo":
    """The info of a solve/inv run: `runs` chip runs of burn-in + sampling,
    `values_programmed` through the DACs, `values_read` read out."""
    n = res["n"]
    return ThermoInfo(
        time_programming=values_programmed / cfg.dac_rate,
        time_burn_in=runs * res["n_burn"] * plan.dt * cfg.tau,
        time_sampling=runs * n * plan.dt * cfg.tau,
        time_readout=values_read / cfg.readout_rate,
        n_samples=n, n_burn_in=res["n_burn"],
        stderr=stderr, rel_stderr=res["rel"],
        clipped=res["clipped"], readings=res["readings"],
        A_effective=sim.A_eff, b_effective=b_effective,
        dt=plan.dt, substeps=plan.substeps, burn_in=res["n_burn"] * plan.dt, sampling_time=n * plan.dt,
        lambda_min_est=plan.lam_min, lambda_max_est=plan.lam_max, integrator=cfg.integrator,
        converged=res["converged"], n_batches=res["nb"], threads=sim.threads,
        wall_time=_time.perf_counter() - t0,
    )


def solve(A, b, *, time=None, burn_in=None, tol=None, config: Optional[ChipConfig] = None,
          return_info: bool = False):
    """Solve ``A x = b`` on the simulated chip: the time average of the cell voltages.

    Args:
        A: symmetric positive-definite ``(d, d)`` matrix (NumPy array or CPU torch tensor,
            float32/float64). Asymmetry up to 1e-6 relative is symmetrised away.
        b: ``(d,)`` or ``(d, k)``; ``k`` right-hand sides run one after another on one chip
            (``A`` is programmed once).
        time: averaging window per right-hand side, units of ``tau``. Default
            ``100 / lambda_min`` (100 relaxation times of the slowest mode), or with ``tol``
            the maximum window (default ``1e4 / lambda_min``).
        burn_in: relaxation before averaging, units of ``tau``; default ``10 / lambda_min``
            (the slowest mode's distance from equilibrium falls by e^-10).
        tol: run until the estimated relative standard error (batch means over batches of
            5 relaxation times, at least 16 batches) is below ``tol`` — the "anytime" mode.
        config: a :class:`ChipConfig` (default: ideal chip, Euler–Maruyama).
        return_info: also return a :class:`ThermoInfo`.

    The standard error of the time average is ≈ ``sqrt(diag(2 A^-2 / (beta t)))``: halving it
    takes four times the window. ``lambda_min``/``lambda_max`` are Lanczos estimates.
    """
    t0 = _time.perf_counter()
    cfg = _config(config)
    A_np, a_t, a_dt, a_dev = _to_numpy(A, "A")
    b_np, b_t, b_dt, b_dev = _to_numpy(b, "b")
    A_np = _check_A(A_np)
    d = A_np.shape[0]
    B = _check_b(b_np, d)
    time_ = _check_time(time, "time")
    burn = _check_burn_in(burn_in)
    tol = _check_tol(tol)
    kind = _result_kind((a_t, a_dt, a_dev), (b_t, b_dt, b_dev))
    k = B.shape[1]
    sim, plan = _prepare(A_np, np.ascontiguousarray(B), cfg)
    burn, time_ = _defaults(plan, time_, burn, tol)
    # Run the k columns at once (the product A X); the chip would run them one by one.
    res = _run_mean(sim, plan, cfg, burn, time_, tol, want_cov=False)
    x = res["estimate"]
    out_shape = (d,) if b_np.ndim == 1 else (d, k)
    result = _out(x.reshape(out_shape), kind)
    if not return_info:
        return result
    # k right-hand sides run one after another on one programmed chip
    info = _make_info(cfg, plan, sim, res, t0, runs=k, values_programmed=d * d + d * k,
                      values_read=d * k, stderr=_out(res["se"].reshape(out_shape), kind),
                      b_effective=sim.B_eff.reshape(out_shape))
    return result, info


def inv(A, *, time=None, burn_in=None, tol=None, config: Optional[ChipConfig] = None,
        return_info: bool = False):
    """Estimate ``A^-1`` on the simulated chip: ``beta`` × the time-averaged covariance of the
    cell voltages with ``b = 0`` (sample mean subtracted).

    Arguments as in :func:`solve`. The covariance estimator's standard error falls like
    ``1/sqrt(time)``; entry (i, j) has variance ≈ ``∫ (S_ii(s) S_jj(s) + S_ij(s)^2) ds / t`` with
    ``S(s) = expm(-A|s|) A^-1 / beta``. Read-out moves ``d^2`` values.
    """
    t0 = _time.perf_counter()
    cfg = _config(config)
    A_np, a_t, a_dt, a_dev = _to_numpy(A, "A")
    A_np = _check_A(A_np)
    d = A_np.shape[0]
    time_ = _check_time(time, "time")
    burn = _check_burn_in(burn_in)
    tol = _check_tol(tol)
    kind = _result_kind((a_t, a_dt, a_dev))
    sim, plan = _prepare(A_np, np.zeros((d, 1)), cfg)
    burn, time_ = _defaults(plan, time_, burn, tol)
    res = _run_mean(sim, plan, cfg, burn, time_, tol, want_cov=True)
    result = _out(cfg.beta * res["estimate"], kind)
    if not return_info:
        return result
    info = _make_info(cfg, plan, sim, res, t0, runs=1, values_programmed=d * d + d,
                      values_read=d * d, stderr=_out(cfg.beta * res["se"], kind),
                      b_effective=sim.B_eff.reshape(d))
    return result, info


def simulate(A, b, *, n_samples: int, x0=None, config: Optional[ChipConfig] = None,
             return_info: bool = False):
    """The chip's sampled trajectory, like ``thermox.sample``: the ADC readings at times
    ``dt, 2 dt, ..., n_samples dt`` (units of tau) after starting from ``x0`` (default 0),
    without burn-in. Shape ``(n_samples, d)`` for ``b`` of shape ``(d,)``, else
    ``(n_samples, d, k)``: column c is an independent chip run with drive ``b[:, c]``."""
    t0 = _time.perf_counter()
    cfg = _config(config)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
        raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
    A_np, a_t, a_dt, a_dev = _to_numpy(A, "A")
    b_np, b_t, b_dt, b_dev = _to_numpy(b, "b")
    A_np = _check_A(A_np)
    d = A_np.shape[0]
    B = _check_b(b_np, d)
    k = B.shape[1]
    kinds = [(a_t, a_dt, a_dev), (b_t, b_dt, b_dev)]
    X0 = np.zeros((d, k))
    if x0 is not None:
        x_np, x_t, x_dt, x_dev = _to_numpy(x0, "x0")
        if x_np.shape != b_np.shape:
            raise ValueError(f"x0 must have the shape of b {tuple(b_np.shape)}, got {tuple(x_np.shape)}")
        if not np.all(np.isfinite(x_np)):
            raise ValueError("x0 contains NaN or inf")
        X0 = x_np.reshape(d, k)
        kinds.append((x_t, x_dt, x_dev))
    kind = _result_kind(*kinds)
    sim, plan = _prepare(A_np, np.ascontiguousarray(B), cfg)
    sim.set_state(np.ascontiguousarray(X0))
    r = sim.advance(int(n_samples), False, False, True)
    traj = r["traj"]
    if b_np.ndim == 1:
        traj = traj.reshape(int(n_samples), d)
    result = _out(traj, kind)
    if not return_info:
        return result
    info = ThermoInfo(
        time_programming=(d * d + d * k) / cfg.dac_rate, time_burn_in=0.0,
        time_sampling=k * n_samples * plan.dt * cfg.tau, time_readout=0.0,
        n_samples=int(n_samples), n_burn_in=0, stderr=None, rel_stderr=float("nan"),
        clipped=r["clipped"], readings=r["readings"], A_effective=sim.A_eff,
        b_effective=sim.B_eff.reshape(b_np.shape), dt=plan.dt, substeps=plan.substeps, burn_in=0.0,
        sampling_time=n_samples * plan.dt, lambda_min_est=plan.lam_min, lambda_max_est=plan.lam_max,
        integrator=cfg.integrator, threads=sim.threads, wall_time=_time.perf_counter() - t0,
    )
    return result, info
