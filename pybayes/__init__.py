"""pybayes: Bayesian deep learning as cheap as optimisation.

* ``pybayes.optim``   — SGLD / SGHMC / pSGLD as drop-in ``torch.optim`` optimizers
  (one fused kernel per step, in-kernel Philox noise).
* ``pybayes.ops``     — the torch custom ops behind them (``torch.ops.pybayes``).
* ``pybayes.thermo``  — a simulator of the thermodynamic linear-algebra chip.

``python -m pybayes info`` says what this installation contains.
"""

import torch as _torch

__version__ = "0.1.0"

MIN_TORCH = (2, 4)


def _torch_version():
    base = _torch.__version__.split("+")[0]
    parts = []
    for p in base.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


if _torch_version() < MIN_TORCH:
    raise ImportError(
        f"pybayes needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}, found torch {_torch.__version__}; "
        "upgrade torch, then rebuild pybayes with `pip install --no-build-isolation -e .`"
    )

from . import ops  # noqa: E402  (loads pybayes._C and registers the fake kernels)
from . import optim  # noqa: E402

__all__ = ["ops", "optim", "__version__"]
