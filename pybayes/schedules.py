"""Cyclical step size and temperature for cyclical SG-MCMC (Zhang et al. 2020,
"Cyclical Stochastic Gradient MCMC for Bayesian Deep Learning").

The run of ``total_steps`` steps is cut into ``cycles`` cycles of
``L = ceil(total_steps / cycles)`` steps. At step ``k`` (0-based, the step the
optimizer takes next) the position in its cycle is ``r = (k mod L) / L`` and

    lr_k = lr_0 / 2 * (cos(pi * r) + 1)          (cosine from lr_0 down to ~0)

The first ``exploration`` fraction of each cycle (``r < exploration``) is the
exploration phase: large steps, no noise (every param group's ``temperature``
is held at 0, so a pybayes sampler is plain SGD / SGD-momentum / RMSprop
there). In the sampling phase (``r >= exploration``) the groups' original
temperatures are restored and the sampler draws posterior samples;
:attr:`Cyclical.is_sampling` says which phase the current step is in, and a
:class:`~pybayes.samples.SampleCollector` built with ``schedule=`` collects
only then.
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LRScheduler

__all__ = ["Cyclical"]


class Cyclical(LRScheduler):
    """Cosine cyclical learning rate + exploration/sampling temperature switch.

    Call ``scheduler.step()`` once per optimizer step, after ``optimizer.step()``
    (torch's usual order). Groups without a ``temperature`` key (e.g. a plain
    ``torch.optim.SGD``) get the learning rate schedule only. The original
    temperatures are read at construction (:attr:`base_temperatures`); assign to
    that list to change them later.

    ``reset_momentum`` (default True) zeroes every ``momentum_buffer`` in the
    optimizer state when a new cycle starts (a warm restart). SGHMC keeps its
    momentum in torch's form ``b = velocity / lr``, whose noise part has scale
    ``sqrt(T / (lr N))``: at the end of a cosine cycle ``lr`` is ~0, and without
    the reset the jump back to ``lr_0`` would move every weight by
    ``lr_0 * sqrt(T / (lr_end N))`` in one step.

    Example::

        opt = pybayes.optim.SGHMC(model.parameters(), lr=0.1, num_data=N)
        sched = Cyclical(opt, cycles=4, total_steps=epochs * len(loader), exploration=0.8)
        collector = SampleCollector(model, schedule=sched, thin=10)
        collector.attach(opt)
        for x, y in ...:
            ...; opt.step(); sched.step()
    """

    def __init__(self, optimizer, cycles: int, total_steps: int, exploration: float = 0.8,
                 last_epoch: int = -1, reset_momentum: bool = True):
        cycles, total_steps = int(cycles), int(total_steps)
        if cycles < 1:
            raise ValueError(f"cycles must be >= 1, got {cycles}")
        if total_steps < cycles:
            raise ValueError(f"total_steps ({total_steps}) must be >= cycles ({cycles})")
        exploration = float(exploration)
        if not 0.0 <= exploration <= 1.0:
            raise ValueError(f"exploration must be in [0, 1], got {exploration}")
        self.cycles = cycles
        self.total_steps = total_steps
        self.exploration = exploration
        self.reset_momentum = bool(reset_momentum)
        self.cycle_length = math.ceil(total_steps / cycles)
        self.base_temperatures = [g.get("temperature") for g in optimizer.param_groups]
        super().__init__(optimizer, last_epoch)

    # -- phase of the current step (self.last_epoch) ----------------------------------

    def position(self, step=None) -> float:
        """``r = (k mod L) / L`` of step ``k`` (default: the current step)."""
        k = self.last_epoch if step is None else int(step)
        return (k % self.cycle_length) / self.cycle_length

    @property
    def cycle(self) -> int:
        """Index of the current cycle (0-based)."""
        return self.last_epoch // self.cycle_length

    @property
    def is_exploring(self) -> bool:
        return self.position() < self.exploration

    @property
    def is_sampling(self) -> bool:
        """Whether the current step (the one the optimizer takes next, or — inside
        an optimizer step post-hook — the one it just took) is in a sampling phase."""
        return not self.is_exploring

    def _factor(self, step=None) -> float:
        return 0.5 * (math.cos(math.pi * self.position(step)) + 1.0)

    def get_lr(self):
        f = self._factor()
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self):
        return self.get_lr()

    def step(self, epoch=None):
        super().step(epoch)
        if self.reset_momentum and self.last_epoch > 0 and self.last_epoch % self.cycle_length == 0:
            for state in self.optimizer.state.values():
                buf = state.get("momentum_buffer")
                if buf is not None:
                    buf.zero_()
        exploring = self.is_exploring
        for group, t0 in zip(self.optimizer.param_groups, self.base_temperatures):
            if t0 is not None:
                group["temperature"] = 0.0 if exploring else t0

    def __repr__(self):
        return (f"Cyclical(cycles={self.cycles}, total_steps={self.total_steps}, "
                f"cycle_length={self.cycle_length}, exploration={self.exploration}, step={self.last_epoch}, "
                f"{'sampling' if self.is_sampling else 'exploring'})")
