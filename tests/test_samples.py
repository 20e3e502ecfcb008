"""SampleCollector: burn-in, thinning, capacity policies, memory report, hooks, state."""

import pytest
import torch

from pybayes.samples import SampleCollector, SampleSet, as_sample_set


def toy():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt


def train(model, opt, steps, record=None):
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        if record is not None:
            record.append({n: p.detach().clone() for n, p in model.named_parameters()})


def test_burn_in_and_thin_keep_the_right_steps():
    model, opt = toy()
    col = SampleCollector(model, burn_in=3, thin=2)
    col.attach(opt)
    history = []
    train(model, opt, 10, history)
    # steps 4..10 are eligible; every 2nd eligible one is kept: steps 5, 7, 9
    s = col.samples()
    assert len(col) == 3 and len(s) == 3 and col.steps_seen == 10
    for i, step in enumerate((5, 7, 9)):
        for n in s.names():
            assert torch.equal(s[n][i], history[step - 1][n])


def test_ring_buffer_keeps_the_latest_in_order_and_stop_keeps_the_first():
    model, opt = toy()
    ring = SampleCollector(model, max_samples=3)
    first = SampleCollector(model, max_samples=3, when_full="stop")
    ring.attach(opt)
    first.attach(opt)
    history = []
    train(model, opt, 7, history)
    r, f = ring.samples(), first.samples()
    for i in range(3):
        assert torch.equal(r["weight"][i], history[4 + i]["weight"])
        assert torch.equal(f["weight"][i], history[i]["weight"])
    assert ring.total_collected == 7 and first.total_collected == 3


def test_repr_states_memory():
    model, opt = toy()
    col = SampleCollector(model, max_samples=100)
    assert col.nbytes == 100 * (6 + 2) * 4
    assert "3.1 KiB allocated" in repr(col) and "32 B per sample" in repr(col)
    unbounded = SampleCollector(model, dtype=torch.bfloat16)
    unbounded.collect()
    unbounded.collect()
    assert unbounded.nbytes == 2 * 8 * 2 and "32 B held" in repr(unbounded)
    assert unbounded.samples()["weight"].dtype == torch.bfloat16
    assert "2 samples" in repr(unbounded.samples())


def test_detach_stops_collection_and_manual_step_works():
    model, opt = toy()
    col = SampleCollector(model)
    col.attach(opt)
    train(model, opt, 2)
    col.detach()
    train(model, opt, 2)
    assert len(col) == 2
    assert col.step() and col.collected_last_step and len(col) == 3


def test_frozen_parameters_are_not_stored():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)
    col = SampleCollector(model)
    col.collect()
    assert "0.weight" not in col.samples().names() and "1.weight" in col.samples().names()


def test_state_dict_round_trip():
    model, opt = toy()
    col = SampleCollector(model, burn_in=1, thin=1, max_samples=4)
    col.attach(opt)
    train(model, opt, 6)
    state = col.state_dict()
    other = SampleCollector(model, burn_in=1, thin=1, max_samples=4)
    other.load_state_dict(state)
    assert other.steps_seen == 6 and len(other) == 4
    for n in col.samples().names():
        assert torch.equal(other.samples()[n], col.samples()[n])


def test_sample_set_access():
    s = SampleSet({"a": torch.arange(6.0).reshape(3, 2), "b": torch.zeros(3)})
    assert len(s) == 3 and s[1]["a"].tolist() == [2.0, 3.0]
    assert [len(c) for c in s.chunks(2)] == [2, 1]
    assert len(list(s)) == 3 and s[-1]["a"].tolist() == [4.0, 5.0]
    torch.testing.assert_close(s.mean()["a"], torch.tensor([2.0, 3.0]))
    assert as_sample_set([{"a": torch.ones(2)}, {"a": torch.zeros(2)}])["a"].shape == (2, 2)
    with pytest.raises(IndexError):
        s[3]


def test_errors_and_empty():
    model, _ = toy()
    with pytest.raises(ValueError, match="thin"):
        SampleCollector(model, thin=0)
    with pytest.raises(ValueError, match="burn_in"):
        SampleCollector(model, burn_in=-1)
    with pytest.raises(RuntimeError, match="no samples collected yet"):
        SampleCollector(model).samples()
    with pytest.raises(TypeError, match="is_sampling"):
        SampleCollector(model, schedule=object())
