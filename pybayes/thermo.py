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

from . import _thermo_stats as _stats

__all__ = ["ChipConfig", "ThermoInfo", "solve", "inv", "simulate", "spectrum_estimate", "memory_estimate"]

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
        threads: CPU threads of the simulator (``None``: all, when the problem is large enough);
            never more than the cores this process may use (``info.threads`` says how many ran).
    Run-length caps
        max_samples: the most ADC samples (burn-in or averaging window, per right-hand side) a
            call may plan; a longer ``time``/``burn_in``/``n_samples`` is refused up front with a
            ``ValueError`` (a ``tol`` run stops there, ``converged=False``).
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
    max_samples: int = 10**9

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
                             ("threads", 1, 4096), ("max_samples", 1, 2**62)):
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
    ``stderr`` is the estimated standard error of each entry of the answer (batch means
    times the slowest mode's batch-means bias factor ``stderr_factor``, widened by the
    Student-t quantile of its effective degrees of freedom ``stderr_dof``: see
    ``pybayes._thermo_stats``), ``rel_stderr`` its norm relative to the answer's (worst
    column for ``solve``, Frobenius for ``inv``). ``clipped_fraction`` is the fraction of ADC readings outside ``adc_range``.
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
    stderr_factor: Optional[float] = None
    stderr_dof: Optional[float] = None

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
    """Validated, symmetrised float64 copy of A. Works in row blocks, so the only d x d
    arrays it makes are the result and (transiently) the Cholesky factor."""
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be a square matrix (d, d), got shape {tuple(A.shape)}")
    if A.shape[0] == 0:
        raise ValueError(f"{name} must have d >= 1 rows, got shape {tuple(A.shape)}")
    d = A.shape[0]
    blk = max(1, (1 << 22) // (8 * d))  # ~4 MB of temporaries per block
    scale = asym = 0.0
    for i in range(0, d, blk):
        rows = A[i:i + blk]
        if not np.all(np.isfinite(rows)):
            raise ValueError(f"{name} contains NaN or inf")
        scale = max(scale, float(np.max(np.abs(rows))))
        asym = max(asym, float(np.max(np.abs(rows - A[:, i:i + blk].T))))
    if asym > 1e-6 * max(scale, np.finfo(np.float64).tiny):
        raise ValueError(
            f"{name} must be symmetric: max|A - A^T| = {asym:.3g} (relative {asym / scale:.3g} > 1e-6). "
            "The chip's couplings are reciprocal and only a symmetric positive-definite A "
            "has the equilibrium N(A^-1 b, A^-1/beta)"
        )
    S = np.add(A, A.T)
    S *= 0.5
    _check_pd(S, name)
    return S


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


def _shape(x):
    """The shape of an input without converting (or copying) it."""
    try:
        return tuple(int(v) for v in x.shape)
    except AttributeError:
        return tuple(np.shape(x))


def _available_memory() -> float:
    """Bytes this process can still allocate: the least of MemAvailable, the cgroup's
    memory.max headroom and the address-space limit's headroom (inf if none is known)."""
    import resource

    avail = math.inf
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = min(avail, float(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            lim = f.read().strip()
        if lim != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                avail = min(avail, float(lim) - float(f.read().strip()))
    except (OSError, ValueError):
        pass
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmSize:"):
                        avail = min(avail, soft - float(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    return avail


def memory_estimate(d: int, k: int = 1, *, integrator: str = "euler", n_samples: int = 0) -> int:
    """Peak bytes a solve/inv/simulate call allocates beyond its inputs, an upper bound
    (measured peaks: 4.4 d x d float64 arrays for an Euler ``inv``, 6.2 for an exact one):
    5 d x d arrays with the Euler integrator (the symmetrised copy of A and its transient
    Cholesky factor, the chip's A, and for inv the running second moments, their squared
    batch means and one batch buffer), 7 with the exact one (its eigendecomposition), plus
    the trajectory of ``simulate`` (``n_samples d k`` values)."""
    copies = 7 if integrator == "exact" else 5
    return int(8 * (copies * d * d + 8 * d * k + n_samples * d * k))


def _check_memory(what, d, k, integrator, n_samples=0):
    need = memory_estimate(d, k, integrator=integrator, n_samples=n_samples)
    avail = _available_memory()
    if need > 0.9 * avail:
        raise MemoryError(
            f"thermo.{what} at d={d}{f', k={k}' if k > 1 else ''}"
            f"{f', n_samples={n_samples}' if n_samples else ''} needs about {need / 2**30:.3g} GiB "
            f"(thermo.memory_estimate) but only {avail / 2**30:.3g} GiB is available: use a smaller "
            "problem, fewer samples per call, or free memory"
        )


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
    rho: float  # per-sample autocorrelation of the slowest mode (the SE's correction uses it)


def _plan(cfg: ChipConfig, A_eff: np.ndarray) -> _Plan:
    lam_min, lam_max = spectrum_estimate(A_eff)
    dt = cfg.dt if cfg.dt is not None else 1.0 / lam_max
    if cfg.integrator == "exact":
        substeps = 1
        rho = math.exp(-lam_min * dt)
    else:
        substeps = cfg.substeps if cfg.substeps is not None else max(1, math.ceil(10.0 * dt * lam_max - 1e-9))
        h = dt / substeps
        if h * lam_max >= 2.0:
            raise ValueError(
                f"dt / substeps = {h:.4g} (units of tau) is beyond the Euler stability limit "
                f"2 / lambda_max = {2.0 / lam_max:.4g}: use more substeps, a smaller dt or "
                "integrator='exact'"
            )
        rho = abs(1.0 - h * lam_min) ** substeps
    return _Plan(dt, substeps, lam_min, lam_max, rho)


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
    del probe
    if imperfect:
        _check_pd(A_eff, "the effective (DAC-quantised / mismatched) A")
    plan = _plan(cfg, A_eff)
    del A_eff
    sim = _make_sim(A, B, cfg, plan.dt, plan.substeps)
    return sim, plan


def _n_samples(window: float, dt: float, name: str, cfg: ChipConfig) -> int:
    """ADC samples in a window (units of tau), refused beyond ChipConfig.max_samples."""
    n = window / dt
    if not n <= cfg.max_samples:
        raise ValueError(
            f"{name}={window:.4g} tau is {n:.3g} ADC samples of dt={dt:.4g} tau, beyond "
            f"ChipConfig.max_samples={cfg.max_samples:.3g}: choose a shorter {name}, a larger dt, "
            "or raise max_samples"
        )
    return int(math.ceil(n - 1e-9)) if n > 0 else 0


_MIN_BATCHES = 32  # batch means: batches per fixed window, and before the first tol check
_TOL_BATCH = 5.0   # tol mode: batch length in slowest relaxation times 1/lambda_min


def _run(sim, plan, cfg, n_burn, n_max, tol, want_cov, time_window):
    """Burn in, then average in batches (batch means, _thermo_stats). Memory: the running
    sum and the sum of squared batch means, and one batch buffer, each (d, k) for solve and
    (d, d) for inv (the second moments about the programmed mean 0: b = 0)."""
    if n_burn:
        sim.advance(n_burn, False, False, False)
    d, k = sim.d, sim.k
    shape = (d, d) if want_cov else (d, k)
    bm = _stats.BatchMeans(shape, shift=not want_cov)
    buf = np.zeros(shape)
    rho = plan.rho**2 if want_cov else plan.rho  # products of the slowest mode decorrelate twice as fast
    if tol is None:
        nb = min(_MIN_BATCHES, max(2, n_max // 2))
        edges = [round(i * n_max / nb) for i in range(nb + 1)]
        lengths = [edges[i + 1] - edges[i] for i in range(nb)]
    else:
        L = max(1, int(math.ceil(_TOL_BATCH / (plan.lam_min * plan.dt))))
        L = min(L, max(1, n_max // _MIN_BATCHES))
        n_max = max(2 * L, n_max // L * L)  # whole batches
        lengths = None
    clipped = readings = 0
    converged = None
    rel = math.inf
    se = F = dof = None
    next_check = _MIN_BATCHES
    per = k if want_cov else 1  # inv: k = 1 column (b = 0)
    while True:
        length = lengths[bm.nb] if lengths is not None else L
        buf.fill(0.0)
        if want_cov:
            r = sim.advance(length, False, buf, False)
        else:
            r = sim.advance(length, buf, False, False)
        clipped += r["clipped"]
        readings += r["readings"]
        bm.add(buf, length * per, scratch=True)
        done = lengths is not None and bm.nb == len(lengths)
        capped = tol is not None and bm.n >= n_max * per
        check = tol is not None and bm.nb >= next_check
        if done or capped or check:
            se, F, dof = bm.stderr(rho, out=buf)
            rel = _relative(se, bm.total, bm.n, want_cov)
            if check:
                next_check = max(bm.nb + 1, int(math.ceil(bm.nb * 1.1)))
                if rel < tol:
                    converged = True
                    break
            if capped:
                converged = False
                break
            if done:
                break
    if tol is not None and not converged:
        warnings.warn(
            f"thermo: relative standard error {rel:.3g} did not reach tol={tol:g} within "
            f"time={time_window:g} tau; returning the estimate so far (info.converged=False)",
            RuntimeWarning,
            stacklevel=3,
        )
    n = bm.n // per
    total, sq = bm.total, bm.sq
    del bm, sq
    total /= n * per  # the estimate, in place
    return dict(estimate=total, se=se, rel=rel, n=n, n_burn=n_burn, nb=len(lengths) if lengths else n // L,
                clipped=clipped, readings=readings, converged=converged, se_factor=F, se_dof=dof)


def _relative(se, total, n, want_cov):
    """Relative standard error: Frobenius for inv, worst column for solve."""
    if want_cov:
        return float(np.linalg.norm(se) / max(np.linalg.norm(total) / n, 1e-300))
    return float(np.max(np.linalg.norm(se, axis=0) / np.maximum(np.linalg.norm(total, axis=0) / n, 1e-300)))


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
               b_effective, A_effective) -> "ThermoInfo":
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
        A_effective=A_effective, b_effective=b_effective,
        dt=plan.dt, substeps=plan.substeps, burn_in=res["n_burn"] * plan.dt, sampling_time=n * plan.dt,
        lambda_min_est=plan.lam_min, lambda_max_est=plan.lam_max, integrator=cfg.integrator,
        converged=res["converged"], n_batches=res["nb"], threads=sim.threads,
        wall_time=_time.perf_counter() - t0, stderr_factor=res["se_factor"], stderr_dof=res["se_dof"],
    )


def _windows(cfg, plan, time_, burn, tol):
    burn, time_ = _defaults(plan, time_, burn, tol)
    n_burn = _n_samples(burn, plan.dt, "burn_in", cfg)
    if tol is None:
        n_max = max(2, _n_samples(time_, plan.dt, "time", cfg))
    else:  # the cap of an anytime run: at most max_samples
        n_max = max(2, int(math.ceil(min(time_ / plan.dt, cfg.max_samples) - 1e-9)))
    return n_burn, n_max, time_


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
            5 relaxation times, at least 32 batches) is below ``tol`` — the "anytime" mode.
        config: a :class:`ChipConfig` (default: ideal chip, Euler–Maruyama).
        return_info: also return a :class:`ThermoInfo`.

    The standard error of the time average is ≈ ``sqrt(diag(2 A^-2 / (beta t)))``: halving it
    takes four times the window. ``lambda_min``/``lambda_max`` are Lanczos estimates.
    """
    t0 = _time.perf_counter()
    cfg = _config(config)
    shape_A, shape_b = _shape(A), _shape(b)
    if len(shape_A) == 2 and shape_A[0] == shape_A[1] and len(shape_b) in (1, 2):
        _check_memory("solve", shape_A[0], shape_b[1] if len(shape_b) == 2 else 1, cfg.integrator)
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
    del A_np
    n_burn, n_max, time_ = _windows(cfg, plan, time_, burn, tol)
    # Run the k columns at once (the product A X); the chip would run them one by one.
    res = _run(sim, plan, cfg, n_burn, n_max, tol, False, time_)
    x = res["estimate"]
    out_shape = (d,) if b_np.ndim == 1 else (d, k)
    result = _out(x.reshape(out_shape), kind)
    if not return_info:
        return result
    # k right-hand sides run one after another on one programmed chip
    info = _make_info(cfg, plan, sim, res, t0, runs=k, values_programmed=d * d + d * k,
                      values_read=d * k, stderr=_out(res["se"].reshape(out_shape), kind),
                      b_effective=sim.B_eff.reshape(out_shape), A_effective=sim.A_eff)
    return result, info


def inv(A, *, time=None, burn_in=None, tol=None, config: Optional[ChipConfig] = None,
        return_info: bool = False):
    """Estimate ``A^-1`` on the simulated chip: ``beta`` × the time-averaged second moment of
    the cell voltages with ``b = 0`` (their programmed equilibrium mean is exactly 0).

    Arguments as in :func:`solve`. The estimator's standard error falls like
    ``1/sqrt(time)``; entry (i, j) has variance ≈ ``∫ (S_ii(s) S_jj(s) + S_ij(s)^2) ds / t`` with
    ``S(s) = expm(-A|s|) A^-1 / beta``. Read-out moves ``d^2`` values. Peak memory: a few
    ``d x d`` arrays (:func:`memory_estimate`); refused up front beyond what is available.
    """
    t0 = _time.perf_counter()
    cfg = _config(config)
    shape_A = _shape(A)
    if len(shape_A) == 2 and shape_A[0] == shape_A[1]:
        _check_memory("inv", shape_A[0], 1, cfg.integrator)
    A_np, a_t, a_dt, a_dev = _to_numpy(A, "A")
    A_np = _check_A(A_np)
    d = A_np.shape[0]
    time_ = _check_time(time, "time")
    burn = _check_burn_in(burn_in)
    tol = _check_tol(tol)
    kind = _result_kind((a_t, a_dt, a_dev))
    sim, plan = _prepare(A_np, np.zeros((d, 1)), cfg)
    del A_np
    n_burn, n_max, time_ = _windows(cfg, plan, time_, burn, tol)
    res = _run(sim, plan, cfg, n_burn, n_max, tol, True, time_)
    est = res.pop("estimate")
    est *= cfg.beta
    result = _out(est, kind)
    if not return_info:
        return result
    se = res["se"]
    se *= cfg.beta
    info = _make_info(cfg, plan, sim, res, t0, runs=1, values_programmed=d * d + d,
                      values_read=d * d, stderr=_out(se, kind),
                      b_effective=sim.B_eff.reshape(d), A_effective=sim.A_eff)
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
    if n_samples > cfg.max_samples:
        raise ValueError(f"n_samples={n_samples} is beyond ChipConfig.max_samples={cfg.max_samples:.3g}: "
                         "simulate fewer samples per call (continue from x0) or raise max_samples")
    shape_A, shape_b = _shape(A), _shape(b)
    if len(shape_A) == 2 and shape_A[0] == shape_A[1] and len(shape_b) in (1, 2):
        _check_memory("simulate", shape_A[0], shape_b[1] if len(shape_b) == 2 else 1, cfg.integrator,
                      n_samples=int(n_samples))
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
    del A_np
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
