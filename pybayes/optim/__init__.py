"""SG-MCMC samplers as drop-in ``torch.optim`` optimizers (DESIGN.md §3).

Loss convention: ``loss.backward()`` on the mean per-example loss of the
mini-batch; ``num_data`` = N, the training-set size. The samplers then target
``p_T(θ) ∝ exp(-N (L(θ) + wd/2 |θ|²) / T)``; ``temperature=0`` is optimisation
and reproduces ``torch.optim.SGD`` / ``RMSprop`` step for step.
"""

from .psgld import PSGLD
from .sghmc import SGHMC
from .sgld import SGLD

__all__ = ["SGLD", "SGHMC", "PSGLD"]
