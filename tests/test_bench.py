"""The benchmark harness (bench/), run in a tiny mode: outputs, byte formulas,
memory accounting, the ``python -m pybayes bench`` entry point. The numbers of
a tiny run mean nothing; what is checked is that every path runs and that the
reported quantities are consistent with each other."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import requires_cuda

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench import ops as bops  # noqa: E402
from bench import thermo_speedup  # noqa: E402

ENV_KEYS = ("date", "commit", "torch", "device", "device_name", "threads", "cpu_model", "cpu_count",
            "pybayes_build", "mode")


def test_byte_formulas():
    # SGLD reads p, g and writes p; SGHMC/pSGLD also read and write a buffer;
    # Fisher reads F, g and writes F; per-sample Fisher reads B rows of G
    assert bops.bytes_moved("sgld", 1000, 4) == 3 * 1000 * 4
    assert bops.bytes_moved("sghmc", 1000, 4) == 5 * 1000 * 4
    assert bops.bytes_moved("psgld", 1000, 2) == 5 * 1000 * 2
    assert bops.bytes_moved("fisher", 7, 4) == 3 * 7 * 4
    assert bops.bytes_moved("fisher_per_sample", 10, 4, batch=8) == (8 + 2) * 10 * 4
    assert bops.bytes_moved("fisher_per_sample", 10, 2) == (bops.FISHER_BATCH + 2) * 10 * 2


@pytest.mark.parametrize("total", [10**4, 10**6, 10**7, 10**8])
def test_transformer_shapes(total):
    shapes = bops.transformer_shapes(total)
    assert len(shapes) == 196
    n = sum(math.prod(s) for s in shapes)
    assert abs(n - total) / total < 0.15
    d = shapes[2][0]  # a layer norm
    assert (3 * d, d) in shapes and (4 * d, d) in shapes and (d, 4 * d) in shapes


def _run(args, timeout=300):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _check_ops_outputs(out_dir: Path, device: str):
    payload = json.loads((out_dir / "ops.json").read_text())
    env, rows = payload["env"], payload["rows"]
    for key in ENV_KEYS:
        assert key in env, key
    assert env["device"] == device and env["torch"] == torch.__version__
    assert len(env["commit"]) == 40 or env["commit"].startswith("unknown")
    md = (out_dir / "ops.md").read_text()
    assert f"# pybayes op microbenchmarks — {device}" in md and env["commit"] in md
    assert "| layout | dtype | size | tensors | method | time/step | GB/s | % copy | × pybayes | extra mem |" in md

    seen = set()
    for r in rows:
        seen.add((r["op"], r["method"], r["layout"], r["dtype"]))
        itemsize = bops.DTYPES[r["dtype"]].itemsize
        assert r["bytes_moved"] == bops.bytes_moved(r["op"], r["numel"], itemsize)
        assert r["method"] in md
        if r["status"] != "ok":
            assert r["reason"] and f"{r['status']}: " in md
            continue
        assert r["median_s"] > 0 and r["min_s"] <= r["median_s"]
        assert math.isclose(r["gbps"], r["bytes_moved"] / r["median_s"] / 1e9, rel_tol=1e-9)
        assert math.isclose(r["copy_fraction"], r["gbps"] / r["copy_gbps"], rel_tol=1e-9)
        if r["method"].startswith("copy_"):
            continue
        assert r["repeats"] == 2
        assert r["mem_method"] == ("cuda" if device == "cuda" else "cpu-alloc")
        if r["method"].startswith("pybayes") and "fused=False" not in r["method"]:
            if device == "cpu":
                assert r["extra_mem_bytes"] == 0, r  # the fused ops allocate nothing
            else:  # nothing proportional to the parameters (launch metadata at most)
                assert r["extra_mem_bytes"] < r["numel"], r
        if "fused=False" in r["method"]:
            # the reference path materialises at least the noise (float32 per element)
            assert r["extra_mem_bytes"] >= 4 * r["numel"], r
    for op in bops.OPS:
        for m in bops.METHODS[op]:
            for layout in bops.LAYOUTS:
                for dt in bops.DTYPES:
                    assert (op, m.name, layout, dt) in seen
    many = [r for r in rows if r["layout"] == "many"]
    assert many and all(r["n_tensors"] == 196 for r in many)
    if common.have_matplotlib():
        assert (out_dir / "ops.png").stat().st_size > 0 and "ops.png" in md
    else:
        assert not (out_dir / "ops.png").exists() and "matplotlib is not installed" in md
    return payload


def test_ops_tiny_cpu(tmp_path):
    """The whole grid (every op, method, dtype and layout) at 1e4 elements, 2 repeats,
    through ``python -m pybayes bench``."""
    out = tmp_path / "res"
    _run(["-m", "pybayes", "bench", "ops", "--device", "cpu", "--sizes", "1e4", "--repeats", "2",
          "--warmup", "0", "--out", str(out), "--no-progress"])
    payload = _check_ops_outputs(out, "cpu")
    rows = payload["rows"]
    rms = [r for r in rows if r["method"] == "torch RMSprop fused"]
    assert rms and all(r["status"] in ("ok", "unsupported") for r in rms)
    ok, _ = bops.posteriors_available()
    post = [r for r in rows if r["method"].startswith("posteriors")]
    assert all(r["status"] == ("ok" if ok else "unsupported") for r in post)


def _check_speedup_rows(rows):
    acc = [r for r in rows if r["table"] == "accuracy"]
    sp = [r for r in rows if r["table"] == "speedup"]
    assert {r["kind"] for r in acc} == {"solve", "inv"}
    for r in acc:
        assert r["wall_s"] > 0 and r["rel_error"] >= 0
        if r["method"].startswith("thermo."):
            assert r["chip_s"] > 0 and r["rel_error"] < 1.0
        else:
            assert r["rel_error"] == 0.0
    (s,) = sp
    assert s["d"] == 16
    assert s["chip_s"] == pytest.approx(s["chip_programming_s"] + s["chip_burn_in_s"] + s["chip_sampling_s"]
                                        + s["chip_readout_s"])
    assert s["projected_speedup"] == pytest.approx(s["digital_best_s"] / s["chip_s"])
    assert s["rel_error"] < 0.05  # run to 1 % standard error


def test_run_thermo_cpu(tmp_path, monkeypatch):
    """``bench/run.py thermo``: bench/thermo.py plus the speed-up table. bench/thermo.py's
    own quick run takes ~20 s, so the harness is fed its solve part only (real runs)."""
    from bench import run as brun
    from bench import thermo as bthermo

    monkeypatch.setattr(bthermo, "run", lambda quick, device: bthermo.bench_solve(True, 3))
    args = brun.parse_args(["thermo", "--quick", "--thermo-dims", "16", "--out", str(tmp_path), "--no-progress"])
    written = brun.run_thermo(args, tmp_path, None)
    assert [p.name for p in written] == ["thermo.md", "thermo_speedup.md"]
    meta = json.loads((tmp_path / "thermo.json").read_text())
    assert meta["rows"] and meta["env"]["commit"] and meta["meta"]["commit"]
    assert "# thermo benchmark" in (tmp_path / "thermo.md").read_text()
    sp = json.loads((tmp_path / "thermo_speedup.json").read_text())
    _check_speedup_rows(sp["rows"])
    md = (tmp_path / "thermo_speedup.md").read_text()
    assert "## Projected speed-up" in md and "## Accuracy vs wall time" in md and sp["env"]["commit"] in md


def test_cuda_request_without_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this checks the message given without one")
    out = subprocess.run([sys.executable, "bench/run.py", "ops", "--device", "cuda", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no CUDA GPU" in out.stderr


def test_bench_entry_point_without_checkout(monkeypatch, capsys):
    from pybayes import _bench

    monkeypatch.setattr(_bench, "find_run_py", lambda: None)
    assert _bench.main(["ops"]) == 2
    assert "source checkout" in capsys.readouterr().err
    assert _bench.find_run_py() is None or _bench.find_run_py().name == "run.py"


def test_time_fn_counts_calls():
    calls = []
    t = common.time_fn(lambda: calls.append(1), "cpu", repeats=3, warmup=2, min_repeat_s=0)
    assert t["repeats"] == 3 and t["inner"] == 1 and len(calls) == 2 + 1 + 3
    with pytest.raises(ValueError):
        common.time_fn(lambda: None, "cpu", repeats=0)


@requires_cuda
def test_ops_tiny_cuda(tmp_path):
    out = tmp_path / "res"
    _run(["bench/run.py", "ops", "--device", "cuda", "--sizes", "1e5,1e6", "--repeats", "2", "--warmup", "0",
          "--out", str(out), "--no-progress"])
    payload = _check_ops_outputs(out, "cuda")
    assert payload["env"]["device_name"] == torch.cuda.get_device_name()
    fused = [r for r in payload["rows"] if r["method"] == "pybayes SGHMC (fused)" and r["status"] == "ok"]
    assert fused, "the CUDA kernels of pybayes did not run"


@requires_cuda
def test_time_fn_and_memory_cuda():
    x = torch.ones(1 << 20, device="cuda")
    t = common.time_fn(lambda: x.mul_(1.0), "cuda", repeats=3, warmup=1)
    assert t["median_s"] > 0
    m = common.step_memory(lambda: x * 2.0, "cuda")
    assert m["mem_method"] == "cuda" and m["extra_mem_bytes"] >= x.numel() * 4
    assert common.step_memory(lambda: x.mul_(1.0), "cuda")["extra_mem_bytes"] == 0


@requires_cuda
def test_thermo_speedup_cuda_baselines():
    rows = thermo_speedup.run(quick=True, device="cuda", dims=[16])
    methods = {r["method"] for r in rows if r["table"] == "accuracy"}
    assert "torch.linalg.solve (cuda)" in methods and "torch.linalg.inv (cuda)" in methods
