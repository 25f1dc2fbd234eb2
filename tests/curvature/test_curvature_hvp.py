"""HessianOperator.matvec / .matmat against two independent ground truths, in float64:

* the dense Hessian from torch.func.hessian of a hand-written loss (functional_call on the module
  with our own flat-vector split, F.cross_entropy / 0.5 ||f - onehot||^2, mean over the batch), and
* central finite differences of gradients computed by plain autograd on the same hand-written loss.

chunk_size is always smaller than n and does not divide it, so the chunk weighting is exercised.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, jvp

from samcli.curvature.hvp import HessianOperator
from samcli.models import cnn, mlp
from samcli.objective import Batch, Objective

DT = torch.float64
N = 10          # examples
CHUNK = 3       # < N and not a divisor of N


def reference_loss(module: nn.Module, loss: str):
    """Mean loss as a function of a flat float64 vector, written without samcli's Objective."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    sizes = [p.numel() for _, p in module.named_parameters()]
    buffers = dict(module.named_buffers())

    def fn(theta, inputs, targets):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        out = functional_call(module, (params, buffers), (inputs,))
        if loss == "cross-entropy":
            return F.cross_entropy(out, targets)
        onehot = F.one_hot(targets, out.shape[-1]).to(out.dtype)
        return (0.5 * (out - onehot) ** 2).sum(1).mean()
    return fn


def make_mlp(activation=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    return mlp(5, [7, 6], 3, activation).to(DT)


def make_cnn(norm: str, activation=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    model = cnn(1, [2, 3], 3, norm, activation).to(DT)
    if norm == "batch":
        # non-trivial running statistics and affine parameters, then eval mode
        gen = torch.Generator().manual_seed(seed + 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=DT) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=DT) + 0.5)
                with torch.no_grad():
                    m.weight.copy_(1 + 0.3 * torch.randn(m.num_features, generator=gen, dtype=DT))
                    m.bias.copy_(0.3 * torch.randn(m.num_features, generator=gen, dtype=DT))
    model.eval()
    return model


def make_data(kind: str, seed=1) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    shape = (N, 5) if kind == "mlp" else (N, 1, 6, 6)
    return Batch(torch.randn(*shape, generator=gen, dtype=DT), torch.randint(0, 3, (N,), generator=gen))


CASES = [
    ("mlp", lambda: make_mlp(nn.Tanh)),
    ("mlp", lambda: make_mlp(nn.ReLU)),
    ("cnn", lambda: make_cnn("none")),
    ("cnn", lambda: make_cnn("batch")),
]
IDS = ["mlp-tanh", "mlp-relu", "cnn-none", "cnn-batch-eval"]


def setup(kind, build, loss):
    model = build()
    data = make_data(kind)
    objective, theta = Objective.from_module(model, loss)
    objective.set_training(False)
    ref = reference_loss(model, loss)
    return model, objective, theta, data, ref


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
@pytest.mark.parametrize("kind,build", CASES, ids=IDS)
def test_hvp_matches_dense_hessian_and_finite_differences(kind, build, loss):
    model, objective, theta, data, ref = setup(kind, build, loss)
    H = hessian(lambda t: ref(t, data.inputs, data.targets))(theta)
    assert H.shape == (objective.dim, objective.dim)
    assert H.abs().max() > 1e-3                        # a non-trivial ground truth
    scale = H.abs().max()

    gen = torch.Generator().manual_seed(7)
    V = torch.randn(3, objective.dim, generator=gen, dtype=DT)
    V = V / V.norm(dim=1, keepdim=True)
    atol = 1e-11 * scale * objective.dim

    # streamed (several chunks, vmapped jvp-of-grad) and kept-graph (one chunk, double backward)
    streamed = HessianOperator(objective, theta, data, chunk_size=CHUNK)
    kept = HessianOperator(objective, theta, data)
    assert not streamed.keep_graph and kept.keep_graph
    for op in (streamed, kept):
        hv = op.matvec(V[0])
        assert hv.dtype == DT
        torch.testing.assert_close(hv, H @ V[0], rtol=0, atol=atol)
        HV = op.matmat(V)
        assert HV.shape == V.shape
        torch.testing.assert_close(HV, V @ H.T, rtol=0, atol=atol)
        assert op.matvecs == 1 + 3                     # products are counted per vector
        # symmetric operator: u^T H v = v^T H u
        assert abs((V[1] @ HV[2] - V[2] @ HV[1]).item()) < atol
    # the kept graph answers repeated products identically
    torch.testing.assert_close(kept.matvec(V[0]), hv, rtol=0, atol=0)

    if any(isinstance(m, nn.ReLU) for m in model.modules()):
        return   # finite differences only on smooth (tanh) models: no kinks between x - e v and x + e v

    def g(t):
        t = t.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(ref(t, data.inputs, data.targets), t)
        return out

    eps = 1e-5
    fd = torch.stack([(g(theta + eps * v) - g(theta - eps * v)) / (2 * eps) for v in V])
    err = (HV - fd).norm(dim=1) / fd.norm(dim=1)
    assert (err < 1e-6).all(), err


