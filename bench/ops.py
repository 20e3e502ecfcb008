"""Microbenchmarks of the fused sampler and Fisher ops against what users would
pick instead, on the same tensors in the same run.

Bytes moved per step, counted by hand (``itemsize`` of the parameter dtype,
``n`` = elements of the parameters; the Philox noise is generated in registers
and moves no memory; a hardware-friendly kernel cannot move less):

============================  ======================================  ==========
op                            traffic                                 bytes
============================  ======================================  ==========
SGLD                          read p, g; write p                      3·n·itemsize
SGHMC                         read p, g, buf; write p, buf            5·n·itemsize
pSGLD                         read p, g, v; write p, v                5·n·itemsize
Fisher (EMA / sum)            read F, g; write F                      3·n·itemsize
Fisher per-sample (batch B)   read B·n of G, read F, write F          (B+2)·n·itemsize
============================  ======================================  ==========

The baselines are charged the same bytes (the bytes the update *needs*), so a
baseline that makes several passes shows up as a lower GB/s. "% copy" divides
the achieved GB/s by the bandwidth of ``dst.copy_(src)`` measured in the same
run with ``src`` holding half the op's bytes (a copy reads and writes, so it
moves exactly the op's byte count).

For the per-sample Fisher op the benchmark size is the number of elements of
``G`` (B·n), with ``B = 8``, so that every op at a given size touches a
comparable amount of memory.
"""

from __future__ import annotations

import contextlib
import gc
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from . import common

OPS = ("sgld", "sghmc", "psgld", "fisher", "fisher_per_sample")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = ("one", "many")
FISHER_BATCH = 8

# elements moved per parameter element (see the module docstring)
TRAFFIC = {"sgld": 3, "sghmc": 5, "psgld": 5, "fisher": 3}

SIZES = {
    ("cpu", False): (10**4, 10**5, 10**6, 10**7, 10**8),
    ("cpu", True): (10**4, 10**6, 10**7),
    ("cuda", False): (10**4, 10**5, 10**6, 10**7, 6.4e7, 10**8, 10**9),
    ("cuda", True): (10**4, 10**6, 10**8),
}

# hyperparameters: a realistic posterior-sampling setting (noise on)
LR, MOMENTUM, ALPHA, EPS, NUM_DATA, TEMPERATURE, SEED = 1e-6, 0.9, 0.99, 1e-8, 5e4, 1.0, 1234


def bytes_moved(op: str, numel: int, itemsize: int, batch: int = FISHER_BATCH) -> int:
    """Bytes one step of ``op`` must move for ``numel`` parameter elements."""
    if op == "fisher_per_sample":
        return (batch + 2) * numel * itemsize
    return TRAFFIC[op] * numel * itemsize


# ---------------------------------------------------------------------------
# tensor layouts

