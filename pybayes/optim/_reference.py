"""Plain-PyTorch reference path of the samplers (``fused=False``).

The same equations as the fused kernels (DESIGN.md §3), one tensor at a time
with ordinary torch ops, and the same noise: ``ops.philox_normal`` of the
parameter's stream. It is the ground truth of the tests, the "unfused"
baseline of the benchmarks, and the path taken on devices without a kernel.
Half-precision parameters are updated in float32, as in the kernels, and
stored with round-to-nearest or, with ``stochastic_rounding``, with the
stochastic rounding of csrc/sampler_math.h written here in integer torch ops
on the words of ``ops.philox_rounding_uint32``.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import ops
from ._coefs import noise_coefficient, psgld_avg_floor


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root the kernels use (sqrtf / sqrt). On the
    CPU torch.sqrt runs MKL's vector sqrt, which is not correctly rounded (about
    1 in 5 float32 results are 1 ulp off), so the CPU path takes numpy's."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sqrt(x.numpy()))
    return x.sqrt()


def _noise(p, seed, pid, step, offset):
    """Element k of the stream goes to the k-th element of p in memory (the
    kernels stream any dense layout, e.g. channels_last, in memory order)."""
    z = ops.philox_normal(seed, p.numel(), offset=offset, stream=pid, step=step, device=p.device)
    z = z.as_strided(p.shape, p.stride()) if p.numel() > 1 else z.view(p.shape)
    return z.to(torch.float64 if p.dtype == torch.float64 else torch.float32)


_HALF = (torch.float16, torch.bfloat16)


def _round16(x: torch.Tensor, bits: torch.Tensor, dtype) -> torch.Tensor:
    """Stochastic rounding of float32 ``x`` to the grid of ``dtype`` with 16
    random bits per element (sampler_math.h): a float32 tensor that ``dtype``
    represents exactly. Inf and NaN pass through."""
    b = x.view(torch.int32)
    r = bits.to(torch.int32)
    if dtype == torch.bfloat16:
        out = ((b + r) & -0x10000).view(torch.float32)
    else:
        normal = ((b + (r & 0x1FFF)) & -0x2000).view(torch.float32)
        mag = b & 0x7FFFFFFF
        y = mag.view(torch.float32) * 16777216.0  # |x| * 2^24
        k = torch.where(y < 2048.0, y, torch.zeros_like(y)).to(torch.int32).to(torch.float32)
        up = (r.to(torch.float32) < (y - k) * 65536.0).to(torch.float32)
        sub = (((k + up) * 5.9604644775390625e-8).view(torch.int32) | (b & -0x80000000)).view(torch.float32)
        out = torch.where(mag >= 0x38800000, normal, sub)
    return torch.where(torch.isfinite(x), out, x)


def _store(dst: torch.Tensor, value: torch.Tensor, bits) -> None:
    """dst.copy_(value), stochastically rounded when ``bits`` (16 per element) are given."""
    if bits is not None:  # word k rounds the k-th element in memory, as the noise
        bits = bits.as_strided(dst.shape, dst.stride()) if dst.numel() > 1 else bits.view(dst.shape)
        value = _round16(value, bits, dst.dtype)
    dst.copy_(value)


def _effective_grad(p, g, h, inv_scale):
    g = _acc(g)
    if inv_scale is not None:
        g = g * inv_scale
    if h["maximize"]:
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * _acc(p)
    return g


def step_reference(kind, params, grads, buffers, param_ids, steps, h, seed, grad_scale=None,
                   offsets=None):
    """One step over a list of tensors; ``kind`` is 'l' (SGLD), 'h' (SGHMC) or
    'p' (pSGLD); ``buffers`` are momentum buffers or square averages;
    ``offsets[i]`` is the global index of tensor i's first element (shards)."""
    inv_scale = None if grad_scale is None else 1.0 / float(grad_scale)
    coef = noise_coefficient(kind, h)
    sr = bool(h.get("stochastic_rounding", False))
    for i, (p, g, pid, step) in enumerate(zip(params, grads, param_ids, steps)):
        if p.numel() == 0:
            continue
        theta = _acc(p)
        g = _effective_grad(p, g, h, inv_scale)
        offset = offsets[i] if offsets else 0
        z = _noise(p, seed, pid, step, offset) if coef != 0 else None
        lo = hi = None
        if sr and p.dtype in _HALF:
            words = ops.philox_rounding_uint32(seed, p.numel(), offset=offset, stream=pid, step=step,
                                               device=p.device)
            lo, hi = words & 0xFFFF, words >> 16
        if kind == "l":
            upd = g * h["lr"]
            if z is not None:
                upd = upd + z * coef
            _store(p, theta - upd, lo)
        elif kind == "h":
            b = _acc(buffers[i]) * h["momentum"] + g
            if z is not None:
                b = b + z * coef
            _store(buffers[i], b, hi)
            _store(p, theta - b * h["lr"], lo)
        else:
            alpha = h["alpha"]
            v = _acc(buffers[i]) * alpha + (g * (1.0 - alpha)) * g
            _store(buffers[i], v, hi)
            avg = _sqrt(v) + h["eps"]
            floor = psgld_avg_floor(h)
            if floor > 0:
                avg = avg.clamp_min(floor)
            upd = (g / avg) * h["lr"]
            if z is not None:
                # a tensor numerator: `coef / avg` would run as avg.reciprocal() * coef (1 ulp off)
                upd = upd + _sqrt(torch.full_like(avg, coef).div_(avg)) * z
            _store(p, theta - upd, lo)
