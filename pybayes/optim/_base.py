"""What SGLD, SGHMC and pSGLD share: hyperparameter validation, the seed and
stable parameter ids of the noise streams (DESIGN.md §4), AMP, and the
dispatch between the fused op and the reference path."""

from __future__ import annotations

import copy
import zlib
from typing import Any, Dict, List, Optional

import torch
from torch.optim import Optimizer

from .. import ops
from . import _validate as V
from ._reference import step_reference

_U32 = V.U32
_value = V.value_of
check_nonnegative = V.check_nonnegative
_KIND_NAMES = {"l": "SGLD", "h": "SGHMC", "p": "PSGLD"}
_OPS = {"l": "sgld_", "h": "sghmc_", "p": "psgld_"}
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_MARKER = "pybayes_sampler"  # state_dict key: which sampler wrote it


def _fused_devices():
    kinds = {"cpu"}
    if ops.build_info()["cuda"]:
        kinds.add("cuda")
    return kinds


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "to_local")


def local(t):
    """The tensor a kernel updates: a DTensor's local shard, else the tensor."""
    return t.to_local() if _is_dtensor(t) else t


def global_offset(p) -> int:
    """Global index of the first element of p's local shard (0 unless p is a
    DTensor sharded on dim 0, as FSDP2 does), so a shard draws the noise of its
    elements' global indices and sharding never changes the trajectory."""
    if not _is_dtensor(p):
        return 0
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for pl in p.placements:
        if not (isinstance(pl, Replicate) or (isinstance(pl, Shard) and pl.dim == 0)):
            raise RuntimeError(
                "pybayes samplers support DTensor parameters that are replicated or sharded on "
                f"dim 0 (FSDP2); got placements {tuple(p.placements)}")
    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    if p.dim() == 0:
        return 0
    row = 1
    for n in p.shape[1:]:
        row *= int(n)
    return int(offset[0]) * row


def resolve_seed(seed: Optional[int]) -> int:
    """A user seed, or one draw from torch's default generator; under
    torch.distributed the drawn seed is rank 0's, so replicas cannot diverge."""
    if seed is not None:
        return V.check_seed(seed)
    drawn = torch.randint(0, (1 << 63) - 1, (), dtype=torch.int64)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        drawn = drawn.to(device)
        dist.broadcast(drawn, src=0)
    return int(drawn.item())


class _Call:
    """The arguments of one op call: one param group's parameters with a
    gradient on one device, validated, with the state it will update."""

    def __init__(self, group, device, h):
        self.group, self.device, self.h = group, device, h
        self.params, self.grads, self.orig_grads, self.bufs = [], [], [], []
        self.ids, self.steps, self.offsets, self.states = [], [], [], []


