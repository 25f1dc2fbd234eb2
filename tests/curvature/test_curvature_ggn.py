"""The Gauss-Newton matrix G = (1/n) sum_k J_k^T Lambda_k J_k against a dense construction with jacrev,
the factorized exact trace and per-example Gram matrices, and the ReLU identity Tr(G) = Tr(H)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from samcli.curvature.ggn import GGNOperator, parameter_blocks, per_example_gram, supports_ggn
from samcli.curvature.ggn_trace import ggn_trace
from samcli.models import cnn, mlp
from samcli.objective import Batch, Objective

DT = torch.float64
N, C = 9, 3


def make(activation=nn.Tanh, loss="cross-entropy", seed=0, model=None):
    torch.manual_seed(seed)
    model = model if model is not None else mlp(5, [7, 6], C, activation).to(DT)
    gen = torch.Generator().manual_seed(seed + 10)
    shape = (N, 5) if isinstance(model[0], nn.Flatten) else (N, 1, 6, 6)
    data = Batch(torch.randn(*shape, generator=gen, dtype=DT), torch.randint(0, C, (N,), generator=gen))
    objective, theta = Objective.from_module(model, loss)
    objective.set_training(False)
    return model, objective, theta, data


def output_fn(model):
    """Outputs as a function of the flat parameters, via our own split (not Objective.unflatten)."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]
    buffers = dict(model.named_buffers())

    def f(theta, inputs):
        params = {n: t.view(p.shape) for (n, p), t in zip(named, torch.split(theta, sizes))}
        return functional_call(model, (params, buffers), (inputs,))
    return f


def dense_per_example_ggn(model, theta, data, loss):
    """(n, D, D): J_k^T Lambda_k J_k with J from jacrev and Lambda_k the output Hessian of the loss."""
    f = output_fn(model)
    J = jacrev(f)(theta, data.inputs)                  # (n, C, D)
    out = f(theta, data.inputs).detach()
    if loss == "cross-entropy":
        p = out.softmax(-1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        lam = torch.eye(C, dtype=DT).expand(N, C, C)
    return torch.einsum("kcd,kce,kef->kdf", J, lam, J)


def dense_hessian(model, theta, data, loss):
    f = output_fn(model)

    def L(t):
        out = f(t, data.inputs)
        if loss == "cross-entropy":
            return torch.nn.functional.cross_entropy(out, data.targets)
        onehot = torch.nn.functional.one_hot(data.targets, C).to(DT)
        return 0.5 * ((out - onehot) ** 2).sum(1).mean()
    return hessian(L)(theta)


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU], ids=["tanh", "relu"])
def test_ggn_operator_matches_dense_jacobian_construction(activation, loss):
    model, objective, theta, data = make(activation, loss)
    G = dense_per_example_ggn(model, theta, data, loss).mean(0)
    assert G.abs().max() > 1e-2
    op = GGNOperator(objective, theta, data, chunk_size=4)       # 4 does not divide 9
    V = torch.randn(3, objective.dim, generator=torch.Generator().manual_seed(1), dtype=DT)
    torch.testing.assert_close(op.matmat(V), V @ G, rtol=0, atol=1e-12 * G.abs().max() * objective.dim)
    torch.testing.assert_close(op.matvec(V[0]), G @ V[0], rtol=0, atol=1e-12 * G.abs().max() * objective.dim)
    # G is PSD and differs from H (there are residual terms): v^T G v >= 0
    assert ((V * op.matmat(V)).sum(1) >= 0).all()