def transformer_shapes(total: int, layers: int = 16) -> List[Tuple[int, ...]]:
    """The parameter shapes of a GPT-style transformer with ``layers`` blocks
    (token and position embeddings; per block: 2 layer norms, fused qkv, output
    projection, 4x MLP, all with biases; a final layer norm) whose total element
    count is as close to ``total`` as the width allows: 12·layers + 4 tensors
    (196 for 16 layers) from a few elements to hundreds of millions each."""

    def shapes(d: int) -> List[Tuple[int, ...]]:
        vocab, ctx = 16 * d, 4 * d
        out: List[Tuple[int, ...]] = [(vocab, d), (ctx, d)]
        for _ in range(layers):
            out += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,),
                    (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        out += [(d,), (d,)]
        return out

    def count(d: int) -> int:
        return sum(math.prod(s) for s in shapes(d))

    d = 1
    while count(d + 1) <= total:
        d += 1
    if abs(count(d + 1) - total) < abs(count(d) - total):
        d += 1
    return shapes(d)


def make_tensors(layout: str, numel: int, dtype: torch.dtype, device: str,
                 batch: Optional[int] = None) -> List[torch.Tensor]:
    """Parameters (``batch=None``) or per-sample gradients with a leading batch
    dimension, as one flat tensor or as a transformer's list."""
    shapes = [(numel,)] if layout == "one" else transformer_shapes(numel)
    gen = torch.Generator(device=device).manual_seed(0)
    out = []
    for s in shapes:
        full = ((batch,) if batch else ()) + tuple(s)
        # values in [-1, 1]: no NaN/inf, no denormals (which would slow CPU arithmetic)
        out.append(torch.empty(full, dtype=dtype, device=device).uniform_(-1, 1, generator=gen))
    return out


# ---------------------------------------------------------------------------
# methods

class Unsupported(Exception):
    """The method cannot run here; the message says why (shown in the table)."""


@dataclass
class Method:
    name: str
    build: Callable[["Case"], Callable[[], None]]
    note: str = ""
    max_numel: Dict[str, float] = field(default_factory=dict)  # device -> largest size run


@dataclass
class Case:
    op: str
    layout: str
    dtype_name: str
    size: int
    device: str
    params: List[torch.Tensor] = field(default_factory=list)
    grads: List[torch.Tensor] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def setup(self) -> None:
        if self.op == "fisher_per_sample":
            self.params = make_tensors(self.layout, max(self.size // FISHER_BATCH, 1), self.dtype, self.device)
            self.grads = make_tensors(self.layout, max(self.size // FISHER_BATCH, 1), self.dtype, self.device,
                                      batch=FISHER_BATCH)
            for f in self.params:
                f.zero_()
            return
        self.params = make_tensors(self.layout, self.size, self.dtype, self.device)
        grads = make_tensors(self.layout, self.size, self.dtype, self.device)
        if self.op == "fisher":
            self.grads = grads
            for f in self.params:
                f.abs_()
            return
        for p, g in zip(self.params, grads):
            p.requires_grad_(True)
            p.grad = g
        self.grads = grads

    def teardown(self) -> None:
        self.params, self.grads = [], []


def _sampler_cls(op):
    from pybayes.optim import PSGLD, SGHMC, SGLD

    return {"sgld": SGLD, "sghmc": SGHMC, "psgld": PSGLD}[op]


def _sampler_kwargs(op):
    kw = dict(lr=LR, num_data=NUM_DATA, temperature=TEMPERATURE, seed=SEED)
    if op == "sghmc":
        kw["momentum"] = MOMENTUM
    if op == "psgld":
        kw.update(alpha=ALPHA, eps=EPS)
    return kw


def _pybayes_step(fused):
    def build(case: Case):
        if fused is None and case.device == "cuda":
            from pybayes import ops as pops

            if not pops.build_info()["cuda"]:
                raise Unsupported("pybayes was built without CUDA kernels")
        opt = _sampler_cls(case.op)(case.params, fused=fused, **_sampler_kwargs(case.op))
        return opt.step
    return build


def _raw_op(case: Case):
    from pybayes import ops as pops

    if case.device == "cuda" and not pops.build_info()["cuda"]:
        raise Unsupported("pybayes was built without CUDA kernels")
    ids = list(range(len(case.params)))
    state = {"step": 0}
    seed = pops.seed_to_int64(SEED)
    params, grads = case.params, case.grads
    if case.op == "sgld":
        def fn():
            torch.ops.pybayes.sgld_(params, grads, ids, [state["step"]] * len(ids), LR, 0.0,
                                    TEMPERATURE, NUM_DATA, seed, False)
            state["step"] += 1
        return fn
    bufs = [torch.zeros_like(p) for p in params]
    if case.op == "sghmc":
        def fn():
            torch.ops.pybayes.sghmc_(params, grads, bufs, ids, [state["step"]] * len(ids), LR,
                                     MOMENTUM, 0.0, TEMPERATURE, NUM_DATA, seed, False)
            state["step"] += 1
        return fn
    sq = [b.fill_(1.0) for b in bufs]

    def fn():
        torch.ops.pybayes.psgld_(params, grads, sq, ids, [state["step"]] * len(ids), LR, ALPHA,
                                 EPS, 0.0, TEMPERATURE, NUM_DATA, seed, False)
        state["step"] += 1
    return fn


def _torch_optim(kind: str, impl: str):
    def build(case: Case):
        kw = {impl: True}
        if kind == "sgd":
            opt = torch.optim.SGD(case.params, lr=LR, **kw)
        elif kind == "sgd_momentum":
            opt = torch.optim.SGD(case.params, lr=LR, momentum=MOMENTUM, **kw)
        else:
            try:
                opt = torch.optim.RMSprop(case.params, lr=LR, alpha=ALPHA, eps=EPS, **kw)
            except (TypeError, RuntimeError, ValueError) as e:
                raise Unsupported(f"torch {torch.__version__}: {e}") from None
        try:
            opt.step()
        except (TypeError, RuntimeError, ValueError) as e:
            raise Unsupported(f"torch {torch.__version__} on {case.device}/{case.dtype_name}: {e}") from None
        return opt.step
    return build


@contextlib.contextmanager
def _posteriors_given_grads(module, grads_tree) -> Iterator[None]:
    """posteriors' updates compute the gradient themselves
    (``torch.func.grad_and_value`` of the log posterior); to time the update
    alone — the work an optimizer step does — the module's ``grad_and_value`` is
    replaced by one returning the precomputed gradients."""
    original = module.grad_and_value

    def given(f, has_aux=False):
        def g(params, batch):
            return grads_tree, f(params, batch)
        return g

    module.grad_and_value = given
    try:
        yield
    finally:
        module.grad_and_value = original


def posteriors_available() -> Tuple[bool, str]:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import posteriors  # noqa: F401
            import posteriors.sgmcmc.sghmc  # noqa: F401
            import posteriors.sgmcmc.sgld  # noqa: F401
    except Exception as e:  # ImportError, or a broken dependency chain
        return False, f"posteriors not importable ({type(e).__name__}: {e})"
    import importlib.metadata as md

    return True, f"posteriors {md.version('posteriors')}"


def _posteriors(case: Case):
    ok, why = posteriors_available()
    if not ok:
        raise Unsupported(why)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import posteriors.sgmcmc.sghmc as ps_sghmc
        import posteriors.sgmcmc.sgld as ps_sgld
    params = {f"p{i}": p.detach() for i, p in enumerate(case.params)}
    grads = {f"p{i}": g for i, g in enumerate(case.grads)}
    zero = torch.zeros((), device=case.device)

    def log_post(p, batch):
        return zero, zero

    if case.op == "sghmc":
        module = ps_sghmc
        state = ps_sghmc.init(params, momenta=0.0)
        # friction alpha = lr * (1 - mu) / lr ... any value: timing does not depend on it
        kw = dict(lr=LR, alpha=1 - MOMENTUM, temperature=TEMPERATURE)
    else:
        module = ps_sgld
        state = ps_sgld.init(params)
        kw = dict(lr=LR, temperature=TEMPERATURE)

    def fn():
        with _posteriors_given_grads(module, grads):
            module.update(state, None, log_post, inplace=True, **kw)
    return fn


def _fisher_pybayes(raw: bool):
    def build(case: Case):
        from pybayes import ops as pops

        if case.device == "cuda" and not pops.build_info()["cuda"]:
            raise Unsupported("pybayes was built without CUDA kernels")
        F, G = case.params, case.grads
        if case.op == "fisher":
            if raw:
                return lambda: torch.ops.pybayes.fisher_diag_accumulate_(F, G, ALPHA, 1 - ALPHA)
            return lambda: pops.fisher_diag_accumulate_(F, G, decay=ALPHA, scale=1 - ALPHA)
        if raw:
            return lambda: torch.ops.pybayes.fisher_diag_accumulate_per_sample_(F, G, 1.0 / FISHER_BATCH)
        return lambda: pops.fisher_diag_accumulate_per_sample_(F, G, scale=1.0 / FISHER_BATCH)
    return build


def _fisher_torch(style: str):
    def build(case: Case):
        F, G = case.params, case.grads
        if case.op == "fisher":
            if style == "foreach":
                def fn():
                    torch._foreach_mul_(F, ALPHA)
                    torch._foreach_addcmul_(F, G, G, value=1 - ALPHA)
            else:
                def fn():
                    for f, g in zip(F, G):
                        f.mul_(ALPHA).addcmul_(g, g, value=1 - ALPHA)
            return fn
        s = 1.0 / FISHER_BATCH
        if style == "square-sum":
            def fn():
                for f, g in zip(F, G):
                    f.add_(g.square().sum(0), alpha=s)
        else:
            def fn():
                for f, g in zip(F, G):
                    for b in range(g.shape[0]):
                        f.addcmul_(g[b], g[b], value=s)
        return fn
    return build


POSTERIORS_NOTE = ("posteriors' update with its gradient evaluation replaced by the precomputed "
                   "gradients; it draws torch.randn_like per tensor")

METHODS: Dict[str, List[Method]] = {
    "sgld": [
        Method("pybayes SGLD (fused)", _pybayes_step(None)),
        Method("pybayes sgld_ op (raw)", _raw_op),
        Method("pybayes SGLD fused=False (reference)", _pybayes_step(False)),
        Method("torch SGD foreach", _torch_optim("sgd", "foreach"), "no noise"),
        Method("torch SGD fused", _torch_optim("sgd", "fused"), "no noise"),
        Method("posteriors sgld", _posteriors, POSTERIORS_NOTE, {"cpu": 1e7}),
    ],
    "sghmc": [
        Method("pybayes SGHMC (fused)", _pybayes_step(None)),
        Method("pybayes sghmc_ op (raw)", _raw_op),
        Method("pybayes SGHMC fused=False (reference)", _pybayes_step(False)),
        Method("torch SGD(momentum) foreach", _torch_optim("sgd_momentum", "foreach"), "no noise"),
        Method("torch SGD(momentum) fused", _torch_optim("sgd_momentum", "fused"), "no noise"),
        Method("posteriors sghmc", _posteriors, POSTERIORS_NOTE, {"cpu": 1e7}),
    ],
    "psgld": [
        Method("pybayes pSGLD (fused)", _pybayes_step(None)),
        Method("pybayes psgld_ op (raw)", _raw_op),
        Method("pybayes pSGLD fused=False (reference)", _pybayes_step(False)),
        Method("torch RMSprop foreach", _torch_optim("rmsprop", "foreach"), "no noise"),
        Method("torch RMSprop fused", _torch_optim("rmsprop", "fused"), "no noise"),
    ],
    "fisher": [
        Method("pybayes fisher_diag_accumulate_", _fisher_pybayes(False)),
        Method("pybayes op (raw)", _fisher_pybayes(True)),
        Method("torch _foreach_mul_ + _foreach_addcmul_", _fisher_torch("foreach")),
        Method("torch per tensor mul_().addcmul_()", _fisher_torch("loop")),
    ],
    "fisher_per_sample": [
        Method("pybayes fisher_diag_accumulate_per_sample_", _fisher_pybayes(False)),
        Method("pybayes op (raw)", _fisher_pybayes(True)),
        Method("torch f.add_(g.square().sum(0))", _fisher_torch("square-sum")),
        Method("torch addcmul_ per sample row", _fisher_torch("rows")),
    ],
}


# ---------------------------------------------------------------------------
# the sweep

@dataclass
class Config:
    device: str = "cpu"
    quick: bool = False
    sizes: Optional[Sequence[int]] = None
    repeats: Optional[int] = None
    warmup: Optional[int] = None
    ops: Sequence[str] = OPS
    dtypes: Sequence[str] = tuple(DTYPES)
    layouts: Sequence[str] = LAYOUTS
    sizes_explicit: bool = False

    def resolved(self) -> "Config":
        c = Config(**self.__dict__)
        c.sizes_explicit = self.sizes is not None
        c.sizes = tuple(int(s) for s in (self.sizes or SIZES[(self.device, self.quick)]))
        c.repeats = self.repeats if self.repeats is not None else (5 if self.quick else 20)
        c.warmup = self.warmup if self.warmup is not None else (1 if self.quick else 3)
        return c


def cases(cfg: Config) -> List[Case]:
    """The (op, size, dtype, layout) grid. On CPU the largest size (1e8) is run
    for fp32 as one tensor only, which keeps a full CPU run near 10 minutes."""
    out = []
    for size in cfg.sizes:
        for op in cfg.ops:
            for dt in cfg.dtypes:
                for layout in cfg.layouts:
                    if (cfg.device == "cpu" and size >= 10**8 and not cfg.sizes_explicit
                            and (dt != "fp32" or layout != "one")):
                        continue
                    out.append(Case(op, layout, dt, size, cfg.device))
    return out


def _copy_bandwidth(case: Case, nbytes: int, cfg: Config, cache: Dict) -> Dict[str, float]:
    key = (nbytes, case.dtype_name)
    if key not in cache:
        n = max(nbytes // 2 // case.dtype.itemsize, 1)
        src = torch.ones(n, dtype=case.dtype, device=case.device)
        dst = torch.empty_like(src)
        t = common.time_fn(lambda: dst.copy_(src), case.device, cfg.repeats, cfg.warmup)
        cache[key] = dict(t, copy_s=t["median_s"], copy_gbps=2 * n * case.dtype.itemsize / t["median_s"] / 1e9)
        del src, dst
    return cache[key]


def run_case(case: Case, cfg: Config, copy_cache: Dict) -> List[dict]:
    case.setup()
    rows: List[dict] = []
    try:
        numel = case.numel
        nbytes = bytes_moved(case.op, numel, case.dtype.itemsize)
        copy = _copy_bandwidth(case, nbytes, cfg, copy_cache)
        base = {"op": case.op, "layout": case.layout, "dtype": case.dtype_name, "size": case.size,
                "numel": numel, "n_tensors": len(case.params), "bytes_moved": nbytes,
                "copy_gbps": copy["copy_gbps"]}
        if case.op == "fisher_per_sample":
            base["batch"] = FISHER_BATCH
        fused_s = None
        for m in METHODS[case.op]:
            row = dict(base, method=m.name, note=m.note)
            limit = m.max_numel.get(case.device)
            if limit is not None and case.size > limit:
                row.update(status="skipped", reason=f"not run above {limit:.0e} elements on {case.device} "
                                                    "(seconds per step; see the 1e7 row)")
                rows.append(row)
                continue
            try:
                fn = m.build(case)
            except Unsupported as e:
                row.update(status="unsupported", reason=str(e))
                rows.append(row)
                continue
            t = common.time_fn(fn, case.device, cfg.repeats, cfg.warmup)
            row.update(status="ok", **t)
            row.update(common.step_memory(fn, case.device))
            row["gbps"] = nbytes / t["median_s"] / 1e9
            row["copy_fraction"] = row["gbps"] / copy["copy_gbps"]
            if fused_s is None:
                fused_s = t["median_s"]
            row["time_vs_pybayes"] = t["median_s"] / fused_s
            rows.append(row)
            del fn  # frees the method's state (momentum buffers, ...) before the next one
        # a reference copy row, so the table shows the bandwidth it is compared with
        timing = {k: copy[k] for k in ("median_s", "min_s", "iqr_s", "repeats", "inner")}
        rows.append(dict(base, method="copy_ (bandwidth reference)", note="dst.copy_(src), src = bytes/2",
                         status="ok", **timing, gbps=copy["copy_gbps"], copy_fraction=1.0,
                         time_vs_pybayes=copy["copy_s"] / fused_s if fused_s else None))
    finally:
        case.teardown()
        if case.size >= 10**7:
            gc.collect()  # slow (~0.2 s with posteriors imported): only where memory matters
        if case.device == "cuda":
            torch.cuda.empty_cache()
    return rows


def run(cfg: Config, progress=None) -> List[dict]:
    cfg = cfg.resolved()
    todo = cases(cfg)
    copy_cache: Dict = {}
    rows: List[dict] = []
    bar = progress(total=len(todo), desc="ops", unit="case") if progress else None
    for case in todo:
        if bar is not None:
            bar.set_postfix_str(f"{case.op} {case.layout} {case.dtype_name} {case.size:.0e}")
        rows.extend(run_case(case, cfg, copy_cache))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


# ---------------------------------------------------------------------------
# reporting

def _pick(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def targets(rows: List[dict], device: str) -> List[Tuple[str, str, str]]:
    """The issue's targets, each as (target, measured, verdict)."""
    out = []

    def verdict(ok):
        return "met" if ok else "MISSED"

    if device == "cpu":
        sel = dict(op="sghmc", layout="one", dtype="fp32", size=10**7)
        fused = _pick(rows, method="pybayes SGHMC (fused)", status="ok", **sel)
        ref = _pick(rows, method="pybayes SGHMC fused=False (reference)", status="ok", **sel)
        post = _pick(rows, method="posteriors sghmc", **sel)
        sgd = _pick(rows, method="torch SGD(momentum) fused", status="ok", **sel)
        if fused and ref:
            r = ref["median_s"] / fused["median_s"]
            out.append(("fused SGHMC ≥ 2× the reference path at 1e7 fp32",
                        f"{common.fmt_seconds(fused['median_s'])} vs {common.fmt_seconds(ref['median_s'])} = {r:.1f}×",
                        verdict(r >= 2)))
        else:
            out.append(("fused SGHMC ≥ 2× the reference path at 1e7 fp32", "not measured in this run", "—"))
        if fused and post and post.get("status") == "ok":
            r = post["median_s"] / fused["median_s"]
            out.append(("fused SGHMC ≥ 5× posteriors.sgmcmc.sghmc at 1e7 fp32",
                        f"{common.fmt_seconds(fused['median_s'])} vs {common.fmt_seconds(post['median_s'])} = {r:.1f}×",
                        verdict(r >= 5)))
        else:
            why = post.get("reason", "") if post else "not measured in this run"
            out.append(("fused SGHMC ≥ 5× posteriors.sgmcmc.sghmc at 1e7 fp32", why or "not measured", "—"))
        if fused and sgd:
            out.append(("(context) fused SGHMC vs torch SGD(momentum, fused=True) at 1e7 fp32",
                        f"{fused['median_s'] / sgd['median_s']:.1f}× the time of SGD "
                        f"({common.fmt_seconds(sgd['median_s'])}): the difference is the noise", "—"))
        return out
    big = [r for r in rows if r["status"] == "ok" and r["dtype"] == "fp32" and r["layout"] == "one"
           and r["numel"] >= 6.4e7]
    for op, name in (("sghmc", "pybayes SGHMC (fused)"), ("sgld", "pybayes SGLD (fused)")):
        sel = [r for r in big if r["op"] == op and r["method"] == name]
        if sel:
            worst = min(r["copy_fraction"] for r in sel)
            out.append((f"fused {op.upper()} ≥ 85% of copy bandwidth at ≥ 6.4e7 fp32",
                        f"min {100 * worst:.0f}% over {len(sel)} sizes", verdict(worst >= 0.85)))
    per_byte = []
    for r in rows:
        if r["status"] == "ok" and r["op"] == "sghmc" and r["method"] == "pybayes SGHMC (fused)" and r["layout"] == "many":
            one = _pick(rows, op="sghmc", method=r["method"], layout="one", dtype=r["dtype"], size=r["size"])
            if one and one["status"] == "ok" and r["numel"] >= 1e7:
                per_byte.append((r["median_s"] / r["bytes_moved"]) / (one["median_s"] / one["bytes_moved"]))
    if per_byte:
        out.append(("many tensors within 1.3× of one tensor per byte (SGHMC, ≥ 1e7)",
                    f"worst {max(per_byte):.2f}×", verdict(max(per_byte) <= 1.3)))
    for r in big:
        if r["op"] == "sghmc" and r["method"] == "pybayes SGHMC (fused)":
            sgd = _pick(rows, op="sghmc", method="torch SGD(momentum) fused", layout="one", dtype="fp32",
                        size=r["size"], status="ok")
            ref = _pick(rows, op="sghmc", method="pybayes SGHMC fused=False (reference)", layout="one",
                        dtype="fp32", size=r["size"], status="ok")
            if sgd:
                out.append((f"fused SGHMC no slower than SGD(momentum, fused) at {r['size']:.1e}",
                            f"{r['median_s'] / sgd['median_s']:.2f}× its time", verdict(r["median_s"] <= sgd["median_s"])))
            if ref:
                out.append((f"fused SGHMC ≥ 4× the reference path at {r['size']:.1e}",
                            f"{ref['median_s'] / r['median_s']:.1f}×", verdict(ref["median_s"] >= 4 * r["median_s"])))
    return out


def summary_size(rows: List[dict], device: str) -> Optional[int]:
    """The size of the summary table: 1e7 on CPU, 1e8 on CUDA, else the largest run."""
    sizes = sorted({r["size"] for r in rows})
    want = 10**7 if device == "cpu" else 10**8
    return want if want in sizes else (sizes[-1] if sizes else None)


def summary_markdown(rows: List[dict], device: str, heading: str = "## Summary") -> str:
    """One row per op and method at the summary size, fp32, both layouts."""
    size = summary_size(rows, device)
    sel = [r for r in rows if r["size"] == size and r["dtype"] == "fp32"]
    if not sel:
        return ""
    table = []
    for r in sel:
        if r["status"] != "ok":
            table.append((r["op"], r["layout"], r["method"], f"{r['status']}: {r['reason']}", "—", "—", "—", "—"))
            continue
        mem = common.fmt_bytes(r["extra_mem_bytes"]) if "extra_mem_bytes" in r else "—"
        table.append((r["op"], r["layout"], r["method"], common.fmt_seconds(r["median_s"]), f"{r['gbps']:.1f}",
                      f"{100 * r['copy_fraction']:.0f}%",
                      f"{r['time_vs_pybayes']:.2f}" if r.get("time_vs_pybayes") else "—", mem))
    return "\n".join([f"{heading} at {common.fmt_count(size)} elements, fp32 "
                      "(one tensor; many = a transformer's 196 tensors)", "",
                      common.markdown_table(["op", "layout", "method", "time/step", "GB/s", "% copy",
                                             "× pybayes", "extra mem"], table)])


def markdown(rows: List[dict], env: Dict, device: str) -> str:
    parts = [f"# pybayes op microbenchmarks — {device}", "", common.env_markdown(env), ""]
    parts += ["Time per step is the median over the repeats; bytes are counted by hand "
              "(see `bench/ops.py`); GB/s = bytes / time; \"% copy\" = GB/s over the bandwidth of "
              "`dst.copy_(src)` of the same byte count measured in the same run; \"× pybayes\" = "
              "time / time of the pybayes fused row. On the CPU, `copy_` writes a separate buffer and pays a "
              "read-for-ownership of it, while the in-place updates read every line they write, so a "
              "fraction above 100% is possible there. Extra memory: "
              + (common.CUDA_MEMORY_METHOD if device == "cuda" else common.CPU_MEMORY_METHOD) + ".", ""]
    tg = targets(rows, device)
    if tg:
        parts += ["## Targets", "", common.markdown_table(["target", "measured", "verdict"], tg), ""]
    summary = summary_markdown(rows, device)
    if summary:
        parts += [summary, ""]
    for op in OPS:
        sel = [r for r in rows if r["op"] == op]
        if not sel:
            continue
        parts += [f"## {op}", ""]
        if op == "fisher_per_sample":
            parts += [f"Size = elements of the per-sample gradients G (batch {FISHER_BATCH}); "
                      "numel = elements of F.", ""]
        table = []
        for r in sel:
            if r["status"] == "ok":
                mem = common.fmt_bytes(r.get("extra_mem_bytes")) if "extra_mem_bytes" in r else "—"
                table.append((r["layout"], r["dtype"], common.fmt_count(r["size"]), r["n_tensors"], r["method"],
                              common.fmt_seconds(r["median_s"]), f"{r['gbps']:.1f}",
                              f"{100 * r['copy_fraction']:.0f}%",
                              f"{r['time_vs_pybayes']:.2f}" if r.get("time_vs_pybayes") else "—", mem))
            else:
                table.append((r["layout"], r["dtype"], common.fmt_count(r["size"]), r["n_tensors"], r["method"],
                              f"{r['status']}: {r['reason']}", "—", "—", "—", "—"))
        parts += [common.markdown_table(["layout", "dtype", "size", "tensors", "method", "time/step",
                                         "GB/s", "% copy", "× pybayes", "extra mem"], table), ""]
    return "\n".join(parts)


def plot(rows: List[dict], path, device: str) -> bool:
    """GB/s against size per method (fp32, one tensor), one panel per op."""
    if not common.have_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [op for op in OPS if any(r["op"] == op for r in rows)]
    fig, axes = plt.subplots(1, len(ops), figsize=(4.2 * len(ops), 3.8), squeeze=False)
    for ax, op in zip(axes[0], ops):
        sel = [r for r in rows if r["op"] == op and r["status"] == "ok" and r["dtype"] == "fp32"
               and r["layout"] == "one"]
        for name in dict.fromkeys(r["method"] for r in sel):
            pts = sorted((r["numel"], r["gbps"]) for r in sel if r["method"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name,
                    linestyle="--" if name.startswith("copy_") else "-")
        ax.set_xscale("log")
        ax.set_title(f"{op} (fp32, one tensor)")
        ax.set_xlabel("elements")
        ax.set_ylabel("GB/s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"pybayes ops on {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
