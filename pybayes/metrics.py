"""Metrics for probabilistic classifiers and uncertainty scores.

Every function takes predicted class probabilities ``probs`` of shape
``(N, C)`` (rows summing to one, e.g. :attr:`pybayes.predict.ClassificationPrediction.probs`)
and integer labels ``(N,)``, and returns a Python float (mean over the ``N``
examples). ``auroc`` scores a detector: how well an uncertainty score (higher =
more likely out-of-distribution / wrong) separates positives from negatives.
"""

from __future__ import annotations

import math

import torch

__all__ = ["accuracy", "nll", "gaussian_nll", "brier", "ece", "calibration_bins", "auroc", "auroc_ood"]


def _check_probs(probs, labels):
    probs = torch.as_tensor(probs)
    labels = torch.as_tensor(labels, device=probs.device)
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, C), got {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be floating point, got {probs.dtype}")
    if labels.dim() != 1 or labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if probs.shape[0] == 0:
        raise ValueError("probs is empty (N = 0): the metric is undefined")
    labels = labels.long()
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be in [0, {probs.shape[1]}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return probs, labels


def accuracy(probs, labels) -> float:
    """Fraction of examples whose most probable class is the label (ties: lowest index)."""
    probs, labels = _check_probs(probs, labels)
    return probs.argmax(dim=1).eq(labels).double().mean().item()


def nll(probs, labels) -> float:
    """Mean negative log-likelihood ``-mean_i log probs[i, y_i]`` (natural log).
    A probability of exactly 0 for the label is clamped to the dtype's smallest
    normal number, so the result is large but finite."""
    probs, labels = _check_probs(probs, labels)
    p = probs.double().gather(1, labels[:, None]).squeeze(1)
    return -torch.log(p.clamp_min(torch.finfo(probs.dtype).tiny)).mean().item()


def gaussian_nll(mean, variance, targets) -> float:
    """Mean Gaussian negative log-likelihood of regression targets under
    ``N(mean, variance)`` (per element, including the ``log 2 pi`` constant),
    e.g. with the total predictive variance of :func:`pybayes.predict.predict`."""
    mean, variance, targets = (torch.as_tensor(t).double() for t in (mean, variance, targets))
    if mean.shape != targets.shape or variance.shape != mean.shape:
        raise ValueError(f"mean {tuple(mean.shape)}, variance {tuple(variance.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same shape")
    if (variance <= 0).any():
        raise ValueError("variance must be > 0")
    return (0.5 * (torch.log(2 * math.pi * variance) + (targets - mean) ** 2 / variance)).mean().item()


def brier(probs, labels) -> float:
    """Multi-class Brier score ``mean_i sum_c (probs[i, c] - 1[c = y_i])^2`` (in [0, 2])."""
    probs, labels = _check_probs(probs, labels)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return (probs.double() - onehot).pow(2).sum(dim=1).mean().item()


def calibration_bins(probs, labels, n_bins: int = 15) -> dict:
    """Reliability-diagram data over ``n_bins`` equal-width confidence bins.

    Bin ``k`` holds confidences in ``[k/n_bins, (k+1)/n_bins)``, except the top
    bin, which is closed: a confidence of exactly 1.0 counts in it (implementations
    with half-open bins everywhere silently drop such examples). Returns tensors
    ``edges`` (n_bins + 1), ``count``, ``confidence`` (mean confidence per bin) and
    ``accuracy`` (per bin); empty bins have count 0 and NaN means."""
    probs, labels = _check_probs(probs, labels)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, pred = probs.double().max(dim=1)
    correct = pred.eq(labels).double()
    inner = torch.arange(1, n_bins, dtype=torch.float64, device=conf.device) / n_bins
    idx = torch.bucketize(conf, inner, right=True)  # k with inner[k-1] <= conf < inner[k]
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    edges = torch.arange(n_bins + 1, dtype=torch.float64, device=conf.device) / n_bins
    return {"edges": edges, "count": count, "confidence": conf_sum / count, "accuracy": acc_sum / count}


def ece(probs, labels, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) with ``n_bins`` equal-width
    bins: ``sum_k (n_k / N) |accuracy_k - confidence_k|``. Binning as in
    :func:`calibration_bins` (a confidence of 1.0 falls in the top bin)."""
    b = calibration_bins(probs, labels, n_bins)
    n = b["count"].sum()
    nz = b["count"] > 0
    gap = (b["accuracy"][nz] - b["confidence"][nz]).abs()
    return (b["count"][nz] / n * gap).sum().item()


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for
    binary ``labels`` (1/True = positive): the probability that a random positive
    scores above a random negative, ties counting one half (Mann–Whitney U with
    mid-ranks). Exact, O(N log N)."""
    s = torch.as_tensor(scores).double().reshape(-1)
    y = torch.as_tensor(labels, device=s.device).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"scores ({s.numel()}) and labels ({y.numel()}) must have the same length")
    if torch.isnan(s).any():
        raise ValueError("scores contain NaN")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    y = y.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes, got {n_pos} positives and {n_neg} negatives")
    # mid-ranks (1-based) with ties averaged
    sorted_s, order = torch.sort(s)
    uniq, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mid = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = mid[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).item()


def auroc_ood(scores_in, scores_out) -> float:
    """AUROC of an uncertainty score for detecting out-of-distribution inputs:
    ``scores_out`` (OOD, positives) against ``scores_in`` (in-distribution)."""
    s_in = torch.as_tensor(scores_in).double().reshape(-1)
    s_out = torch.as_tensor(scores_out).double().reshape(-1).to(s_in.device)
    labels = torch.cat([torch.zeros_like(s_in), torch.ones_like(s_out)])
    return auroc(torch.cat([s_in, s_out]), labels)