def test_batchnorm_hvp_uses_running_statistics_and_leaves_them_alone():
    """In eval mode the operator must use the running statistics (not batch statistics) and must not
    change them; a batch-statistics Hessian differs, so this can fail."""
    model, objective, theta, data, ref = setup("cnn", lambda: make_cnn("batch"), "cross-entropy")
    before = {k: v.clone() for k, v in model.named_buffers()}
    v = torch.randn(objective.dim, generator=torch.Generator().manual_seed(0), dtype=DT)
    hv = HessianOperator(objective, theta, data, chunk_size=CHUNK).matmat(v[None])[0]     # streamed
    hv_kept = HessianOperator(objective, theta, data).matvec(v)                           # kept graph
    for k, b in model.named_buffers():
        torch.testing.assert_close(b, before[k], rtol=0, atol=0)
    torch.testing.assert_close(hv_kept, hv, rtol=1e-10, atol=1e-12)
    # a training-mode (batch statistics) Hessian is a different matrix
    batch_stats = copy.deepcopy(model)
    for m in batch_stats.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
    ref_train = reference_loss(batch_stats, "cross-entropy")

    def reference_hvp(fn):
        return jvp(grad(lambda t: fn(t, data.inputs, data.targets)), (theta,), (v,))[1]
    torch.testing.assert_close(hv, reference_hvp(ref), rtol=1e-9, atol=1e-10)
    assert (hv - reference_hvp(ref_train)).norm() > 1e-3 * hv.norm()


def test_chunk_size_does_not_change_the_product():
    model, objective, theta, data, _ = setup("mlp", lambda: make_mlp(nn.Tanh), "cross-entropy")
    v = torch.randn(objective.dim, generator=torch.Generator().manual_seed(0), dtype=DT)
    whole = HessianOperator(objective, theta, data, chunk_size=N).matvec(v)
    for chunk in (1, 3, 4, 7):
        torch.testing.assert_close(HessianOperator(objective, theta, data, chunk_size=chunk).matvec(v), whole,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size,keep_graph", [(N, None), (N, False), (CHUNK, None), (CHUNK, True), (1, True)])
def test_both_product_paths_and_any_chunking_agree(chunk_size, keep_graph):
    model, objective, theta, data, ref = setup("mlp", lambda: make_mlp(nn.Tanh), "mse")
    v = torch.randn(2, objective.dim, generator=torch.Generator().manual_seed(0), dtype=DT)
    expected = torch.stack([jvp(grad(lambda t: ref(t, data.inputs, data.targets)), (theta,), (u,))[1] for u in v])
    op = HessianOperator(objective, theta, data, chunk_size=chunk_size, keep_graph=keep_graph)
    for _ in range(2):           # a second round reuses (or rebuilds) the graphs
        torch.testing.assert_close(op.matmat(v), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(op.matvec(v[1]), expected[1], rtol=1e-12, atol=1e-12)
    assert op.matvecs == 2 * 3


def test_float32_vectors_and_float64_callers():
    """A float32 operator accepts float64 vectors (Lanczos keeps its basis in float64)."""
    torch.manual_seed(0)
    model = mlp(5, [7, 6], 3, nn.Tanh)
    data = make_data("mlp").to(dtype=torch.float32)
    objective, theta = Objective.from_module(model, "cross-entropy")
    ref = reference_loss(model.double(), "cross-entropy")
    H = hessian(lambda t: ref(t, data.inputs.double(), data.targets))(theta.double())
    v = torch.randn(objective.dim, generator=torch.Generator().manual_seed(0), dtype=DT)
    for op in (HessianOperator(objective, theta, data), HessianOperator(objective, theta, data, chunk_size=CHUNK)):
        hv = op.matvec(v)
        assert hv.dtype == torch.float32
        assert (hv.double() - H @ v).norm() < 1e-4 * (H @ v).norm()
