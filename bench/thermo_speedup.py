"""What ``bench/thermo.py`` does not cover of the thermo benchmarks (issue 6):

1. **accuracy vs wall time at d = 64, 256, 1024**: ``thermo.inv`` (all three
   dimensions) and ``thermo.solve`` at d = 1024 (``bench/thermo.py`` runs
   ``solve`` at d ≤ 512), for growing averaging windows, against
   ``numpy.linalg.inv`` / ``numpy.linalg.solve`` and ``torch.linalg`` (float64)
   on the same matrices;
2. **projected speed-up**: across d, the chip timing model's simulated seconds
   for ``solve`` run to a relative standard error of 1 % (``tol=0.01``), split
   into programming, burn-in, sampling and read-out, against the measured time
   of a digital solve of the same system on this machine — the table the
   thermodynamic-computing papers draw. The chip's figures follow the
   documented assumptions of :class:`pybayes.thermo.ChipConfig` (``tau`` = 1 µs,
   DAC and read-out at 1e8 values/s), not a measured chip.

The simulator runs use the Euler–Maruyama integrator (what a circuit simulator
does; no O(d³) set-up) and are single runs: they last from milliseconds to
seconds and are stochastic, so their error is reported with the run's own
standard-error estimate. The digital baselines are medians of ≥ 20 repeats
(5 with ``--quick``). The chip simulator is CPU code; with ``--device cuda`` the
digital baselines also include ``torch.linalg`` on the GPU.
"""

from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import common

BETA_SOLVE = 100.0  # the same noise level as bench/thermo.py's solve rows
TOL = 0.01


