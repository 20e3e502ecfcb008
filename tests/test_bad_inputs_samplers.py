"""Bad inputs to the samplers and to the raw sampler/Fisher ops (issue 11,
items 1-8): each is refused with an error naming the argument before anything
changes (parameters, gradients, buffers, state, step counters, param groups),
or handled correctly. Every case here failed on the code before the fix."""

import copy
import pickle

import pytest
import torch
from torch import nn

from pybayes import ops
from pybayes.optim import PSGLD, SGHMC, SGLD

from sampler_cases import KINDS, call_op, clone_all, hyper, make_tensors

SAMPLERS = {
    "sgld": lambda p, **kw: SGLD(p, **{"lr": 0.01, "num_data": 100, **kw}),
    "sghmc": lambda p, **kw: SGHMC(p, **{"lr": 0.01, "momentum": 0.9, "num_data": 100, **kw}),
    "psgld": lambda p, **kw: PSGLD(p, **{"lr": 0.01, "num_data": 100, **kw}),
}
BUFFER = {"sgld": None, "sghmc": "momentum_buffer", "psgld": "square_avg"}


def same(a, b):
    """Deep equality of state dicts, groups and tensors (tensors bitwise)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype \
            and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


class Snapshot:
    """Everything a refused step must leave as it was."""

    def __init__(self, opt, tensors):
        self.opt, self.tensors = opt, list(tensors)
        self.values = [t.detach().clone() for t in self.tensors]
        self.grads = [None if t.grad is None else t.grad.clone() for t in self.tensors]
        self.sd = copy.deepcopy(opt.state_dict())
        self.n_groups = len(opt.param_groups)

    def unchanged(self):
        return (all(torch.equal(t.detach(), v) for t, v in zip(self.tensors, self.values))
                and all(same(t.grad, g) for t, g in zip(self.tensors, self.grads))
                and len(self.opt.param_groups) == self.n_groups
                and same(copy.deepcopy(self.opt.state_dict()), self.sd))


def two_groups(name, second=None, **kw):
    """An optimizer whose group 0 is valid and stepped once; group 1 holds `second`."""
    a = nn.Parameter(torch.randn(6))
    b = second if second is not None else nn.Parameter(torch.randn(5))
    opt = SAMPLERS[name]([{"params": [a]}, {"params": [b]}], seed=3, **kw)
    a.grad = torch.ones(6)
    if b.grad is None and b.dtype.is_floating_point:
        b.grad = torch.ones_like(b)
    opt.step()
    a.grad = torch.full((6,), 0.5)
    return opt, a, b


# -- 1. partial updates: every check runs for every group before the first kernel

@pytest.mark.parametrize("name", list(SAMPLERS))
def test_int64_parameter_in_a_later_group(name):
    opt, a, ints = two_groups(name, torch.zeros(4, dtype=torch.int64))
    ints.grad = torch.ones(4, dtype=torch.int64)
    snap = Snapshot(opt, [a, ints])
    with pytest.raises((RuntimeError, TypeError), match="int64|Long"):
        opt.step()
    assert snap.unchanged()


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("seed,exc", [(2**64, ValueError), ("abc", TypeError), (-1, ValueError),
                                      (1.5, TypeError), (True, TypeError)])
def test_bad_seed_written_into_a_later_group(name, seed, exc):
    opt, a, b = two_groups(name)
    b.grad = torch.ones(5)
    opt.param_groups[1]["seed"] = seed
    snap = Snapshot(opt, [a, b])
    with pytest.raises(exc, match="seed"):
        opt.step()
    assert snap.unchanged()


def corrupt_step(state, key):
    state["step"] = 2**32


def corrupt_negative_step(state, key):
    state["step"] = -1


def corrupt_shape(state, key):
    state[key] = torch.zeros(3)


def corrupt_dtype(state, key):
    state[key] = state[key].double()


def corrupt_missing(state, key):
    del state[key]


CORRUPTIONS = [corrupt_step, corrupt_negative_step, corrupt_shape, corrupt_dtype, corrupt_missing]


@pytest.mark.parametrize("name,corrupt", [(n, c) for n in SAMPLERS for c in CORRUPTIONS
                                          if BUFFER[n] is not None or c in CORRUPTIONS[:2]],
                         ids=lambda x: getattr(x, "__name__", x))
def test_corrupted_state_of_a_later_group(name, corrupt):
    key = BUFFER[name]
    opt, a, b = two_groups(name)
    b.grad = torch.ones(5)
    corrupt(opt.state[b], key)
    snap = Snapshot(opt, [a, b])
    with pytest.raises((RuntimeError, ValueError), match=key if corrupt not in CORRUPTIONS[:2] else "step"):
        opt.step()
    assert snap.unchanged()


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("key,value,exc", [("lr", -1.0, ValueError), ("lr", True, TypeError),
                                           ("fused", "yes", TypeError), ("maximize", 1, TypeError),
                                           ("param_ids", [2**32], ValueError),
                                           ("param_ids", [], ValueError)])
def test_bad_group_values_of_a_later_group(name, key, value, exc):
    opt, a, b = two_groups(name)
    b.grad = torch.ones(5)
    opt.param_groups[1][key] = value
    snap = Snapshot(opt, [a, b])
    with pytest.raises(exc, match=key):
        opt.step()
    assert snap.unchanged()


# -- 2. aliased parameters, gradients and buffers

@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("grouped", [False, True], ids=["one_group", "across_groups"])
def test_overlapping_parameters_are_refused(name, grouped):
    base = torch.randn(10)
    a, b = nn.Parameter(base[:6]), nn.Parameter(base[4:])  # two leaf views of one storage
    groups = [{"params": [a]}, {"params": [b], "lr": 0.02}] if grouped else [a, b]
    opt = SAMPLERS[name](groups, seed=1)
    a.grad, b.grad = torch.ones(6), torch.ones(6)
    snap = Snapshot(opt, [a, b])
    with pytest.raises(RuntimeError, match="overlap"):
        opt.step()
    assert snap.unchanged()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_same_parameter_twice_is_refused(name):
    a = nn.Parameter(torch.randn(6))
    with pytest.raises(ValueError, match="more than once|duplicate"):
        SAMPLERS[name]([a, a], seed=1)
    opt = SAMPLERS[name]([a], seed=1)
    with pytest.raises(ValueError, match="more than once|duplicate|more than one"):
        opt.add_param_group({"params": [a]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_gradient_aliasing_another_parameter_is_refused(name):
    a, b = nn.Parameter(torch.randn(6)), nn.Parameter(torch.randn(6))
    opt = SAMPLERS[name]([a, b], seed=1)
    a.grad = torch.ones(6)
    b.grad = a.detach()  # b's gradient is a's storage: the kernel would read what it writes
    snap = Snapshot(opt, [a, b])
    with pytest.raises(RuntimeError, match="overlap"):
        opt.step()
    assert snap.unchanged()


OVERLAPS = ["params", "param_grad", "grad_param", "buf_grad", "buf_param", "bufs"]


@pytest.mark.parametrize("kind,case", [(k, c) for k in KINDS for c in OVERLAPS if k != "l" or "buf" not in c])
def test_raw_ops_refuse_overlapping_tensors(kind, case):
    params, grads, bufs = make_tensors([8, 8], torch.float32, kind=kind)
    if case == "params":
        params[1] = params[0].view(-1)  # the same memory twice
    elif case == "param_grad":
        grads[1] = params[0]
    elif case == "grad_param":
        storage = torch.randn(12)
        params[1], grads[1] = storage[:8], storage[4:]  # partial overlap of a param and its grad
    elif case == "bufs":
        bufs[1] = bufs[0]
    elif case == "buf_grad":
        bufs[0] = grads[1]
    else:
        bufs[1] = params[0]
    before = [t.clone() for t in params + grads + bufs]
    with pytest.raises(RuntimeError, match="overlap"):
        call_op(kind, params, grads, bufs if kind != "l" else [], [0, 1], [0, 0], hyper(kind), 1)
    assert all(torch.equal(t, v) for t, v in zip(params + grads + bufs, before))


@pytest.mark.parametrize("kind", list(KINDS))
def test_raw_ops_read_a_gradient_twice(kind):
    """Gradients are only read: two entries may share one (but not a param's memory)."""
    params, grads, bufs = make_tensors([8, 8], torch.float32, kind=kind)
    shared = [grads[0], grads[0]]
    p1, b1 = clone_all(params, bufs)
    p2, b2 = clone_all(params, bufs)
    call_op(kind, p1, shared, b1 if kind != "l" else [], [0, 1], [0, 0], hyper(kind), 1)
    call_op(kind, p2, [grads[0], grads[0].clone()], b2 if kind != "l" else [], [0, 1], [0, 0], hyper(kind), 1)
    assert all(torch.equal(x, y) for x, y in zip(p1 + b1, p2 + b2))


def test_fisher_ops_refuse_overlapping_tensors():
    f = torch.zeros(8)
    g = torch.randn(8)
    with pytest.raises(RuntimeError, match="overlap"):
        ops.fisher_diag_accumulate_([f, f], [g, g])
    with pytest.raises(RuntimeError, match="overlap"):
        ops.fisher_diag_accumulate_([f], [f])
    per = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match="overlap"):
        ops.fisher_diag_accumulate_per_sample_([per[0]], [per])
    assert torch.equal(f, torch.zeros(8))
    ops.fisher_diag_accumulate_([f, torch.zeros(8)], [g, g])  # a gradient read twice is fine
    assert torch.equal(f, g * g)


