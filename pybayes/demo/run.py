"""``python -m pybayes demo``: the whole run, from data to JSON."""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["run", "main", "quick_config", "full_config", "DemoError"]


class DemoError(RuntimeError):
    """A request the demo cannot run (e.g. ``--device cuda`` without a GPU)."""


def full_config():
    from .train import TrainConfig

    return TrainConfig()


def quick_config():
    from .train import TrainConfig

    return TrainConfig(epochs=60, cycles=3, max_samples=20, laplace_samples=20)


def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(out="demo_out", *, device="cpu", quick=False, seed=0, progress=True, config=None,
        chip=True, log=print) -> dict:
    """Run the demo, write ``reliability.png``, ``uncertainty.png`` and ``results.json``
    under ``out``, and return the JSON's content (a dict)."""
    t_start = time.perf_counter()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DemoError("--device cuda: torch sees no CUDA GPU (see python -m pybayes info)")
    cfg = config if config is not None else (quick_config() if quick else full_config())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(seed)
    # the MLP is tiny: one CPU thread is as fast as several and does not stall when other
    # processes hold cores (OpenMP barriers), and the numbers do not depend on the core count
    saved_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _run(out, device, quick, seed, progress, cfg, chip, log, t_start)
    finally:
        torch.set_num_threads(saved_threads)


def _run(out, device, quick, seed, progress, cfg, chip, log, t_start):
    from .data import load_digits
    from .evaluate import evaluate
    from .plots import histogram_data, plot_reliability, plot_uncertainty, reliability_data
    from .report import format_chip, format_table, machine_description, write_json
    from .train import sgd_identity_check, make_model, train_all

    machine = machine_description(device)

    data = load_digits(seed, device=device)
    log(data.summary())
    log(f"model: MLP 64-{'-'.join(map(str, cfg.hidden))}-10; {cfg.epochs} epochs x "
        f"{data.num_train // cfg.batch_size} batches of {cfg.batch_size} per method; "
        f"prior N(0, 1/{cfg.prior_precision:g}) (weight_decay = {cfg.prior_precision:g}/N); {machine}")

    identity = sgd_identity_check(make_model(data, cfg, seed, device), data, cfg, seed)
    log(f"pybayes.optim.SGHMC(temperature=0) vs torch.optim.SGD, 30 steps from the same init: "
        f"max |difference| / max |theta| = {identity:.2e}")

    results = train_all(data, cfg, seed, device, progress=progress)
    evals = [evaluate(r, data) for r in results]
    table = format_table(evals)
    log("")
    log(f"held-out digits ({data.x_test.shape[0]} images) and OOD detection on {data.x_ood.shape[0]} shifted "
        "images; samples = parameter samples averaged (Bayesian model average):")
    log(table)

    rel = {e.name: reliability_data(e, data.y_test) for e in evals}
    hist = histogram_data(evals)
    plot_reliability(evals, rel, out / "reliability.png")
    plot_uncertainty(evals, hist, out / "uncertainty.png")

    chip_result = None
    if chip:
        from .chip import run_chip

        log("")
        log("the thermodynamic chip (simulated):")
        chip_result = run_chip(results[0].model, data, seed=seed, tol=0.2 if quick else 0.05)
        log(format_chip(chip_result))

    total = time.perf_counter() - t_start
    payload = {
        "command": "python -m pybayes demo" + (" --quick" if quick else ""),
        "seed": seed, "device": str(device), "machine": machine, "quick": bool(quick),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "config": dataclasses.asdict(cfg),
        "data": {"train": data.num_train, "test": int(data.x_test.shape[0]), "ood": int(data.x_ood.shape[0]),
                 "ood_kinds": {k: int((data.ood_kind == k).sum()) for k in np.unique(data.ood_kind)}},
        "sgd_identity_max_rel_diff": identity,
        "table": [{"method": e.name, "label": e.label, **e.row} for e in evals],
        "table_markdown": table,
        "methods": {r.name: {k: v for k, v in r.extra.items() if k != "laplace"} for r in results},
        "reliability": rel,
        "histograms": hist,
        "chip": chip_result.as_dict() if chip_result is not None else None,
        "files": {"reliability": "reliability.png", "uncertainty": "uncertainty.png"},
        "seconds_total": total,
    }
    write_json(payload, out / "results.json")
    log("")
    log(f"wrote {out / 'reliability.png'}, {out / 'uncertainty.png'}, {out / 'results.json'} "
        f"({total:.1f} s in all)")
    return payload


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train (default cpu)")
    p.add_argument("--quick", action="store_true", help="small budget: a smoke run in well under a minute")
    p.add_argument("--out", default="demo_out", help="output folder for the PNGs and results.json (default demo_out/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, init, batches and samplers (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pybayes demo", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    return run_args(args)


def run_args(args) -> int:
    try:
        run(args.out, device=args.device, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    except (ImportError, DemoError) as e:
        print(f"python -m pybayes demo: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