def spd(d: int, lo: float = 0.5, hi: float = 5.0, seed: int = 0) -> np.ndarray:
    """A symmetric positive-definite matrix with eigenvalues spread over [lo, hi]
    (condition number 10), as in ``bench/thermo.py``."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (Q * np.linspace(lo, hi, d)) @ Q.T
    return 0.5 * (A + A.T)


def _digital(kind: str, A: np.ndarray, b: np.ndarray, device: str, repeats: int) -> List[dict]:
    """Median wall time of the digital baselines (float64)."""
    rows = []
    if kind == "solve":
        cands = [("numpy.linalg.solve", "cpu", lambda: np.linalg.solve(A, b))]
    else:
        cands = [("numpy.linalg.inv", "cpu", lambda: np.linalg.inv(A))]
    At = torch.from_numpy(A)
    bt = torch.from_numpy(b)
    devices = ["cpu"] + (["cuda"] if device == "cuda" else [])
    for dev in devices:
        Ad, bd = At.to(dev), bt.to(dev)
        if kind == "solve":
            cands.append((f"torch.linalg.solve ({dev})", dev, lambda Ad=Ad, bd=bd: torch.linalg.solve(Ad, bd)))
        else:
            cands.append((f"torch.linalg.inv ({dev})", dev, lambda Ad=Ad: torch.linalg.inv(Ad)))
    for name, dev, fn in cands:
        t = common.time_fn(fn, dev, repeats, warmup=1, min_repeat_s=1e-3)
        rows.append(dict(method=name, wall_s=t["median_s"], repeats=repeats))
    return rows


def _rel(x, ref) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def accuracy_rows(dims: Sequence[int], solve_dims: Sequence[int], windows: Sequence[float], device: str,
                  repeats: int, big: int = 1024, big_windows: Sequence[float] = (200.0, 800.0)) -> List[dict]:
    """Relative error vs wall time of the chip's inv at ``dims`` and solve at
    ``solve_dims`` (bench/thermo.py covers solve at d <= 512), next to the
    digital answers; windows ``big_windows`` (in tau) at d >= ``big``, else
    ``windows``."""
    from pybayes import thermo

    rows: List[dict] = []
    for d in dims:
        A = spd(d, seed=2)
        b = np.random.default_rng(3).standard_normal(d)
        ws = big_windows if d >= big else windows
        kinds = ("solve", "inv") if d in solve_dims else ("inv",)
        for kind in kinds:
            exact = np.linalg.solve(A, b) if kind == "solve" else np.linalg.inv(A)
            for r in _digital(kind, A, b, device, repeats):
                rows.append(dict(table="accuracy", kind=kind, d=d, window_tau=0.0, rel_error=0.0,
                                 rel_stderr=float("nan"), chip_s=float("nan"), **r))
            for w in ws:
                beta = BETA_SOLVE if kind == "solve" else 1.0
                cfg = thermo.ChipConfig(integrator="euler", beta=beta, seed=1)
                t0 = time.perf_counter()
                if kind == "solve":
                    x, info = thermo.solve(A, b, time=w, config=cfg, return_info=True)
                else:
                    x, info = thermo.inv(A, time=w, config=cfg, return_info=True)
                wall = time.perf_counter() - t0
                rows.append(dict(table="accuracy", kind=kind, d=d, method=f"thermo.{kind} (euler, beta={beta:g})",
                                 window_tau=w, wall_s=wall, rel_error=_rel(np.asarray(x), exact),
                                 rel_stderr=float(info.rel_stderr), chip_s=float(info.time_total),
                                 samples=int(info.n_samples), substeps=int(info.substeps), repeats=1))
    return rows


def speedup_rows(dims: Sequence[int], device: str, repeats: int, tol: float = TOL) -> List[dict]:
    """Simulated chip seconds of solve(tol) vs the measured digital solve."""
    from pybayes import thermo

    rows = []
    for d in dims:
        A = spd(d, seed=2)
        b = np.random.default_rng(3).standard_normal(d)
        exact = np.linalg.solve(A, b)
        digital = _digital("solve", A, b, device, repeats)
        best = min(digital, key=lambda r: r["wall_s"])
        cfg = thermo.ChipConfig(integrator="euler", beta=BETA_SOLVE, seed=1)
        t0 = time.perf_counter()
        x, info = thermo.solve(A, b, tol=tol, config=cfg, return_info=True)
        wall = time.perf_counter() - t0
        chip = float(info.time_total)
        rows.append(dict(
            table="speedup", d=d, tol=tol, converged=bool(info.converged),
            rel_error=_rel(np.asarray(x), exact), rel_stderr=float(info.rel_stderr),
            chip_s=chip, chip_programming_s=float(info.time_programming),
            chip_burn_in_s=float(info.time_burn_in), chip_sampling_s=float(info.time_sampling),
            chip_readout_s=float(info.time_readout), window_tau=float(info.sampling_time),
            simulator_wall_s=wall,
            digital=[dict(method=r["method"], wall_s=r["wall_s"]) for r in digital],
            digital_best_method=best["method"], digital_best_s=best["wall_s"],
            projected_speedup=best["wall_s"] / chip,
        ))
    return rows


def run(quick: bool = False, device: str = "cpu", dims: Optional[Sequence[int]] = None) -> List[dict]:
    repeats = 5 if quick else 20
    if dims:  # a narrowed run (tests): everything at the given dimensions, one window
        acc_dims, solve_dims, sp_dims = list(dims), list(dims), list(dims)
        windows, big_windows = (200.0,), (200.0,)
    elif quick:
        acc_dims, solve_dims, sp_dims = [64, 256], [], [64, 256]
        windows, big_windows = (200.0, 800.0), (200.0,)
    else:
        acc_dims, solve_dims, sp_dims = [64, 256, 1024], [1024], [64, 128, 256, 512, 1024]
        windows, big_windows = (200.0, 800.0, 3200.0), (200.0, 800.0)
    return (accuracy_rows(acc_dims, solve_dims, windows, device, repeats, big_windows=big_windows)
            + speedup_rows(sp_dims, device, repeats))


def _g(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.3g}"
    return str(v)


def markdown(rows: List[dict], env: Dict) -> str:
    parts = ["# thermo: accuracy vs wall time, and the chip's projected speed-up", "",
             common.env_markdown(env), ""]
    acc = [r for r in rows if r["table"] == "accuracy"]
    if acc:
        parts += ["## Accuracy vs wall time", "",
                  "Relative error (Frobenius / 2-norm) against the float64 LAPACK answer; wall time of this "
                  "machine (simulator: one run; digital: median). `chip` is the simulated physical time of "
                  "the run (timing model of `ChipConfig`).", ""]
        table = [(r["kind"], r["d"], r["method"], _g(r["window_tau"]) if r["window_tau"] else "—",
                  common.fmt_seconds(r["wall_s"]), _g(r["rel_error"]), _g(r["rel_stderr"]),
                  common.fmt_seconds(r["chip_s"]) if not math.isnan(r["chip_s"]) else "—")
                 for r in acc]
        parts += [common.markdown_table(["op", "d", "method", "window (τ)", "wall", "rel. error",
                                         "rel. stderr (est.)", "chip time"], table), ""]
    sp = [r for r in rows if r["table"] == "speedup"]
    if sp:
        parts += ["## Projected speed-up of the chip (solve to 1 % relative standard error)", "",
                  "Chip seconds from the timing model (τ = 1 µs; DAC and read-out 1e8 values/s: assumptions, "
                  "not measurements) for a `solve` run until its estimated relative standard error is "
                  f"below {sp[0]['tol']:g}; digital = the fastest float64 solve measured here "
                  "(median). Speed-up = digital / chip. The simulator's own wall time shows what emulating "
                  "the chip costs on this CPU.", ""]
        table = [(r["d"], common.fmt_seconds(r["chip_s"]), common.fmt_seconds(r["chip_programming_s"]),
                  common.fmt_seconds(r["chip_burn_in_s"] + r["chip_sampling_s"]),
                  common.fmt_seconds(r["chip_readout_s"]), _g(r["rel_error"]),
                  f"{common.fmt_seconds(r['digital_best_s'])} ({r['digital_best_method']})",
                  f"{r['projected_speedup']:.2g}×", common.fmt_seconds(r["simulator_wall_s"]))
                 for r in sp]
        parts += [common.markdown_table(["d", "chip total", "programming", "relaxation + sampling",
                                         "read-out", "rel. error", "digital solve", "projected speed-up",
                                         "simulator wall"], table), ""]
    return "\n".join(parts)