# -- 3. add_param_group validates before adding

@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("bad,exc", [({"lr": -1.0}, ValueError), ({"seed": "abc"}, TypeError),
                                     ({"seed": 2**64}, ValueError), ({"temperature": "hot"}, TypeError),
                                     ({"fused": "yes"}, TypeError), ({"lr": True}, TypeError),
                                     ({"maximize": None}, TypeError)])
def test_add_param_group_with_a_bad_value_changes_nothing(name, bad, exc):
    a = nn.Parameter(torch.randn(6))
    opt = SAMPLERS[name]([a], seed=1)
    extra = nn.Parameter(torch.randn(3))
    with pytest.raises(exc, match=next(iter(bad))):
        opt.add_param_group({"params": [extra], **bad})
    assert len(opt.param_groups) == 1
    a.grad = torch.ones(6)
    opt.step()  # the optimizer still works
    opt.add_param_group({"params": [extra]})  # and the parameter can still be added
    extra.grad = torch.ones(3)
    opt.step()
    assert opt.state[extra]["step"] == 1 and opt.state[a]["step"] == 2


# -- 4. load_state_dict from another optimizer class

def stepped(make, params):
    opt = make(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt


FOREIGN = [
    ("SGLD", lambda p: SGLD(p, lr=0.01, num_data=10, seed=1), "SGHMC"),
    ("SGHMC", lambda p: SGHMC(p, lr=0.01, num_data=10, seed=1), "PSGLD"),
    ("SGHMC", lambda p: SGHMC(p, lr=0.01, num_data=10, seed=1), "SGLD"),
    ("PSGLD", lambda p: PSGLD(p, lr=0.01, num_data=10, seed=1), "SGLD"),
    ("PSGLD", lambda p: PSGLD(p, lr=0.01, num_data=10, seed=1), "SGHMC"),
    ("SGD", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), "SGHMC"),
    ("RMSprop", lambda p: torch.optim.RMSprop(p, lr=0.01), "PSGLD"),
    ("Adam", lambda p: torch.optim.Adam(p, lr=0.01), "SGLD"),
]
TARGETS = {"SGLD": SAMPLERS["sgld"], "SGHMC": SAMPLERS["sghmc"], "PSGLD": SAMPLERS["psgld"]}