class SamplerBase(Optimizer):
    """Base of the fused SG-MCMC samplers; see SGLD, SGHMC and PSGLD."""

    _step_supports_amp_scaling = True
    _kind = ""  # 'l' SGLD, 'h' SGHMC, 'p' pSGLD
    _buffer: Optional[str] = None  # per-parameter state buffer name
    _hyper = ("lr", "temperature", "num_data", "weight_decay")

    def __init__(self, params, defaults: Dict[str, Any], seed: Optional[int], fused: Optional[bool]):
        V.check_fused(fused)
        defaults = dict(defaults, seed=resolve_seed(seed), fused=fused)
        self._check_group(defaults)
        self.last_step_skipped = False
        super().__init__(params, defaults)

    # -- hyperparameters and group values ---------------------------------
    def _check_group(self, group: Dict[str, Any]) -> None:
        for name in ("lr", "temperature", "weight_decay"):
            check_nonnegative(name, group[name])
        n = group["num_data"]
        if _value(group["temperature"]) > 0:
            if n is None:
                raise ValueError(
                    "num_data (the training-set size N) is required when temperature > 0: "
                    "the target is exp(-N * mean_loss / T); pass temperature=0 to optimise")
            check_nonnegative("num_data", n)
            if _value(n) == 0:
                raise ValueError("num_data must be > 0 when temperature > 0, got 0")
        elif n is not None:
            check_nonnegative("num_data", n)
        if not isinstance(group["maximize"], bool):
            raise TypeError(f"maximize must be a bool, got {group['maximize']!r}")
        V.check_seed(group["seed"])
        V.check_fused(group["fused"])
        sr = group.setdefault("stochastic_rounding", True)  # absent from older state_dicts
        if not isinstance(sr, bool):
            raise TypeError(f"stochastic_rounding must be a bool, got {sr!r}")

    # -- param groups and stable parameter ids -----------------------------
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """As torch's, but the group is validated before it is added: a group
        with a bad value raises and leaves ``param_groups`` as it was."""
        if isinstance(param_group, dict) and not isinstance(param_group.get("params"), (torch.Tensor, set)):
            param_group["params"] = list(param_group.get("params", ()))
            V.check_no_duplicates([p[1] if isinstance(p, tuple) else p for p in param_group["params"]],
                                  f"{type(self).__name__}.add_param_group")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group)
        except Exception:
            self.param_groups.pop()
            raise
        used = {i for g in self.param_groups[:-1] for i in g.get("param_ids", ())}
        names = group.get("param_names")
        ids = []
        nxt = max(used) + 1 if used else 0
        for k in range(len(group["params"])):
            if names is not None:
                # named parameters: the stream follows the name, not the position
                pid = zlib.crc32(str(names[k]).encode()) % _U32
                while pid in used:  # deterministic resolution of a crc32 collision
                    pid = (pid + 1) % _U32
            else:
                pid = nxt
                nxt += 1
            used.add(pid)
            ids.append(pid)
        group["param_ids"] = ids

    def __repr__(self) -> str:
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key not in ("params", "param_ids", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    # -- state dicts, copies, pickles -------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd[_MARKER] = _KIND_NAMES[self._kind]
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """As torch's, and: a state dict of another optimizer class is refused
        naming both; steps and buffers are checked against their parameters;
        group keys missing from an older state dict keep this optimizer's
        values (as torch fills them from its defaults); buffers take their
        parameter's memory layout (e.g. channels_last)."""
        super().load_state_dict(self._checked_state_dict(state_dict))
        for p, st in self.state.items():
            buf = st.get(self._buffer) if self._buffer else None
            if isinstance(buf, torch.Tensor) and not _is_dtensor(buf) and not V.same_layout(buf, p):
                st[self._buffer] = torch.empty_like(p).copy_(buf)

    def _checked_state_dict(self, state_dict):
        name = type(self).__name__
        where = f"{name}.load_state_dict"
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{where}: expected an optimizer state dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        mine = _KIND_NAMES[self._kind]
        origin = state_dict.get(_MARKER)
        if origin is None:
            own = [type(self)] + [c for k, c in _SAMPLERS.items() if k != self._kind]
            origin = V.guess_class(saved_groups, own)
            origin = mine if origin == name else origin
        if origin != mine:
            raise ValueError(f"{where}: this state dict was saved by {origin}, not by {mine}; a sampler "
                             f"loads only its own class's state (its groups hold "
                             f"{sorted(set().union(*[set(g) for g in saved_groups]) - {'params'})})")
        groups = self.param_groups
        if len(groups) != len(saved_groups) or any(len(g["params"]) != len(s["params"])
                                                   for g, s in zip(groups, saved_groups)):
            return state_dict  # torch raises its own error for these, before changing anything
        new_groups = []
        for gi, (cur, saved) in enumerate(zip(groups, saved_groups)):
            ng = dict(saved)
            for k, v in cur.items():
                if k != "params" and k not in ng:
                    ng[k] = copy.deepcopy(v)
            self._check_group(ng)
            V.check_param_ids({"params": cur["params"], "param_ids": ng["param_ids"]})
            new_groups.append(ng)
        allowed = {"step"} | ({self._buffer} if self._buffer else set())
        params = [p for g in groups for p in g["params"]]
        saved_ids = [i for g in saved_groups for i in g["params"]]
        for p, pid in zip(params, saved_ids):
            st = state_dict["state"].get(pid)
            if not st:
                continue
            at = f"{where}: state of parameter {pid}"
            extra = set(st) - allowed
            if extra:
                raise ValueError(f"{at} holds {sorted(extra)}, which {mine} does not keep (it keeps "
                                 f"{sorted(allowed)}): a state of another optimizer")
            V.check_state(st, p, self._buffer, at, loading=True)
        return dict(state_dict, param_groups=new_groups)

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["last_step_skipped"] = bool(self.last_step_skipped)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        skipped = state.pop("last_step_skipped", None)
        super().__setstate__(state)
        if skipped is not None or "last_step_skipped" not in self.__dict__:
            self.last_step_skipped = bool(skipped)

    # -- the step -------------------------------------------------------
    def _hyper_of(self, group) -> Dict[str, Any]:
        h = {k: _value(group[k]) if group[k] is not None else None for k in self._hyper}
        h["num_data"] = 1.0 if h["num_data"] is None else h["num_data"]
        h["maximize"] = group["maximize"]
        h["stochastic_rounding"] = group["stochastic_rounding"]
        return h

    @torch.no_grad()
    def step(self, closure=None):
        """One sampler step. Parameters whose ``grad`` is None are skipped.
        Every group, gradient and state is validated (the op's own C++ checks
        included) before any parameter changes. Under ``torch.amp.GradScaler`` a
        step whose gradients overflowed changes nothing (parameters, buffers,
        step counters, gradients) and draws no noise; otherwise the gradients
        are left unscaled, as torch's optimizers leave them."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        calls, fresh = self._prepare(grad_scale, found_inf)  # validates everything first
        # read by SampleCollector's hook: a skipped step is not a new sample
        self.last_step_skipped = found_inf is not None and float(found_inf.sum().item()) != 0.0
        if self.last_step_skipped:
            return loss
        for p, st in fresh:
            self.state[p] = st
        for call in calls:
            self._run(call, grad_scale, found_inf)
        return loss

    @torch._disable_dynamo
    def _prepare(self, grad_scale, found_inf):
        """Validates every group and builds the op calls; modifies nothing.
        Returns the calls and the (param, state) pairs to create."""
        name = type(self).__name__
        calls: List[_Call] = []
        fresh = []
        memory = []  # (tensor, group, index, role) of all the step touches, for the overlap check
        for gi, group in enumerate(self.param_groups):
            self._check_group(group)
            V.check_param_ids(group)
            h = self._hyper_of(group)
            by_device: Dict[torch.device, _Call] = {}
            for k, (p, pid) in enumerate(zip(group["params"], group["param_ids"])):
                g = p.grad
                if g is None:
                    continue
                self._check_param(p, g, group, gi, k)
                sharded = _is_dtensor(p)
                lp, lg = (p.to_local(), g.to_local()) if sharded else (p, g)
                state = self.state.get(p)
                if state:
                    V.check_state(state, p, self._buffer, lambda: f"{name}: the state of {self._label(gi, k)}")
                    buf = state[self._buffer] if self._buffer else None
                else:
                    buf = torch.zeros_like(p) if self._buffer else None
                    state = {"step": 0}
                    if buf is not None:
                        state[self._buffer] = buf
                    fresh.append((p, state))
                call = by_device.get(lp.device)
                if call is None:
                    call = by_device[lp.device] = _Call(group, lp.device, h)
                call.params.append(lp)
                call.orig_grads.append(lg)
                # the kernels stream memory in order: a gradient laid out otherwise is copied
                call.grads.append(lg if V.same_layout(lg, lp) else torch.empty_like(lp).copy_(lg))
                memory += [(lp, gi, k, ""), (lg, gi, k, "the gradient of ")]
                if buf is not None:
                    lb = buf.to_local() if sharded else buf
                    call.bufs.append(lb)
                    memory.append((lb, gi, k, f"the {self._buffer} of "))
                call.ids.append(pid)
                call.steps.append(int(state["step"]))
                call.offsets.append(global_offset(p) if sharded else 0)
                call.states.append(state)
            for call in by_device.values():
                call.offsets = call.offsets if any(call.offsets) else None
                try:
                    V.check_call(self._kind, _OPS[self._kind], call.params, call.grads, call.bufs, call.ids,
                                 call.steps, h, *self._amp_args(call.device, grad_scale, found_inf),
                                 call.offsets)
                except (RuntimeError, ValueError, TypeError) as e:
                    raise type(e)(f"{name}, param group {gi} (its parameters with a gradient, in order): "
                                  f"{e}") from None
                calls.append(call)
        V.check_no_overlap(name, [m[0] for m in memory],
                           lambda i: memory[i][3] + self._label(memory[i][1], memory[i][2]))
        return calls, fresh

    def _label(self, gi: int, k: int) -> str:
        names = self.param_groups[gi].get("param_names")
        return f"parameter {k} of group {gi}" + (f" ({names[k]})" if names else "")

    def _check_param(self, p, g, group, gi, k) -> None:
        name = type(self).__name__
        bad = None
        if g.is_sparse:
            bad = "has a sparse gradient; sparse gradients are not supported (use a dense embedding)"
        elif p.is_complex():
            bad = f"is {p.dtype}; complex parameters are not supported"
        elif p.dtype not in _DTYPES:
            bad = f"is {p.dtype}; parameters must be float32, float64, float16 or bfloat16"
        elif g.dtype != p.dtype or g.shape != p.shape or g.device != p.device:
            bad = (f"has a gradient ({g.dtype}, {tuple(g.shape)}, {g.device}) that does not match its "
                   f"parameter ({p.dtype}, {tuple(p.shape)}, {p.device})")
        elif group["fused"] and local(p).device.type not in _fused_devices():
            raise RuntimeError(f"fused=True but pybayes has no {local(p).device.type} kernel "
                               f"(build info: {ops.build_info()['note']}); use fused=None")
        if bad is not None:
            raise RuntimeError(f"{name}: {self._label(gi, k)} {bad}")

    @staticmethod
    def _amp_args(device, grad_scale, found_inf):
        gs = None if grad_scale is None else grad_scale.to(device=device, dtype=torch.float32).reshape(1)
        fi = None if found_inf is None else found_inf.to(device=device, dtype=torch.float32).reshape(1)
        return gs, fi

    @torch._disable_dynamo
    def _run(self, call: _Call, grad_scale, found_inf) -> None:
        fused = call.group["fused"]
        use_fused = fused if fused is not None else call.device.type in _fused_devices()
        gs, fi = self._amp_args(call.device, grad_scale, found_inf)
        if use_fused:
            self._fused_op(call.params, call.grads, call.bufs, call.ids, call.steps, call.h,
                           call.group["seed"], gs, fi, call.offsets)
        else:
            step_reference(self._kind, call.params, call.grads, call.bufs, call.ids, call.steps, call.h,
                           call.group["seed"], None if gs is None else float(gs.item()), call.offsets)
        if gs is not None:
            # leave p.grad unscaled, as torch's optimizers (fused ones included) do
            torch._foreach_div_(call.orig_grads, gs.reshape(()))
        for state, step in zip(call.states, call.steps):
            state["step"] = step + 1

    def _fused_op(self, params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets):
        raise NotImplementedError  # each sampler calls its own op

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("pybayes.optim.") and cls._kind:
            _SAMPLERS.setdefault(cls._kind, cls)


_SAMPLERS: Dict[str, type] = {}  # 'l'/'h'/'p' -> SGLD/SGHMC/PSGLD
