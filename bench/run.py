"""One entry point for the pybayes benchmarks (also ``python -m pybayes bench``).

    python bench/run.py [ops|thermo|all] --device cpu|cuda [--quick]

writes JSON + Markdown (+ PNG when matplotlib is installed) under
``bench/results/<device>-<YYYY-MM-DD>/``:

* ``ops.json`` / ``ops.md`` / ``ops.png`` — fused sampler and Fisher ops against
  the reference path, torch optimizers and posteriors (``bench/ops.py``);
* ``thermo.json`` / ``thermo.md`` — simulator step throughput against
  ``torch.matmul`` and ``solve`` error vs wall time (``bench/thermo.py``);
* ``thermo_speedup.json`` / ``thermo_speedup.md`` — ``solve``/``inv`` against
  ``numpy.linalg`` at d = 64, 256, 1024 and the chip timing model's simulated
  seconds against the measured digital solve time (``bench/thermo_speedup.py``).

``--sizes``, ``--repeats``, ``--warmup``, ``--ops``, ``--dtypes``, ``--layouts``
and ``--out`` narrow a run (the tests use them for a tiny run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _progress():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return lambda **kw: tqdm(file=sys.stderr, dynamic_ncols=True, **kw)


def _sizes(text):
    return [int(float(s)) for s in text.split(",") if s]


def _names(allowed):
    def parse(text):
        names = [s for s in text.split(",") if s]
        bad = [n for n in names if n not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return names
    return parse


def parse_args(argv=None):
    from bench import ops as bops

    ap = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="all", choices=("ops", "thermo", "all"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true",
                    help="fewer sizes and repeats (ops: ~2 minutes on a 2-core CPU); not for publication")
    ap.add_argument("--sizes", type=_sizes, default=None, help="ops: comma-separated sizes, e.g. 1e4,1e6")
    ap.add_argument("--repeats", type=int, default=None, help="ops: timed repeats (default 20, quick 5)")
    ap.add_argument("--warmup", type=int, default=None, help="ops: untimed calls first (default 3, quick 1)")
    ap.add_argument("--ops", type=_names(bops.OPS), default=list(bops.OPS), help="ops: which ops")
    ap.add_argument("--dtypes", type=_names(tuple(bops.DTYPES)), default=list(bops.DTYPES))
    ap.add_argument("--layouts", type=_names(bops.LAYOUTS), default=list(bops.LAYOUTS))
    ap.add_argument("--thermo-dims", type=_sizes, default=None,
                    help="thermo: dimensions of the speed-up table (default 64,128,256,512,1024)")
    ap.add_argument("--out", default=None, help="output folder (default bench/results/<device>-<date>)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def run_ops(args, out: Path, progress) -> Path:
    import torch

    from bench import common
    from bench import ops as bops

    cfg = bops.Config(device=args.device, quick=args.quick, sizes=args.sizes, repeats=args.repeats,
                      warmup=args.warmup, ops=args.ops, dtypes=args.dtypes, layouts=args.layouts)
    env = common.environment(args.device)
    resolved = cfg.resolved()
    env["mode"] = ("quick" if args.quick else "full") + f", {resolved.repeats} repeats, {resolved.warmup} warm-up"
    ok, why = bops.posteriors_available()
    env["posteriors"] = why
    t0 = time.perf_counter()
    rows = bops.run(cfg, progress)
    env["wall_s"] = round(time.perf_counter() - t0, 1)
    env["memory_method"] = common.CUDA_MEMORY_METHOD if args.device == "cuda" else common.CPU_MEMORY_METHOD
    env["torch_threads_at_end"] = torch.get_num_threads()
    env["loadavg_at_end"] = common.loadavg()
    write_ops(out, args.device, env, dict(resolved.__dict__), rows)
    return out / "ops.md"


def write_ops(out: Path, device: str, env: dict, config: dict, rows: list) -> None:
    """ops.json, ops.md and (with matplotlib) ops.png; ``rewrite_ops`` redoes
    the Markdown and plot of a recorded run from its JSON."""
    from bench import common
    from bench import ops as bops

    common.write_json(out / "ops.json", {"env": env, "config": config,
                                         "targets": bops.targets(rows, device), "rows": rows})
    md = bops.markdown(rows, env, device)
    if bops.plot(rows, out / "ops.png", device):
        md += "\n![GB/s against size](ops.png)\n"
    else:
        md += "\n(no plot: matplotlib is not installed)\n"
    (out / "ops.md").write_text(md)


def rewrite_ops(out) -> None:
    import json

    out = Path(out)
    payload = json.loads((out / "ops.json").read_text())
    write_ops(out, payload["env"]["device"], payload["env"], payload["config"], payload["rows"])


def run_thermo(args, out: Path, progress) -> list:
    from bench import common
    from bench import thermo as bthermo
    from bench import thermo_speedup

    written = []
    env = common.environment(args.device)
    env["mode"] = "quick" if args.quick else "full"
    steps = ["simulator (bench/thermo.py)", "speed-up table (bench/thermo_speedup.py)"]
    bar = progress(total=len(steps), desc="thermo", unit="part") if progress else None
    if bar is not None:
        bar.set_postfix_str(steps[0])
    rows = bthermo.run(args.quick, args.device)
    meta = dict(date=env["date"], commit=env["commit"], torch=env["torch"], device=env["device_name"],
                threads=env["threads"], quick=args.quick)
    try:
        from pybayes import _thermo

        meta["gemm_isa"] = _thermo.gemm_isa()
    except (ImportError, AttributeError) as e:
        meta["gemm_isa"] = f"unknown ({e})"
    common.write_json(out / "thermo.json", dict(meta=meta, env=env, rows=rows))
    (out / "thermo.md").write_text(bthermo.to_markdown(rows, meta) + "\n")
    written.append(out / "thermo.md")
    if bar is not None:
        bar.update(1)
        bar.set_postfix_str(steps[1])
    rows2 = thermo_speedup.run(args.quick, args.device, dims=args.thermo_dims)
    env["loadavg_at_end"] = common.loadavg()
    common.write_json(out / "thermo_speedup.json", dict(env=env, rows=rows2))
    (out / "thermo_speedup.md").write_text(thermo_speedup.markdown(rows2, env))
    written.append(out / "thermo_speedup.md")
    if bar is not None:
        bar.update(1)
        bar.close()
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from bench import common

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda but torch sees no CUDA GPU "
              f"(torch {torch.__version__}); run with --device cpu", file=sys.stderr)
        return 2
    out = common.results_dir(args.device, args.out)
    progress = None if args.no_progress else _progress()
    written = []
    if args.what in ("ops", "all"):
        written.append(run_ops(args, out, progress))
    if args.what in ("thermo", "all"):
        written.extend(run_thermo(args, out, progress))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
