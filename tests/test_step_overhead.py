"""The small-batch fast paths change no number: StatelessCall against torch.func.functional_call,
Batch.take against plain indexing, and samcli.train bit for bit against the loop it replaced
(functional_call, one flat leaf, torch.optim.SGD, elementwise finiteness check)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from conftest import tiny_config
from samcli.config import TrainConfig
from samcli.methods import ascent_step
from samcli.objective import Batch, StatelessCall
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
