"""The three sharpness notions (docs/notions.md) measured by samcli.sharpness.measure, against ground
truth computed by hand in float64: the dense Hessian of a hand-written loss for a tiny MLP, and closed
forms for the quadratic L(x) = 0.5 x^T A x."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, vmap

from samcli.config import SamcliError
from samcli.models import mlp
from samcli.objective import Batch, Objective
from samcli.sharpness import Settings, measure

DT = torch.float64
RHO = 0.05


# ---- tiny MLP: ground truth from a hand-written loss --------------------------------------------------

def make_mlp(activation=nn.Tanh, n=10, seed=0):
    torch.manual_seed(seed)
    model = mlp(4, [5], 3, activation).to(DT)
    gen = torch.Generator().manual_seed(seed + 1)
    data = Batch(torch.randn(n, 4, generator=gen, dtype=DT), torch.randint(0, 3, (n,), generator=gen))
    objective, theta = Objective.from_module(model, "cross-entropy")
    return model, objective, theta, data


def hand_loss(model):
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]

    def loss(theta, inputs, targets):
        params = {n: t.view(p.shape) for (n, p), t in zip(named, torch.split(theta, sizes))}
        return F.cross_entropy(functional_call(model, params, (inputs,)), targets)
    return loss


def grad_of(fn, theta):
    t = theta.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(t), t)
    return g


@pytest.fixture(scope="module")
def tanh_report():
    model, objective, theta, data = make_mlp(nn.Tanh)
    settings = Settings(rho=RHO, k=3, lanczos_tol=1e-9, lanczos_iters=200, exact=True, stochastic_examples=100,
                        trace_probes=8, directions=256, seed=3)
    report = measure(objective, theta, data, settings)
    loss = hand_loss(model)
    H = hessian(lambda t: loss(t, data.inputs, data.targets))(theta)
    return report, model, objective, theta, data, loss, H


def test_mlp_spectrum_worst_and_exact_match_dense_hessian(tanh_report):
    report, model, objective, theta, data, loss, H = tanh_report
    values, vectors = torch.linalg.eigh(H)
    top3 = values.flip(0)[:3]
    D = objective.dim
    assert report.parameters == D == 43 and report.examples == 10 and report.mode == "eval"
    assert report.loss == pytest.approx(loss(theta, data.inputs, data.targets).item(), rel=1e-12)

    w = report.worst
    assert w.converged and len(w.eigenvalues) == 3 and len(w.residuals) == 3
    torch.testing.assert_close(torch.tensor(w.eigenvalues, dtype=DT), top3, rtol=1e-8, atol=0)
    assert w.limit == pytest.approx(RHO ** 2 * top3[0].item() / 2, rel=1e-8)
    assert all(r <= 1e-9 * abs(lam) for r, lam in zip(w.residuals, w.eigenvalues))

    e = report.exact
    tol = e.zero_tol * values[-1].item()
    positive = values[values > tol]
    assert e.lambda_1 == pytest.approx(values[-1].item(), rel=1e-10)
    assert e.trace == pytest.approx(torch.trace(H).item(), rel=1e-10)
    assert e.rank == len(positive)
    assert e.lambda_m == pytest.approx(positive[0].item(), rel=1e-8)
    assert e.limit_worst == pytest.approx(RHO ** 2 * e.lambda_1 / 2, rel=1e-12)
    assert e.limit_ascent == pytest.approx(RHO ** 2 * e.lambda_m / 2, rel=1e-12)
    assert e.limit_average == pytest.approx(RHO ** 2 * e.trace / (2 * D), rel=1e-12)


def test_mlp_ascent_rayleigh_alignment_by_hand(tanh_report):
    report, model, objective, theta, data, loss, H = tanh_report
    L = lambda t: loss(t, data.inputs, data.targets)     # noqa: E731
    g = grad_of(L, theta)
    n = g / g.norm()
    a = report.ascent
    assert a.grad_norm == pytest.approx(g.norm().item(), rel=1e-10)
    assert a.value == pytest.approx((L(theta + RHO * n) - L(theta)).item(), rel=1e-9)
    assert a.rayleigh == pytest.approx((n @ H @ n).item(), rel=1e-9)
    assert a.limit == pytest.approx(RHO ** 2 * (n @ H @ n).item() / 2, rel=1e-9)
    v1 = torch.linalg.eigh(H).eigenvectors[:, -1]
    assert report.alignment == pytest.approx(abs((n @ v1).item()), abs=1e-7)

    # R^Max_rho: no worse than the feasible points rho*n and +-rho*v1 (its restarts start at v1)
    along_v1 = min((L(theta + s * RHO * v1) - L(theta)).item() for s in (1, -1))
    assert report.worst.finite >= max(a.value, along_v1) - 1e-12
    assert report.worst.finite_restarts == 3 and report.worst.finite_iterations >= 3


def test_mlp_average_notion(tanh_report):
    report, model, objective, theta, data, loss, H = tanh_report
    D = objective.dim
    v = report.average
    tr = torch.trace(H).item()
    # a smooth network: exact GGN trace + control variate, saying why
    assert v.trace_method.startswith("ggn+block-hutchinson: Tr(G) exact (per-layer factorization (Linear x2))")
    assert v.trace_method.endswith("since Tanh '2' is not piecewise-linear")
    assert v.trace_stderr > 0
    assert abs(v.trace - tr) <= 4 * v.trace_stderr
    assert v.limit == pytest.approx(RHO ** 2 * v.trace / (2 * D), rel=1e-12)
    # finite rho: an independent Monte Carlo with many more directions, uniform on the sphere
    z = torch.randn(20000, D, generator=torch.Generator().manual_seed(123), dtype=DT)
    u = RHO * z / z.norm(dim=1, keepdim=True)
    values = vmap(lambda t: loss(t, data.inputs, data.targets))(theta + u) - loss(theta, data.inputs, data.targets)
    mine, mine_se = values.mean().item(), values.std().item() / math.sqrt(len(values))
    assert v.directions == 256
    assert abs(v.finite - mine) <= 4 * math.hypot(v.finite_stderr, mine_se)
    # a Gaussian N(0, rho^2 I) perturbation would give about D times more; the sphere is what we check
    assert v.finite < 0.1 * RHO ** 2 * tr / 2 + 4 * v.finite_stderr


def test_mlp_stochastic_notions_use_every_example(tanh_report):
    """stochastic_examples >= n: every example once, so E_k lambda_1(H_k) is the mean over all of them
    (n = 10 also spans two of the lock-step Lanczos groups)."""
    report, model, objective, theta, data, loss, H = tanh_report
    lams, ascents = [], []
    for k in range(len(data)):
        x, y = data.inputs[k:k + 1], data.targets[k:k + 1]
        Lk = lambda t: loss(t, x, y)                  # noqa: E731
        lams.append(torch.linalg.eigvalsh(hessian(Lk)(theta))[-1].item())
        gk = grad_of(Lk, theta)
        ascents.append((Lk(theta + RHO * gk / gk.norm()) - Lk(theta)).item())
    lams, ascents = torch.tensor(lams, dtype=DT), torch.tensor(ascents, dtype=DT)
    s = report.stochastic
    assert s.examples == len(data)
    assert s.mean_lambda_1 == pytest.approx(lams.mean().item(), rel=1e-5)
    assert s.stderr_lambda_1 == pytest.approx(lams.std().item() / math.sqrt(len(data)), rel=1e-3)
    assert s.max_residual <= 1e-3 * lams.max().item()
    assert s.mean_ascent == pytest.approx(ascents.mean().item(), rel=1e-9)
    assert s.stderr_ascent == pytest.approx(ascents.std().item() / math.sqrt(len(data)), rel=1e-6)
    # the per-example mean is NOT the full-batch lambda_1 (a real difference the test can see)
    assert abs(s.mean_lambda_1 - report.exact.lambda_1) > 1e-3


def test_mlp_stochastic_sample_is_a_subset_of_distinct_examples():
    """With S < n examples, mean_lambda_1 must be the mean over S distinct examples (some S-subset)."""
    model, objective, theta, data = make_mlp(nn.Tanh)
    loss = hand_loss(model)
    lams = torch.tensor([torch.linalg.eigvalsh(hessian(lambda t: loss(t, data.inputs[k:k + 1],
                                                                         data.targets[k:k + 1]))(theta))[-1].item()
                         for k in range(len(data))], dtype=DT)
    S = 3
    report = measure(objective, theta, data, Settings(rho=RHO, notions=("average",), finite=False,
                                                       stochastic_examples=S, seed=5))
    s = report.stochastic
    assert s.examples == S
    matches = [c for c in itertools.combinations(range(len(data)), S)
               if abs(lams[list(c)].mean().item() - s.mean_lambda_1) <= 1e-5 * abs(s.mean_lambda_1)
               and abs(lams[list(c)].std().item() / math.sqrt(S) - s.stderr_lambda_1) <= 1e-3 * s.stderr_lambda_1]
    assert len(matches) >= 1


def test_mlp_relu_trace_is_exact():
    model, objective, theta, data = make_mlp(nn.ReLU)
    report = measure(objective, theta, data, Settings(rho=RHO, notions=("average",), finite=False,
                                                      stochastic_examples=0))
    loss = hand_loss(model)
    H = hessian(lambda t: loss(t, data.inputs, data.targets))(theta)
    assert report.average.trace == pytest.approx(torch.trace(H).item(), rel=1e-10)
    assert report.average.trace_stderr < 1e-10
    assert report.worst is None and report.ascent is None and report.alignment is None
    assert report.stochastic is None and report.exact is None


def test_measure_rejects_unknown_notion():
    _, objective, theta, data = make_mlp()
    with pytest.raises(SamcliError, match="unknown sharpness notion 'sharpest'"):
        measure(objective, theta, data, Settings(notions=("worst", "sharpest")))


# ---- the quadratic L(x) = 0.5 x^T A x: every notion in closed form ------------------------------------

QD = 8
QVALUES = torch.tensor([4.0, 2.0, 1.5, 1.0, 0.5, 0.3, 0.2, 0.1], dtype=DT)


def quadratic():
    q, _ = torch.linalg.qr(torch.randn(QD, QD, generator=torch.Generator().manual_seed(0), dtype=DT))
    A = (q * QVALUES) @ q.T

    def per_example(params, bufs, inputs, targets):
        x = params["x"]
        return (0.5 * x @ A @ x).expand(inputs.shape[0])
    objective = Objective(per_example, {"x": (QD,)}, {})
    data = Batch(torch.zeros(1, 1, dtype=DT), torch.zeros(1, dtype=DT))    # a dummy example
    return objective, data, A, q[:, 0]


def trust_region_max(A, g, rho):
    """max_{||v|| <= rho} g.v + 0.5 v^T A v: v = (mu I - A)^{-1} g with mu > lambda_1 and ||v|| = rho."""
    lam, Q = torch.linalg.eigh(A)
    c = Q.T @ g
    lo, hi = lam[-1].item() + 1e-14, lam[-1].item() + g.norm().item() / rho + 1.0
    for _ in range(200):
        mu = (lo + hi) / 2
        norm = (c / (mu - lam)).norm().item()
        lo, hi = (mu, hi) if norm > rho else (lo, mu)
    v = Q @ (c / (mu - lam))
    v = rho * v / v.norm()
    return (g @ v + 0.5 * v @ A @ v).item()


def test_quadratic_at_minimum():
    objective, data, A, v1 = quadratic()
    rho = 0.1
    tr = QVALUES.sum().item()
    report = measure(objective, torch.zeros(QD, dtype=DT), data,
                     Settings(rho=rho, exact=True, directions=512, lanczos_tol=1e-12, trace_probes=QD))
    assert report.loss == 0.0
    # worst direction: R^Max = rho^2 lambda_1 / 2 exactly
    assert report.worst.eigenvalues[0] == pytest.approx(4.0, rel=1e-12)
    assert report.worst.finite == pytest.approx(rho ** 2 * 4.0 / 2, rel=1e-8)
    assert report.worst.limit == pytest.approx(rho ** 2 * 4.0 / 2, rel=1e-12)
    # ascent direction: undefined at g = 0, reported as +inf
    assert report.ascent.value == math.inf and report.ascent.grad_norm == 0.0
    assert report.alignment is None
    # average direction: E_u 0.5 rho^2 u^T A u = rho^2 Tr(A) / (2D) for u uniform on the unit sphere
    avg = report.average
    # no exact GGN trace for a toy: Hutch++, whose sketch (trace_probes = D vectors) spans R^D: exact
    assert avg.trace_method.startswith("hutch++: the loss is not a cross-entropy")
    assert avg.trace == pytest.approx(tr, rel=1e-10)
    assert avg.limit == pytest.approx(rho ** 2 * tr / (2 * QD), rel=1e-10)
    assert avg.finite_stderr > 0 and avg.finite_stderr < 0.1 * avg.limit
    assert abs(avg.finite - rho ** 2 * tr / (2 * QD)) <= 4 * avg.finite_stderr
    # per-example: the only example's Hessian is A
    assert report.stochastic.mean_lambda_1 == pytest.approx(4.0, rel=1e-4)
    # exact spectrum
    e = report.exact
    assert e.lambda_1 == pytest.approx(4.0, rel=1e-12) and e.lambda_m == pytest.approx(0.1, rel=1e-10)
    assert e.rank == QD and e.trace == pytest.approx(tr, rel=1e-12)


def test_quadratic_default_lanczos_is_accurate():
    objective, data, A, _ = quadratic()
    report = measure(objective, torch.zeros(QD, dtype=DT), data, Settings(notions=("worst",), finite=False,
                                                                         stochastic_examples=0))
    assert report.worst.converged
    # the default stops on a 1e-3 relative residual; the eigenvalue error is ~ residual^2 / gap
    assert report.worst.eigenvalues[0] == pytest.approx(4.0, rel=1e-5)
    assert abs(report.worst.eigenvalues[0] - 4.0) <= report.worst.error_bound


def test_quadratic_away_from_minimum():
    objective, data, A, v1 = quadratic()
    rho = 0.1
    x = torch.randn(QD, generator=torch.Generator().manual_seed(4), dtype=DT)
    g = A @ x
    n = g / g.norm()
    L = lambda t: 0.5 * t @ A @ t    # noqa: E731
    report = measure(objective, x, data, Settings(rho=rho, directions=512, k=2, lanczos_tol=1e-12))
    assert report.loss == pytest.approx(L(x).item(), rel=1e-12)
    a = report.ascent
    # R^Asc = L(x + rho n) - L(x) = rho ||g|| + rho^2 n^T A n / 2
    closed = rho * g.norm().item() + rho ** 2 * (n @ A @ n).item() / 2
    assert a.value == pytest.approx(closed, rel=1e-10)
    assert a.value == pytest.approx((L(x + rho * n) - L(x)).item(), rel=1e-10)
    assert a.rayleigh == pytest.approx((n @ A @ n).item(), rel=1e-10)
    assert a.grad_norm == pytest.approx(g.norm().item(), rel=1e-12)
    assert report.alignment == pytest.approx(abs((n @ v1).item()), rel=1e-8)
    assert report.worst.eigenvalues == pytest.approx((4.0, 2.0), rel=1e-12)
    # R^Max: the trust-region maximum, found by the ascent on the sphere
    truth = trust_region_max(A, g, rho)
    assert truth > closed
    assert report.worst.finite == pytest.approx(truth, rel=1e-6)
    # R^Avg: the linear term averages out exactly, same closed form as at the minimum
    avg = report.average
    # default trace_probes: a genuinely stochastic Hutch++ estimate, honest about its error
    assert avg.trace_stderr > 0 and abs(avg.trace - QVALUES.sum().item()) <= 4 * avg.trace_stderr
    assert abs(avg.finite - rho ** 2 * QVALUES.sum().item() / (2 * QD)) <= 4 * avg.finite_stderr


def test_same_seed_same_numbers_different_seed_different():
    _, objective, theta, data = make_mlp()
    s = dict(rho=RHO, trace_probes=2, directions=16, stochastic_examples=3, lanczos_iters=15)
    a = measure(objective, theta, data, Settings(seed=1, **s))
    b = measure(objective, theta, data, Settings(seed=1, **s))
    c = measure(objective, theta, data, Settings(seed=2, **s))
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("seconds", "notion_seconds")}  # noqa: E731
    assert strip(a) == strip(b)
    assert a.average.finite != c.average.finite


def test_non_finite_parameters_are_refused_in_one_line():
    from samcli.config import SamcliError
    from samcli.models import mlp
    from samcli.objective import Batch, Objective
    from samcli.sharpness import Settings, measure
    objective, theta = Objective.from_module(mlp(3, [4], 2).double(), "cross-entropy")
    data = Batch(torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,)))
    theta = theta.clone()
    theta[0] = float("nan")
    with pytest.raises(SamcliError, match="not finite"):
        measure(objective, theta, data, Settings())


@pytest.mark.parametrize("activation, method", [(nn.ReLU, "exact"), (nn.LeakyReLU, "exact"),
                                                (nn.Tanh, "ggn+block-hutchinson")])
def test_trace_method_follows_the_network_structure(activation, method):
    from samcli.curvature.dense import dense_hessian
    from samcli.models import mlp
    from samcli.objective import Batch, Objective
    from samcli.sharpness import Settings, measure
    torch.manual_seed(3)
    objective, theta = Objective.from_module(mlp(4, [6, 5], 3, activation).double(), "cross-entropy")
    data = Batch(torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,)))
    # 32 probes: a standard error estimated from a handful of probes is itself too noisy to test against
    report = measure(objective, theta, data, Settings(notions=("average",), finite=False, stochastic_examples=0,
                                                      trace_probes=32))
    assert report.average.trace_method.startswith(method)
    dense_trace = torch.trace(dense_hessian(objective, theta, data)).item()
    if method == "exact":   # piecewise-linear: Tr(H) = Tr(G) with nothing left to estimate
        assert report.average.trace_stderr == 0.0
        assert report.average.trace == pytest.approx(dense_trace, rel=1e-10)
    else:
        assert abs(report.average.trace - dense_trace) <= 5 * report.average.trace_stderr + 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_worst_ascent_stops_on_a_relative_gain_near_the_trust_region_maximum(dtype):
    """ascent_tol ends a restart once a step gains < tol of the estimate: close to the maximum
    (the rest of a linearly converging ascent is about gain r/(1 - r)), in float32 too, where the
    loss's rounding would otherwise pass for gains until the iteration cap."""
    from samcli.sharpness.finite import worst_direction_ascent
    objective, data, A, v1 = quadratic()
    x = torch.randn(QD, generator=torch.Generator().manual_seed(4), dtype=DT)
    rho, iters, restarts = 0.1, 200, 3
    truth = trust_region_max(A, A @ x, rho)
    objective64 = objective
    if dtype == torch.float32:
        A32 = A.to(dtype)
        objective = Objective(lambda p, b, i, t: (0.5 * p["x"] @ A32 @ p["x"]).expand(i.shape[0]), {"x": (QD,)}, {})
    x, v1 = x.to(dtype), v1.to(dtype)
    loss = objective.loss(x, data).item()
    settings = Settings(rho=rho, ascent_iters=iters, ascent_restarts=restarts)
    value, evaluations, _, reached = worst_direction_ascent(objective, x, data, rho, v1, loss, settings,
                                                            torch.Generator().manual_seed(1))
    assert len(reached) == restarts and max(reached) == value
    assert value == pytest.approx(truth, rel=1e-6)
    # the ascent converges in a few steps here; with gains judged against the loss's rounding instead
    # (ascent_tol 1e-7 or less) the float32 run takes 43 points, every one "gaining" by rounding
    assert evaluations <= 6 * restarts
    if dtype == torch.float64:      # no early stop: the maximum to 1e-8
        exhaustive = worst_direction_ascent(objective64, x, data, rho, v1, loss, Settings(
            rho=rho, ascent_iters=iters, ascent_restarts=restarts, ascent_tol=0.0), torch.Generator().manual_seed(1))
        assert exhaustive[0] == pytest.approx(truth, rel=1e-8) and exhaustive[1] > evaluations
