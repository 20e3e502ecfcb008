"""Held-out and OOD evaluation of the four methods: Bayesian model averages
(:func:`pybayes.predict.predict`) and the metrics of :mod:`pybayes.metrics`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import metrics
from ..predict import ClassificationPrediction, predict

__all__ = ["Evaluation", "evaluate", "COLUMNS"]

# (key, header, format): the printed table and the JSON "table" rows
COLUMNS = (
    ("accuracy", "acc", "{:.4f}"),
    ("nll", "NLL", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("brier", "Brier", "{:.4f}"),
    ("auroc_epistemic", "OOD AUROC (epistemic)", "{:.3f}"),
    ("auroc_total", "OOD AUROC (entropy)", "{:.3f}"),
    ("samples", "samples", "{:d}"),
    ("train_seconds", "time (s)", "{:.1f}"),
)


@dataclass
class Evaluation:
    name: str
    label: str
    row: dict                       # the table row (COLUMNS keys) + per-shift AUROCs
    pred_in: ClassificationPrediction
    pred_ood: ClassificationPrediction


def evaluate(result, data) -> Evaluation:
    """Predict on the held-out and OOD inputs with the method's samples and score it."""
    pred_in = predict(result.model, result.samples, data.x_test)
    pred_ood = predict(result.model, result.samples, data.x_ood)
    probs = pred_in.probs.cpu()
    y = data.y_test.cpu()
    epi_in, epi_ood = pred_in.epistemic.cpu(), pred_ood.epistemic.cpu()
    tot_in, tot_ood = pred_in.total.cpu(), pred_ood.total.cpu()
    row = {
        "accuracy": metrics.accuracy(probs, y),
        "nll": metrics.nll(probs, y),
        "ece": metrics.ece(probs, y),
        "brier": metrics.brier(probs, y),
        # one parameter sample has no epistemic uncertainty: the column is undefined ("-")
        "auroc_epistemic": metrics.auroc_ood(epi_in, epi_ood) if len(result.samples) > 1 else None,
        "auroc_total": metrics.auroc_ood(tot_in, tot_ood),
        "samples": len(result.samples),
        "train_seconds": result.train_seconds,
        "gradient_steps": result.gradient_steps,
    }
    for kind in np.unique(data.ood_kind):
        sel = torch.as_tensor(data.ood_kind == kind)
        row[f"auroc_epistemic_{kind}"] = (metrics.auroc_ood(epi_in, epi_ood[sel]) if len(result.samples) > 1
                                          else None)
        row[f"auroc_total_{kind}"] = metrics.auroc_ood(tot_in, tot_ood[sel])
        row[f"accuracy_{kind}"] = metrics.accuracy(pred_ood.probs.cpu()[sel], data.y_test.cpu().repeat(2)[sel])
    return Evaluation(result.name, result.label, row, pred_in, pred_ood)
