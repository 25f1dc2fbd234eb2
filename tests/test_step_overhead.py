"""The small-batch fast paths change no number: StatelessCall against torch.func.functional_call,
Batch.take against plain indexing, and samcli.train bit for bit against the loop it replaced
(functional_call, one flat leaf, torch.optim.SGD, elementwise finiteness check)."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from conftest import tiny_config
from samcli.config import TrainConfig
from samcli.methods import ascent_step
from samcli.objective import Batch, Objective, StatelessCall
from samcli.task import build_task
from samcli.train import BatchSampler, train


class Tied(nn.Module):
    """Two Linear layers sharing one weight, a BatchNorm (buffers updated in training mode)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)
        self.second.weight = self.first.weight
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.norm(torch.tanh(self.second(torch.tanh(self.first(x))))))


def test_stateless_call_is_functional_call():
    torch.manual_seed(0)
    module = Tied().double()
    inputs = torch.randn(6, 4, dtype=torch.float64)
    params = {k: torch.randn_like(v) for k, v in module.named_parameters()}
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    reference_buffers = copy.deepcopy(buffers)
    own = {k: v.clone() for k, v in module.state_dict().items()}
    call = StatelessCall(module)
    assert torch.equal(call(params, buffers, inputs), functional_call(module, (params, reference_buffers), (inputs,)))
    for name in buffers:            # running statistics updated in place, identically
        assert torch.equal(buffers[name], reference_buffers[name])
    assert not torch.equal(buffers["norm.running_mean"], own["norm.running_mean"])
    for name, value in module.state_dict().items():      # the module's own tensors are back
        assert torch.equal(value, own[name])
    assert isinstance(module.first.weight, nn.Parameter) and module.second.weight is module.first.weight

    # under a function transform (what the curvature and msam code do)
    module.eval()

    def loss(p, call_fn):
        return call_fn(p, buffers, inputs).pow(2).sum()
    ours = grad(loss)(params, call)
    theirs = grad(loss)(params, lambda p, b, x: functional_call(module, (p, b), (x,)))
    for name in params:
        assert torch.equal(ours[name], theirs[name])


def test_stateless_call_restores_the_module_when_forward_fails():
    module = nn.Sequential(nn.Linear(3, 2))
    weight = module[0].weight
    with pytest.raises(RuntimeError):
        StatelessCall(module)({"0.weight": torch.zeros(2, 5)}, {}, torch.zeros(1, 3))
    assert module[0].weight is weight


@pytest.mark.parametrize("index", [torch.tensor([3, 0, 3]), torch.tensor([[1, 2], [4, 0]]), torch.tensor(2),
                                   torch.tensor([True, False, True, False, True]), slice(1, 4)])
def test_take_is_indexing(index):
    data = Batch(torch.randn(5, 3, 2), torch.arange(5))
    taken = data.take(index)
    assert torch.equal(taken.inputs, data.inputs[index]) and torch.equal(taken.targets, data.targets[index])


def reference_loop(cfg: TrainConfig) -> torch.Tensor:
    """The training loop as it was: functional_call on unflattened views of one flat leaf, grads
    w.r.t. that leaf, SAM's ascent as methods.ascent_step, torch.optim.SGD, isfinite(d).all()."""
    task = build_task(cfg)
    objective, o = task.objective, cfg.optimizer
    theta = nn.Parameter(task.theta.clone())
    base = torch.optim.SGD([theta], lr=o.lr)
    sampler = BatchSampler(task.train, o.batch_size, cfg.seed)

    def value_and_grad(x, batch):
        x = x.detach().requires_grad_(True)
        outputs = functional_call(objective.module, (objective.unflatten(x), objective.buffers), (batch.inputs,))
        value = objective.output_loss(outputs, batch.targets).mean()
        return value, torch.autograd.grad(value, x)[0]

    for _ in range(cfg.steps):
        batch = sampler.next()
        _, g = value_and_grad(theta.detach(), batch)
        _, d = value_and_grad(theta.detach() + ascent_step(g, o.rho, o.grad_eps), batch)
        assert torch.isfinite(d).all()
        theta.grad = d
        base.step()
    return theta.detach()