@pytest.mark.parametrize("src_name,make_src,dst_name", FOREIGN, ids=lambda x: x if isinstance(x, str) else "")
def test_load_state_dict_from_another_class_is_refused(src_name, make_src, dst_name):
    src = stepped(make_src, [nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(3))])
    params = [nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(3))]
    dst = stepped(lambda p: TARGETS[dst_name](p, seed=2), params)
    snap = Snapshot(dst, params)
    with pytest.raises(ValueError, match=f"(?s){src_name}.*{dst_name}|{dst_name}.*{src_name}"):
        dst.load_state_dict(src.state_dict())
    assert snap.unchanged()


@pytest.mark.parametrize("name", ["sghmc", "psgld"])
@pytest.mark.parametrize("value", [torch.zeros(7), torch.zeros(2, 2), "buffer"], ids=["numel", "shape", "str"])
def test_load_state_dict_checks_buffer_shapes(name, value):
    params = [nn.Parameter(torch.randn(4))]
    sd = stepped(lambda p: SAMPLERS[name](p, seed=1), params).state_dict()
    sd = copy.deepcopy(sd)
    sd["state"][0][BUFFER[name]] = value
    dst_params = [nn.Parameter(torch.randn(4))]
    dst = SAMPLERS[name](dst_params, seed=1)
    snap = Snapshot(dst, dst_params)
    with pytest.raises(ValueError, match=BUFFER[name]):
        dst.load_state_dict(sd)
    assert snap.unchanged()


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("value", [2**32, -1, 1.5, "3"])
def test_load_state_dict_checks_steps(name, value):
    params = [nn.Parameter(torch.randn(4))]
    sd = copy.deepcopy(stepped(lambda p: SAMPLERS[name](p, seed=1), params).state_dict())
    sd["state"][0]["step"] = value
    dst = SAMPLERS[name]([nn.Parameter(torch.randn(4))], seed=1)
    with pytest.raises(ValueError, match="step"):
        dst.load_state_dict(sd)
    assert dst.state_dict()["state"] == {}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_load_state_dict_fills_keys_missing_from_an_older_state_dict(name):
    """As torch does for state dicts of older versions: a group key that is
    missing takes this optimizer's value (its defaults)."""
    torch.manual_seed(0)
    p_full, p_old = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(5))
    p_old.data.copy_(p_full.data)
    src = stepped(lambda p: SAMPLERS[name](p, seed=7), [nn.Parameter(p_full.detach().clone())])
    sd = src.state_dict()
    old = copy.deepcopy(sd)
    for key in ("maximize", "fused", "param_ids"):
        del old["param_groups"][0][key]
    full_opt, old_opt = SAMPLERS[name]([p_full], seed=1), SAMPLERS[name]([p_old], seed=1)
    full_opt.load_state_dict(sd)
    old_opt.load_state_dict(old)
    assert old_opt.param_groups[0]["maximize"] is False and old_opt.param_groups[0]["param_ids"] == [0]
    for _ in range(3):
        for p, o in ((p_full, full_opt), (p_old, old_opt)):
            p.grad = torch.ones(5)
            o.step()
    assert torch.equal(p_full, p_old)


