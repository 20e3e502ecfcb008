"""The demo's model and its four training runs, all with the same budget
(``epochs`` passes over the training set, same batches, same prior):

* ``sgd``     — :class:`pybayes.optim.SGHMC` at ``temperature=0``, which *is*
  ``torch.optim.SGD(lr, momentum, weight_decay)``; cosine step size;
* ``sghmc``   — the same sampler at ``temperature=1`` (the Bayesian posterior)
  with a cyclical step size (:class:`pybayes.schedules.Cyclical`) and a
  :class:`pybayes.samples.SampleCollector` keeping samples in the sampling
  phases;
* ``psgld``   — :class:`pybayes.optim.PSGLD` at ``temperature=1``, same schedule
  and collector;
* ``laplace`` — :class:`pybayes.laplace.DiagLaplace` around the SGD solution,
  prior precision tuned on validation NLL (the evidence optimum is
  reported too).

The prior is the same everywhere: ``N(0, 1/prior_precision)`` on every weight,
i.e. ``weight_decay = prior_precision / N`` for the optimizers (DESIGN.md §3).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

from ..laplace import DiagLaplace
from ..optim import PSGLD, SGHMC
from ..samples import SampleCollector, SampleSet
from ..schedules import Cyclical

__all__ = ["MLP", "Batches", "TrainConfig", "MethodResult", "make_model", "train_all", "sgd_identity_check",
           "tune_prior_on_validation"]


class MLP(nn.Module):
    """``64 -> hidden[0] -> ... -> hidden[-1] -> 10`` with ReLU; ``features(x)`` is the
    last hidden layer (what the last-layer Laplace / chip section uses)."""

    def __init__(self, n_in: int, hidden, n_out: int):
        super().__init__()
        layers = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_out)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class Batches:
    """Shuffled mini-batches of a tensor data set, reshuffled every epoch by a
    seeded ``torch.Generator`` (deterministic, independent of global RNG state).
    Two ``Batches`` with the same seed yield the same batches: every method sees
    the same data in the same order."""

    def __init__(self, x, y, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self):
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = self.x.shape[0]
        order = (torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)).to(self.x.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


@dataclass
class TrainConfig:
    hidden: tuple = (256, 16)
    epochs: int = 300
    batch_size: int = 64
    prior_precision: float = 0.1       # N(0, 10) prior on every weight and bias: weight_decay 1e-4
    lr: float = 0.05                   # SGD / SGHMC peak step size
    momentum: float = 0.9
    psgld_lr: float = 2e-3             # pSGLD peak step size
    psgld_alpha: float = 0.99
    psgld_eps: float = 1e-5            # Li et al. (2016)'s lambda
    cycles: int = 6                    # cyclical schedule of the samplers
    exploration: float = 0.8           # fraction of each cycle at temperature 0 (Zhang et al. 2020)
    max_samples: int = 40              # posterior samples kept per sampler
    laplace_samples: int = 40
    laplace_grid: tuple = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
    temperature: float = 1.0


@dataclass
class MethodResult:
    name: str
    label: str
    model: nn.Module
    samples: SampleSet
    train_seconds: float
    gradient_steps: int
    extra: Dict = field(default_factory=dict)


def _progress(iterable, desc, enabled, total=None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="epoch", leave=True, dynamic_ncols=True)


def _run_epochs(model, opt, sched, loader, epochs, desc, progress):
    """Train for ``epochs``; ``sched.step()`` after every optimizer step (a
    :class:`~pybayes.schedules.Cyclical` also restarts SGHMC's momentum at each
    new cycle)."""
    loss_fn = nn.CrossEntropyLoss()
    steps = 0
    bar = _progress(range(epochs), desc, progress)
    for _ in bar:
        total, count = 0.0, 0
        model.train()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.detach() * x.shape[0]
            count += x.shape[0]
            steps += 1
        if progress:
            bar.set_postfix(loss=f"{(total / count).item():.4f}", refresh=False)
    model.eval()
    return steps


def _single(model) -> SampleSet:
    return SampleSet({n: p.detach().clone()[None] for n, p in model.named_parameters() if p.requires_grad})


def make_model(data, cfg: TrainConfig, seed: int, device) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(data.n_features, cfg.hidden, data.n_classes).to(device)


def sgd_identity_check(init: nn.Module, data, cfg: TrainConfig, seed: int, steps: int = 30) -> float:
    """Max |theta_SGHMC(T=0) - theta_torch.optim.SGD| / max |theta| after ``steps``
    identical steps from the same initialisation (0 up to float rounding)."""
    a, b = copy.deepcopy(init), copy.deepcopy(init)
    n = data.num_train
    wd = cfg.prior_precision / n
    opt_a = SGHMC(a.parameters(), lr=cfg.lr, momentum=cfg.momentum, num_data=n, temperature=0.0,
                  weight_decay=wd, seed=seed)
    opt_b = torch.optim.SGD(b.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
    loss_fn = nn.CrossEntropyLoss()
    done = 0
    while done < steps:
        for x, y in Batches(data.x_train, data.y_train, cfg.batch_size, seed + done):
            for m, o in ((a, opt_a), (b, opt_b)):
                o.zero_grad(set_to_none=True)
                loss_fn(m(x), y).backward()
                o.step()
            done += 1
            if done == steps:
                break
    with torch.no_grad():
        diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
        scale = max(q.abs().max().item() for q in b.parameters())
    return diff / scale


def train_all(data, cfg: TrainConfig, seed: int, device, progress: bool = True,
              log=print) -> List[MethodResult]:
    """Train the four methods; returns one :class:`MethodResult` each (in table order)."""
    n = data.num_train
    wd = cfg.prior_precision / n       # DESIGN.md §3: a Gaussian prior of precision N * wd
    init = make_model(data, cfg, seed, device)
    results = []

    def loader():
        return Batches(data.x_train, data.y_train, cfg.batch_size, seed)

    total_steps = cfg.epochs * len(loader())

    # -- SGD = SGHMC at temperature 0 (cosine step size: one "cycle", all exploration)
    model = copy.deepcopy(init)
    t0 = time.perf_counter()
    opt = SGHMC(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, num_data=n, temperature=0.0,
                weight_decay=wd, seed=seed + 1)
    sched = Cyclical(opt, cycles=1, total_steps=total_steps, exploration=1.0)
    steps = _run_epochs(model, opt, sched, loader(), cfg.epochs, "SGD   (SGHMC T=0)", progress)
    results.append(MethodResult("sgd", "SGD (SGHMC T=0)", model, _single(model),
                                time.perf_counter() - t0, steps))
    sgd_model, sgd_seconds = model, results[-1].train_seconds

    # -- the two samplers at temperature 1, cyclical schedule, samples in the sampling phases
    for name, label in (("sghmc", f"SGHMC T={cfg.temperature:g}"), ("psgld", f"pSGLD T={cfg.temperature:g}")):
        model = copy.deepcopy(init)
        t0 = time.perf_counter()
        if name == "sghmc":
            opt = SGHMC(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, num_data=n,
                        temperature=cfg.temperature, weight_decay=wd, seed=seed + 2)
        else:
            opt = PSGLD(model.parameters(), lr=cfg.psgld_lr, alpha=cfg.psgld_alpha, eps=cfg.psgld_eps,
                        num_data=n, temperature=cfg.temperature, weight_decay=wd, seed=seed + 3)
        sched = Cyclical(opt, cycles=cfg.cycles, total_steps=total_steps, exploration=cfg.exploration)
        sampling_steps = cfg.cycles * (sched.cycle_length - math.ceil(cfg.exploration * sched.cycle_length))
        thin = max(1, sampling_steps // cfg.max_samples)
        collector = SampleCollector(model, thin=thin, max_samples=cfg.max_samples, device=device,
                                    schedule=sched)
        collector.attach(opt)
        steps = _run_epochs(model, opt, sched, loader(), cfg.epochs, f"{label:<17s}", progress)
        collector.detach()
        results.append(MethodResult(name, label, model, collector.samples(), time.perf_counter() - t0, steps,
                                    {"samples_collected": collector.total_collected, "thin": thin,
                                     "collector": repr(collector)}))

    # -- diagonal Laplace around the SGD solution; prior precision tuned on validation NLL
    model = copy.deepcopy(sgd_model)
    t0 = time.perf_counter()
    la = DiagLaplace(model, "classification", prior_precision=cfg.prior_precision, temperature=cfg.temperature)
    la.fit(Batches(data.x_train, data.y_train, 256, seed, shuffle=False, drop_last=False))
    evidence_prior = la.optimize_prior_precision()
    grid = tune_prior_on_validation(la, data, cfg, seed)
    best = min(grid, key=lambda r: r["val_nll"])
    la.prior_precision = best["prior_precision"]
    samples = la.sample(cfg.laplace_samples, generator=torch.Generator().manual_seed(seed + 4))
    fit_seconds = time.perf_counter() - t0
    results.append(MethodResult("laplace", "DiagLaplace @ SGD", model, samples, sgd_seconds + fit_seconds,
                                results[0].gradient_steps,
                                {"prior_precision": best["prior_precision"], "validation_grid": grid,
                                 "evidence_prior_precision": evidence_prior,
                                 "log_evidence_at_evidence_prior": la.log_marginal_likelihood(evidence_prior),
                                 "fit_seconds": fit_seconds, "laplace": la}))
    return results


def tune_prior_on_validation(la: DiagLaplace, data, cfg: TrainConfig, seed: int):
    """Validation NLL (and ECE) of the Laplace predictive for every prior
    precision of ``cfg.laplace_grid`` (same posterior draws' noise for all)."""
    from .. import metrics
    from ..predict import predict

    rows = []
    for lam in cfg.laplace_grid:
        la.prior_precision = lam
        s = la.sample(cfg.laplace_samples, generator=torch.Generator().manual_seed(seed + 5))
        p = predict(la.model, s, data.x_val).probs.cpu()
        y = data.y_val.cpu()
        rows.append({"prior_precision": float(lam), "val_nll": metrics.nll(p, y), "val_ece": metrics.ece(p, y),
                     "val_accuracy": metrics.accuracy(p, y)})
    return rows