@pytest.mark.parametrize("batch_size", [1, 4])
def test_train_is_bitwise_the_previous_loop(batch_size):
    raw = tiny_config(**{"dtype": "float32", "steps": 12, "eval_every": 5, "optimizer.batch_size": batch_size,
                         "optimizer.rho": 0.5, "optimizer.lr": 0.5, "model.activation": "relu"})
    cfg = TrainConfig.from_dict(raw)
    result = train(cfg, write=False)
    assert result.status == "completed"
    expected = reference_loop(cfg)
    assert torch.equal(result.theta, expected)
    assert not torch.equal(expected, build_task(cfg).theta)      # it moved


# ---- the bound training vector: leaves made once, gradients backpropagated into a flat buffer ----------

def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same bits, signed zeros and NaN payloads included (torch.equal calls -0.0 and 0.0 equal)."""
    as_int = {torch.float64: torch.int64, torch.float32: torch.int32}[a.dtype]
    return a.dtype == b.dtype and torch.equal(a.view(as_int), b.view(as_int))


def unbound_train(cfg: TrainConfig, monkeypatch):
    """train() through the per-pass path it had before `Objective.bound`: fresh leaves split off theta
    on every pass, the gradient concatenated, SAM's ascent point a new tensor."""
    with monkeypatch.context() as patch:
        patch.setattr(Objective, "bound", lambda self, theta: contextlib.nullcontext())
        return train(cfg, write=False)


CNN = {"data": {"name": "digits", "n_train": 24, "n_test": 8},
       "model.name": "cnn", "model.channels": [3, 4], "model.activation": "relu"}


@pytest.mark.parametrize("overrides", [
    {"optimizer.method": "sgd", "optimizer.batch_size": 1},
    {"optimizer.method": "sam", "optimizer.batch_size": 1},
    {"optimizer.method": "usam", "optimizer.batch_size": 3},
    {"optimizer.method": "msam", "optimizer.m": 2, "optimizer.batch_size": 4},
    {"optimizer.method": "ascent-gd", "optimizer.batch_size": 2},
    {"optimizer.method": "sam", "optimizer.batch_size": "full", "chunk_size": 5},      # several chunks
    {"optimizer.method": "sam", "optimizer.momentum": 0.9, "optimizer.nesterov": True,
     "optimizer.weight_decay": 0.01, "optimizer.schedule": "cosine"},
    {"optimizer.method": "sgd", "optimizer.momentum": 0.5, "optimizer.schedule": "step",
     "optimizer.milestones": [0.5], "dtype": "float32"},
    {**CNN, "model.norm": "batch", "optimizer.method": "sam", "optimizer.batch_size": 2},
    {**CNN, "model.norm": "batch", "optimizer.method": "sgd", "optimizer.batch_size": 1},
    {**CNN, "model.norm": "none", "optimizer.method": "msam", "optimizer.m": 1, "optimizer.batch_size": 2},
])
def test_bound_training_is_bitwise_the_unbound_path(overrides, monkeypatch):
    cfg = TrainConfig.from_dict(tiny_config(**{"steps": 9, "eval_every": 4, "optimizer.rho": 0.3, **overrides}))
    fast = train(cfg, write=False)
    reference = unbound_train(cfg, monkeypatch)
    assert fast.status == reference.status == "completed"
    assert bitwise_equal(fast.theta, reference.theta)
    assert [r["batch_loss"] for r in fast.metrics] == [r["batch_loss"] for r in reference.metrics]
    assert not torch.equal(fast.theta, build_task(cfg).theta)      # it moved


def test_bound_training_with_batchnorm_keeps_the_same_statistics(monkeypatch):
    cfg = TrainConfig.from_dict(tiny_config(**{**CNN, "model.norm": "batch", "steps": 6, "optimizer.batch_size": 2}))
    task, reference_task = build_task(cfg), build_task(cfg)
    train(cfg, task=task, write=False)
    with monkeypatch.context() as patch:
        patch.setattr(Objective, "bound", lambda self, theta: contextlib.nullcontext())
        train(cfg, task=reference_task, write=False)
    for name, value in task.objective.buffers.items():
        assert torch.equal(value, reference_task.objective.buffers[name]), name


