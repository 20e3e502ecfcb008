"""Stochastic-gradient Hamiltonian Monte Carlo as a torch optimizer."""

from __future__ import annotations

import torch

from .. import ops
from ._base import SamplerBase, check_nonnegative, _value


class SGHMC(SamplerBase):
    r"""SGHMC in momentum form (Chen et al. 2014, friction ``1 - momentum``):

    .. math:: g \leftarrow g + wd\,\theta;\quad
              b \leftarrow \mu b + g + \sqrt{2(1-\mu)T/(lr\,N)}\;\xi;\quad
              \theta \leftarrow \theta - lr\,b

    with ``b`` starting at 0. ``temperature=0`` is exactly
    ``torch.optim.SGD(lr, momentum=mu, weight_decay=wd)`` (no dampening, no
    Nesterov); ``momentum=0`` is SGLD. The momentum buffer is
    ``state[p]["momentum_buffer"]`` as in SGD. ``momentum`` may be driven by
    schedulers (e.g. OneCycleLR with ``cycle_momentum=True``). A step with
    ``lr = 0`` leaves θ unchanged and adds no noise. See :class:`SGLD` for the
    other arguments.
    """

    _kind = "h"
    _buffer = "momentum_buffer"
    _hyper = ("lr", "temperature", "num_data", "weight_decay", "momentum")

    def __init__(self, params, lr=1e-3, momentum=0.9, *, num_data=None, temperature=1.0,
                 weight_decay=0.0, seed=None, maximize=False, stochastic_rounding=True, fused=None):
        defaults = dict(lr=lr, momentum=momentum, num_data=num_data, temperature=temperature,
                        weight_decay=weight_decay, maximize=maximize,
                        stochastic_rounding=stochastic_rounding)
        super().__init__(params, defaults, seed, fused)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonnegative("momentum", group["momentum"])
        if not _value(group["momentum"]) < 1:
            raise ValueError(f"momentum must be in [0, 1), got {_value(group['momentum'])}")

    def _fused_op(self, params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets):
        torch.ops.pybayes.sghmc_(params, grads, bufs, ids, steps, h["lr"], h["momentum"],
                                 h["weight_decay"], h["temperature"], h["num_data"],
                                 ops.seed_to_int64(seed), h["maximize"], grad_scale, found_inf, offsets,
                                 h["stochastic_rounding"])
