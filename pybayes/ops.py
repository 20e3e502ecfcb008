"""The torch custom ops of pybayes (``torch.ops.pybayes.*``).

The schemas live in C++ (``csrc/ops/*.cpp``); this module loads the extension,
registers each op's fake (meta) kernel for ``torch.compile`` / ``opcheck``,
and offers validated Python entry points.
"""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (registers torch.ops.pybayes.*)

_U64 = 1 << 64
_I64 = 1 << 63


def seed_to_int64(seed: int) -> int:
    """A seed in [0, 2**64) (or any int64) as the int64 the op schemas take."""
    seed = int(seed)
    if not -_I64 <= seed < _U64:
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    return seed - _U64 if seed >= _I64 else seed


def build_info() -> dict:
    """What this build of ``pybayes._C`` contains (CUDA, archs, CPU ISA)."""
    return dict(_C.build_info())


def _refuse_mixed_meta(op, **args):
    """The fake kernels below also serve the Meta dispatch key, which wins as
    soon as one tensor of a call is on the meta device: a real CPU/CUDA call
    with a stray meta tensor would silently do nothing. Refuse it; calls whose
    tensors are all meta (or fake, under torch.compile) only trace shapes."""
    from torch._subclasses.fake_tensor import is_fake

    meta = real = None
    for name, v in args.items():
        for i, t in enumerate(v if isinstance(v, (list, tuple)) else [v]):
            if not isinstance(t, torch.Tensor) or is_fake(t):
                continue
            label = f"{name}[{i}]" if isinstance(v, (list, tuple)) else name
            if t.is_meta:
                meta = meta or label
            else:
                real = real or (label, t.device)
    if meta is not None and real is not None:
        raise RuntimeError(f"{op}: {meta} is a meta tensor but {real[0]} is on {real[1]}; a call takes "
                           "tensors of one device (meta tensors only trace shapes and update nothing)")


# ---------------------------------------------------------------------------
# Philox streams (DESIGN.md §4)

@torch.library.register_fake("pybayes::philox4x32")
def _philox4x32_fake(counters, key):
    return torch.empty_like(counters)


@torch.library.register_fake("pybayes::philox_fill_uint32_")
def _philox_fill_uint32_fake(out, seed, offset, stream, step):
    return None


@torch.library.register_fake("pybayes::philox_fill_normal_")
def _philox_fill_normal_fake(out, seed, offset, stream, step):
    return None


def philox4x32(counters, key) -> torch.Tensor:
    """Raw Philox4x32-10 blocks: ``counters`` (n, 4) and ``key`` (2,) words in
    [0, 2**32) (any integer array), returns the (n, 4) output words as int64."""
    counters = torch.as_tensor(counters, dtype=torch.int64).reshape(-1, 4)
    key = torch.as_tensor(key, dtype=torch.int64).reshape(-1)
    return torch.ops.pybayes.philox4x32(counters, key)


def _check_stream(n, offset, stream, step):
    for name, v, hi in (("n", n, _I64), ("offset", offset, _I64), ("stream", stream, 1 << 32),
                        ("step", step, 1 << 32)):
        if not 0 <= int(v) < hi:
            raise ValueError(f"{name} must be in [0, {hi}), got {v}")


def philox_uint32(seed: int, n: int, *, offset: int = 0, stream: int = 0, step: int = 0,
                  device="cpu") -> torch.Tensor:
    """Elements ``[offset, offset+n)`` of the Philox stream ``(seed, stream, step)``
    as uint32 words held in an int64 tensor. Element ``i`` is word ``i % 4`` of
    the block with counter ``(i // 4 low, i // 4 high, stream, step)``."""
    _check_stream(n, offset, stream, step)
    out = torch.empty(int(n), dtype=torch.int64, device=device)
    torch.ops.pybayes.philox_fill_uint32_(out, seed_to_int64(seed), int(offset), int(stream), int(step))
    return out