# -- 5. GradScaler leaves p.grad unscaled, as torch's optimizers (fused included) do

def scaled_backward(model, scaler, x, inf=False):
    loss = model(x).pow(2).mean()
    scaler.scale(loss * float("inf") if inf else loss).backward()


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("unscale_first", [False, True], ids=["step", "unscale_then_step"])
def test_grad_scaler_leaves_gradients_unscaled_like_torch(name, unscale_first):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ref_model = copy.deepcopy(model)
    x = torch.randn(16, 4)
    opt = SAMPLERS[name](model.parameters(), seed=1)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.01, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    for m, o, s in ((model, opt, scaler), (ref_model, ref, ref_scaler)):
        scaled_backward(m, s, x)
        if unscale_first:
            s.unscale_(o)
        s.step(o)
        s.update()
    for p, r in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p.grad, r.grad)  # the unscaled gradient, bit for bit
    # a skipped (overflowing) step: torch's fused optimizers leave the gradients as they are
    for m, o, s in ((model, opt, scaler), (ref_model, ref, ref_scaler)):
        o.zero_grad()
        scaled_backward(m, s, x, inf=True)
    kept = [p.grad.clone() for p in model.parameters()]
    scaler.step(opt)
    ref_scaler.step(ref)
    assert all(torch.equal(p.grad.view(torch.int32), k.view(torch.int32))  # bits: inf/NaN stay as they were
               for p, k in zip(model.parameters(), kept))


# -- 6. raw ops: meta tensors and bad grad_scale

@pytest.mark.parametrize("kind,where", [(k, w) for k in KINDS for w in ("params", "grads", "bufs")
                                        if k != "l" or w != "bufs"])
def test_raw_ops_refuse_a_meta_tensor_among_cpu_tensors(kind, where):
    params, grads, bufs = make_tensors([6, 6], torch.float32, kind=kind)
    lists = {"params": params, "grads": grads, "bufs": bufs}
    lists[where][1] = torch.empty(6, device="meta")
    before = [t.clone() for t in params + grads + bufs if not t.is_meta]
    with pytest.raises(RuntimeError, match="meta"):
        call_op(kind, params, grads, bufs if kind != "l" else [], [0, 1], [0, 0], hyper(kind), 1)
    assert all(torch.equal(t, v) for t, v in zip([t for t in params + grads + bufs if not t.is_meta], before))


