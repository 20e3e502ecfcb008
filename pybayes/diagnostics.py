"""Convergence diagnostics for MCMC draws: rank-normalised split-R̂, bulk and
tail effective sample size (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021,
"Rank-normalization, folding, and localization: an improved R̂ for assessing
convergence of MCMC"), effective samples per second, and the kernel Stein
discrepancy with the inverse multiquadric kernel (Gorham & Mackey 2017,
"Measuring sample quality with kernels").

**Draws** are ``[chains, draws]`` or ``[chains, draws, *param_shape]`` (NumPy
array or torch tensor; computed in float64 NumPy), a mapping
``{name: tensor[chains, draws, *shape]}``, or a
:class:`pybayes.chains.ChainSamples`. Every parameter element is diagnosed on
its own; results have the parameter's shape (a dict of arrays for a mapping).

Definitions (``m`` chains of ``n`` draws; *split* = every chain cut into its
first and last ``n // 2`` draws, the middle draw of an odd ``n`` dropped):

* basic R̂ of ``m`` chains: ``W`` = mean within-chain variance, ``B/n`` =
  variance of the chain means (both ``ddof=1``),
  ``R̂ = sqrt(((n-1)/n · W + B/n) / W)``;
* rank normalisation: ``z = Φ⁻¹((r - 3/8) / (S + 1/4))`` with ``r`` the
  average rank of a draw among all ``S`` pooled draws (ties share a rank);
* :func:`rhat` = max(basic R̂ of the rank-normalised split chains, basic R̂
  of the rank-normalised split *folded* chains ``|x - median(x)|``, the median
  taken over the split draws); one chain is allowed (its two halves are
  compared; ArviZ returns nan there);
* ESS of ``m`` chains: ``S / τ̂`` with ``τ̂ = -1 + 2 Σ_{t≤T} ρ̂_t``, the
  autocorrelations combined over chains as
  ``ρ̂_t = 1 - (W - mean_chains(γ̂_t)) / var⁺`` (``γ̂_t`` the biased FFT
  autocovariance of each chain, ``var⁺ = (n-1)/n · W + B/n``) and truncated by
  Geyer's initial monotone sequence (sums of pairs ``ρ̂_{2k} + ρ̂_{2k+1}`` while
  positive, made non-increasing); ``τ̂`` is floored at ``1 / log10(S)``, as Stan
  and ArviZ do, so ``ESS ≤ S log10 S``;
* :func:`ess` ``kind="bulk"``: ESS of the rank-normalised split chains;
  ``"tail"``: the smaller ESS of the split indicator chains ``1{x ≤ q}`` at the
  5 % and 95 % quantiles; ``"mean"``: ESS of the raw split chains (the one
  behind :func:`mcse_mean`).

These are the definitions of the paper and of Stan/ArviZ; the test suite checks
them against ArviZ when it is installed (the ``[test]`` extra) and against
closed forms (i.i.d. and AR(1) chains) always. A parameter that is constant over
all draws has no defined R̂/ESS: it gets ``nan`` (counted in
:attr:`Summary.n_undefined`); chains that are each constant but disagree get
R̂ = ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Union

import numpy as np
import torch

__all__ = ["rhat", "ess", "ess_bulk", "ess_tail", "mcse_mean", "split_rhat", "summary", "Summary",
           "ess_per_second", "ksd", "imq_stein_kernel"]

RHAT_THRESHOLD = 1.01   # Vehtari et al. (2021)'s recommended bound
MIN_DRAWS = 4           # per chain: the split chains need two draws each


# -- input -----------------------------------------------------------------------------

def _array(x, name="draws") -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name} must be [chains, draws] or [chains, draws, *param_shape], got shape {a.shape}")
    if a.shape[0] < 1:
        raise ValueError(f"{name} needs at least one chain, got shape {a.shape}")
    if a.shape[1] < MIN_DRAWS:
        raise ValueError(f"{name} needs at least {MIN_DRAWS} draws per chain, got {a.shape[1]} (shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _mapping(x) -> Optional[Dict[str, object]]:
    """{name: [chains, draws, ...]} for a ChainSamples or a mapping, None for an array."""
    from .samples import SampleSet

    if isinstance(x, SampleSet):
        raise TypeError("a SampleSet has no chain dimension; run several chains with pybayes.chains "
                        "(ChainSamples) or pass an array [chains, draws, ...]")
    if hasattr(x, "chain_tensors"):      # pybayes.chains.ChainSamples
        return dict(x.chain_tensors)
    if isinstance(x, Mapping):
        return dict(x)
    return None


def _per_parameter(fn, draws, **kw):
    """Apply ``fn`` ([chains, draws, P] -> [P]) to an array or to every entry of a mapping."""
    mapping = _mapping(draws)
    if mapping is not None:
        if not mapping:
            raise ValueError("no parameters in the draws mapping")
        return {n: _per_parameter(fn, t, **kw) for n, t in mapping.items()}
    a = _array(draws)
    c, s = a.shape[:2]
    shape = a.shape[2:]
    out = fn(a.reshape(c, s, -1), **kw)
    return out.reshape(shape) if shape else out.reshape(()).item()


# -- building blocks (arrays [chains, draws, P]) --------------------------------------

def _split(a: np.ndarray) -> np.ndarray:
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half:]], axis=0)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks along axis 0, ties get the mean of their positions (rankdata 'average')."""
    xt = np.ascontiguousarray(x.T)           # sort along contiguous rows
    m = xt.shape[1]
    order = np.argsort(xt, axis=1, kind="stable")
    xs = np.take_along_axis(xt, order, axis=1)
    idx = np.broadcast_to(np.arange(m)[None, :], xs.shape)
    first = np.ones(xs.shape, dtype=bool)
    first[:, 1:] = xs[:, 1:] != xs[:, :-1]
    last = np.ones(xs.shape, dtype=bool)
    last[:, :-1] = first[:, 1:]
    start = np.maximum.accumulate(np.where(first, idx, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, idx, m - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(xs.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=1)
    return ranks.T


def _z_scale(a: np.ndarray) -> np.ndarray:
    c, s, p = a.shape
    r = _average_ranks(a.reshape(c * s, p))
    u = (r - 0.375) / (c * s + 0.25)
    return torch.special.ndtri(torch.from_numpy(u)).numpy().reshape(c, s, p)


def _constant(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(-1, a.shape[2])
    return (flat == flat[:1]).all(axis=0)


def _rhat_basic(a: np.ndarray) -> np.ndarray:
    n = a.shape[1]
    w = a.var(axis=1, ddof=1).mean(axis=0)
    b_over_n = a.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(((n - 1) / n * w + b_over_n) / w)
    # constant chains: inf when they disagree with each other, undefined (nan) when all agree
    return np.where(w > 0, r, np.where(b_over_n > 0, np.inf, np.nan))


def _autocov(a: np.ndarray) -> np.ndarray:
    """Biased autocovariance of every chain at lags 0..n-1: [chains, n, P]."""
    n = a.shape[1]
    x = np.ascontiguousarray(np.moveaxis(a - a.mean(axis=1, keepdims=True), 1, 2))   # [chains, P, n]
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, n=nfft, axis=-1)
    acov = np.fft.irfft(f.real ** 2 + f.imag ** 2, n=nfft, axis=-1)[..., :n] / n
    return np.moveaxis(acov, 2, 1)


def _ess_basic(a: np.ndarray) -> np.ndarray:
    m, n, p = a.shape
    total = m * n
    acov = _autocov(a)
    mean_var = acov[:, 0].mean(axis=0) * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + a.mean(axis=1).var(axis=0, ddof=1)
    undefined = ~(var_plus > 0)
    var_plus = np.where(undefined, 1.0, var_plus)
    rho = 1.0 - (mean_var - acov.mean(axis=0)) / var_plus          # [n, P]
    rho[0] = 1.0
    # Geyer's initial monotone sequence on the pairs P_k = rho_2k + rho_2k+1, k = 0..k_max
    k_max = max((n - 1) // 2 - 1, 0)
    n_pairs = k_max + 1
    pairs = rho[0:2 * n_pairs:2] + rho[1:2 * n_pairs:2]             # [n_pairs, P]
    # the first non-positive pair after pair 0 ends the sum (else the last pair does)
    nonpos = pairs[1:] <= 0
    if n_pairs > 1:
        k_star = np.where(nonpos.any(axis=0), np.argmax(nonpos, axis=0) + 1, k_max)
    else:
        k_star = np.zeros(p, dtype=np.int64)
    mono = np.minimum.accumulate(pairs, axis=0)
    keep = np.arange(n_pairs)[:, None] < k_star[None, :]
    head = np.where(keep, mono, 0.0).sum(axis=0)
    even = rho[2 * k_star, np.arange(p)]
    pair_star = pairs[k_star, np.arange(p)]
    extra = np.where((pair_star >= 0) | (even > 0), even, 0.0)
    tau = -1.0 + 2.0 * head + extra
    tau = np.maximum(tau, 1.0 / math.log10(total))
    # a constant input (e.g. a quantile indicator that never flips) counts as independent draws
    return np.where(undefined, float(total), total / tau)


def _rhat_rank(a: np.ndarray) -> np.ndarray:
    split = _split(a)
    bulk = _rhat_basic(_z_scale(split))
    folded = np.abs(split - np.median(split.reshape(-1, a.shape[2]), axis=0))
    tail = _rhat_basic(_z_scale(folded))
    r = np.maximum(bulk, tail)
    return np.where(_constant(a), np.nan, r)


def _ess_kind(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "bulk":
        return np.where(_constant(a), np.nan, _ess_basic(_z_scale(_split(a))))
    if kind == "mean":
        return np.where(_constant(a), np.nan, _ess_basic(_split(a)))
    if kind == "tail":
        flat = a.reshape(-1, a.shape[2])
        out = None
        for prob in (0.05, 0.95):
            q = np.quantile(flat, prob, axis=0)
            e = _ess_basic(_split((a <= q).astype(np.float64)))
            out = e if out is None else np.fmin(out, e)
        return np.where(_constant(a), np.nan, out)
    raise ValueError(f"kind must be 'bulk', 'tail' or 'mean', got {kind!r}")


# -- public per-parameter diagnostics ----------------------------------------------------

def rhat(draws):
    """Rank-normalised split-R̂ per parameter element (Vehtari et al. 2021); < 1.01 is
    the recommended threshold. ``draws``: ``[chains, draws, *shape]`` or a mapping."""
    return _per_parameter(_rhat_rank, draws)


def split_rhat(draws):
    """Classic split-R̂ (Gelman et al., BDA3) without rank normalisation or folding."""
    return _per_parameter(lambda a: _rhat_basic(_split(a)), draws)


def ess(draws, kind: str = "bulk"):
    """Effective sample size per parameter element: ``kind`` ``"bulk"`` (rank-normalised,
    default), ``"tail"`` (5 % / 95 % quantiles) or ``"mean"`` (raw draws)."""
    if kind not in ("bulk", "tail", "mean"):
        raise ValueError(f"kind must be 'bulk', 'tail' or 'mean', got {kind!r}")
    return _per_parameter(_ess_kind, draws, kind=kind)


def ess_bulk(draws):
    return ess(draws, "bulk")


def ess_tail(draws):
    return ess(draws, "tail")


def mcse_mean(draws):
    """Monte Carlo standard error of the posterior mean: ``sd / sqrt(ESS_mean)``."""
    def fn(a):
        sd = a.reshape(-1, a.shape[2]).std(axis=0, ddof=1)
        return sd / np.sqrt(_ess_kind(a, "mean"))
    return _per_parameter(fn, draws)


def ess_per_second(ess_value, seconds: float):
    """Effective samples per wall-clock second (``ess / seconds``)."""
    seconds = float(seconds)
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"seconds must be a finite number > 0, got {seconds}")
    if isinstance(ess_value, Mapping):
        return {n: np.asarray(v) / seconds for n, v in ess_value.items()}
    return np.asarray(ess_value) / seconds


# -- summary ----------------------------------------------------------------------------

@dataclass
class Summary:
    """Per-element diagnostics (flattened over all parameters, in ``names`` order) and
    their summary. ``frac_rhat_above``: fraction of elements with R̂ > ``threshold``
    (undefined ones excluded); ``*_per_second`` use ``seconds`` (None without it)."""

    n_chains: int
    n_draws: int
    n_params: int
    names: list                    # one label per element, e.g. "fc.weight[3]"
    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    median_ess_bulk: float
    frac_rhat_above: float
    threshold: float = RHAT_THRESHOLD
    n_undefined: int = 0
    seconds: Optional[float] = None
    min_ess_bulk_per_second: Optional[float] = None
    min_ess_tail_per_second: Optional[float] = None
    worst: list = field(default_factory=list)   # labels of the elements with the largest R̂

    def as_dict(self) -> dict:
        """The scalar summary (JSON-friendly; per-element arrays left out)."""
        keys = ("n_chains", "n_draws", "n_params", "max_rhat", "min_ess_bulk", "min_ess_tail", "median_ess_bulk",
                "frac_rhat_above", "threshold", "n_undefined", "seconds", "min_ess_bulk_per_second",
                "min_ess_tail_per_second", "worst")
        return {k: getattr(self, k) for k in keys}

    def __str__(self) -> str:
        s = (f"{self.n_chains} chains x {self.n_draws} draws, {self.n_params} parameters: "
             f"max R-hat {self.max_rhat:.4f} ({self.frac_rhat_above:.1%} > {self.threshold:g}), "
             f"min ESS bulk {self.min_ess_bulk:.0f} / tail {self.min_ess_tail:.0f}")
        if self.min_ess_bulk_per_second is not None:
            s += f", {self.min_ess_bulk_per_second:.3g} min-bulk-ESS/s"
        if self.n_undefined:
            s += f"; {self.n_undefined} constant parameters (undefined)"
        return s


def _labels(name: str, shape) -> list:
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]


def summary(draws, seconds: Optional[float] = None, threshold: float = RHAT_THRESHOLD) -> Summary:
    """R̂, bulk and tail ESS of every parameter element, and their summary: max R̂,
    min bulk/tail ESS, fraction with R̂ > ``threshold``; with ``seconds`` (the sampling
    wall time) the minimum ESS per second."""
    mapping = _mapping(draws)
    if mapping is None:
        a = _array(draws)
        mapping = {"x": a}
    if not mapping:
        raise ValueError("no parameters in the draws mapping")
    blocks, labels, dims = [], [], None
    for n, t in mapping.items():
        a = _array(t, name=f"draws[{n!r}]")
        if dims is None:
            dims = a.shape[:2]
        elif a.shape[:2] != dims:
            raise ValueError(f"every parameter needs the same [chains, draws], got {dims} and {a.shape[:2]} ({n!r})")
        blocks.append(a.reshape(dims[0], dims[1], -1))
        labels += _labels(n, a.shape[2:])
    a = np.concatenate(blocks, axis=2)
    r = _rhat_rank(a)
    eb = _ess_kind(a, "bulk")
    et = _ess_kind(a, "tail")
    defined = np.isfinite(r)
    nan_max = (lambda v: float(np.nanmax(v)) if np.isfinite(v).any() else float("nan"))
    nan_min = (lambda v: float(np.nanmin(v)) if np.isfinite(v).any() else float("nan"))
    order = np.argsort(np.where(defined, -r, np.inf))[:5]
    out = Summary(n_chains=int(dims[0]), n_draws=int(dims[1]), n_params=a.shape[2], names=labels, rhat=r,
                  ess_bulk=eb, ess_tail=et, max_rhat=nan_max(r), min_ess_bulk=nan_min(eb), min_ess_tail=nan_min(et),
                  median_ess_bulk=float(np.nanmedian(eb)) if np.isfinite(eb).any() else float("nan"),
                  frac_rhat_above=float((r[defined] > threshold).mean()) if defined.any() else float("nan"),
                  threshold=float(threshold), n_undefined=int((~defined).sum()),
                  worst=[labels[i] for i in order if defined[i]])
    if seconds is not None:
        out.seconds = float(seconds)
        out.min_ess_bulk_per_second = float(ess_per_second(out.min_ess_bulk, seconds))
        out.min_ess_tail_per_second = float(ess_per_second(out.min_ess_tail, seconds))
    return out


# -- kernel Stein discrepancy -----------------------------------------------------------

def imq_stein_kernel(x: torch.Tensor, y: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor,
                     c: float = 1.0, beta: float = -0.5) -> torch.Tensor:
    """Langevin Stein kernel of the IMQ base kernel ``k(x, y) = (c² + |x - y|²)^beta``:

        k0(x, y) = sx·sy k + sx·∇_y k + sy·∇_x k + tr ∇_x∇_y k

    for score vectors ``sx = ∇ log p(x)``, ``sy = ∇ log p(y)``; ``x [n, d]``,
    ``y [m, d]`` give ``[n, m]``. With ``r = x - y`` and ``u = c² + |r|²``:
    ``∇_x k = 2 beta u^(beta-1) r = -∇_y k`` and
    ``tr ∇_x∇_y k = -2 beta d u^(beta-1) - 4 beta (beta-1) u^(beta-2) |r|²``."""
    d = x.shape[1]
    r = x[:, None, :] - y[None, :, :]
    r2 = (r * r).sum(-1)
    u = c * c + r2
    k = u ** beta
    du = u ** (beta - 1)
    cross = ((sy[None, :, :] - sx[:, None, :]) * r).sum(-1)
    return ((sx @ sy.T) * k + 2 * beta * du * cross
            - 2 * beta * d * du - 4 * beta * (beta - 1) * u ** (beta - 2) * r2)


def _flat_samples(samples) -> torch.Tensor:
    mapping = None
    if hasattr(samples, "chain_tensors"):
        mapping = {n: t.reshape(-1, *t.shape[2:]) for n, t in samples.chain_tensors.items()}
    elif hasattr(samples, "tensors") and isinstance(getattr(samples, "tensors"), Mapping):   # SampleSet
        mapping = samples.tensors
    elif isinstance(samples, Mapping):
        mapping = samples
    if mapping is not None:
        x = torch.cat([torch.as_tensor(t).reshape(torch.as_tensor(t).shape[0], -1) for t in mapping.values()], 1)
    else:
        x = torch.as_tensor(samples)
        if x.dim() == 1:
            x = x[:, None]
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"samples must be [n >= 2, d] (or a SampleSet / ChainSamples), got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("samples contain NaN or infinite values")
    return x


def ksd(samples, score: Union[Callable, np.ndarray, torch.Tensor], *, c: float = 1.0, beta: float = -0.5,
        statistic: str = "v", squared: bool = False, block_size: int = 1024) -> float:
    """Kernel Stein discrepancy of ``samples`` from the target ``p`` with the IMQ kernel
    (Gorham & Mackey 2017; ``c = 1, beta = -1/2``): ``KSD² = mean_ij k0(x_i, x_j)``.

    ``samples``: ``[n, d]`` (or a :class:`~pybayes.samples.SampleSet` / ChainSamples,
    flattened to one vector per sample, in name order). ``score``: ``∇ log p``, either a
    function of a float64 ``[n, d]`` tensor returning ``[n, d]`` or the precomputed
    ``[n, d]`` scores. ``statistic="v"`` (default, all pairs, ``>= 0``) or ``"u"`` (the
    unbiased off-diagonal mean, can be negative; zero in expectation for exact samples).
    Returns KSD (its square with ``squared=True``). O(n² d) work in
    ``block_size``-row blocks: meant for small models (d up to a few thousand)."""
    if statistic not in ("v", "u"):
        raise ValueError(f"statistic must be 'v' or 'u', got {statistic!r}")
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c}")
    if not -1.0 < beta < 0.0:
        raise ValueError(f"beta must be in (-1, 0), got {beta}")
    if statistic == "u" and not squared:
        raise ValueError("the U-statistic estimates KSD² and can be negative: pass squared=True")
    x = _flat_samples(samples)
    n = x.shape[0]
    s = score(x) if callable(score) else score
    s = torch.as_tensor(s).detach().to("cpu", torch.float64)
    if s.shape != x.shape:
        raise ValueError(f"score must have the samples' shape {tuple(x.shape)}, got {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("score contains NaN or infinite values")
    block_size = int(block_size)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    total = 0.0
    diag = 0.0
    for i in range(0, n, block_size):
        xi, si = x[i:i + block_size], s[i:i + block_size]
        total += float(imq_stein_kernel(xi, x, si, s, c, beta).sum())
        diag += float(((si * si).sum(-1) * c ** (2 * beta) - 2 * beta * x.shape[1] * c ** (2 * (beta - 1))).sum())
    value = total / (n * n) if statistic == "v" else (total - diag) / (n * (n - 1))
    if squared:
        return value
    return math.sqrt(max(value, 0.0))
