"""``python -m pybayes demo``: Bayesian deep learning on real data.

One MLP on scikit-learn's bundled handwritten digits, trained four ways with the
same budget (SGD = SGHMC at temperature 0, SGHMC at temperature 1, pSGLD, and a
diagonal Laplace approximation around the SGD solution), scored on held-out
digits (accuracy, NLL, ECE, Brier) and on detecting shifted digits nobody
trained on (OOD AUROC by epistemic uncertainty); reliability diagrams and
uncertainty histograms as PNG, every number as JSON; then the last-layer
Laplace posterior covariance inverted on the simulated thermodynamic chip.

Needs the ``[demo]`` extra (scikit-learn, matplotlib); the rest of pybayes
does not import this package.

* :mod:`.data`     digits, split, OOD set
* :mod:`.train`    the MLP and the four training runs
* :mod:`.evaluate` Bayesian model averages and metrics
* :mod:`.plots`    the PNGs
* :mod:`.chip`     last-layer GGN + prior inverted on the chip
* :mod:`.report`   tables and JSON
* :mod:`.run`      the command line and :func:`run`
"""

from .run import main, run

__all__ = ["main", "run"]
