"""Plain-PyTorch reference path of the samplers (``fused=False``).

The same equations as the fused kernels (DESIGN.md §3), one tensor at a time
with ordinary torch ops, and the same noise: ``ops.philox_normal`` of the
parameter's stream. It is the ground truth of the tests, the "unfused"
baseline of the benchmarks, and the path taken on devices without a kernel.
Half-precision parameters are updated in float32, as in the kernels.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import ops
from ._coefs import noise_coefficient


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
    for i, (p, g, pid, step) in enumerate(zip(params, grads, param_ids, steps)):
        if p.numel() == 0:
            continue
        theta = _acc(p)
        g = _effective_grad(p, g, h, inv_scale)
        z = _noise(p, seed, pid, step, offsets[i] if offsets else 0) if coef != 0 else None
        if kind == "l":
            upd = g * h["lr"]
            if z is not None:
                upd = upd + z * coef
            p.copy_(theta - upd)
        elif kind == "h":
            b = _acc(buffers[i]) * h["momentum"] + g
            if z is not None:
                b = b + z * coef
            buffers[i].copy_(b)
            p.copy_(theta - b * h["lr"])
        else:
            alpha = h["alpha"]
            v = _acc(buffers[i]) * alpha + (g * (1.0 - alpha)) * g
            buffers[i].copy_(v)
            avg = _sqrt(v) + h["eps"]
            upd = (g / avg) * h["lr"]
            if z is not None:
                # a tensor numerator: `coef / avg` would run as avg.reciprocal() * coef (1 ulp off)
                upd = upd + _sqrt(torch.full_like(avg, coef).div_(avg)) * z
            p.copy_(theta - upd)
