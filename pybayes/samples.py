"""Posterior samples: the :class:`SampleSet` that Bayesian predictions consume
and the :class:`SampleCollector` that gathers one from an SG-MCMC run.

A sample set maps each parameter name (as in ``model.named_parameters()``) to
a stacked tensor ``[S, *param.shape]``: row ``s`` of every tensor together is
one parameter sample. :meth:`pybayes.laplace.DiagLaplace.sample` returns the
same type, so collectors and Laplace approximations plug into
:func:`pybayes.predict.predict` alike.
"""

from __future__ import annotations

from typing import Dict, Iterator, Mapping, Optional

import torch

__all__ = ["SampleSet", "SampleCollector", "as_sample_set"]


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


class SampleSet:
    """``S`` parameter samples, stored as ``{name: tensor[S, *shape]}``.

    * ``len(s)`` / ``s.num_samples``: ``S``;
    * ``s["fc.weight"]``: the stacked samples of one parameter;
    * ``s[i]``: sample ``i`` as a ``{name: tensor}`` dict (what
      ``torch.func.functional_call`` takes); iterating yields these dicts;
    * ``s.chunks(k)``: sub-sets of at most ``k`` samples (views, no copy).
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        tensors = dict(tensors)
        if not tensors:
            raise ValueError("a SampleSet needs at least one parameter")
        sizes = {name: t.shape[0] if t.dim() > 0 else None for name, t in tensors.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError(f"every tensor needs the same leading sample dimension, got {sizes}")
        self.tensors: Dict[str, torch.Tensor] = tensors

    @property
    def num_samples(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __len__(self) -> int:
        return self.num_samples

    def names(self):
        return list(self.tensors)

    def items(self):
        return self.tensors.items()

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.tensors[key]
        if isinstance(key, int):
            n = self.num_samples
            if not -n <= key < n:
                raise IndexError(f"sample {key} out of range for {n} samples")
            return {name: t[key] for name, t in self.tensors.items()}
        if isinstance(key, slice):
            return SampleSet({name: t[key] for name, t in self.tensors.items()})
        raise TypeError(f"index a SampleSet with a parameter name, an int or a slice, got {type(key).__name__}")

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        for i in range(self.num_samples):
            yield self[i]

    def chunks(self, size: int) -> Iterator["SampleSet"]:
        size = int(size)
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        for b in range(0, self.num_samples, size):
            yield self[b:b + size]

    def to(self, *args, **kwargs) -> "SampleSet":
        return SampleSet({n: t.to(*args, **kwargs) for n, t in self.tensors.items()})

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def mean(self) -> Dict[str, torch.Tensor]:
        """Per-parameter sample mean."""
        return {n: t.mean(0) for n, t in self.tensors.items()}

    def var(self) -> Dict[str, torch.Tensor]:
        """Per-parameter sample variance (unbiased, ``S - 1`` in the denominator)."""
        return {n: t.var(0) for n, t in self.tensors.items()}

    @classmethod
    def stack(cls, samples) -> "SampleSet":
        """From a sequence of ``{name: tensor}`` dicts (one per sample)."""
        samples = list(samples)
        if not samples:
            raise ValueError("no samples to stack")
        return cls({n: torch.stack([s[n] for s in samples]) for n in samples[0]})

    def __repr__(self):
        n_params = sum(t[0].numel() for t in self.tensors.values()) if self.num_samples else 0
        t0 = next(iter(self.tensors.values()))
        return (f"SampleSet({self.num_samples} samples x {n_params} parameters in {len(self.tensors)} tensors, "
                f"{_fmt_bytes(self.nbytes)} {t0.dtype} on {t0.device})")


def as_sample_set(samples) -> SampleSet:
    """A :class:`SampleSet` from a SampleSet, a :class:`SampleCollector`, a
    ``{name: tensor[S, ...]}`` mapping, or a sequence of ``{name: tensor}`` dicts."""
    if isinstance(samples, SampleSet):
        return samples
    if isinstance(samples, SampleCollector):
        return samples.samples()
    if isinstance(samples, Mapping):
        return SampleSet(samples)
    if isinstance(samples, (list, tuple)):
        return SampleSet.stack(samples)
    raise TypeError(f"cannot make a SampleSet from {type(samples).__name__}")


class SampleCollector:
    """Keeps snapshots of a model's parameters during an SG-MCMC run.

    Call :meth:`step` once per optimizer step, or :meth:`attach` it to any
    ``torch.optim.Optimizer`` (it registers a step post-hook, so it runs after
    every ``optimizer.step()``; steps skipped by a ``GradScaler`` never call the
    hook). The first ``burn_in`` steps are discarded; after that every
    ``thin``-th eligible step is kept. With a ``schedule`` (e.g.
    :class:`pybayes.schedules.Cyclical`), only steps in a sampling phase are
    eligible (``schedule.is_sampling``).

    Snapshots hold the parameters that require grad, copied to ``device``
    (optionally cast to ``dtype``). With ``max_samples`` the storage is
    allocated up front (its size is in the repr) and, once full, the oldest
    sample is dropped (``when_full="drop_oldest"``) or collection stops
    (``"stop"``).
    """

    def __init__(self, model: torch.nn.Module, burn_in: int = 0, thin: int = 1,
                 max_samples: Optional[int] = None, device="cpu", *, dtype: Optional[torch.dtype] = None,
                 schedule=None, when_full: str = "drop_oldest"):
        if int(burn_in) < 0:
            raise ValueError(f"burn_in must be >= 0, got {burn_in}")
        if int(thin) < 1:
            raise ValueError(f"thin must be >= 1, got {thin}")
        if max_samples is not None and int(max_samples) < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
        if when_full not in ("drop_oldest", "stop"):
            raise ValueError(f"when_full must be 'drop_oldest' or 'stop', got {when_full!r}")
        if schedule is not None and not hasattr(schedule, "is_sampling"):
            raise TypeError("schedule must expose `is_sampling` (e.g. pybayes.schedules.Cyclical)")
        self.model = model
        self.burn_in, self.thin = int(burn_in), int(thin)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.device = torch.device(device)
        self.dtype = dtype
        self.schedule = schedule
        self.when_full = when_full
        self._params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self._params:
            raise ValueError("the model has no parameters that require grad")
        self.steps_seen = 0
        self._eligible = 0
        self._count = 0      # samples held
        self._head = 0       # ring-buffer slot of the oldest sample
        self.total_collected = 0
        self._handles = []
        if self.max_samples is not None:
            self._store = {n: torch.empty((self.max_samples,) + tuple(p.shape), device=self.device,
                                          dtype=dtype or p.dtype) for n, p in self._params.items()}
        else:
            self._list = []

    # -- collection ------------------------------------------------------------------

    def attach(self, optimizer: torch.optim.Optimizer):
        """Collect after every ``optimizer.step()``; returns the hook handle."""
        def hook(opt, args, kwargs):
            # a pybayes sampler whose step was skipped by AMP (found_inf) did not move
            if not getattr(opt, "last_step_skipped", False):
                self.step()

        h = optimizer.register_step_post_hook(hook)
        self._handles.append(h)
        return h

    def detach(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def collected_last_step(self) -> bool:
        """Whether the last :meth:`step` (or :meth:`collect`) took a sample."""
        return self._last_kept

    def step(self) -> bool:
        """Count one optimizer step; snapshot the parameters if it is kept. Returns
        whether a sample was taken."""
        self.steps_seen += 1
        self._last_kept = False
        if self.steps_seen <= self.burn_in:
            return False
        if self.schedule is not None and not self.schedule.is_sampling:
            return False
        self._eligible += 1
        if self._eligible % self.thin != 0:
            return False
        self.collect()
        return self._last_kept

    @torch.no_grad()
    def collect(self) -> bool:
        """Snapshot the parameters now (bypassing burn-in, thinning and schedule)."""
        self._last_kept = False
        if self.max_samples is None:
            self._list.append({n: p.detach().to(device=self.device, dtype=self.dtype or p.dtype, copy=True)
                               for n, p in self._params.items()})
            self._count += 1
        else:
            if self._count == self.max_samples:
                if self.when_full == "stop":
                    return False
                slot = self._head
                self._head = (self._head + 1) % self.max_samples
            else:
                slot = (self._head + self._count) % self.max_samples
                self._count += 1
            for n, p in self._params.items():
                self._store[n][slot].copy_(p.detach())
        self.total_collected += 1
        self._last_kept = True
        return True

    _last_kept = False

    # -- access ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def samples(self) -> SampleSet:
        """The samples held, oldest first, as a :class:`SampleSet` (a copy)."""
        if self._count == 0:
            raise RuntimeError("no samples collected yet (steps_seen="
                               f"{self.steps_seen}, burn_in={self.burn_in}, thin={self.thin})")
        if self.max_samples is None:
            return SampleSet.stack(self._list)
        order = [(self._head + i) % self.max_samples for i in range(self._count)]
        idx = torch.tensor(order, device=self.device)
        return SampleSet({n: t.index_select(0, idx) for n, t in self._store.items()})

    @property
    def bytes_per_sample(self) -> int:
        return sum(p.numel() * torch.empty((), dtype=self.dtype or p.dtype).element_size()
                   for p in self._params.values())

    @property
    def nbytes(self) -> int:
        """Memory held by the samples (the preallocated buffer when ``max_samples`` is set)."""
        if self.max_samples is not None:
            return self.max_samples * self.bytes_per_sample
        return self._count * self.bytes_per_sample

    def state_dict(self) -> dict:
        return {"steps_seen": self.steps_seen, "eligible": self._eligible,
                "total_collected": self.total_collected,
                "samples": self.samples().tensors if self._count else None}

    def load_state_dict(self, state: dict) -> None:
        self.steps_seen = int(state["steps_seen"])
        self._eligible = int(state["eligible"])
        self._count, self._head = 0, 0
        if self.max_samples is None:
            self._list = []
        tensors = state["samples"]
        if tensors is not None:
            s = SampleSet(tensors)
            if set(s.names()) != set(self._params):
                raise ValueError(f"state holds parameters {sorted(s.names())}, the model has {sorted(self._params)}")
            keep = range(len(s)) if self.max_samples is None else range(max(0, len(s) - self.max_samples), len(s))
            for i in keep:
                snap = s[i]
                if self.max_samples is None:
                    self._list.append({n: t.to(self.device, copy=True) for n, t in snap.items()})
                else:
                    for n, t in snap.items():
                        self._store[n][self._count].copy_(t)
                self._count += 1
        self.total_collected = int(state["total_collected"])

    def __repr__(self):
        n_params = sum(p.numel() for p in self._params.values())
        cap = "unbounded" if self.max_samples is None else f"max {self.max_samples}, {self.when_full}"
        mem = (f"{_fmt_bytes(self.nbytes)} allocated" if self.max_samples is not None
               else f"{_fmt_bytes(self.nbytes)} held")
        return (f"SampleCollector({self._count} samples ({cap}) of {n_params} parameters in "
                f"{len(self._params)} tensors: {mem} on {self.device}, "
                f"{_fmt_bytes(self.bytes_per_sample)} per sample; burn_in={self.burn_in}, thin={self.thin}, "
                f"steps_seen={self.steps_seen})")
