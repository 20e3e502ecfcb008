"""pybayes.metrics against hand-computed values and brute force."""

import math

import pytest
import torch

from pybayes import metrics


def test_accuracy_nll_brier_hand_values():
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 0])
    assert metrics.accuracy(probs, labels) == pytest.approx(2 / 3, abs=1e-15)  # a tie goes to index 0
    expect_nll = -(math.log(0.7) + math.log(0.4) + math.log(0.5)) / 3
    assert metrics.nll(probs, labels) == pytest.approx(expect_nll, rel=1e-6)
    expect_brier = ((0.3 ** 2 + 0.3 ** 2) + (0.6 ** 2 + 0.6 ** 2) + (0.5 ** 2 + 0.5 ** 2)) / 3
    assert metrics.brier(probs, labels) == pytest.approx(expect_brier, rel=1e-6)


def test_nll_of_zero_probability_is_finite_and_large():
    v = metrics.nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert math.isfinite(v) and v > 80


def test_gaussian_nll_hand_value():
    v = metrics.gaussian_nll(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 4.0]), torch.tensor([1.0, 1.0]))
    expect = (0.5 * (math.log(2 * math.pi) + 1.0) + 0.5 * math.log(2 * math.pi * 4.0)) / 2
    assert v == pytest.approx(expect, rel=1e-12)


def test_ece_perfectly_calibrated_toy_is_zero():
    # 10 examples at confidence 0.8 with 8 correct, 10 at 0.6 with 6 correct, 4 at 0.75 with 3 correct
    rows, labels = [], []
    for conf, n, n_ok in ((0.8, 10, 8), (0.6, 10, 6), (0.75, 4, 3)):
        for i in range(n):
            rows.append([conf, 1 - conf])
            labels.append(0 if i < n_ok else 1)
    probs, labels = torch.tensor(rows, dtype=torch.float64), torch.tensor(labels)
    assert metrics.ece(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_hand_value_and_bins():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45], [0.55, 0.45]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    # bin of 0.9: accuracy 1, confidence 0.9 -> 0.1; bin of 0.55: accuracy 0 -> 0.55
    assert metrics.ece(probs, labels, n_bins=10) == pytest.approx(0.5 * 0.1 + 0.5 * 0.55, abs=1e-12)
    b = metrics.calibration_bins(probs, labels, n_bins=10)
    assert b["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert b["edges"][0] == 0 and b["edges"][-1] == 1


def test_ece_confidence_one_falls_in_top_bin():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0])  # one wrong at full confidence
    b = metrics.calibration_bins(probs, labels, n_bins=15)
    assert b["count"][-1] == 2 and b["count"].sum() == 2
    assert metrics.ece(probs, labels) == pytest.approx(0.5, abs=1e-12)


def test_ece_bin_edges_are_half_open_below():
    # a confidence exactly on an inner edge k/n belongs to bin k
    probs = torch.tensor([[0.6, 0.4], [0.4, 0.6]], dtype=torch.float64)
    b = metrics.calibration_bins(probs, torch.tensor([0, 1]), n_bins=15)
    assert b["count"][9] == 2


def test_ece_bin_count_changes_result():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 3, generator=gen) * 2, 1)
    labels = torch.randint(0, 3, (500,), generator=gen)
    a, b = metrics.ece(probs, labels, n_bins=5), metrics.ece(probs, labels, n_bins=15)
    assert a != b and 0 < a < 1 and 0 < b < 1
    # one bin: |accuracy - mean confidence|
    one = abs(metrics.accuracy(probs, labels) - probs.max(1).values.double().mean().item())
    assert metrics.ece(probs, labels, n_bins=1) == pytest.approx(one, abs=1e-12)


def brute_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_brute_force_pair_count_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.round(torch.randn(300, generator=gen) * 3) / 3  # many ties
    labels = torch.rand(300, generator=gen) < 0.3
    scores = scores + labels * 0.3  # some signal
    expect = brute_auroc(scores.tolist(), labels.tolist())
    assert metrics.auroc(scores, labels) == pytest.approx(expect, abs=1e-12)


def test_auroc_extremes_and_ood_helper():
    assert metrics.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert metrics.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert metrics.auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert metrics.auroc_ood([0.1, 0.3], [0.2, 0.9]) == pytest.approx(0.75)


def test_bad_inputs():
    with pytest.raises(ValueError, match="both classes"):
        metrics.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="binary"):
        metrics.auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="labels must be in"):
        metrics.accuracy(torch.tensor([[0.5, 0.5]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="shape \\(N, C\\)"):
        metrics.ece(torch.tensor([0.5, 0.5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n_bins"):
        metrics.ece(torch.tensor([[0.5, 0.5]]), torch.tensor([0]), n_bins=0)
    with pytest.raises(TypeError, match="integer class indices"):
        metrics.nll(torch.tensor([[0.5, 0.5]]), torch.tensor([0.0]))
