"""The exact Tr(G) of ggn_trace.py on tiny convolutional, pooling, BatchNorm-eval and residual nets, and
the vmapped fallback, against float64 ground truth: the dense per-example GGN J_k^T Lambda_k J_k (J by
jacrev) and, for the piecewise-linear nets, the trace of the dense Hessian (torch.func.hessian)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

import samcli.curvature.ggn_trace as ggn_trace_module
from samcli.curvature.ggn_trace import ggn_trace, piecewise_linear_reason
from samcli.models import _BasicBlock, cnn
from samcli.objective import Batch, Objective

DT = torch.float64
N, C = 7, 3


def randomize_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters away from their defaults, so eval-mode BatchNorm is
    a non-trivial affine map."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=DT) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=DT) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=gen, dtype=DT))
                m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=DT) * 0.1)


def setup(model: nn.Module, shape: tuple[int, ...], loss: str, seed: int = 0):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = model.to(DT)
    randomize_norms(model, gen)
    data = Batch(torch.randn(N, *shape, generator=gen, dtype=DT), torch.randint(0, C, (N,), generator=gen))
    objective, theta = Objective.from_module(model, loss)
    objective.set_training(False)
    return model, objective, theta, data


def dense_truth(model, theta, data, loss) -> tuple[float, float]:
    """(Tr(G), Tr(H)) from a hand-written flat-parameter split, jacrev and hessian."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]
    buffers = dict(model.named_buffers())

    def f(t):
        params = {n: v.view(p.shape) for (n, p), v in zip(named, torch.split(t, sizes))}
        return functional_call(model, (params, buffers), (data.inputs,))

    def L(t):
        out = f(t)
        if loss == "cross-entropy":
            return F.cross_entropy(out, data.targets)
        return 0.5 * (out - F.one_hot(data.targets, C).to(DT)).pow(2).sum(1).mean()

    J = jacrev(f)(theta)                                         # (n, C, D)
    out = f(theta).detach()
    if loss == "cross-entropy":
        p = out.softmax(-1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        lam = torch.eye(C, dtype=DT).expand(N, C, C)
    tr_g = torch.einsum("kcd,kce,ked->", J, lam, J).item() / N
    return tr_g, torch.trace(hessian(L)(theta)).item()


class Residual(nn.Sequential):
    pass


PIECEWISE = {
    "conv1d-maxpool": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, stride=2), nn.ReLU(), nn.MaxPool1d(2),
                                             nn.Conv1d(3, 2, 2, dilation=2), nn.Flatten(), nn.Linear(2, C)), (2, 11)),
    "conv2d-avgpool-bn": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.LeakyReLU(0.1),
                                                nn.AvgPool2d(2), nn.Conv2d(3, 2, 2, stride=1, bias=False),
                                                nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                nn.Linear(2, C)), (1, 6, 6)),
    "samcli-cnn-batchnorm": (lambda: cnn(1, [2, 3], C, "batch"), (1, 5, 5)),
    "residual": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
                                       _BasicBlock(3, 3, 1, "batch"), _BasicBlock(3, 4, 2, "batch"),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, C)), (1, 5, 5)),
    "mlp-batchnorm1d": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(),
                                              nn.Linear(5, C)), (4,)),
}


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
@pytest.mark.parametrize("name", list(PIECEWISE))
def test_exact_trace_on_piecewise_linear_nets_equals_dense_ggn_and_hessian(name, loss):
    build, shape = PIECEWISE[name]
    model, objective, theta, data = setup(build(), shape, loss)
    tr_g, tr_h = dense_truth(model, theta, data, loss)
    assert piecewise_linear_reason(objective) is None
    assert tr_h == pytest.approx(tr_g, rel=1e-10)        # f linear in each single parameter
    for chunk in (N, 3):                                    # 3 does not divide 7
        result = ggn_trace(objective, theta, data, chunk)
        assert result.value == pytest.approx(tr_g, rel=1e-10)
        assert result.vmapped == ()


@pytest.mark.parametrize("gram", [True, False], ids=["patch-gram", "materialized"])
def test_both_convolution_strategies_are_exact(gram, monkeypatch):
    monkeypatch.setattr(ggn_trace_module, "_prefer_gram", lambda classes, cout, k, p: gram)
    build, shape = PIECEWISE["conv2d-avgpool-bn"]
    model, objective, theta, data = setup(build(), shape, "cross-entropy")
    result = ggn_trace(objective, theta, data)
    assert result.value == pytest.approx(dense_truth(model, theta, data, "cross-entropy")[0], rel=1e-10)
    expected = "patch Gram" if gram else "materialized"
    assert result.factored.count(("Conv2d", expected)) == 2
    assert f"Conv2d x2 by {expected}" in result.describe()


def test_cost_model_picks_gram_for_small_maps_and_materializes_for_large():
    assert ggn_trace_module._prefer_gram(classes=10, cout=64, k=576, p=16)          # 4x4 map, deep layer
    assert not ggn_trace_module._prefer_gram(classes=10, cout=16, k=9, p=1024)     # 32x32 map, first layer


class Gated(nn.Module):
    """A parameter used nonlinearly (through exp): outside the factorization rules."""

    def __init__(self, width):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        return x * self.log_scale.exp()


class Tied(nn.Module):
    """One Linear applied twice: its per-example gradient sums two outer products."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.head = nn.Linear(4, C)

    def forward(self, x):
        return self.head(torch.relu(self.inner(torch.relu(self.inner(x)))))


FALLBACK = {
    "layernorm": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, C)),
                  (4,), ["LayerNorm '2'"], "LayerNorm '2' is not piecewise-linear"),
    "gated-conv": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), Gated(4), nn.Tanh(), nn.Linear(4, C)),
                   (1, 4), ["Gated '2'"], "Gated '2' is not piecewise-linear"),
    "tied-weights": (Tied, (4,), ["Linear 'inner'"], "the forward of Tied 'root' cannot be inspected"),
    "grouped-conv": (lambda: nn.Sequential(nn.Conv2d(2, 4, 2, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(16, C)),
                     (2, 3, 3), ["Conv2d '0'"], None),
}


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
@pytest.mark.parametrize("name", list(FALLBACK))
def test_layers_outside_the_rules_go_to_the_vmapped_fallback_and_stay_exact(name, loss):
    build, shape, vmapped, reason = FALLBACK[name]
    model, objective, theta, data = setup(build(), shape, loss)
    tr_g, _ = dense_truth(model, theta, data, loss)
    result = ggn_trace(objective, theta, data, chunk_size=4)
    assert result.value == pytest.approx(tr_g, rel=1e-10)
    assert list(result.vmapped) == vmapped
    assert piecewise_linear_reason(objective) == reason
    assert f"vmapped per-example gradients for {vmapped[0]}" in result.describe()


def test_describe_names_the_strategy_per_layer_kind():
    build, shape = PIECEWISE["conv2d-avgpool-bn"]
    _, objective, theta, data = setup(build(), shape, "cross-entropy")
    text = ggn_trace(objective, theta, data).describe()
    assert text.startswith("per-layer factorization (Conv2d x2 by ")
    assert "BatchNorm2d x2" in text and "Linear x1" in text and "vmapped" not in text


def test_batch_statistics_have_no_per_example_identity():
    build, shape = PIECEWISE["mlp-batchnorm1d"]
    model, objective, theta, data = setup(build(), shape, "cross-entropy")
    model.train()
    assert ggn_trace(objective, theta, data) is None
    assert piecewise_linear_reason(objective) == "BatchNorm1d '2' is in training mode"
