"""Shared helpers of the sampler tests: hyperparameter sets and a driver that
runs one fused op call and the reference path on copies of the same tensors."""

import torch

from pybayes import ops
from pybayes.optim._reference import step_reference

KINDS = {"l": "sgld_", "h": "sghmc_", "p": "psgld_"}


def hyper(kind, lr=0.05, temperature=1.0, num_data=100.0, weight_decay=0.01, maximize=False,
          momentum=0.9, alpha=0.95, eps=1e-6, stochastic_rounding=False, noise_bound=0.5):
    h = dict(lr=lr, temperature=temperature, num_data=num_data, weight_decay=weight_decay,
             maximize=maximize, stochastic_rounding=stochastic_rounding)
    if kind == "h":
        h["momentum"] = momentum
    if kind == "p":
        h.update(alpha=alpha, eps=eps, noise_bound=noise_bound)
    return h


def op_args(kind, params, grads, bufs, ids, steps, h, seed, grad_scale=None, found_inf=None,
            offsets=None):
    """(the op, its full argument tuple) for one fused sampler call."""
    op = getattr(torch.ops.pybayes, KINDS[kind])
    s = ops.seed_to_int64(seed)
    common = (h["weight_decay"], h["temperature"], h["num_data"], s, h["maximize"], grad_scale,
              found_inf, offsets, h.get("stochastic_rounding", False))
    if kind == "l":
        return op, (params, grads, ids, steps, h["lr"], *common)
    if kind == "h":
        return op, (params, grads, bufs, ids, steps, h["lr"], h["momentum"], *common)
    return op, (params, grads, bufs, ids, steps, h["lr"], h["alpha"], h["eps"], *common, h["noise_bound"])


def call_op(kind, params, grads, bufs, ids, steps, h, seed, grad_scale=None, found_inf=None,
            offsets=None):
    op, args = op_args(kind, params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets)
    op(*args)


def make_tensors(sizes, dtype, device="cpu", seed=0, kind="h"):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=g).to(dtype).to(device) for n in sizes]
    grads = [torch.randn(n, generator=g).to(dtype).to(device) for n in sizes]
    if kind == "p":
        bufs = [torch.rand(n, generator=g).to(dtype).to(device) for n in sizes]
    else:
        bufs = [torch.randn(n, generator=g).to(dtype).to(device) for n in sizes]
    return params, grads, bufs


def clone_all(*lists):
    return [[t.clone() for t in lst] for lst in lists]


def run_both(kind, sizes, dtype, h, seed=1234, steps_at=3, grad_scale=None, device="cpu", offsets=None):
    """(fused params, fused bufs), (reference params, reference bufs)."""
    params, grads, bufs = make_tensors(sizes, dtype, device, kind=kind)
    ids = list(range(7, 7 + len(sizes)))
    steps = [steps_at + (i % 3) for i in range(len(sizes))]
    p1, b1 = clone_all(params, bufs)
    p2, b2 = clone_all(params, bufs)
    gs = None if grad_scale is None else torch.tensor([grad_scale], dtype=torch.float32, device=device)
    call_op(kind, p1, grads, b1, ids, steps, h, seed, grad_scale=gs, offsets=offsets)
    step_reference(kind, p2, grads, b2, ids, steps, h, seed, grad_scale, offsets)
    return (p1, b1), (p2, b2)
