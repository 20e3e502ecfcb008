"""Printing the demo's tables (Markdown, so they paste into a README) and
writing its JSON."""

from __future__ import annotations

import json
import math
import os
import platform

import numpy as np
import torch

from .evaluate import COLUMNS

__all__ = ["format_table", "format_chip", "machine_description", "write_json"]


def format_table(evals) -> str:
    headers = ["method"] + [h for _, h, _ in COLUMNS]
    rows = [[e.label] + ["-" if e.row[k] is None else fmt.format(e.row[k]) for k, _, fmt in COLUMNS] for e in evals]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def format_chip(c) -> str:
    parts = c.chip_time_parts
    m_np, m_ch = c.metrics_lapack, c.metrics_chip
    lines = [
        f"last-layer Laplace posterior covariance: d = {c.n_classes} classes x ({c.hidden} features + bias) = {c.d}, "
        f"prior precision {c.prior_precision:.3g} (last-layer evidence), cond(P) = {c.condition_number:.3g} "
        f"(Jacobi-scaled, as programmed: {c.condition_number_programmed:.3g})",
        "",
        "| inverse of P | rel. error vs LAPACK | simulated chip time | wall time |",
        "|---|---:|---:|---:|",
        f"| LAPACK (float64 Cholesky inverse) | 0 (reference) | - | {c.lapack_wall_s * 1e3:.2f} ms |",
        f"| thermodynamic chip ({c.integrator}, {c.n_samples} ADC samples) | {c.rel_error:.2%} "
        f"(chip's estimate {c.rel_stderr:.2%}, tol {c.tol:.0%}{'' if c.converged else ', NOT reached'}) | {_time(c.chip_time_s)} | {c.chip_wall_s:.2f} s |",
        "",
        f"chip time = programming {_time(parts['programming'])} + burn-in {_time(parts['burn_in'])} "
        f"+ sampling {_time(parts['sampling'])} + read-out {_time(parts['readout'])} "
        f"(tau = {_time(c.config['tau'])}, one ADC reading per {c.config['dt']:g} tau)",
        "",
        "| last-layer Laplace predictions (GLM probit) with | acc | NLL | ECE | Brier | OOD AUROC (epistemic) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| LAPACK covariance | {m_np['accuracy']:.4f} | {m_np['nll']:.4f} | {m_np['ece']:.4f} | "
        f"{m_np['brier']:.4f} | {m_np['auroc_epistemic']:.3f} |",
        f"| chip covariance | {m_ch['accuracy']:.4f} | {m_ch['nll']:.4f} | {m_ch['ece']:.4f} | "
        f"{m_ch['brier']:.4f} | {m_ch['auroc_epistemic']:.3f} |",
    ]
    return "\n".join(lines)


def _time(s: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= f or unit == "ns":
            return f"{s / f:.3g} {unit}"
    return f"{s} s"  # pragma: no cover


def machine_description(device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores visible), torch {torch.__version__}"


def _clean(o):
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, torch.Tensor):
        return _clean(o.tolist())
    return o


def write_json(obj, path) -> None:
    with open(path, "w") as f:
        json.dump(_clean(obj), f, indent=1, allow_nan=False)
        f.write("\n")