def test_raw_ops_on_meta_tensors_only_still_trace():
    p, g = torch.empty(6, device="meta"), torch.empty(6, device="meta")
    call_op("l", [p], [g], [], [0], [0], hyper("l"), 1)  # shape propagation: no error, no work


def test_fisher_ops_refuse_a_meta_tensor_among_cpu_tensors():
    f = torch.zeros(4)
    with pytest.raises((RuntimeError, ValueError), match="meta"):
        torch.ops.pybayes.fisher_diag_accumulate_([f], [torch.empty(4, device="meta")], 1.0, 1.0)
    with pytest.raises((RuntimeError, ValueError), match="meta"):
        torch.ops.pybayes.fisher_diag_accumulate_per_sample_([f], [torch.empty(2, 4, device="meta")], 1.0)
    assert torch.equal(f, torch.zeros(4))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("scale", [0.0, float("nan"), -4.0, float("inf"), float("-inf")])
def test_raw_ops_refuse_a_bad_grad_scale(kind, scale):
    params, grads, bufs = make_tensors([6], torch.float32, kind=kind)
    p, b = clone_all(params, bufs)
    with pytest.raises(RuntimeError, match="grad_scale"):
        call_op(kind, p, grads, b if kind != "l" else [], [0], [0], hyper(kind), 1,
                grad_scale=torch.tensor([scale]))
    assert all(torch.equal(x, y) for x, y in zip(p + b, params + bufs))


# -- 7. deepcopy / pickle; group values; the pSGLD reference is bitwise

@pytest.mark.parametrize("name", list(SAMPLERS))
def test_deepcopy_and_pickle_keep_last_step_skipped(name):
    a = nn.Parameter(torch.randn(4))
    opt = SAMPLERS[name]([a], seed=1)
    a.grad = torch.ones(4)
    opt.grad_scale, opt.found_inf = torch.tensor(2.0), torch.tensor(1.0)
    opt.step()
    del opt.grad_scale, opt.found_inf
    assert opt.last_step_skipped is True
    assert copy.deepcopy(opt).last_step_skipped is True
    assert pickle.loads(pickle.dumps(opt)).last_step_skipped is True
    opt.step()
    assert copy.deepcopy(opt).last_step_skipped is False
    assert pickle.loads(pickle.dumps(opt)).last_step_skipped is False


@pytest.mark.parametrize("make", [lambda p: SGLD(p, lr=True, num_data=10),
                                  lambda p: SGHMC(p, lr=0.1, momentum=False, num_data=10),
                                  lambda p: SGLD(p, lr=0.1, num_data=True),
                                  lambda p: PSGLD(p, lr=0.1, eps=True, num_data=10)])
def test_bool_hyperparameters_are_refused(make):
    with pytest.raises(TypeError, match="bool"):
        make([nn.Parameter(torch.zeros(3))])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_psgld_reference_path_is_bitwise_the_fused_kernel(dtype, temperature):
    torch.manual_seed(0)
    p1 = nn.Parameter(torch.randn(5000, dtype=dtype))
    p2 = nn.Parameter(p1.detach().clone())
    o1 = PSGLD([p1], lr=0.01, alpha=0.9, eps=1e-4, num_data=50, temperature=temperature, seed=4)
    o2 = PSGLD([p2], lr=0.01, alpha=0.9, eps=1e-4, num_data=50, temperature=temperature, seed=4, fused=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        grad = torch.randn(5000, generator=g, dtype=dtype)
        p1.grad, p2.grad = grad.clone(), grad.clone()
        o1.step()
        o2.step()
        assert torch.equal(p1, p2)
        assert torch.equal(o1.state[p1]["square_avg"], o2.state[p2]["square_avg"])


# -- 8. channels_last and other dense layouts

def conv_model(memory_format):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    return model.to(memory_format=memory_format)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_channels_last_parameters_step_like_contiguous_ones(name):
    """Element-wise update: the same gradient values give the same parameters,
    bit for bit, whatever the layout (temperature 0: no noise)."""
    g = torch.Generator().manual_seed(3)
    grads = [[torch.randn(p.shape, generator=g) for p in conv_model(torch.contiguous_format).parameters()]
             for _ in range(3)]
    runs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = conv_model(fmt)
        opt = SAMPLERS[name](model.parameters(), seed=5, temperature=0.0)
        for step_grads in grads:
            for p, gr in zip(model.parameters(), step_grads):
                p.grad = torch.empty_like(p).copy_(gr)  # the gradient takes its parameter's layout
            opt.step()
        runs.append(model)
    w = runs[1][0].weight
    assert not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(a, b)
    # and a channels_last model trains: autograd's gradients keep the layout
    model = conv_model(torch.channels_last)
    opt = SAMPLERS[name](model.parameters(), seed=5)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 3, 9, 9).to(memory_format=torch.channels_last)).pow(2).mean().backward()
    opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_channels_last_fused_matches_reference_bitwise(name):
    x = torch.randn(2, 3, 9, 9).to(memory_format=torch.channels_last)
    models = [conv_model(torch.channels_last) for _ in range(2)]
    opts = [SAMPLERS[name](m.parameters(), seed=5, fused=f) for m, f in zip(models, (None, False))]
    for _ in range(3):
        for m, o in zip(models, opts):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    buf = BUFFER[name]
    if buf is not None:
        w = models[0][0].weight
        assert opts[0].state[w][buf].stride() == w.stride()


