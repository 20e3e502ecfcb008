"""Laplace predictives on the digits MLP of issue 13: test NLL, accuracy, ECE,
Brier and prediction wall time of

* the MAP network alone;
* ``DiagLaplace`` at the evidence-optimal prior precision with
  ``pred_type="nn"`` (100 posterior draws of the network), the default
  ``pred_type="glm"`` + probit, the probit on the raw (uncentred) logits
  (laplace-torch's formula, computed from ``glm_predictive_distribution``) and
  ``link_approx="mc"`` (100 Jacobian-vector products);
* ``LastLayerLaplace`` (full covariance, evidence-optimal prior) with its
  default probit and with ``link_approx="mc"``.

The network is 64-32-10 (ReLU) trained by SGD (momentum 0.9, cosine step size,
weight decay = ``prior / N``) on the demo's split of scikit-learn's digits
(``pybayes.demo.data.load_digits``: 988 train / 629 test images). Timings are
medians of 5 repeats after a warm-up (``bench/common.py``), on one thread.

    python bench/laplace_predictive.py [--epochs 200] [--seed 0] [--out DIR]

writes ``laplace_predictive.json`` and ``laplace_predictive.md`` under
``bench/results/cpu-<date>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench import common  # noqa: E402


def train_map(data, epochs: int, prior: float, seed: int):
    from pybayes.demo.train import MLP, Batches

    torch.manual_seed(seed)
    model = MLP(data.n_features, (32,), data.n_classes)
    n = data.num_train
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=prior / n)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * (n // 64)))
    for e in range(epochs):
        for x, y in Batches(data.x_train, data.y_train, 64, seed + e):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    return model.eval()


def run(epochs: int = 200, seed: int = 0, prior: float = 1.0, repeats: int = 5, out=None, log=print) -> dict:
    from pybayes import glm, metrics
    from pybayes.demo.data import load_digits
    from pybayes.laplace import DiagLaplace
    from pybayes.lastlayer import LastLayerLaplace

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = common.environment("cpu")
        data = load_digits(seed)
        model = train_map(data, epochs, prior, seed)
        train = (data.x_train, data.y_train)
        x, y = data.x_test, data.y_test
        diag = DiagLaplace(model, "classification", prior_precision=prior).fit(train)
        lam_diag = diag.optimize_prior_precision()
        last = LastLayerLaplace(model, "classification").fit(train)
        lam_last = last.optimize_prior_precision()

        def gen():
            return torch.Generator().manual_seed(seed + 1)

        def raw_probit():
            mean, var = diag.glm_predictive_distribution(x)
            return glm.probit(mean, var)

        methods = [
            ("MAP", "-", lambda: torch.softmax(model(x), -1).detach()),
            ("DiagLaplace nn (100 draws)", lam_diag,
             lambda: diag.predict(x, pred_type="nn", n_samples=100, generator=gen()).probs),
            ("DiagLaplace glm probit (default)", lam_diag, lambda: diag.predict(x, generator=gen()).probs),
            ("DiagLaplace glm probit, raw logits (laplace-torch's formula)", lam_diag, raw_probit),
            ("DiagLaplace glm mc (100 JVPs)", lam_diag,
             lambda: diag.predict(x, link_approx="mc", n_samples=100, generator=gen()).probs),
            ("LastLayerLaplace probit (default)", lam_last, lambda: last.predict(x, generator=gen()).probs),
            ("LastLayerLaplace mc (100 draws)", lam_last,
             lambda: last.predict(x, link_approx="mc", n_samples=100, generator=gen()).probs),
        ]
        rows = []
        for name, lam, fn in methods:
            with torch.no_grad():
                probs = fn()
            t = common.time_fn(fn, "cpu", repeats=repeats, warmup=1)
            rows.append({"method": name, "prior_precision": lam, "nll": metrics.nll(probs, y),
                         "accuracy": metrics.accuracy(probs, y), "ece": metrics.ece(probs, y),
                         "brier": metrics.brier(probs, y), "predict_s": t["median_s"]})
            log(f"{name:<62s} NLL {rows[-1]['nll']:.4f}  acc {rows[-1]['accuracy']:.4f}  "
                f"ECE {rows[-1]['ece']:.4f}  {common.fmt_seconds(t['median_s'])}")
        env["loadavg_at_end"] = common.loadavg()
    finally:
        torch.set_num_threads(saved)
    payload = {"environment": env, "epochs": epochs, "seed": seed, "train_prior_precision": prior,
               "model": "MLP 64-32-10 (ReLU)", "n_train": data.num_train, "n_test": int(x.shape[0]),
               "n_params": diag.n_params, "last_layer_d": last.d,
               "log_evidence": {"diag": diag.log_marginal_likelihood(), "last_layer": last.log_marginal_likelihood()},
               "rows": rows}
    path = common.results_dir("cpu", out)
    common.write_json(path / "laplace_predictive.json", payload)
    table = common.markdown_table(
        ["method", "prior precision", "test NLL", "accuracy", "ECE", "Brier", "predict time (629 images)"],
        [(r["method"], r["prior_precision"] if r["prior_precision"] == "-" else f"{r['prior_precision']:.3g}",
          f"{r['nll']:.4f}", f"{r['accuracy']:.4f}", f"{r['ece']:.4f}", f"{r['brier']:.4f}",
          common.fmt_seconds(r["predict_s"])) for r in rows])
    (path / "laplace_predictive.md").write_text(
        f"# Laplace predictives, digits MLP 64-32-10 ({epochs} epochs SGD, seed {seed})\n\n{table}\n\n"
        f"{common.env_markdown(env)}\n")
    payload["table_markdown"] = table
    payload["out"] = str(path)
    return payload


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/laplace_predictive.py", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    res = run(args.epochs, args.seed, repeats=args.repeats, out=args.out)
    print(res["table_markdown"])
    print(f"wrote {res['out']}/laplace_predictive.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
