"""`python -m pybayes demo`: a --quick run in-process (all four methods, finite
metrics, valid PNGs, JSON with the table and figures, the chip section), the
calibration property, determinism of the data, and the command line."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn", reason="the demo needs scikit-learn (pip install -e '.[test]')")
pytest.importorskip("matplotlib", reason="the demo needs matplotlib (pip install -e '.[test]')")

from pybayes.demo import data as demo_data  # noqa: E402
from pybayes.demo.run import run  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METHODS = ("sgd", "sghmc", "psgld", "laplace")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    payload = run(out, quick=True, seed=0, progress=False, log=lambda *a: None)
    return out, payload


def test_quick_run_table_has_finite_metrics_for_all_methods(quick_run):
    _, payload = quick_run
    rows = {r["method"]: r for r in payload["table"]}
    assert tuple(rows) == METHODS
    for name, r in rows.items():
        for key in ("accuracy", "nll", "ece", "brier", "auroc_total"):
            assert math.isfinite(r[key]), (name, key, r[key])
        assert 0.85 <= r["accuracy"] <= 1.0, (name, r["accuracy"])   # digits: every method learns
        assert 0.0 <= r["ece"] <= 1.0 and 0.0 <= r["brier"] <= 2.0
    # one parameter sample has no epistemic uncertainty; the others detect the shift
    assert rows["sgd"]["auroc_epistemic"] is None and rows["sgd"]["samples"] == 1
    for name in ("sghmc", "psgld", "laplace"):
        assert rows[name]["samples"] > 1
        assert 0.5 < rows[name]["auroc_epistemic"] <= 1.0, (name, rows[name]["auroc_epistemic"])
    # SGD is literally SGHMC at temperature 0: same trajectory as torch.optim.SGD
    assert payload["sgd_identity_max_rel_diff"] < 1e-5
    # the same budget: every method took the same number of gradient steps
    assert len({r["gradient_steps"] for r in rows.values()}) == 1


def test_quick_run_pngs_are_valid_images(quick_run):
    import matplotlib.image as mpimg

    out, _ = quick_run
    for name in ("reliability.png", "uncertainty.png"):
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
        assert img.std() > 0.01  # something was drawn


def test_quick_run_json_has_table_and_figures(quick_run):
    out, payload = quick_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["table"] == json.loads(json.dumps(payload["table"]))
    assert [r["method"] for r in on_disk["table"]] == list(METHODS)
    assert "| method" in on_disk["table_markdown"]
    for m in METHODS:
        rel = on_disk["reliability"][m]
        assert len(rel["edges"]) == len(rel["count"]) + 1 == 16
        assert sum(rel["count"]) == on_disk["data"]["test"]
        for q in ("total", "epistemic"):
            h = on_disk["histograms"][q]["methods"][m]
            assert sum(h["in_distribution"]) == on_disk["data"]["test"]
            assert sum(h["ood"]) == on_disk["data"]["ood"]
    assert on_disk["seed"] == 0 and on_disk["quick"] is True


def test_quick_run_chip_section(quick_run):
    _, payload = quick_run
    chip = payload["chip"]
    assert chip["d"] == chip["n_classes"] * (chip["hidden"] + 1)
    assert chip["chip_time_s"] > 0 and chip["chip_wall_s"] > 0 and chip["lapack_wall_s"] > 0
    parts = chip["chip_time_parts"]
    assert math.isclose(sum(parts.values()), chip["chip_time_s"], rel_tol=1e-9)
    # the chip's error is what its own standard error says, within a factor (quick: tol 20 %)
    assert 0 < chip["rel_error"] < 3 * chip["tol"]
    assert chip["metrics_chip"]["accuracy"] == pytest.approx(chip["metrics_lapack"]["accuracy"], abs=0.02)
    assert chip["metrics_chip"]["nll"] == pytest.approx(chip["metrics_lapack"]["nll"], rel=0.2)


def test_bayesian_methods_at_least_as_calibrated_as_sgd(quick_run):
    """The issue's property on the quick run with seed 0 (see the report)."""
    _, payload = quick_run
    ece = {r["method"]: r["ece"] for r in payload["table"]}
    assert ece["sghmc"] <= ece["sgd"], ece
    assert ece["laplace"] <= ece["sgd"], ece


def test_data_split_and_ood_are_deterministic_and_disjoint():
    a, b = demo_data.load_digits(3), demo_data.load_digits(3)
    c = demo_data.load_digits(4)
    for name in ("x_train", "y_train", "x_val", "x_test", "x_ood"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.x_train, c.x_train)
    n = a.num_train + a.x_val.shape[0] + a.x_test.shape[0]
    assert n == 1797
    # stratified: every class is in every part
    for y in (a.y_train, a.y_val, a.y_test):
        assert set(y.tolist()) == set(range(10))
    assert a.x_ood.shape[0] == 2 * a.x_test.shape[0]
    assert float(a.x_ood.min()) >= 0.0 and float(a.x_ood.max()) <= 1.0


def test_rotation_is_exact_for_quarter_turns():
    rng = np.random.default_rng(0)
    img = rng.random((3, 8, 8))
    rot = demo_data.rotate_images(img, np.array([90.0, 180.0, -90.0]))
    np.testing.assert_allclose(rot[0], np.rot90(img[0], 1), atol=1e-12)
    np.testing.assert_allclose(rot[1], np.rot90(img[1], 2), atol=1e-12)
    np.testing.assert_allclose(rot[2], np.rot90(img[2], -1), atol=1e-12)


def test_cli_demo_parser_and_bad_device(capsys):
    from pybayes.__main__ import main

    with pytest.raises(SystemExit):
        main(["demo", "--device", "tpu"])
    with pytest.raises(SystemExit):
        main(["demo", "--bogus"])
    if not torch.cuda.is_available():
        assert main(["demo", "--device", "cuda", "--out", "unused"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
