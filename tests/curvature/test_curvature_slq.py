"""Stochastic Lanczos quadrature on matrices with known spectra (float64): Gauss quadrature's exactness on
a diagonal matrix, exact nodes and weights at an exhausted Krylov space, unbiased moments whose standard
errors cover the truth, and the distribution against the eigenvalues in Wasserstein-1."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import matrix_with_spectrum
from samcli.curvature.slq import slq
from samcli.sharpness.density import density_from_quadrature

DT = torch.float64


def wasserstein_1(nodes, weights, eigenvalues) -> float:
    """W1 between the weighted nodes and the uniform measure on the eigenvalues: the integral of
    |F - G| over the merged support (both CDFs are step functions, constant between support points)."""
    nodes, weights = torch.as_tensor(nodes, dtype=DT), torch.as_tensor(weights, dtype=DT)
    eigenvalues = torch.as_tensor(eigenvalues, dtype=DT)
    points = torch.cat([nodes, eigenvalues]).sort().values
    F = (weights[None, :] * (nodes[None, :] <= points[:-1, None])).sum(1)
    G = (eigenvalues[None, :] <= points[:-1, None]).to(DT).mean(1)
    return ((F - G).abs() * points.diff()).sum().item()


def test_wasserstein_1_by_hand():
    """Two atoms moved by 1 with half the mass each: W1 = 1; a quarter of the mass moved by 2: 0.5."""
    assert wasserstein_1([1.0, 2.0], [0.5, 0.5], [0.0, 1.0]) == pytest.approx(1.0)
    assert wasserstein_1([0.0, 2.0], [0.75, 0.25], [0.0, 0.0, 0.0, 0.0]) == pytest.approx(0.5)


def operator(A):
    return lambda V: V @ A          # rows (S, D) -> (S, D); A symmetric


def test_gauss_quadrature_is_exact_on_a_diagonal_matrix():
    """A normalized Rademacher probe has v_i^2 = 1/D, so on diag(lambda) each probe's m-node quadrature is
    the Gauss rule of the uniform measure on the lambda_i: exact for every moment of degree <= 2m - 1."""
    lam = torch.linspace(-0.5, 2.0, 40, dtype=DT) ** 3
    steps = 6
    quad = slq(operator(torch.diag(lam)), 40, probes=3, steps=steps, generator=torch.Generator().manual_seed(0))
    assert quad.steps == (steps,) * 3 and quad.matvecs == 3 * steps and quad.probe == "rademacher"
    for nodes, weights in zip(quad.nodes, quad.weights):
        n, w = torch.tensor(nodes, dtype=DT), torch.tensor(weights, dtype=DT)
        assert len(n) == steps and (w > 0).all() and w.sum().item() == pytest.approx(1, abs=1e-14)
        for p in range(2 * steps):                        # degree 0 .. 2m - 1 exact
            assert (w * n ** p).sum().item() == pytest.approx((lam ** p).mean().item(), rel=1e-9, abs=1e-12)
        # degree 2m is not (the rule has only m nodes): the check above can fail
        assert abs((w * n ** (2 * steps)).sum() - (lam ** (2 * steps)).mean()) > 1e-6


def test_exhausted_krylov_space_gives_the_exact_distinct_eigenvalues():
    """Three distinct eigenvalues with multiplicities 5, 10, 15: Lanczos stops after 3 steps, the nodes are
    the eigenvalues and (Rademacher probe on a diagonal matrix) the weights the multiplicities / D."""
    lam = torch.tensor([1.0] * 5 + [2.0] * 10 + [4.0] * 15, dtype=DT)
    rows = []

    def counted(V):
        rows.append(len(V))
        return V @ torch.diag(lam)
    quad = slq(counted, 30, probes=2, steps=20, generator=torch.Generator().manual_seed(1))
    assert quad.steps == (3, 3) and quad.matvecs == 6 == sum(rows)
    for nodes, weights in zip(quad.nodes, quad.weights):
        torch.testing.assert_close(torch.tensor(nodes, dtype=DT), torch.tensor([1.0, 2.0, 4.0], dtype=DT),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.tensor(weights, dtype=DT), torch.tensor([5, 10, 15], dtype=DT) / 30,
                                   rtol=0, atol=1e-12)


def test_gaussian_probes_weigh_the_eigenspaces_by_their_share_of_the_probe():
    """Gaussian probes on the same three eigenspaces: exact nodes, and weights that average to the
    multiplicities / D (the per-probe weights are z_i^2 / ||z||^2 summed per eigenspace)."""
    lam = torch.tensor([1.0] * 5 + [2.0] * 10 + [4.0] * 15, dtype=DT)
    A, _ = matrix_with_spectrum(lam, seed=3)              # not diagonal: the probe is not aligned with it
    quad = slq(operator(A), 30, probes=200, steps=10, generator=torch.Generator().manual_seed(2), probe="gaussian")
    weights = torch.tensor(quad.weights, dtype=DT)        # every probe has 3 nodes
    assert quad.steps == (3,) * 200
    torch.testing.assert_close(torch.tensor(quad.nodes, dtype=DT), torch.tensor([[1.0, 2.0, 4.0]] * 200, dtype=DT),
                               rtol=0, atol=1e-9)
    mean, stderr = weights.mean(0), weights.std(0) / math.sqrt(200)
    assert ((mean - torch.tensor([5, 10, 15], dtype=DT) / 30).abs() <= 4 * stderr).all()
    assert weights.std(0).min() > 0.01                    # Gaussian weights really vary, Rademacher on diag would not


def test_moments_are_covered_by_their_standard_errors_and_the_distribution_is_close():
    """A dense operator with a spiked spectrum: over 40 seeds, Tr/D and Tr(H^2)/D lie within two standard
    errors of the truth in at least 80% of the seeds (95% for a normal estimate with a known error; 16
    probes' t-tails and the skew of the outlier-dominated estimates bring it to about 88%, measured over
    200 seeds), and the quadrature measure is within 5% of the eigenvalues' range in Wasserstein-1."""
    gen = torch.Generator().manual_seed(5)
    lam = torch.cat([torch.tensor([30.0, 12.0, 7.0], dtype=DT), torch.randn(77, generator=gen, dtype=DT).abs() * 0.5,
                     -0.3 * torch.rand(40, generator=gen, dtype=DT)])
    A, _ = matrix_with_spectrum(lam, seed=4)
    covered, spans = [0, 0], (lam.max() - lam.min()).item()
    for seed in range(40):
        quad = slq(operator(A), len(lam), probes=16, steps=25, generator=torch.Generator().manual_seed(seed))
        result = density_from_quadrature(quad, len(lam), 0.01)
        assert sum(result.weights) == pytest.approx(1, abs=1e-12)
        covered[0] += abs(result.trace_per_dim - lam.mean().item()) <= 2 * result.trace_per_dim_stderr
        covered[1] += abs(result.trace2_per_dim - (lam ** 2).mean().item()) <= 2 * result.trace2_per_dim_stderr
        w1 = wasserstein_1(result.nodes, result.weights, lam)
        assert w1 <= 0.05 * spans, (seed, w1 / spans)
        assert result.lambda_1 == pytest.approx(30.0, rel=1e-8)      # the outlier is found exactly
    assert min(covered) >= 32, covered


