"""dense_hessian against an independent hand-written loss; Spectrum on matrices with known spectra."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import hessian

from samcli.config import SamcliError
from samcli.curvature.dense import MAX_DENSE_PARAMETERS, dense_hessian, spectrum
from samcli.models import mlp
from samcli.objective import Batch, Objective

DT = torch.float64


def hand_written_loss(theta, inputs, targets):
    """The 5-7-3 tanh MLP of samcli.models.mlp, written out by hand (nn.Linear: x W^T + b)."""
    W1, b1, W2, b2 = torch.split(theta, [35, 7, 21, 3])
    h = torch.tanh(inputs @ W1.view(7, 5).T + b1)
    out = h @ W2.view(3, 7).T + b2
    return -(out.log_softmax(-1).gather(1, targets[:, None])).mean()


def setup(dtype=DT):
    torch.manual_seed(0)
    model = mlp(5, [7], 3, nn.Tanh).to(dtype)
    gen = torch.Generator().manual_seed(1)
    data = Batch(torch.randn(11, 5, generator=gen, dtype=dtype), torch.randint(0, 3, (11,), generator=gen))
    objective, theta = Objective.from_module(model, "cross-entropy")
    return model, objective, theta, data


@pytest.mark.parametrize("chunk_size", [11, 4, 1])
def test_dense_hessian_matches_hand_written_loss(chunk_size):
    _, objective, theta, data = setup()
    expected = hessian(lambda t: hand_written_loss(t, data.inputs, data.targets))(theta)
    H = dense_hessian(objective, theta, data, chunk_size=chunk_size)
    assert H.dtype == DT and H.shape == (objective.dim, objective.dim) == (66, 66)
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(H, expected, rtol=0, atol=1e-12)


def test_dense_hessian_is_float64_for_a_float32_model():
    """A float32 model's dense Hessian is still computed in float64 (agrees with float64 ground truth to
    ~1e-12, far beyond what float32 arithmetic would give)."""
    _, objective, theta, data = setup(torch.float32)
    assert theta.dtype == torch.float32
    H = dense_hessian(objective, theta, data, chunk_size=4)
    assert H.dtype == DT
    expected = hessian(lambda t: hand_written_loss(t, data.inputs.double(), data.targets))(theta.double())
    torch.testing.assert_close(H, expected, rtol=0, atol=1e-12)


def test_parameter_limit_error():
    _, objective, theta, data = setup()
    with pytest.raises(SamcliError, match=r"66 parameters.*limited to 65"):
        dense_hessian(objective, theta, data, limit=65)
    assert dense_hessian(objective, theta, data, limit=66).shape == (66, 66)
    assert MAX_DENSE_PARAMETERS >= 1000
    # the message is one line
    with pytest.raises(SamcliError) as info:
        dense_hessian(objective, theta, data, limit=10)
    assert "\n" not in str(info.value)


def known_matrix(values, seed=0):
    values = torch.tensor(values, dtype=DT)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=torch.Generator().manual_seed(seed),
                                       dtype=DT))
    return q @ torch.diag(values) @ q.T, q


def test_spectrum_of_known_matrix():
    values = [0.0, 0.0, 1e-9, -1e-10, 0.25, 2.0, 3.0, 5.0]
    A, q = known_matrix(values)
    spec = spectrum(A, zero_tol=1e-6)
    torch.testing.assert_close(spec.eigenvalues, torch.tensor(sorted(values), dtype=DT), rtol=0, atol=1e-12)
    assert spec.lambda_1 == pytest.approx(5.0, abs=1e-12)
    assert spec.lambda_min_nonzero == pytest.approx(0.25, abs=1e-12)   # 1e-9 <= 1e-6 * 5 counts as zero
    assert spec.rank == 4
    assert spec.trace == pytest.approx(sum(values), abs=1e-12)
    # eigenvectors: A v = lambda v, orthonormal columns
    V = spec.eigenvectors
    torch.testing.assert_close(A @ V, V * spec.eigenvalues, rtol=0, atol=1e-12)
    torch.testing.assert_close(V.T @ V, torch.eye(8, dtype=DT), rtol=0, atol=1e-12)


def test_spectrum_zero_tol_moves_the_threshold():
    A, _ = known_matrix([0.0, 1e-3, 0.1, 1.0, 10.0])
    loose = spectrum(A, zero_tol=1e-3)        # threshold 1e-2: 1e-3 is zero
    tight = spectrum(A, zero_tol=1e-6)        # threshold 1e-5: 1e-3 is not
    assert loose.rank == 3 and loose.lambda_min_nonzero == pytest.approx(0.1, rel=1e-10)
    assert tight.rank == 4 and tight.lambda_min_nonzero == pytest.approx(1e-3, rel=1e-8)


def test_spectrum_negative_and_degenerate_cases():
    A, _ = known_matrix([-2.0, -0.5, 0.0, 0.5, 1.5])
    spec = spectrum(A)
    assert spec.lambda_min_nonzero == pytest.approx(0.5, abs=1e-12)   # negative eigenvalues never count
    assert spec.rank == 2
    neg = spectrum(known_matrix([-3.0, -1.0, 0.0])[0])
    assert neg.rank == 0 and math.isnan(neg.lambda_min_nonzero)
    zero = spectrum(torch.zeros(4, 4, dtype=DT))
    assert zero.rank == 0 and math.isnan(zero.lambda_min_nonzero) and zero.trace == 0.0
