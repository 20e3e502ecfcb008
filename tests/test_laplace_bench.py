"""bench/laplace_predictive.py in a tiny mode (3 epochs, 1 repeat): every predictive
runs, the files are written, and the rows agree with the APIs they call."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("sklearn", reason="the digits data set needs scikit-learn (pip install -e '.[test]')")

from bench import laplace_predictive  # noqa: E402


def test_tiny_run_writes_every_predictive(tmp_path):
    res = laplace_predictive.run(epochs=3, repeats=1, out=tmp_path, log=lambda *a: None)
    on_disk = json.loads((tmp_path / "laplace_predictive.json").read_text())
    names = [r["method"] for r in on_disk["rows"]]
    assert names[0] == "MAP" and len(names) == 7
    assert any("glm probit (default)" in n for n in names) and any("LastLayerLaplace" in n for n in names)
    for r in on_disk["rows"]:
        assert math.isfinite(r["nll"]) and 0 <= r["accuracy"] <= 1 and r["predict_s"] > 0
    assert on_disk["n_params"] == 64 * 32 + 32 + 32 * 10 + 10 and on_disk["last_layer_d"] == 10 * 33
    assert "| MAP |" in (tmp_path / "laplace_predictive.md").read_text()
    assert res["rows"] == on_disk["rows"]
