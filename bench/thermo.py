"""Benchmark of the thermodynamic-chip simulator (pybayes.thermo), DESIGN.md §6.

Measured in one run, on the same matrices:

1. per-step throughput: one Euler–Maruyama step is the product (d x d) @ (d x k) plus
   noise and update; reported as GFLOP/s (2 d^2 k / step time) next to ``torch.matmul`` of
   the same shapes and dtype (float64) — the faster of torch with all threads and with one
   thread (on a loaded 2-core machine torch's thread pool can stall) — and the
   simulator's bare single-thread blocked kernel (``_thermo.gemm``);
2. error vs wall time of ``thermo.solve`` (exact and Euler integrators, growing windows)
   against ``numpy.linalg.solve``; the simulated chip time is reported next to it;
3. ``thermox`` (JAX) when it is installed (optional).

Median of >= 20 repeats after warm-up. ``python bench/thermo.py [--quick]`` writes JSON +
Markdown under ``bench/results/cpu-<YYYY-MM-DD>/``; ``bench/run.py`` imports :func:`run`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _median_time(fn, repeats, min_time=0.01):
    """Median seconds per call of fn over `repeats` measurements of >= min_time each."""
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / one))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def spd(d, lo=0.5, hi=5.0, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (Q * np.linspace(lo, hi, d)) @ Q.T
    return 0.5 * (A + A.T)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def commit():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def bench_step(quick, repeats):
    from pybayes import _thermo

    rows = []
    dims = [64, 256, 1024]
    ks = [1, 16] if quick else [1, 16, 64]
    threads = torch.get_num_threads()
    for d in dims:
        A = spd(d)
        for k in ks:
            B = np.random.default_rng(1).standard_normal((d, k))
            flops = 2.0 * d * d * k
            substeps = 10
            sim = _thermo.Simulator(A, B, 1.0, "euler", 0.1 / 5.0 * substeps, substeps, 0, 0, 0.0, 0.0, 0, 0, 0)
            n = max(1, int(2e7 / (flops * substeps)))  # ~20 MFLOP per call
            t_sim = _median_time(lambda: sim.advance(n, False, False, False), repeats) / (n * substeps)
            sim1 = _thermo.Simulator(A, B, 1.0, "euler", 0.1 / 5.0 * substeps, substeps, 0, 0, 0.0, 0.0, 0, 0, 1)
            t_sim1 = _median_time(lambda: sim1.advance(n, False, False, False), repeats) / (n * substeps)
            At, Xt = torch.from_numpy(A), torch.from_numpy(np.ascontiguousarray(B))
            out = torch.empty(d, k, dtype=torch.float64)
            t_torch_n = _median_time(lambda: torch.matmul(At, Xt, out=out), repeats)
            torch.set_num_threads(1)
            try:
                t_torch_1 = _median_time(lambda: torch.matmul(At, Xt, out=out), repeats)
            finally:
                torch.set_num_threads(threads)
            t_torch = min(t_torch_n, t_torch_1)  # the faster torch configuration is the baseline
            t_kernel = _median_time(lambda: _thermo.gemm(A, B, 1), repeats)
            rows.append(dict(
                bench="step", d=d, k=k, sim_threads=sim.threads, torch_threads=threads,
                sim_step_us=t_sim * 1e6, sim_gflops=flops / t_sim / 1e9, sim_gflops_1thread=flops / t_sim1 / 1e9,
                torch_matmul_us=t_torch * 1e6, torch_gflops=flops / t_torch / 1e9,
                torch_gflops_nthreads=flops / t_torch_n / 1e9, torch_gflops_1thread=flops / t_torch_1 / 1e9,
                kernel_1thread_gflops=flops / t_kernel / 1e9,
                sim_over_torch=t_torch / t_sim,
            ))
    return rows


def bench_solve(quick, repeats):
    from pybayes import thermo

    rows = []
    dims = [64, 256] if quick else [64, 256, 512]
    for d in dims:
        A = spd(d, 0.5, 5.0, seed=2)
        b = np.random.default_rng(3).standard_normal(d)
        xs = np.linalg.solve(A, b)
        t_np = _median_time(lambda: np.linalg.solve(A, b), repeats)
        rows.append(dict(bench="solve", d=d, method="numpy.linalg.solve", window_tau=0.0,
                         wall_s=t_np, rel_error=float(np.linalg.norm(np.linalg.solve(A, b) - xs) / np.linalg.norm(xs)),
                         chip_s=float("nan"), rel_stderr=float("nan")))
        windows = [200.0, 800.0] if quick else [200.0, 800.0, 3200.0]
        for integ in ("exact", "euler"):
            for w in windows:
                cfg = thermo.ChipConfig(integrator=integ, beta=100.0, seed=1)
                t0 = time.perf_counter()
                x, info = thermo.solve(A, b, time=w, config=cfg, return_info=True)
                wall = time.perf_counter() - t0
                rows.append(dict(bench="solve", d=d, method=f"thermo.solve[{integ}]", window_tau=w, wall_s=wall,
                                 rel_error=float(np.linalg.norm(x - xs) / np.linalg.norm(xs)),
                                 chip_s=info.time_total, rel_stderr=info.rel_stderr,
                                 samples=info.n_samples, substeps=info.substeps))
    return rows


def bench_thermox(quick):
    try:
        import jax
        import thermox  # noqa: F401
    except ImportError:
        return [dict(bench="thermox", note="thermox not installed (optional: pip install thermox)")]
    import jax.numpy as jnp

    from pybayes import thermo

    rows = []
    for d in ([64] if quick else [64, 256]):
        A = spd(d, 0.5, 5.0, seed=4)
        b = np.random.default_rng(5).standard_normal(d)
        n = 2000
        ts = jnp.arange(n, dtype=jnp.float32) * 0.2
        key = jax.random.PRNGKey(0)
        D = 2.0 * jnp.eye(d)
        fn = lambda: thermox.sample(key, ts, jnp.zeros(d), jnp.asarray(A), jnp.asarray(b), D).block_until_ready()
        t_tx = _median_time(fn, 5)
        cfg = thermo.ChipConfig(integrator="exact", dt=0.2)
        t_sim = _median_time(lambda: thermo.simulate(A, b, n_samples=n, config=cfg), 5)
        rows.append(dict(bench="thermox", d=d, n_samples=n, thermox_s=t_tx, pybayes_exact_s=t_sim))
    return rows


def run(quick: bool = False, device: str = "cpu") -> list:
    """Result rows (dicts). Only the CPU is meaningful: the simulator is a CPU code."""
    if device != "cpu":
        return [dict(bench="thermo", note=f"the thermo simulator runs on the CPU; device={device!r} skipped")]
    repeats = 20
    rows = bench_step(quick, repeats) + bench_solve(quick, repeats) + bench_thermox(quick)
    return rows


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def to_markdown(rows, meta):
    lines = [f"# thermo benchmark ({meta['date']})", "",
             f"commit {meta['commit']}, torch {meta['torch']}, {meta['device']}, "
             f"{meta['threads']} threads, gemm kernel {meta['gemm_isa']}, "
             f"1-min load average {meta.get('loadavg_before')} before / {meta.get('loadavg_after')} after "
             "(other jobs on the machine make the multi-threaded figures noisy)", ""]
    for bench in ("step", "solve", "thermox"):
        sub = [r for r in rows if r.get("bench") == bench]
        if not sub:
            continue
        keys = [k for k in sub[0].keys() if k != "bench"]
        for r in sub[1:]:
            keys += [k for k in r if k not in keys and k != "bench"]
        lines += [f"## {bench}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in sub:
            lines.append("| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="output folder (default bench/results/cpu-<date>)")
    args = ap.parse_args(argv)
    from pybayes import _thermo

    date = datetime.date.today().isoformat()
    meta = dict(date=date, commit=commit(), torch=torch.__version__, device=cpu_name(),
                threads=torch.get_num_threads(), gemm_isa=_thermo.gemm_isa(), quick=args.quick)
    meta["loadavg_before"] = round(os.getloadavg()[0], 2)
    rows = run(args.quick, "cpu")
    meta["loadavg_after"] = round(os.getloadavg()[0], 2)
    out = args.out or os.path.join(HERE, "results", f"cpu-{date}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "thermo.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    md = to_markdown(rows, meta)
    with open(os.path.join(out, "thermo.md"), "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
