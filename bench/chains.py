"""K = 8 SGHMC chains of the demo's MLP (64-256-16-10, ReLU, digits mini-batches of
64) in one process with :class:`pybayes.chains.Chains` (stacked parameters, a
vmapped forward, ONE fused SGHMC step over the stacked tensors) against 8
sequential single-chain runs (8 models, 8 SGHMC optimizers, one after another).

A timed call is one sampler step of all 8 chains (zero_grad, forward, mean
cross-entropy per chain, backward, optimizer step), on the same mini-batch for
both; the figure is wall time per sample = per chain-step (call / 8). Median of
``--repeats`` repeats after warm-up (``bench/common.py``); the whole comparison
is run ``--rounds`` times interleaved and the median round reported (the
machine is shared).

    python bench/chains.py [--threads 2] [--repeats 20] [--rounds 3] [--out DIR]

writes ``chains.json`` and ``chains.md`` under ``bench/results/cpu-<date>/``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench import common  # noqa: E402


def setup(K: int, seed: int = 0):
    from pybayes.chains import Chains
    from pybayes.demo.data import load_digits
    from pybayes.demo.train import MLP, TrainConfig
    from pybayes.optim import SGHMC

    cfg = TrainConfig()
    data = load_digits(seed)
    x, y = data.x_train[:cfg.batch_size], data.y_train[:cfg.batch_size]
    N = data.x_train.shape[0]
    torch.manual_seed(seed)
    model = MLP(data.n_features, cfg.hidden, data.n_classes)
    hyper = dict(lr=cfg.lr, momentum=cfg.momentum, num_data=N, weight_decay=cfg.prior_precision / N)
    ch = Chains(model, K, seed=seed)
    opt_k = SGHMC(ch.parameters(), seed=1, **hyper)

    def stacked():
        opt_k.zero_grad()
        Chains.loss(ch(x), y, F.cross_entropy).backward()
        opt_k.step()

    singles = []
    for k in range(K):
        m = MLP(data.n_features, cfg.hidden, data.n_classes)
        m.load_state_dict(ch.chain_parameters(k))
        singles.append((m, SGHMC(m.parameters(), seed=1, **hyper)))

    def sequential():
        for m, o in singles:
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()

    n_params = sum(p.numel() for p in model.parameters())
    return stacked, sequential, n_params


def run(K: int = 8, threads: int = 2, repeats: int = 20, rounds: int = 3, out=None):
    torch.set_num_threads(threads)
    stacked, sequential, n_params = setup(K)
    env = common.environment("cpu")
    env["isa"] = "x86-64-v4 (AVX-512)"
    per = {"stacked": [], "sequential": []}
    for _ in range(rounds):
        per["stacked"].append(common.time_fn(stacked, "cpu", repeats, warmup=3)["median_s"] / K)
        per["sequential"].append(common.time_fn(sequential, "cpu", repeats, warmup=3)["median_s"] / K)
    env["loadavg_at_end"] = common.loadavg()
    med = {k: statistics.median(v) for k, v in per.items()}
    payload = {"environment": env, "chains": K, "params_per_chain": n_params, "threads": threads,
               "repeats": repeats, "rounds": rounds, "seconds_per_sample_rounds": per,
               "seconds_per_sample": med, "speedup": med["sequential"] / med["stacked"]}
    path = common.results_dir("cpu", out)
    common.write_json(path / "chains.json", payload)
    table = common.markdown_table(
        ["run", "wall time per sample (chain-step)", "rounds"],
        [("Chains, K=8 stacked, one fused SGHMC step", common.fmt_seconds(med["stacked"]),
          ", ".join(common.fmt_seconds(s) for s in per["stacked"])),
         ("8 sequential single-chain runs", common.fmt_seconds(med["sequential"]),
          ", ".join(common.fmt_seconds(s) for s in per["sequential"]))])
    text = (f"# {K} SGHMC chains of the demo MLP ({n_params} parameters each), CPU\n\n"
            f"x86-64-v4 (AVX-512), {threads} threads, mini-batch 64, median of {repeats} repeats, "
            f"median of {rounds} interleaved rounds (shared machine). Speedup of stacked chains: "
            f"{payload['speedup']:.2f}x.\n\n{table}\n\n{common.env_markdown(env)}\n")
    (path / "chains.md").write_text(text)
    payload["table_markdown"] = table
    return payload


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    res = run(a.chains, a.threads, a.repeats, a.rounds, a.out)
    print(res["table_markdown"])
    print(f"speedup {res['speedup']:.2f}x")


if __name__ == "__main__":
    main()