class WithUnused(nn.Module):
    """A parameter the loss never reaches: its gradient is zero, bound or not."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 2)
        self.spare = nn.Linear(3, 2)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("engine", ["internal", "public"])
def test_value_and_grad_at_a_bound_vector_is_the_unbound_one(engine, monkeypatch):
    import samcli.objective
    if engine == "public":      # a torch without the internal entry point takes torch.autograd.backward
        monkeypatch.setattr(samcli.objective, "_run_backward", samcli.objective._public_backward)
    torch.manual_seed(0)
    objective, theta = Objective.from_module(WithUnused().double())
    data = Batch(torch.randn(7, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0, 0]))
    step = torch.randn_like(theta)
    expected = {size: objective.value_and_grad(theta.clone(), data, size) for size in (7, 3)}
    moved = theta.clone().add_(step, alpha=0.1)
    expected_moved = objective.value_and_grad(moved.clone(), data, 7)
    expected_shifted = objective.value_and_grad(theta.clone() + step, data, 7)
    with objective.bound(theta):
        for size, (value, g) in expected.items():       # one chunk (the buffer) and several (accumulated)
            got_value, got_g = objective.value_and_grad(theta, data, size)
            assert bitwise_equal(got_value, value) and torch.equal(got_g, g) and bitwise_equal(got_g[:8], g[:8])
        spare = objective.unflatten(got_g)["spare.weight"]
        assert torch.equal(spare, torch.zeros_like(spare))
        shifted = objective.shifted(theta, step)
        assert bitwise_equal(shifted, theta + step)
        # the unused parameter's zeros are -0.0 here, +0.0 there: equal numbers, the rest the same bits
        got_g = objective.value_and_grad(shifted, data, 7)[1]
        assert torch.equal(got_g, expected_shifted[1]) and bitwise_equal(got_g[:8], expected_shifted[1][:8])
        theta.add_(step, alpha=0.1)                     # the loop's in-place update: the leaves see it
        value, g = objective.value_and_grad(theta, data, 7)
        assert bitwise_equal(value, expected_moved[0]) and torch.equal(g, expected_moved[1])
        assert bitwise_equal(g[:8], expected_moved[1][:8])
    first = objective.value_and_grad(theta, data, 7)[1]
    second = objective.value_and_grad(theta + step, data, 7)[1]
    assert first is not second and not torch.equal(first, second)     # outside the block: fresh tensors
    assert not torch.equal(objective.shifted(theta, step), theta)


def test_epoch_batches_are_the_per_batch_gather():
    """BatchSampler slices a per-epoch gather; the batches are those of one gather per batch."""
    data = Batch(torch.randn(10, 2), torch.arange(10))
    sampler = BatchSampler(data, 3, seed=4)
    generator, position, order = torch.Generator().manual_seed(4), 10, None
    for _ in range(11):                                 # 3 batches per epoch, the ragged tail dropped
        if position + 3 > 10:
            order, position = torch.randperm(10, generator=generator), 0
        index = order[position:position + 3]
        position += 3
        batch = sampler.next()
        assert torch.equal(batch.inputs, data.inputs[index]) and torch.equal(batch.targets, data.targets[index])


def test_bound_gradient_keeps_negative_zeros():
    """A ReLU unit that is off at one example gives its incoming weights the gradient 0 * x, which is
    -0.0 where x < 0: the bound buffer must hand those back as -0.0 (starting it at +0.0 would not)."""
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        module[0].bias.copy_(torch.tensor([-9.0, 9.0, -9.0, 9.0]))       # units 0 and 2 off
    objective, theta = Objective.from_module(module)
    one = Batch(torch.tensor([[-1.0, 2.0, -3.0]], dtype=torch.float64), torch.tensor([1]))
    _, expected = objective.value_and_grad(theta.clone(), one, 64)
    assert (torch.signbit(expected) & (expected == 0)).any()          # the case this test is about
    with objective.bound(theta):
        _, got = objective.value_and_grad(theta, one, 64)
        assert bitwise_equal(got, expected)
