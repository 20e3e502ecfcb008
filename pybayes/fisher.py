"""Diagonal Fisher information of a model over a data set.

``F = sum_i g_i * g_i`` summed (not averaged) over every example ``i`` of the
data set, ``g_i`` a gradient of example ``i``'s negative log-likelihood
``l_i``, returned as ``{parameter name: tensor shaped like the parameter}`` for
every parameter that requires grad. Per-example gradients come from
``torch.func`` (``vmap`` of ``grad``/``jacrev`` over a chunk of examples) and
are reduced by the fused ``fisher_diag_accumulate_per_sample_`` op, so memory
stays bounded by ``chunk_size`` examples. Kinds:

* ``"empirical"``: ``g_i = grad l_i(y_i)`` at the observed label (the
  "empirical Fisher"; cheap, biased);
* ``"mc"``: ``g_i = grad l_i(y~)`` with ``y~`` drawn from the model's own
  predictive, averaged over ``n_mc`` draws (unbiased for the true Fisher);
* ``"ggn"``: the exact diagonal of the generalised Gauss-Newton / true Fisher
  ``sum_i diag(J_i^T H_i J_i)`` from per-example Jacobians (``H_i`` the Hessian
  of the NLL in the model output: ``I/sigma^2`` for regression,
  ``diag(p) - p p^T`` for softmax classification); costs one backward pass
  per output.

Likelihoods: ``"classification"`` (the model returns logits ``[N, C]``, NLL =
cross-entropy) and ``"regression"`` (the model returns the mean, Gaussian NLL
with fixed noise ``noise_std``: ``l_i = |y_i - f_i|^2 / (2 sigma^2) + const``).
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch.func import functional_call, grad, jacrev, vmap

from . import ops

__all__ = ["diag_fisher", "KINDS", "LIKELIHOODS"]

KINDS = ("empirical", "mc", "ggn")
LIKELIHOODS = ("classification", "regression")
_CHUNK_BYTES = 256 << 20


def _batches(data):
    """Yield (x, y) from a DataLoader-like iterable, or a single (x, y) pair of tensors."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        yield data[0], data[1]
        return
    for batch in data:
        if isinstance(batch, dict):
            raise TypeError("batches must be (inputs, targets) tuples, got a dict")
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("each batch must be an (inputs, targets) tuple")
        yield batch[0], batch[1]


def _progress(it, enabled, total):
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        import sys

        def simple():
            for i, b in enumerate(it):
                print(f"\rFisher: batch {i + 1}" + (f"/{total}" if total else ""), end="", file=sys.stderr)
                yield b
            print(file=sys.stderr)

        return simple()
    return tqdm(it, total=total, desc="Fisher", unit="batch")


