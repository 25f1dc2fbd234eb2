"""Trace estimators against known traces over many seeds: Hutch++ on a PSD matrix, and the exact-GGN
control variate on tanh (unbiased, honest stderr) and ReLU (exact, zero variance) MLPs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from samcli.curvature.dense import dense_hessian
from samcli.curvature.ggn import GGNOperator, parameter_blocks
from samcli.curvature.ggn_trace import ggn_trace
from samcli.curvature.hvp import HessianOperator
from samcli.curvature.trace import ggn_control_variate, hutchpp, rademacher
from samcli.models import mlp
from samcli.objective import Batch, Objective
from conftest import matrix_with_spectrum

DT = torch.float64
SEEDS = 200


def psd_matrix(values, seed=0):
    return matrix_with_spectrum(values, seed)[0]


def test_rademacher_probes():
    z = rademacher(50, 30, torch.Generator().manual_seed(0), DT, None)
    assert z.shape == (50, 30) and z.dtype == DT
    assert set(z.unique().tolist()) == {-1.0, 1.0}


def test_hutchpp_unbiased_with_honest_stderr():
    D = 40
    values = 1.0 / torch.arange(1, D + 1, dtype=DT) ** 0.5 + 0.2     # slowly decaying, PSD
    A = psd_matrix(values)
    true = values.sum().item()
    errors, stderrs = [], []
    for seed in range(SEEDS):
        est = hutchpp(lambda V: V @ A, D, 30, torch.Generator().manual_seed(seed), dtype=DT)
        errors.append(est.value - true)
        stderrs.append(est.stderr)
        assert est.method == "hutch++" and est.matvecs == 30 and est.probes == 10
    errors, stderrs = torch.tensor(errors, dtype=DT), torch.tensor(stderrs, dtype=DT)
    assert (stderrs > 0).all()
    spread = errors.std().item()
    # unbiased: the mean error over seeds is within a few standard errors of zero
    assert abs(errors.mean().item()) < 4 * spread / math.sqrt(SEEDS)
    # each seed's reported stderr covers its error (t with 9 dof beyond 4 sigma: ~0.3%)
    within = (errors.abs() <= 4 * stderrs).float().mean().item()
    assert within >= 0.97, within
    # the stderr is the right size, not merely large: average stderr ~ actual spread
    assert 0.6 < stderrs.mean().item() / spread < 1.5
    # and the estimator is useful: typical error much smaller than the trace
    assert spread < 0.05 * true


def test_hutchpp_exact_on_low_rank():
    """Rank 5 < the 10 sketch vectors: the sketch captures the whole range, the result is exact."""
    D = 40
    values = torch.zeros(D, dtype=DT)
    values[:5] = torch.tensor([9.0, 4.0, 2.0, 1.0, 0.5], dtype=DT)
    A = psd_matrix(values, seed=3)
    for seed in range(5):
        est = hutchpp(lambda V: V @ A, D, 30, torch.Generator().manual_seed(seed), dtype=DT)
        assert est.value == pytest.approx(16.5, abs=1e-10)
        assert est.stderr < 1e-10


def make(activation, seed=0):
    torch.manual_seed(seed)
    model = mlp(4, [5, 4], 3, activation).to(DT)
    gen = torch.Generator().manual_seed(seed + 1)
    data = Batch(torch.randn(8, 4, generator=gen, dtype=DT), torch.randint(0, 3, (8,), generator=gen))
    objective, theta = Objective.from_module(model, "cross-entropy")
    objective.set_training(False)
    return objective, theta, data


def block_masks(objective):
    """Boolean-as-float masks, one per layer, built from names (independently of notions._block_masks)."""
    layers = sorted({name.rsplit(".", 1)[0] for name in objective.names}, key=int)
    masks, start = [], 0
    bounds = {}
    for name, size in zip(objective.names, objective.sizes):
        bounds[name] = (start, start + size)
        start += size
    for layer in layers:
        mask = torch.zeros(objective.dim, dtype=DT)
        for name, (a, b) in bounds.items():
            if name.rsplit(".", 1)[0] == layer:
                mask[a:b] = 1
        masks.append(mask)
    assert torch.stack(masks).sum(0).eq(1).all()       # a partition of theta
    return masks


def test_block_masks_match_parameter_blocks():
    objective, _, _ = make(nn.Tanh)
    ours = block_masks(objective)
    assert len(parameter_blocks(objective)) == len(ours)


def test_ggn_control_variate_unbiased_on_tanh_mlp():
    objective, theta, data = make(nn.Tanh)
    H = dense_hessian(objective, theta, data)
    tr_h = torch.trace(H).item()
    G_trace = ggn_trace(objective, theta, data).value
    # dense G from the (separately tested) operator: G e_i for all i
    G = GGNOperator(objective, theta, data).matmat(torch.eye(objective.dim, dtype=DT))
    assert torch.trace(G).item() == pytest.approx(G_trace, rel=1e-10)
    assert abs(tr_h - G_trace) > 1e-3 * abs(tr_h)         # the control variate has work to do
    masks = block_masks(objective)

    # the estimator with real operators equals the estimator with dense matrices (same probes)
    hess, ggn = HessianOperator(objective, theta, data, chunk_size=3), GGNOperator(objective, theta, data, chunk_size=3)
    live = ggn_control_variate(hess.matmat, ggn.matmat, G_trace, masks, objective.dim, 4,
                               torch.Generator().manual_seed(11), DT)
    dense = ggn_control_variate(lambda V: V @ H, lambda V: V @ G, G_trace, masks, objective.dim, 4,
                                torch.Generator().manual_seed(11), DT)
    assert live.value == pytest.approx(dense.value, rel=1e-10)
    assert live.method == "ggn+block-hutchinson" and live.ggn_trace == G_trace
    assert live.matvecs == len(masks) * 4 and live.probes == 4

    estimates, stderrs = [], []
    for seed in range(SEEDS):
        est = ggn_control_variate(lambda V: V @ H, lambda V: V @ G, G_trace, masks, objective.dim, 4,
                                  torch.Generator().manual_seed(seed), DT)
        estimates.append(est.value)
        stderrs.append(est.stderr)
    estimates, stderrs = torch.tensor(estimates, dtype=DT), torch.tensor(stderrs, dtype=DT)
    spread = estimates.std().item()
    assert spread > 0
    assert abs(estimates.mean().item() - tr_h) < 4 * spread / math.sqrt(SEEDS)
    within = ((estimates - tr_h).abs() <= 4 * stderrs).float().mean().item()
    assert within >= 0.9, within              # 4 probes: t with 3 dof, ~2.8% beyond 4 stderr
    # the control variate pays off: its spread is well below plain Hutchinson's on H
    plain = []
    for seed in range(SEEDS):
        z = rademacher(4, objective.dim, torch.Generator().manual_seed(seed), DT, None)
        plain.append(((z @ H) * z).sum(1).mean().item())
    assert spread < 0.5 * torch.tensor(plain, dtype=DT).std().item()


def test_ggn_control_variate_exact_on_relu_mlp():
    objective, theta, data = make(nn.ReLU)
    tr_h = torch.trace(dense_hessian(objective, theta, data)).item()
    hess, ggn = HessianOperator(objective, theta, data), GGNOperator(objective, theta, data)
    G_trace = ggn_trace(objective, theta, data).value
    for seed in range(3):
        est = ggn_control_variate(hess.matmat, ggn.matmat, G_trace, block_masks(objective), objective.dim, 4,
                                  torch.Generator().manual_seed(seed), DT)
        assert est.value == pytest.approx(tr_h, rel=1e-10)
        assert est.stderr < 1e-10 * abs(tr_h)
