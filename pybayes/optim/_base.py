"""What SGLD, SGHMC and pSGLD share: hyperparameter validation, the seed and
stable parameter ids of the noise streams (DESIGN.md §4), AMP, and the
dispatch between the fused op and the reference path."""

from __future__ import annotations

import math
import numbers
import zlib
from typing import Any, Dict, List, Optional

import torch
from torch.optim import Optimizer

from .. import ops
from ._reference import step_reference

_U32 = 1 << 32


def _value(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def check_nonnegative(name: str, value) -> None:
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
    if not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = _value(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")


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
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        if not 0 <= int(seed) < (1 << 63):
            raise ValueError(f"seed must be in [0, 2**63), got {seed}")
        return int(seed)
    drawn = torch.randint(0, (1 << 63) - 1, (), dtype=torch.int64)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        drawn = drawn.to(device)
        dist.broadcast(drawn, src=0)
    return int(drawn.item())


class SamplerBase(Optimizer):
    """Base of the fused SG-MCMC samplers; see SGLD, SGHMC and PSGLD."""

    _step_supports_amp_scaling = True
    _kind = ""  # 'l' SGLD, 'h' SGHMC, 'p' pSGLD
    _buffer: Optional[str] = None  # per-parameter state buffer name
    _hyper = ("lr", "temperature", "num_data", "weight_decay")

    def __init__(self, params, defaults: Dict[str, Any], seed: Optional[int], fused: Optional[bool]):
        if fused not in (None, True, False):
            raise TypeError(f"fused must be None, True or False, got {fused!r}")
        defaults = dict(defaults, seed=resolve_seed(seed), fused=fused)
        self._check_group(defaults)
        super().__init__(params, defaults)

    # -- hyperparameters -------------------------------------------------
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

    # -- stable parameter ids --------------------------------------------
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._check_group(group)
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

    # -- the step -------------------------------------------------------
    def _hyper_of(self, group) -> Dict[str, Any]:
        h = {k: _value(group[k]) if group[k] is not None else None for k in self._hyper}
        h["num_data"] = 1.0 if h["num_data"] is None else h["num_data"]
        h["maximize"] = group["maximize"]
        return h

    @torch.no_grad()
    def step(self, closure=None):
        """One sampler step. Parameters whose ``grad`` is None are skipped.
        Every group and gradient is validated before any parameter changes.
        Under ``torch.amp.GradScaler`` a step whose gradients overflowed changes
        nothing (parameters, buffers, step counters) and draws no noise."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        # read by SampleCollector's hook: a skipped step is not a new sample
        self.last_step_skipped = found_inf is not None and float(found_inf.sum().item()) != 0.0
        if self.last_step_skipped:
            return loss
        work = [self._collect(group) for group in self.param_groups]  # validates everything first
        for group, items in zip(self.param_groups, work):
            if items:
                self._run(group, items, grad_scale, found_inf)
        return loss

    def _collect(self, group) -> List[tuple]:
        self._check_group(group)
        items = []
        for p, pid in zip(group["params"], group["param_ids"]):
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients "
                                   "(parameter with a sparse grad found)")
            if p.is_complex():
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters "
                                   f"(got {p.dtype})")
            if not p.is_contiguous():
                raise RuntimeError(f"{type(self).__name__} needs contiguous parameters "
                                   f"(got shape {tuple(p.shape)} with strides {p.stride()})")
            if g.dtype != p.dtype or g.shape != p.shape or g.device != p.device:
                raise RuntimeError(f"{type(self).__name__}: a gradient ({g.dtype}, {tuple(g.shape)}, "
                                   f"{g.device}) does not match its parameter ({p.dtype}, "
                                   f"{tuple(p.shape)}, {p.device})")
            if group["fused"] and local(p).device.type not in _fused_devices():
                raise RuntimeError(f"fused=True but pybayes has no {local(p).device.type} kernel "
                                   f"(build info: {ops.build_info()['note']}); use fused=None")
            items.append((p, pid))
        return items

    @torch._disable_dynamo
    def _run(self, group, items, grad_scale, found_inf) -> None:
        h = self._hyper_of(group)
        fused = group["fused"]
        by_device: Dict[torch.device, list] = {}
        for p, pid in items:
            by_device.setdefault(local(p).device, []).append((p, pid))
        for device, its in by_device.items():
            use_fused = fused if fused is not None else device.type in _fused_devices()
            params, grads, bufs, ids, steps, offsets, states = [], [], [], [], [], [], []
            for p, pid in its:  # one pass: this loop is the step's Python overhead
                sharded = _is_dtensor(p)
                g = p.grad.to_local() if sharded else p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    if self._buffer is not None:
                        state[self._buffer] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                params.append(p.to_local() if sharded else p)
                grads.append(g if g.is_contiguous() else g.contiguous())
                if self._buffer is not None:
                    buf = state[self._buffer]
                    bufs.append(buf.to_local() if sharded else buf)
                ids.append(pid)
                steps.append(int(state["step"]))
                offsets.append(global_offset(p) if sharded else 0)
                states.append(state)
            offsets = offsets if any(offsets) else None
            gs = None if grad_scale is None else grad_scale.to(device=device, dtype=torch.float32).reshape(1)
            fi = None if found_inf is None else found_inf.to(device=device, dtype=torch.float32).reshape(1)
            if use_fused:
                self._fused_op(params, grads, bufs, ids, steps, h, group["seed"], gs, fi, offsets)
            else:
                step_reference(self._kind, params, grads, bufs, ids, steps, h, group["seed"],
                               None if gs is None else float(gs.item()), offsets)
            for state, step in zip(states, steps):
                state["step"] = step + 1

    def _fused_op(self, params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets):
        raise NotImplementedError  # each sampler calls its own op