def test_ggn_operator_on_cnn():
    model = cnn(1, [2], C, "none", nn.Tanh).to(DT)
    model, objective, theta, data = make(model=model)
    G = dense_per_example_ggn(model, theta, data, "cross-entropy").mean(0)
    op = GGNOperator(objective, theta, data, chunk_size=5)
    V = torch.randn(2, objective.dim, generator=torch.Generator().manual_seed(1), dtype=DT)
    torch.testing.assert_close(op.matmat(V), V @ G, rtol=0, atol=1e-12 * G.abs().max() * objective.dim)
    assert supports_ggn(objective) and "Conv2d" in {kind for kind, _ in ggn_trace(objective, theta, data).factored}


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU], ids=["tanh", "relu"])
def test_exact_ggn_trace_and_per_example_gram(activation, loss):
    model, objective, theta, data = make(activation, loss)
    assert {kind for kind, _ in ggn_trace(objective, theta, data).factored} == {"Linear"}
    Gk = dense_per_example_ggn(model, theta, data, loss)          # (n, D, D)
    dense_trace = torch.diagonal(Gk, dim1=1, dim2=2).sum(1).mean().item()
    for chunk in (N, 4, 1):
        assert ggn_trace(objective, theta, data, chunk).value == pytest.approx(dense_trace, rel=1e-12)

    gram = per_example_gram(objective, theta, data)               # (n, C, C)
    assert gram.shape == (N, C, C)
    torch.testing.assert_close(gram, gram.transpose(1, 2), rtol=0, atol=1e-12)
    gram_values = torch.linalg.eigvalsh(gram)                      # ascending, C per example
    dense_values = torch.linalg.eigvalsh(Gk)[:, -C:]               # the top C of D: rank(G_k) <= C
    torch.testing.assert_close(gram_values, dense_values, rtol=0, atol=1e-10 * dense_values.abs().max())
    # everything beyond the top C of G_k is zero: the Gram matrix holds ALL the nonzero eigenvalues
    assert torch.linalg.eigvalsh(Gk)[:, :-C].abs().max() < 1e-10 * dense_values.abs().max()
    if loss == "cross-entropy":   # Lambda_k 1 = 0, so G_k has rank <= C - 1: the smallest Gram eigenvalue is 0
        assert gram_values[:, 0].abs().max() < 1e-10 * dense_values.abs().max()


def test_relu_mlp_ggn_trace_equals_hessian_trace():
    """H - G = (1/n) sum_k sum_c r_kc grad^2 f_kc. A ReLU network's output is (piecewise) LINEAR in each
    layer's (W, b) with the other layers fixed, so every within-layer block of grad^2 f_kc, and hence of
    H - G, is zero. The diagonal lies inside those blocks, so Tr(H) = Tr(G) exactly (though H != G)."""
    for loss in ("cross-entropy", "mse"):
        model, objective, theta, data = make(nn.ReLU, loss)
        H = dense_hessian(model, theta, data, loss)
        G = dense_per_example_ggn(model, theta, data, loss).mean(0)
        assert torch.trace(H).item() == pytest.approx(torch.trace(G).item(), rel=1e-10)
        assert ggn_trace(objective, theta, data).value == pytest.approx(torch.trace(H).item(), rel=1e-10)
        assert (H - G).abs().max() > 1e-3            # the off-diagonal (cross-layer) blocks differ
        # and the within-layer blocks of H - G vanish
        offsets = [0]
        for size in objective.sizes:
            offsets.append(offsets[-1] + size)
        for block in parameter_blocks(objective):
            idx = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in block])
            assert (H - G)[idx][:, idx].abs().max() < 1e-12


def test_tanh_mlp_ggn_trace_differs_from_hessian_trace():
    model, objective, theta, data = make(nn.Tanh, "cross-entropy")
    H = dense_hessian(model, theta, data, "cross-entropy")
    tr_g = ggn_trace(objective, theta, data).value
    assert abs(torch.trace(H).item() - tr_g) > 1e-3 * abs(tr_g)


def test_parameter_blocks_group_weight_and_bias_by_layer():
    _, objective, _, _ = make()
    blocks = parameter_blocks(objective)
    assert [[objective.names[i] for i in b] for b in blocks] == [
        ["1.weight", "1.bias"], ["3.weight", "3.bias"], ["5.weight", "5.bias"]]
