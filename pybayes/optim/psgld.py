"""Preconditioned SGLD (RMSprop preconditioner) as a torch optimizer."""

from __future__ import annotations

import torch

from .. import ops
from ._base import SamplerBase, check_nonnegative, _value


class PSGLD(SamplerBase):
    r"""pSGLD (Li et al. 2016) without the Γ correction term:

    .. math:: v \leftarrow \alpha v + (1-\alpha) g^2;\quad
              G = 1/(\sqrt{v} + \epsilon);\quad
              \theta \leftarrow \theta - lr\,G\,g - \sqrt{2\,lr\,G\,T/N}\;\xi

    The second-moment EMA is the diagonal-Fisher accumulation of
    ``pybayes.ops.fisher_diag_accumulate_`` (decay ``alpha``, scale
    ``1 - alpha``), kept in ``state[p]["square_avg"]`` as RMSprop does.
    ``temperature=0`` is exactly ``torch.optim.RMSprop(lr, alpha, eps,
    weight_decay)``. See :class:`SGLD` for the other arguments.
    """

    _kind = "p"
    _buffer = "square_avg"
    _hyper = ("lr", "temperature", "num_data", "weight_decay", "alpha", "eps")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, *, num_data=None, temperature=1.0,
                 weight_decay=0.0, seed=None, maximize=False, fused=None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, num_data=num_data, temperature=temperature,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, seed, fused)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonnegative("alpha", group["alpha"])
        if not _value(group["alpha"]) < 1:
            raise ValueError(f"alpha must be in [0, 1), got {_value(group['alpha'])}")
        check_nonnegative("eps", group["eps"])
        if _value(group["eps"]) == 0:
            raise ValueError("eps must be > 0, got 0")

    def _fused_op(self, params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets):
        torch.ops.pybayes.psgld_(params, grads, bufs, ids, steps, h["lr"], h["alpha"], h["eps"],
                                 h["weight_decay"], h["temperature"], h["num_data"],
                                 ops.seed_to_int64(seed), h["maximize"], grad_scale, found_inf, offsets)