class _FisherPass:
    """One pass over the data: the diagonal Fisher and, optionally, the summed NLL."""

    def __init__(self, model, likelihood, kind, noise_std, n_mc, chunk_size, generator):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if likelihood == "regression" and not (float(noise_std) > 0 and math.isfinite(float(noise_std))):
            raise ValueError(f"noise_std must be a finite number > 0, got {noise_std}")
        if int(n_mc) < 1:
            raise ValueError(f"n_mc must be >= 1, got {n_mc}")
        self.model, self.likelihood, self.kind = model, likelihood, kind
        self.sigma = float(noise_std)
        self.n_mc = int(n_mc)
        self.generator = generator
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        if not self.params:
            raise ValueError("the model has no parameters that require grad")
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        self.fisher = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.n_params = sum(p.numel() for p in self.params.values())
        self.chunk_size = chunk_size
        self.nll_sum = 0.0
        self.n_examples = 0
        self.n_outputs = 0

    # per-example model output and NLL (x, y single examples)
    def _out(self, p, x):
        return functional_call(self.model, (p, self.buffers), (x.unsqueeze(0),)).squeeze(0)

    def _nll(self, p, x, y):
        out = self._out(p, x)
        if self.likelihood == "classification":
            return torch.logsumexp(out, -1) - out.gather(-1, y.long().reshape(1)).squeeze(-1)
        r = out - y.reshape(out.shape).to(out.dtype)
        return 0.5 * (r * r).sum() / (self.sigma ** 2)

    def _chunk(self, out_dim):
        if self.chunk_size is not None:
            return int(self.chunk_size)
        elem = next(iter(self.params.values())).element_size()
        rows = out_dim if self.kind == "ggn" else self.n_mc
        return max(1, _CHUNK_BYTES // max(1, self.n_params * elem * rows))

    def _accumulate(self, rows: Dict[str, torch.Tensor], scale: float):
        names = list(self.fisher)
        ops.fisher_diag_accumulate_per_sample_([self.fisher[n] for n in names],
                                               [rows[n].contiguous() for n in names], scale=scale)

    def _sample_labels(self, out):
        if self.likelihood == "classification":
            probs = torch.softmax(out.double(), -1).repeat_interleave(self.n_mc, 0)
            return torch.multinomial(probs.cpu(), 1, generator=self.generator).squeeze(1).to(out.device)
        noise = torch.randn(out.repeat_interleave(self.n_mc, 0).shape, generator=self.generator,
                            dtype=out.dtype)
        return out.repeat_interleave(self.n_mc, 0) + self.sigma * noise.to(out.device)

    def run_batch(self, x, y, compute_nll):
        b = x.shape[0]
        if y.shape[0] != b:
            raise ValueError(f"inputs have {b} examples, targets {y.shape[0]}")
        with torch.no_grad():
            out_all = functional_call(self.model, (self.params, self.buffers), (x,))
        if isinstance(out_all, tuple):
            raise TypeError("the model must return one tensor (logits or the regression mean)")
        out_dim = out_all[0].numel() if b else 1
        if self.likelihood == "classification" and out_all.dim() != 2:
            raise ValueError(f"classification needs logits of shape [N, C], got {tuple(out_all.shape)}")
        if compute_nll and b:
            with torch.no_grad():
                if self.likelihood == "classification":
                    nll = torch.nn.functional.cross_entropy(out_all.double(), y.to(out_all.device),
                                                            reduction="sum")
                else:
                    r = out_all.double() - y.reshape(out_all.shape).to(out_all.device).double()
                    nll = 0.5 * (r * r).sum() / self.sigma ** 2 + \
                        0.5 * r.numel() * math.log(2 * math.pi * self.sigma ** 2)
                self.nll_sum += nll.item()
        self.n_examples += b
        self.n_outputs += out_all.numel()
        chunk = self._chunk(out_dim)
        for s in range(0, b, chunk):
            xc, yc, oc = x[s:s + chunk], y[s:s + chunk], out_all[s:s + chunk]
            if self.kind == "empirical":
                g = vmap(grad(self._nll), in_dims=(None, 0, 0))(self.params, xc, yc.to(xc.device))
                self._accumulate(g, 1.0)
            elif self.kind == "mc":
                ys = self._sample_labels(oc)
                xs = xc.repeat_interleave(self.n_mc, 0)
                g = vmap(grad(self._nll), in_dims=(None, 0, 0))(self.params, xs, ys)
                self._accumulate(g, 1.0 / self.n_mc)
            else:
                self._ggn(xc)

    def _ggn(self, xc):
        def out_and_aux(p, x):
            o = self._out(p, x)
            return o, o

        jac, out = vmap(jacrev(out_and_aux, has_aux=True), in_dims=(None, 0))(self.params, xc)
        bsz = xc.shape[0]
        rows = {}
        if self.likelihood == "regression":
            for n, j in jac.items():  # j: [B, *out, *param]
                rows[n] = j.reshape((-1,) + self.params[n].shape)
            self._accumulate(rows, 1.0 / self.sigma ** 2)
            return
        p = torch.softmax(out.to(torch.float64), -1)  # [B, C]
        for n, j in jac.items():  # j: [B, C, *param]
            jf = j.reshape(bsz, j.shape[1], -1)
            pj = p.to(jf.dtype)
            mean_j = torch.einsum("bc,bcp->bp", pj, jf)
            v = pj.sqrt().unsqueeze(-1) * (jf - mean_j.unsqueeze(1))  # sum_k v_k^2 = diag(J^T H J)
            rows[n] = v.reshape((-1,) + self.params[n].shape)
        self._accumulate(rows, 1.0)


def _run_pass(model, data, *, likelihood, kind, noise_std, n_mc, chunk_size, generator, progress,
              compute_nll):
    fp = _FisherPass(model, likelihood, kind, noise_std, n_mc, chunk_size, generator)
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        total = len(data) if hasattr(data, "__len__") and not isinstance(data, (tuple, list)) else None
        for x, y in _progress(_batches(data), progress, total):
            dev = next(iter(fp.params.values())).device
            fp.run_batch(x.to(dev), y.to(dev), compute_nll)
    finally:
        for m, t in was_training.items():
            m.training = t
    if fp.n_examples == 0:
        raise ValueError("the data set is empty")
    return fp


def diag_fisher(model: torch.nn.Module, data, *, likelihood: str = "classification",
                kind: str = "empirical", noise_std: float = 1.0, n_mc: int = 1,
                chunk_size: Optional[int] = None, generator: Optional[torch.Generator] = None,
                progress: bool = False) -> Dict[str, torch.Tensor]:
    """The diagonal Fisher ``sum_i g_i^2`` of ``model`` over ``data``.

    ``data``: an iterable of ``(inputs, targets)`` batches (e.g. a
    ``DataLoader``) or one ``(inputs, targets)`` pair of tensors.
    ``likelihood``: ``"classification"`` (logits, integer targets) or
    ``"regression"`` (Gaussian with standard deviation ``noise_std``).
    ``kind``: ``"empirical"``, ``"mc"`` (``n_mc`` label draws per example from the
    model's predictive, with ``generator`` for reproducibility) or ``"ggn"``
    (exact diagonal GGN = expected Fisher for these likelihoods). ``chunk_size``
    examples are processed at once (default: as many as fit in ~256 MiB of
    per-example gradients). The model is evaluated in eval mode (BatchNorm uses
    its running statistics, dropout is off) and restored afterwards.
    Returns ``{name: F}`` for every parameter that requires grad, in the
    parameter's dtype and device.
    """
    fp = _run_pass(model, data, likelihood=likelihood, kind=kind, noise_std=noise_std, n_mc=n_mc,
                   chunk_size=chunk_size, generator=generator, progress=progress, compute_nll=False)
    return fp.fisher