def philox_normal(seed: int, n: int, *, offset: int = 0, stream: int = 0, step: int = 0,
                  device="cpu") -> torch.Tensor:
    """Standard normals (float32) of elements ``[offset, offset+n)`` of a stream:
    Box–Muller on word pairs (0, 1) and (2, 3) of each block. The samplers'
    noise for parameter ``id`` at step ``t`` is ``philox_normal(seed, numel,
    stream=id, step=t)`` reshaped like the parameter."""
    _check_stream(n, offset, stream, step)
    out = torch.empty(int(n), dtype=torch.float32, device=device)
    torch.ops.pybayes.philox_fill_normal_(out, seed_to_int64(seed), int(offset), int(stream), int(step))
    return out


ROUNDING_INDEX0 = 1 << 63  # csrc/sampler_math.h, kRoundingIndex0


def philox_rounding_uint32(seed: int, n: int, *, offset: int = 0, stream: int = 0, step: int = 0,
                           device="cpu") -> torch.Tensor:
    """The stochastic-rounding words of elements ``[offset, offset+n)`` of a
    stream, as uint32 in an int64 tensor: element ``i``'s word is element
    ``2**63 + i`` of the Philox stream ``(seed, stream, step)`` (word ``i % 4``
    of the block with counter ``(2**61 + i // 4, stream, step)``), a half of
    the stream the Gaussian noise never reaches (its indices are below 2**63).
    A 16-bit parameter's element is rounded with the low 16 bits, its state
    buffer's (momentum, square average) with the high 16 bits. Computed with
    the raw block function :func:`philox4x32` (the reference path's source)."""
    _check_stream(n, offset, stream, step)
    n, offset = int(n), int(offset)
    first = offset // 4
    blocks = (offset + n + 3) // 4 - first
    j = torch.arange(blocks, dtype=torch.int64) + (first + (ROUNDING_INDEX0 >> 2))
    s = int(seed) % _U64
    counters = torch.stack([j & 0xFFFFFFFF, j >> 32, torch.full_like(j, int(stream)),
                            torch.full_like(j, int(step))], dim=1)
    words = philox4x32(counters, [s & 0xFFFFFFFF, s >> 32]).reshape(-1)
    lo = offset - 4 * first
    return words[lo:lo + n].to(device)


# ---------------------------------------------------------------------------
# Fused samplers (DESIGN.md §3); the optimizers in pybayes.optim call these.

@torch.library.register_fake("pybayes::sgld_")
def _sgld_fake(params, grads, param_ids, steps, lr, weight_decay, temperature, num_data, seed,
               maximize, grad_scale=None, found_inf=None, offsets=None, stochastic_rounding=False):
    _refuse_mixed_meta("sgld_", params=params, grads=grads, grad_scale=grad_scale, found_inf=found_inf)


@torch.library.register_fake("pybayes::sghmc_")
def _sghmc_fake(params, grads, momentum_buffers, param_ids, steps, lr, momentum, weight_decay,
                temperature, num_data, seed, maximize, grad_scale=None, found_inf=None, offsets=None,
                stochastic_rounding=False):
    _refuse_mixed_meta("sghmc_", params=params, grads=grads, momentum_buffers=momentum_buffers,
                       grad_scale=grad_scale, found_inf=found_inf)


@torch.library.register_fake("pybayes::psgld_")
def _psgld_fake(params, grads, square_avgs, param_ids, steps, lr, alpha, eps, weight_decay,
                temperature, num_data, seed, maximize, grad_scale=None, found_inf=None, offsets=None,
                stochastic_rounding=False, noise_bound=0.5):
    _refuse_mixed_meta("psgld_", params=params, grads=grads, square_avgs=square_avgs,
                       grad_scale=grad_scale, found_inf=found_inf)


# ---------------------------------------------------------------------------
# Fisher: diagonal-Fisher accumulation (DESIGN.md §1.2). Per-element math in
# csrc/fisher_math.h, shared with the pSGLD kernel's second-moment EMA.

@torch.library.register_fake("pybayes::fisher_diag_accumulate_")
def _fisher_diag_accumulate_fake(fisher, grads, decay, scale):
    _refuse_mixed_meta("fisher_diag_accumulate_", fisher=fisher, grads=grads)


