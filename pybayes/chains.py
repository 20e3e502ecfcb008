"""K parallel SG-MCMC chains of one ``nn.Module`` as stacked parameters.

:class:`Chains` stacks K copies of a module's parameters (leading dimension =
chain, ``torch.func.stack_module_state``). The forward pass maps the module over
the chains with ``torch.vmap`` + ``torch.func.functional_call``; the sampler is
ONE ordinary pybayes optimizer over the stacked tensors, so every step of every
chain is one fused kernel call (CPU and CUDA) and no vmap is involved in the
optimizer::

    chains = pybayes.chains.Chains(model, num_chains=4, seed=0)
    opt = pybayes.optim.SGLD(chains.parameters(), lr=1e-3, num_data=N)
    collector = chains.collector(burn_in=1000, thin=10).attach(opt)
    for x, y in loader:
        opt.zero_grad()
        chains.loss(chains(x), y, F.cross_entropy).backward()
        opt.step()
    draws = collector.samples()          # ChainSamples, [chains, draws, *shape]
    print(chains.summary(draws))         # split-R-hat / ESS (pybayes.diagnostics)
    pred = chains.predict(draws, x_test) # average over chains x draws

**Posterior.** :meth:`Chains.loss` sums the K per-chain *mean* losses. Chain
``k``'s parameters only enter its own term, so each chain's gradient is the
gradient of its own mean mini-batch loss, exactly what a single-chain run gets:
with ``num_data = N`` (the training-set size, not ``K·N``) every chain samples
``exp(-N (L(θ) + wd/2 |θ|²) / T)`` (DESIGN §3).

**Randomness.** Chain ``k`` of a stacked ``[K, *shape]`` parameter draws the
noise of elements ``k·numel .. (k+1)·numel - 1`` of that parameter's Philox
stream (RNG contract), so chains are independent. Guarantee: chain 0 of a
stacked run is bitwise the single-chain run with the same seed, param ids and
gradients; chain ``k`` is bitwise a single-chain run whose noise starts at
element offset ``k·numel`` (the ops' ``offsets`` argument). Gradients from the
vmapped forward equal a single-module forward up to floating-point rounding of
the batched matmuls (the test suite checks bitwise equality for elementwise
losses and 1e-12 relative in float64 for an MLP).

**Initialisation.** ``init="reset"`` (default): chain ``k`` is a copy of the
module whose ``reset_parameters()`` (every submodule that has one) ran after
``torch.manual_seed(seed + k)`` inside ``torch.random.fork_rng`` (the global
generator's state is restored afterwards). ``init="copy"``: every chain starts at
the module's current parameters.

**Supported modules.** Any module ``torch.func.functional_call`` + ``vmap`` can
run: linear/conv/recurrent layers, activations, LayerNorm, Dropout (drawn
per chain with ``randomness="different"`` from the global generator), and
modules with read-only buffers (stacked per chain, passed to the forward, never
updated). Modules that update buffers in the forward — BatchNorm in training
mode with ``track_running_stats`` — are refused at construction: put them in
``eval()`` or use ``track_running_stats=False``. Parameters that do not require
grad are stacked but left out of :meth:`parameters`.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Optional

import torch
from torch.func import functional_call, stack_module_state

from .samples import SampleSet

__all__ = ["Chains", "ChainSamples", "ChainCollector"]


def _reset(module: torch.nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()


def _check_buffers(model: torch.nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats and m.training:
            raise ValueError(f"model: {type(m).__name__} {name!r} updates its running statistics in the "
                             "forward; Chains cannot update per-chain buffers. Call model.eval() or build it "
                             "with track_running_stats=False")


class ChainSamples:
    """Draws of K chains: ``chain_tensors = {name: tensor[K, S, *shape]}``.

    Accepted by every :mod:`pybayes.diagnostics` function. ``flatten()`` is the
    :class:`~pybayes.samples.SampleSet` of all ``K·S`` draws (chain-major), what
    :func:`pybayes.predict.predict` consumes; ``chain(k)`` the draws of one chain.
    """

    def __init__(self, chain_tensors: Dict[str, torch.Tensor]):
        chain_tensors = dict(chain_tensors)
        if not chain_tensors:
            raise ValueError("chain_tensors needs at least one parameter")
        dims = {n: tuple(t.shape[:2]) for n, t in chain_tensors.items()}
        if any(t.dim() < 2 for t in chain_tensors.values()) or len(set(dims.values())) != 1:
            raise ValueError(f"chain_tensors: every tensor needs the same [chains, draws] leading dims, got {dims}")
        self.chain_tensors = chain_tensors

    @property
    def num_chains(self) -> int:
        return next(iter(self.chain_tensors.values())).shape[0]

    @property
    def num_samples(self) -> int:
        """Draws per chain."""
        return next(iter(self.chain_tensors.values())).shape[1]

    def chain(self, k: int) -> SampleSet:
        if not 0 <= int(k) < self.num_chains:
            raise IndexError(f"chain index {k} out of range for {self.num_chains} chains")
        return SampleSet({n: t[int(k)] for n, t in self.chain_tensors.items()})

    def flatten(self) -> SampleSet:
        return SampleSet({n: t.reshape((-1,) + tuple(t.shape[2:])) for n, t in self.chain_tensors.items()})

    def __repr__(self) -> str:
        return f"ChainSamples({self.num_chains} chains x {self.num_samples} draws, {len(self.chain_tensors)} tensors)"


class ChainCollector:
    """Per-chain sample collection for :class:`Chains`: the first ``burn_in``
    steps are dropped, then every ``thin``-th eligible step is kept (with a
    ``schedule``, only steps where ``schedule.is_sampling``), as
    :class:`~pybayes.samples.SampleCollector` does for one chain."""

    def __init__(self, chains: "Chains", burn_in: int = 0, thin: int = 1, device="cpu", *,
                 dtype: Optional[torch.dtype] = None, schedule=None):
        if int(burn_in) < 0:
            raise ValueError(f"burn_in must be >= 0, got {burn_in}")
        if int(thin) < 1:
            raise ValueError(f"thin must be >= 1, got {thin}")
        if schedule is not None and not hasattr(schedule, "is_sampling"):
            raise TypeError("schedule must expose `is_sampling` (e.g. pybayes.schedules.Cyclical)")
        self.chains, self.burn_in, self.thin = chains, int(burn_in), int(thin)
        self.device, self.dtype, self.schedule = torch.device(device), dtype, schedule
        self.steps_seen, self._eligible = 0, 0
        self._list = []
        self._handles = []

    def attach(self, optimizer: torch.optim.Optimizer) -> "ChainCollector":
        """Collect after every ``optimizer.step()`` (not after AMP-skipped steps); returns self."""
        def hook(opt, args, kwargs):
            if not getattr(opt, "last_step_skipped", False):
                self.step()
        self._handles.append(optimizer.register_step_post_hook(hook))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def step(self) -> bool:
        """Count one sampler step; returns whether a draw was kept."""
        self.steps_seen += 1
        if self.steps_seen <= self.burn_in:
            return False
        if self.schedule is not None and not self.schedule.is_sampling:
            return False
        self._eligible += 1
        if (self._eligible - 1) % self.thin:
            return False
        self._list.append({n: p.detach().to(self.device, self.dtype or p.dtype, copy=True)
                           for n, p in self.chains.named_parameters()})
        return True

    def __len__(self) -> int:
        return len(self._list)

    def samples(self) -> ChainSamples:
        if not self._list:
            raise RuntimeError(f"no draws collected yet ({self.steps_seen} steps seen, burn_in={self.burn_in})")
        return ChainSamples({n: torch.stack([d[n] for d in self._list], dim=1) for n in self._list[0]})


class Chains:
    """K chains of ``model`` with stacked parameters (module docstring: what it
    supports, the posterior and randomness guarantees).

    Args:
        model: the module (left unchanged).
        num_chains: K >= 1.
        seed: initialisation seed (chain ``k`` uses ``seed + k``).
        init: ``"reset"`` (fresh ``reset_parameters()`` per chain) or ``"copy"``.
    """

    def __init__(self, model: torch.nn.Module, num_chains: int, *, seed: int = 0, init: str = "reset"):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"num_chains must be an int >= 1, got {num_chains!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if init not in ("reset", "copy"):
            raise ValueError(f"init must be 'reset' or 'copy', got {init!r}")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("model has no parameters that require grad")
        _check_buffers(model)
        self.num_chains, self.seed, self.init = num_chains, seed, init
        copies = []
        for k in range(num_chains):
            m = copy.deepcopy(model)
            if init == "reset":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + k)
                    _reset(m)
            copies.append(m)
        params, buffers = stack_module_state(copies)
        grads = {n for n, p in model.named_parameters() if p.requires_grad}
        self._params = {n: (t if n in grads else t.detach()) for n, t in params.items()}
        self._buffers = buffers
        self.module = copy.deepcopy(model)   # the template evaluated by functional_call / predict
        self._base = copy.deepcopy(model).to("meta")

    # -- parameters -------------------------------------------------------------------

    def named_parameters(self):
        """``(name, tensor[K, *shape])`` of the parameters that require grad (leaf tensors)."""
        return [(n, t) for n, t in self._params.items() if t.requires_grad]

    def parameters(self):
        return [t for _, t in self.named_parameters()]

    def chain_parameters(self, k: int) -> Dict[str, torch.Tensor]:
        """Chain ``k``'s parameters (views of the stacked tensors)."""
        if not 0 <= int(k) < self.num_chains:
            raise IndexError(f"chain index {k} out of range for {self.num_chains} chains")
        return {n: t[int(k)] for n, t in self._params.items()}

    # -- forward / loss ---------------------------------------------------------------

    def _call(self, params, buffers, *inputs, **kwargs):
        return functional_call(self._base, (params, buffers), inputs, kwargs)

    def __call__(self, *inputs, per_chain_inputs: bool = False, **kwargs):
        """Outputs ``[K, *output_shape]`` of every chain on the same ``inputs``
        (``per_chain_inputs=True``: every input has a leading chain dim)."""
        in_dims = (0, 0) + ((0 if per_chain_inputs else None),) * len(inputs)
        fn = lambda p, b, *xs: self._call(p, b, *xs, **kwargs)  # noqa: E731
        return torch.vmap(fn, in_dims=in_dims, randomness="different")(self._params, self._buffers, *inputs)

    @staticmethod
    def loss(outputs: torch.Tensor, target: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        """``sum_k loss_fn(outputs[k], target)``: each chain's mean loss, summed, so
        each chain gets the gradient of its own mean loss (use ``num_data = N``)."""
        return sum(loss_fn(outputs[k], target) for k in range(outputs.shape[0]))

    # -- samples ----------------------------------------------------------------------

    def collector(self, burn_in: int = 0, thin: int = 1, device="cpu", **kw) -> ChainCollector:
        return ChainCollector(self, burn_in, thin, device, **kw)

    def predict(self, samples: ChainSamples, *inputs, **kwargs):
        """:func:`pybayes.predict.predict` over all chains x draws (buffers: the model's)."""
        from .predict import predict
        if not isinstance(samples, ChainSamples):
            raise TypeError(f"samples must be a ChainSamples, got {type(samples).__name__}")
        return predict(self.module, samples.flatten(), *inputs, **kwargs)

    @staticmethod
    def summary(samples: ChainSamples, seconds: Optional[float] = None):
        """:func:`pybayes.diagnostics.summary` of the draws (split-R̂, bulk/tail ESS)."""
        from .diagnostics import summary
        return summary(samples, seconds=seconds)

    def __repr__(self) -> str:
        n = sum(t[0].numel() for _, t in self.named_parameters())
        return f"Chains({type(self.module).__name__}, {self.num_chains} chains, {n} parameters per chain)"