def test_noise_of_a_dense_layout_follows_memory_order():
    """The noise element index of a non-contiguous dense parameter is its
    position in memory, so the kernel streams memory in order."""
    p = nn.Parameter(torch.zeros(4, 3).t())  # shape (3, 4), strides (1, 3)
    opt = SGLD([p], lr=0.1, num_data=10, seed=9)
    p.grad = torch.zeros(3, 4)  # contiguous grad for a transposed parameter: re-laid out
    opt.step()
    coef = (2 * 0.1 / 10) ** 0.5
    z = ops.philox_normal(9, 12, stream=0, step=0)
    assert torch.equal(p.detach().t().reshape(-1), -(z * coef))


@pytest.mark.parametrize("kind", list(KINDS))
def test_raw_ops_take_dense_layouts_with_shared_strides(kind):
    h = hyper(kind)
    params, grads, bufs = make_tensors([60], torch.float32, kind=kind)
    shape = (1, 3, 4, 5)
    cl = [[t.view(shape).to(memory_format=torch.channels_last) for t in lst] for lst in (params, grads, bufs)]
    flat = [[t.permute(0, 2, 3, 1).reshape(-1).clone() for t in lst] for lst in cl]  # memory order
    call_op(kind, cl[0], cl[1], cl[2] if kind != "l" else [], [2], [4], h, 8)
    call_op(kind, flat[0], flat[1], flat[2] if kind != "l" else [], [2], [4], h, 8)
    assert torch.equal(cl[0][0].permute(0, 2, 3, 1).reshape(-1), flat[0][0])
    if kind != "l":
        assert torch.equal(cl[2][0].permute(0, 2, 3, 1).reshape(-1), flat[2][0])
    # a gradient with other strides than its parameter is refused
    with pytest.raises(RuntimeError, match="strides"):
        call_op(kind, cl[0], [grads[0].view(shape)], cl[2] if kind != "l" else [], [2], [4], h, 8)
    # so is a layout with gaps (not dense)
    with pytest.raises(RuntimeError, match="dense"):
        call_op(kind, [params[0][::2]], [grads[0][::2]], [bufs[0][::2]] if kind != "l" else [], [2], [4], h, 8)


@pytest.mark.parametrize("name", ["sghmc", "psgld"])
def test_contiguous_checkpoint_into_a_channels_last_model(name):
    x = torch.randn(2, 3, 9, 9)
    model_a, model_b = conv_model(torch.contiguous_format), conv_model(torch.contiguous_format)
    oa = SAMPLERS[name](model_a.parameters(), seed=5, temperature=0.0)
    for _ in range(2):
        oa.zero_grad()
        model_a(x).pow(2).mean().backward()
        oa.step()
    model_b.load_state_dict(model_a.state_dict())
    model_b = model_b.to(memory_format=torch.channels_last)
    ob = SAMPLERS[name](model_b.parameters(), seed=1, temperature=0.0)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as from torch.load: no tensor shared with oa
    w = model_b[0].weight
    assert ob.state[w][BUFFER[name]].stride() == w.stride()
    for m, o in ((model_a, oa), (model_b, ob)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
