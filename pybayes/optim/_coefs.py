"""Noise coefficients of the samplers, computed in double precision exactly as
the kernels do (csrc/ops/sampler_args.h, make_coefs)."""

import math


def noise_coefficient(kind: str, h: dict) -> float:
    """SGLD: sqrt(2 lr T / N); SGHMC: sqrt(2 (1 - mu) T / (lr N)), 0 when lr = 0
    (a zero step does not move); pSGLD: 2 lr T / N (divided by the
    preconditioner's avg per element before the square root)."""
    lr, temperature = float(h["lr"]), float(h["temperature"])
    if temperature == 0 or lr == 0:
        return 0.0
    n = float(h["num_data"])
    if kind == "l":
        return math.sqrt(2.0 * lr * temperature / n)
    if kind == "h":
        return math.sqrt(2.0 * (1.0 - float(h["momentum"])) * temperature / (lr * n))
    return 2.0 * lr * temperature / n


def psgld_avg_floor(h: dict) -> float:
    """pSGLD's lower bound of sqrt(v) + eps (csrc/ops/sampler_args.h):
    2 T (1 - alpha) / (lr N b²) for b = noise_bound when T > 0 and lr > 0,
    else 0 (b None or inf: no bound), so that one step's noise never exceeds
    b lr / sqrt(1 - alpha)."""
    lr, temperature = float(h["lr"]), float(h["temperature"])
    b = h.get("noise_bound")
    if temperature <= 0 or lr <= 0 or b is None or math.isinf(float(b)):
        return 0.0
    b = float(b)
    return 2.0 * temperature * (1.0 - float(h["alpha"])) / (lr * float(h["num_data"]) * b * b)
