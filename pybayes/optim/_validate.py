"""Validation of the samplers' inputs: hyperparameters and group values,
per-parameter state, memory overlap, and state dicts of other optimizers.

Each check raises naming the argument and what was expected, and runs before
anything is modified (SamplerBase.step validates every group first)."""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Dict, List, Optional

import torch

from .. import _C

U32 = 1 << 32
SEED_LIMIT = 1 << 63


def value_of(x) -> float:
    """A hyperparameter as a float (numbers, or one-element CPU tensors)."""
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def check_real(name: str, value) -> None:
    """A real number or a one-element CPU tensor (never a bool). A tensor on an
    accelerator would be read back to the host at every step."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be a real number, got the bool {value!r}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
        if value.is_complex():
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor")
        if value.device.type != "cpu":
            raise TypeError(f"{name} must be a number or a CPU tensor, got a tensor on {value.device} "
                            "(reading it every step would synchronise the host with the device)")
    elif not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")


def check_nonnegative(name: str, value) -> None:
    check_real(name, value)
    v = value_of(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return int(seed)


def check_fused(fused) -> None:
    if fused is not None and not isinstance(fused, bool):
        raise TypeError(f"fused must be None, True or False, got {fused!r}")


def check_param_ids(group: Dict[str, Any]) -> None:
    ids = group.get("param_ids")
    n = len(group["params"])
    if not isinstance(ids, (list, tuple)) or len(ids) != n:
        raise ValueError(f"param_ids must be a list of {n} ints (one per parameter of the group), got {ids!r}")
    if all(type(i) is int and 0 <= i < U32 for i in ids):
        return
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= int(i) < U32:
            raise ValueError(f"param_ids must hold ints in [0, 2**32), got {i!r}")


def check_no_duplicates(params: List[torch.Tensor], where: str) -> None:
    seen = set()
    for p in params:
        if id(p) in seen:
            raise ValueError(f"{where}: a parameter is listed more than once (shape {tuple(p.shape)}); "
                             "each parameter may appear once")
        seen.add(id(p))


def check_step(step, where: str) -> None:
    if isinstance(step, torch.Tensor):
        ok = step.numel() == 1 and not step.is_floating_point() and step.dtype != torch.bool
        if ok and step.device.type == "cpu":
            ok = 0 <= int(step.item()) < U32
    else:
        ok = isinstance(step, numbers.Integral) and not isinstance(step, bool) and 0 <= int(step) < U32
    if not ok:
        raise ValueError(f"{where}: step must be an int in [0, 2**32) (the noise counter), got {step!r}")


def check_state(state, p: torch.Tensor, buffer: Optional[str], where, loading: bool = False) -> None:
    """A parameter's state: an int ``step`` and, for SGHMC/pSGLD, its buffer
    tensor (``where``: a string or a function making one, for the message).
    At a step, the buffer's dtype, shape, device and layout are the op's C++
    checks; ``loading``: its shape is checked here (load_state_dict casts the
    dtype and device to the parameter's)."""
    step = state.get("step")
    buf = state.get(buffer) if buffer is not None else None
    if type(step) is int and 0 <= step < U32 and (buffer is None or type(buf) is torch.Tensor) and not loading:
        return  # the common case, kept cheap: this runs for every parameter at every step
    where = where() if callable(where) else where
    if step is None:
        raise ValueError(f"{where} has no 'step'")
    check_step(step, where)
    if buffer is None:
        return
    if buffer not in state:
        raise ValueError(f"{where} has a step but no {buffer!r}")
    if not isinstance(buf, torch.Tensor) or (loading and buf.shape != p.shape):
        got = f"shape {tuple(buf.shape)}" if isinstance(buf, torch.Tensor) else type(buf).__name__
        raise ValueError(f"{where}: {buffer} must be a tensor of its parameter's shape {tuple(p.shape)}, "
                         f"got {got}")


def check_call(kind, op, params, grads, bufs, ids, steps, h, grad_scale, found_inf, offsets) -> None:
    """The C++ checks of one op call (dtype, layout, devices, ids, steps,
    hyperparameters, AMP tensors), run before any kernel of the step."""
    _C.check_sampler_call(kind, op, params, grads, bufs, ids, steps, h["lr"], h["weight_decay"],
                          h.get("momentum", h.get("alpha", 0.0)), h.get("eps", 0.0), h["temperature"],
                          h["num_data"], h["maximize"], grad_scale, found_inf, offsets, False)


def check_no_overlap(opt_name: str, tensors, label) -> None:
    """Every parameter, gradient and buffer of a step, over all groups; all
    count as written (the step unscales the gradients in place under AMP), so
    no two may share memory. ``label(i)`` names tensor i in the error."""
    i, j = _C.find_overlap(tensors, [True] * len(tensors))
    if i >= 0:
        raise RuntimeError(f"{opt_name}: {label(i)} and {label(j)} overlap in memory (views of one "
                           "storage, or one tensor listed twice); every parameter, gradient and buffer "
                           "of a step needs its own memory")


# -- state dicts of other optimizers --------------------------------------------------------

# group keys any optimizer may carry (schedulers, torch internals, names)
_GENERIC = {"params", "param_names", "param_ids", "initial_lr", "differentiable", "max_lr", "min_lr",
            "base_lr", "base_momentum", "max_momentum"}


def _init_keys(cls) -> set:
    names = set(inspect.signature(cls.__init__).parameters) - {"self", "params"}
    return {n for n in names if n not in _GENERIC}


def _candidates(own_classes):
    out = [(c.__name__, _init_keys(c)) for c in own_classes]
    for name in dir(torch.optim):
        c = getattr(torch.optim, name)
        if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer:
            try:
                out.append((f"torch.optim.{name}", _init_keys(c)))
            except (TypeError, ValueError):
                continue
    return out


def guess_class(groups, own_classes) -> Optional[str]:
    """The optimizer class whose constructor arguments best match the keys of
    saved param groups (missing keys, as in older state dicts, cost one each)."""
    keys = set()
    for g in groups:
        keys |= set(g) - _GENERIC
    best, score = None, None
    for name, sig in _candidates(own_classes):
        s = len(keys & sig) - len(sig - keys)
        if score is None or s > score:
            best, score = name, s
    return best


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same element-to-memory map (strides of size-1 dims never matter)."""
    sa, sb = a.stride(), b.stride()
    return a.shape == b.shape and (sa == sb or all(n <= 1 or x == y for n, x, y in zip(a.shape, sa, sb)))
