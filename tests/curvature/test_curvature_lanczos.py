"""Lanczos on symmetric matrices with known spectra (float64): gapped and clustered tops, k = 1 and 3,
honest residuals, the converged flag, and batched (one operator per row) mode."""
from __future__ import annotations

import pytest
import torch

from conftest import matrix_with_spectrum
from samcli.curvature.lanczos import lanczos

DT = torch.float64
D = 60


def bulk(count, seed=1):
    return torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=DT)   # in [0, 1)


GAPPED = torch.cat([torch.tensor([10.0, 6.0, 3.0], dtype=DT), bulk(D - 3)])
CLUSTERED = torch.cat([torch.tensor([5.0, 5.0 - 1e-3, 5.0 - 2e-3], dtype=DT), bulk(D - 3)])
SLOW = torch.linspace(1.0, 2.0, D, dtype=DT)     # no gap at all: Lanczos needs many steps


def operator(A):
    return lambda V: V @ A          # rows (S, D) -> (S, D); A symmetric


def true_residuals(A, result):
    vecs = result.eigenvectors[0]                                     # (k, D)
    return (vecs @ A - result.eigenvalues[0][:, None] * vecs).norm(dim=1)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("values", [GAPPED, CLUSTERED], ids=["gapped", "clustered"])
def test_top_eigenpairs_of_known_spectrum(values, k):
    A, q = matrix_with_spectrum(values)
    top = values.sort(descending=True).values[:k]
    result = lanczos(operator(A), D, k=k, max_iter=D, tol=1e-8, generator=torch.Generator().manual_seed(0))
    assert result.eigenvalues.shape == (1, k) and result.eigenvectors.shape == (1, k, D)
    assert bool(result.converged[0])
    torch.testing.assert_close(result.eigenvalues[0], top, rtol=1e-10, atol=0)
    vecs = result.eigenvectors[0]
    torch.testing.assert_close(vecs.norm(dim=1), torch.ones(k, dtype=DT), rtol=0, atol=1e-10)
    assert (true_residuals(A, result) <= 1e-8 * top.abs() * 1.01).all()
    if values is GAPPED:
        # well separated: the Ritz vectors are the eigenvectors (up to sign)
        order = values.argsort(descending=True)[:k]
        overlap = (vecs @ q[:, order]).diagonal().abs()
        torch.testing.assert_close(overlap, torch.ones(k, dtype=DT), rtol=0, atol=1e-8)
    else:
        # near-degenerate: each Ritz vector lies in the top cluster's eigenspace
        cluster = q[:, :3]
        inside = (vecs @ cluster).norm(dim=1)
        torch.testing.assert_close(inside, torch.ones(k, dtype=DT), rtol=0, atol=1e-6)


@pytest.mark.parametrize("max_iter", [4, 8, 15])
@pytest.mark.parametrize("k", [1, 3])
def test_reported_residuals_are_the_true_residuals(max_iter, k):
    """Stopped early, the residuals are sizeable; the reported (Ritz) values must equal ||A v - lambda v||."""
    A, _ = matrix_with_spectrum(SLOW)
    result = lanczos(operator(A), D, k=k, max_iter=max_iter, tol=1e-12, generator=torch.Generator().manual_seed(2))
    assert result.iterations == max_iter
    assert not bool(result.converged[0])
    true = true_residuals(A, result)
    assert (true > 1e-4).all()                              # genuinely unconverged
    torch.testing.assert_close(result.residuals[0], true, rtol=1e-8, atol=1e-12)


def test_converged_flag():
    A, _ = matrix_with_spectrum(SLOW)
    gen = lambda: torch.Generator().manual_seed(3)   # noqa: E731
    short = lanczos(operator(A), D, k=1, max_iter=3, tol=1e-6, generator=gen())
    assert not bool(short.converged[0]) and short.iterations == 3
    assert short.residuals[0, 0] > 1e-6 * short.eigenvalues[0, 0]
    full = lanczos(operator(A), D, k=1, max_iter=200, tol=1e-6, generator=gen())   # capped at D steps
    assert bool(full.converged[0])
    assert full.residuals[0, 0] <= 1e-6 * full.eigenvalues[0, 0]
    assert full.eigenvalues[0, 0] == pytest.approx(2.0, rel=1e-10)
    # on a gapped spectrum it stops early, as soon as the tolerance is met
    B, _ = matrix_with_spectrum(GAPPED)
    quick = lanczos(operator(B), D, k=1, max_iter=D, tol=1e-4, generator=gen())
    assert bool(quick.converged[0]) and quick.iterations < D // 2
    assert quick.residuals[0, 0] <= 1e-4 * 10.0
    assert quick.matvecs == quick.iterations
    # asking for more pairs than steps taken is never "converged"
    few = lanczos(operator(B), D, k=3, max_iter=2, tol=1.0, generator=gen())
    assert not bool(few.converged[0])


