"""The demo's figures (matplotlib, imported here only: the library does not need it).

* ``reliability.png``: one reliability diagram per method — accuracy against
  confidence in 15 equal-width bins (:func:`pybayes.metrics.calibration_bins`),
  the diagonal is perfect calibration, the bar height below/above it is over/
  under-confidence; ECE in the title.
* ``uncertainty.png``: per method, histograms of the predictive entropy (top
  row) and of its epistemic part (bottom row) on held-out digits vs shifted
  (OOD) digits.

Every number drawn is also returned (and written to the demo's JSON).
"""

from __future__ import annotations

import numpy as np

from .. import metrics

__all__ = ["reliability_data", "histogram_data", "plot_reliability", "plot_uncertainty"]

N_BINS = 15
HIST_BINS = 30


def _mpl():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the demo's plots need matplotlib: pip install -e \".[demo]\"") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _nan_to_none(a):
    return [None if (isinstance(v, float) and not np.isfinite(v)) else v for v in np.asarray(a, float).tolist()]


def reliability_data(ev, y) -> dict:
    b = metrics.calibration_bins(ev.pred_in.probs.cpu(), y.cpu(), N_BINS)
    return {"edges": b["edges"].tolist(), "count": [int(c) for c in b["count"].tolist()],
            "confidence": _nan_to_none(b["confidence"]), "accuracy": _nan_to_none(b["accuracy"]),
            "ece": ev.row["ece"]}


def histogram_data(evals) -> dict:
    """Shared bin edges per quantity so the methods are comparable."""
    out = {}
    for q in ("total", "epistemic"):
        hi = max(max(getattr(e.pred_in, q).max().item(), getattr(e.pred_ood, q).max().item()) for e in evals)
        edges = np.linspace(0.0, max(hi, 1e-6) * 1.0001, HIST_BINS + 1)
        out[q] = {"edges": edges.tolist(), "methods": {}}
        for e in evals:
            cin, _ = np.histogram(getattr(e.pred_in, q).cpu().double().numpy(), edges)
            cout, _ = np.histogram(getattr(e.pred_ood, q).cpu().double().numpy(), edges)
            out[q]["methods"][e.name] = {"in_distribution": cin.tolist(), "ood": cout.tolist()}
    return out


def plot_reliability(evals, rel: dict, path) -> None:
    plt = _mpl()
    fig, axes = plt.subplots(1, len(evals), figsize=(3.6 * len(evals), 3.8), sharey=True)
    for ax, e in zip(np.atleast_1d(axes), evals):
        r = rel[e.name]
        edges = np.asarray(r["edges"])
        centers = 0.5 * (edges[1:] + edges[:-1])
        width = edges[1] - edges[0]
        acc = np.array([np.nan if v is None else v for v in r["accuracy"]])
        conf = np.array([np.nan if v is None else v for v in r["confidence"]])
        ok = np.asarray(r["count"]) > 0
        ax.bar(centers[ok], acc[ok], width=width, edgecolor="black", linewidth=0.5, color="#4C72B0",
               label="accuracy")
        ax.bar(centers[ok], (conf - acc)[ok], bottom=acc[ok], width=width, color="#DD8452", alpha=0.5,
               edgecolor="#DD8452", label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{e.label}\nECE = {e.row['ece']:.4f}", fontsize=10)
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Reliability on held-out digits", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_uncertainty(evals, hist: dict, path) -> None:
    plt = _mpl()
    n = len(evals)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.2), squeeze=False)
    titles = {"total": "predictive entropy (nats)", "epistemic": "epistemic = mutual information (nats)"}
    for i, q in enumerate(("total", "epistemic")):
        edges = np.asarray(hist[q]["edges"])
        for j, e in enumerate(evals):
            ax = axes[i, j]
            h = hist[q]["methods"][e.name]
            key = "auroc_total" if q == "total" else "auroc_epistemic"
            ax.stairs(h["in_distribution"], edges, fill=True, alpha=0.55, color="#4C72B0", label="held-out digits")
            ax.stairs(h["ood"], edges, fill=True, alpha=0.55, color="#C44E52", label="shifted digits (OOD)")
            ax.set_yscale("symlog", linthresh=1)
            ax.set_xlabel(titles[q], fontsize=8)
            auc = e.row[key]
            sub = "no epistemic part (one sample)" if auc is None else f"OOD AUROC = {auc:.3f}"
            ax.set_title(f"{e.label}\n{sub}", fontsize=9)
            if j == 0:
                ax.set_ylabel("count")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Uncertainty on held-out vs shifted digits", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