@torch.library.register_fake("pybayes::fisher_diag_accumulate_per_sample_")
def _fisher_diag_accumulate_per_sample_fake(fisher, grads, scale):
    _refuse_mixed_meta("fisher_diag_accumulate_per_sample_", fisher=fisher, grads=grads)


def _tensor_list(x, name):
    if isinstance(x, torch.Tensor):
        return [x]
    try:
        out = list(x)
    except TypeError:
        raise TypeError(f"{name} must be a tensor or a sequence of tensors, got {type(x).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
    return out


def _finite(name, v):
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


_NATIVE_DEVICES = ("cpu", "cuda", "meta")


def _fisher_lists(fisher, grads, op):
    """Lists of equal length on one device (the dispatcher picks the kernel from
    the devices present, so a stray device is caught here, before dispatch)."""
    fisher = _tensor_list(fisher, "fisher")
    grads = _tensor_list(grads, "grads")
    if len(grads) != len(fisher):
        raise ValueError(f"{op}: grads has {len(grads)} tensors, fisher has {len(fisher)}")
    if fisher:
        dev = fisher[0].device
        for name, lst in (("fisher", fisher), ("grads", grads)):
            for i, t in enumerate(lst):
                if t.device != dev:
                    raise ValueError(f"{op}: {name}[{i}] is on {t.device} but fisher[0] is on {dev}; "
                                     "one call takes one device")
    return fisher, grads


def fisher_diag_accumulate_(fisher, grads, *, decay: float = 1.0, scale: float = 1.0) -> None:
    """In place, element by element: ``fisher[i] = decay * fisher[i] + scale * grads[i]**2``.

    ``fisher`` and ``grads`` are tensors or equal-length sequences of tensors
    (same device, dtype and number of elements pairwise; contiguous;
    float32/float64/float16/bfloat16, accumulated in float32, or float64 for
    float64). ``decay=1`` sums squared gradients (empirical Fisher of mini-batch
    gradients); ``decay=alpha, scale=1-alpha`` is RMSprop's ``square_avg`` EMA.
    One fused call for the whole list (one kernel launch per dtype on CUDA).
    Nothing is modified when an argument is invalid.
    """
    fisher, grads = _fisher_lists(fisher, grads, "fisher_diag_accumulate_")
    decay, scale = _finite("decay", decay), _finite("scale", scale)
    if not fisher:
        return
    if fisher[0].device.type not in _NATIVE_DEVICES:  # e.g. mps, xpu: same math in torch
        with torch.no_grad():
            for f, g in zip(fisher, grads):
                f.mul_(decay).addcmul_(g.reshape(f.shape), g.reshape(f.shape), value=scale)
        return
    with torch.no_grad():
        torch.ops.pybayes.fisher_diag_accumulate_(fisher, grads, decay, scale)


def fisher_diag_accumulate_per_sample_(fisher, grads, *, scale: float = 1.0) -> None:
    """In place: ``fisher[i] += scale * (grads[i] ** 2).sum(0)`` without materialising ``grads[i]**2``.

    Each ``grads[i]`` holds per-sample gradients with a leading batch dimension
    (for example from ``torch.func.vmap(torch.func.grad(loss))``) whose
    per-sample slice has as many elements as ``fisher[i]``. The batch sum runs in
    a fixed order, so the result is deterministic (bitwise, for any thread
    count). Same dtype/device/contiguity rules as :func:`fisher_diag_accumulate_`.
    """
    fisher, grads = _fisher_lists(fisher, grads, "fisher_diag_accumulate_per_sample_")
    scale = _finite("scale", scale)
    if not fisher:
        return
    if fisher[0].device.type not in _NATIVE_DEVICES:
        with torch.no_grad():
            for f, g in zip(fisher, grads):
                g = g.reshape(g.shape[0], f.numel())
                f.view(-1).add_(torch.einsum("bi,bi->i", g, g), alpha=scale)
        return
    with torch.no_grad():
        torch.ops.pybayes.fisher_diag_accumulate_per_sample_(fisher, grads, scale)