def test_start_vector_and_generator_determinism():
    A, q = matrix_with_spectrum(GAPPED)
    a = lanczos(operator(A), D, k=2, max_iter=10, tol=1e-12, generator=torch.Generator().manual_seed(5))
    b = lanczos(operator(A), D, k=2, max_iter=10, tol=1e-12, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=0, atol=0)
    # starting on the top eigenvector: one step finds it exactly
    start = q[:, :1].T.clone()
    exact = lanczos(operator(A), D, k=1, max_iter=D, tol=1e-10, start=start)
    assert exact.iterations == 1 and exact.eigenvalues[0, 0] == pytest.approx(10.0, rel=1e-12)


def test_batched_rows_are_independent_operators():
    """Row s uses diag(d_s); each row must return its own top eigenvalue (and eigenvector e_argmax)."""
    S, dim = 5, 40
    gen = torch.Generator().manual_seed(4)
    diags = torch.rand(S, dim, generator=gen, dtype=DT)
    tops = torch.tensor([3.0, 1.5, 7.0, 2.2, 4.4], dtype=DT)
    where = torch.tensor([0, 17, 39, 5, 22])
    diags[torch.arange(S), where] = tops
    diags[3] *= -1                      # row 3: largest algebraic eigenvalue is the bulk's top, not -2.2
    diags[3, 0] = 0.9
    expected = diags.max(dim=1).values

    result = lanczos(lambda V: V * diags, dim, k=1, batch=S, max_iter=dim, tol=1e-8,
                     generator=torch.Generator().manual_seed(0))
    assert result.eigenvalues.shape == (S, 1) and result.converged.shape == (S,)
    assert bool(result.converged.all())
    torch.testing.assert_close(result.eigenvalues[:, 0], expected, rtol=1e-10, atol=0)
    idx = diags.argmax(dim=1)
    overlap = result.eigenvectors[torch.arange(S), 0, idx].abs()
    torch.testing.assert_close(overlap, torch.ones(S, dtype=DT), rtol=0, atol=1e-6)
    assert result.matvecs == S * result.iterations

    # the same rows one at a time give the same eigenvalues
    for s in range(S):
        single = lanczos(lambda V, d=diags[s]: V * d, dim, k=1, max_iter=dim, tol=1e-8,
                         generator=torch.Generator().manual_seed(s))
        assert single.eigenvalues[0, 0] == pytest.approx(expected[s].item(), rel=1e-10)


def test_batched_k3_with_residuals():
    S, dim = 3, 30
    gen = torch.Generator().manual_seed(9)
    diags = torch.rand(S, dim, generator=gen, dtype=DT)
    diags[:, :3] = torch.tensor([[9.0, 8.0, 7.0], [2.0, 1.9, 1.8], [5.0, 3.0, 1.5]], dtype=DT)
    result = lanczos(lambda V: V * diags, dim, k=3, batch=S, max_iter=6, tol=1e-12,
                     generator=torch.Generator().manual_seed(1))
    # after only 6 steps nothing has converged; residuals are still exact per row and pair
    vecs, vals = result.eigenvectors, result.eigenvalues                  # (S, 3, D), (S, 3)
    true = (vecs * diags[:, None, :] - vals[..., None] * vecs).norm(dim=2)
    torch.testing.assert_close(result.residuals, true, rtol=1e-8, atol=1e-12)
    full = lanczos(lambda V: V * diags, dim, k=3, batch=S, max_iter=dim, tol=1e-9,
                   generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(full.eigenvalues, diags.sort(dim=1, descending=True).values[:, :3], rtol=1e-9, atol=0)


def test_error_bound_covers_the_eigenvalue_error_on_a_gapped_spectrum():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(200, 200, dtype=torch.float64))
    values = torch.linspace(0, 1, 200, dtype=torch.float64)
    values[-1] = 1.5
    matrix = q @ torch.diag(values) @ q.T
    for steps in (6, 8, 12):
        result = lanczos(lambda v: v @ matrix, 200, k=1, max_iter=steps, tol=1e-14,
                         generator=torch.Generator().manual_seed(0))
        error = 1.5 - result.eigenvalues[0, 0].item()
        assert 0 <= error <= result.error_bounds[0, 0].item()
        assert result.error_bounds[0, 0].item() < 3 * max(error, 1e-15)   # and is not vacuous
