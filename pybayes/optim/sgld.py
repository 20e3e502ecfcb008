"""Stochastic-gradient Langevin dynamics as a torch optimizer."""

from __future__ import annotations

import torch

from .. import ops
from ._base import SamplerBase


class SGLD(SamplerBase):
    r"""SGLD (Welling & Teh 2011): per element, with ``g`` the gradient of the
    mean mini-batch loss,

    .. math:: g \leftarrow g + wd\,\theta;\quad
              \theta \leftarrow \theta - lr\,g - \sqrt{2\,lr\,T/N}\;\xi

    which samples ``p(θ) ∝ exp(-N (L(θ) + wd/2 |θ|²) / T)``. ``temperature=0``
    is exactly ``torch.optim.SGD(lr, weight_decay=wd)``.

    Args:
        params: iterable of parameters, dicts (param groups) or named parameters.
        lr: step size (float or one-element tensor; LR schedulers work).
        num_data: training-set size N; required when ``temperature > 0``.
        temperature: T (1 = Bayesian posterior, <1 cold, 0 = optimisation).
        weight_decay: wd, a Gaussian prior of precision ``N * wd``.
        seed: the noise seed (``None``: drawn once from torch's default generator,
            broadcast from rank 0 under torch.distributed).
        maximize: ascend instead of descend.
        stochastic_rounding: store float16/bfloat16 parameters and state
            buffers with stochastic rounding (unbiased; random bits from the
            parameter's own Philox stream, README "Randomness"); no effect on
            float32/float64. ``False``: round to nearest.
        fused: ``None`` uses the fused kernel wherever one exists, ``False`` the
            plain-PyTorch reference path (same noise, same trajectory).
    """

    _kind = "l"
    _buffer = None

    def __init__(self, params, lr=1e-3, *, num_data=None, temperature=1.0, weight_decay=0.0,
                 seed=None, maximize=False, stochastic_rounding=True, fused=None):
        defaults = dict(lr=lr, num_data=num_data, temperature=temperature,
                        weight_decay=weight_decay, maximize=maximize,
                        stochastic_rounding=stochastic_rounding)
        super().__init__(params, defaults, seed, fused)

    def _fused_op(self, params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets):
        torch.ops.pybayes.sgld_(params, grads, ids, steps, h["lr"], h["weight_decay"],
                                h["temperature"], h["num_data"], ops.seed_to_int64(seed),
                                h["maximize"], grad_scale, found_inf, offsets,
                                h["stochastic_rounding"])