def test_smoothed_curve_is_a_density_with_the_probes_spread():
    """The curve integrates to 1 (it is the mean of Gaussians of total weight 1), and its error is the
    standard error of the per-probe curves, zero where every probe agrees (Rademacher on a diagonal)."""
    lam = torch.linspace(0.0, 1.0, 50, dtype=DT)
    same = density_from_quadrature(slq(operator(torch.diag(lam)), 50, probes=4, steps=8,
                                       generator=torch.Generator().manual_seed(0)), 50, 0.02)
    grid, values = torch.tensor(same.grid, dtype=DT), torch.tensor(same.values, dtype=DT)
    assert torch.trapezoid(values, grid).item() == pytest.approx(1.0, abs=1e-4)
    assert same.sigma == pytest.approx(0.02 * (max(same.nodes) - min(same.nodes)))
    assert max(same.values_stderr) < 1e-10 * max(same.values)
    A, _ = matrix_with_spectrum(lam, seed=1)
    spread = density_from_quadrature(slq(operator(A), 50, probes=4, steps=8,
                                         generator=torch.Generator().manual_seed(0)), 50, 0.02)
    assert max(spread.values_stderr) > 1e-3 * max(spread.values)
    # the bulk holds the central 90% of the quadrature mass
    nodes, weights = torch.tensor(spread.nodes, dtype=DT), torch.tensor(spread.weights, dtype=DT)
    inside = weights[(nodes >= spread.bulk_low) & (nodes <= spread.bulk_high)].sum().item()
    assert 0.9 - 0.1 <= inside <= 1.0 and spread.bulk_low < spread.bulk_high


def test_bad_arguments():
    with pytest.raises(ValueError, match="probe='sobol' is unknown; choose one of rademacher, gaussian"):
        slq(operator(torch.eye(3, dtype=DT)), 3, probe="sobol")
    with pytest.raises(ValueError, match="probes >= 1"):
        slq(operator(torch.eye(3, dtype=DT)), 3, probes=0)
    with pytest.raises(ValueError, match="at least two probes"):
        density_from_quadrature(slq(operator(torch.eye(3, dtype=DT)), 3, probes=1), 3, 0.01)
