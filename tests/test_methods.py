"""Update rules (samcli.methods) against hand computations, closed forms and finite differences.

docs/methods.md: sgd, sam, usam, msam (m-sharpness), ascent-gd (exact gradient of the
ascent-direction loss), the g = 0 guard, and BatchNorm statistics from the unperturbed pass only.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import (DT, ModuleRef, assert_close, descent_direction, linreg_grad, linreg_hessian, linreg_loss,
                      linreg_objective, mlp_batch, sam_closed_form)
from samcli import methods
from samcli.config import ConfigError, OptimizerConfig
from samcli.methods import StepResult, ascent_step, direction_for
from samcli.spec.methods import (MethodSpec, applicable_parameters, get_method, method_names, unused_parameters,
                                 validate_optimizer, PARAMETERS)
from samcli.models import cnn
from samcli.objective import Batch, Objective
from samcli.train import BatchSampler

TIGHT = dict(rtol=1e-12, atol=1e-14)


def opt(method, **kw):
    kw.setdefault("rho", 0.05)
    return OptimizerConfig(method=method, **kw)


# ---- sgd / sam / usam on least squares: closed forms ---------------------------------------------

def test_sgd_direction_is_the_closed_form_gradient(linreg):
    objective, data, x = linreg
    result = descent_direction(objective, x, data, opt("sgd"), chunk_size=64)
    g = linreg_grad(data.inputs, data.targets, x)
    assert_close(result.direction, g, **TIGHT)
    assert result.loss == pytest.approx(linreg_loss(data.inputs, data.targets, x).item(), rel=1e-13)
    assert result.grad_norm == pytest.approx(g.norm().item(), rel=1e-13)


@pytest.mark.parametrize("rho", [0.05, 0.7])
def test_sam_direction_is_gradient_at_normalized_ascent_point(linreg, rho):
    objective, data, x = linreg
    A, y = data.inputs, data.targets
    result = descent_direction(objective, x, data, opt("sam", rho=rho), chunk_size=64)
    assert_close(result.direction, sam_closed_form(A, y, x, rho), **TIGHT)
    # For least squares grad L(x + e) = g + H e: the SAM direction must differ from g by H e.
    g = linreg_grad(A, y, x)
    assert_close(result.direction - g, linreg_hessian(A) @ (rho * g / g.norm()), **TIGHT)
    assert result.loss == pytest.approx(linreg_loss(A, y, x).item(), rel=1e-13)   # unperturbed loss


def test_usam_uses_the_unnormalized_ascent_step(linreg):
    objective, data, x = linreg
    A, y = data.inputs, data.targets
    rho = 0.3
    result = descent_direction(objective, x, data, opt("usam", rho=rho), chunk_size=64)
    assert_close(result.direction, sam_closed_form(A, y, x, rho, normalized=False), **TIGHT)
    # ||g|| != 1 here, so usam and sam must differ (otherwise the test could not tell them apart).
    assert abs(linreg_grad(A, y, x).norm().item() - 1) > 0.1
    sam = descent_direction(objective, x, data, opt("sam", rho=rho), chunk_size=64).direction
    assert (result.direction - sam).norm() > 1e-3


def test_ascent_step_formula():
    g = torch.tensor([3.0, 4.0], dtype=DT)
    assert_close(ascent_step(g, 0.5, 0.0), torch.tensor([0.3, 0.4], dtype=DT), **TIGHT)
    assert_close(ascent_step(g, 0.5, 0.0, normalized=False), torch.tensor([1.5, 2.0], dtype=DT))
    assert_close(ascent_step(g, 0.5, 1.0), 0.5 * g / 6.0, **TIGHT)


# ---- sam on a model: plain nn.Module autograd as the reference ------------------------------------

@pytest.mark.parametrize("method", ["sgd", "sam", "usam"])
def test_model_directions_match_module_autograd(mlp_setup, method):
    module, objective, theta, batch = mlp_setup
    ref = ModuleRef(module)
    rho = 0.1
    result = descent_direction(objective, theta, batch, opt(method, rho=rho), chunk_size=64)
    if method == "sgd":
        expected = ref.grad(theta, batch.inputs, batch.targets)
    else:
        expected = ref.sam(theta, batch.inputs, batch.targets, rho, normalized=method == "sam")
    assert_close(result.direction, expected, rtol=1e-10, atol=1e-12)
    assert result.loss == pytest.approx(ref.loss(theta, batch.inputs, batch.targets).item(), rel=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 5])
def test_full_batch_sam_with_chunks_equals_one_batch_of_all_examples(mlp_setup, chunk_size):
    """Chunk accumulation (n = 8, chunks of 1, 3 (ragged 3+3+2) or 5) is exact, not a sample."""
    module, objective, theta, batch = mlp_setup
    ref = ModuleRef(module)
    chunked = descent_direction(objective, theta, batch, opt("sam", rho=0.1), chunk_size=chunk_size)
    whole = descent_direction(objective, theta, batch, opt("sam", rho=0.1), chunk_size=len(batch))
    expected = ref.sam(theta, batch.inputs, batch.targets, 0.1)
    assert_close(chunked.direction, whole.direction, rtol=1e-12, atol=1e-14)
    assert_close(chunked.direction, expected, rtol=1e-10, atol=1e-12)
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-12)
    assert chunked.grad_norm == pytest.approx(whole.grad_norm, rel=1e-12)


def test_one_sam_single_example_uses_that_example_for_both_gradients(mlp_setup):
    module, objective, theta, batch = mlp_setup
    ref = ModuleRef(module)
    one = batch.take(slice(5, 6))
    result = descent_direction(objective, theta, one, opt("sam", rho=0.2), chunk_size=64)
    expected = ref.sam(theta, one.inputs, one.targets, 0.2)
    assert_close(result.direction, expected, rtol=1e-10, atol=1e-12)
    # Mixing batches (ascent from all examples, descent on the one) gives something else.
    g_all = ref.grad(theta, batch.inputs, batch.targets)
    mixed = ref.grad(theta + 0.2 * g_all / g_all.norm(), one.inputs, one.targets)
    assert (mixed - expected).norm() > 1e-4


# ---- msam --------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [3, 8, 64])
def test_msam_with_m_equal_batch_size_is_sam(mlp_setup, chunk_size):
    module, objective, theta, batch = mlp_setup
    msam = descent_direction(objective, theta, batch, opt("msam", m=len(batch), rho=0.1), chunk_size=chunk_size)
    sam = descent_direction(objective, theta, batch, opt("sam", rho=0.1), chunk_size=64)
    assert_close(msam.direction, sam.direction, rtol=1e-12, atol=1e-14)
    assert msam.loss == pytest.approx(sam.loss, rel=1e-12)
    assert msam.grad_norm == pytest.approx(sam.grad_norm, rel=1e-12)


@pytest.mark.parametrize("m,chunk_size", [(1, 64), (2, 64), (2, 4), (2, 3), (4, 5)])
def test_msam_is_mean_of_per_group_sam_gradients(mlp_setup, m, chunk_size):
    """Groups are consecutive runs of m examples; chunks hold whole groups (chunk_size // m of them)."""
    module, objective, theta, batch = mlp_setup
    ref = ModuleRef(module)
    rho = 0.15
    groups = [batch.take(slice(j, j + m)) for j in range(0, len(batch), m)]
    expected = sum(ref.sam(theta, g.inputs, g.targets, rho) for g in groups) / len(groups)
    result = descent_direction(objective, theta, batch, opt("msam", m=m, rho=rho), chunk_size=chunk_size)
    assert_close(result.direction, expected, rtol=1e-10, atol=1e-12)
    # reported loss / grad norm are those of the whole batch at the unperturbed point
    assert result.loss == pytest.approx(ref.loss(theta, batch.inputs, batch.targets).item(), rel=1e-12)
    assert result.grad_norm == pytest.approx(ref.grad(theta, batch.inputs, batch.targets).norm().item(), rel=1e-10)
    # and m < b really differs from plain SAM on the batch
    sam = ref.sam(theta, batch.inputs, batch.targets, rho)
    assert (result.direction - sam).norm() > 1e-6


def test_msam_least_squares_closed_form(linreg):
    objective, data, x = linreg
    A, y = data.inputs, data.targets
    expected = sum(sam_closed_form(A[j:j + 3], y[j:j + 3], x, 0.2) for j in (0, 3)) / 2
    result = descent_direction(objective, x, data, opt("msam", m=3, rho=0.2), chunk_size=64)
    assert_close(result.direction, expected, **TIGHT)


def test_msam_rejects_m_not_dividing_the_batch(mlp_setup):
    module, objective, theta, batch = mlp_setup
    with pytest.raises(ConfigError, match="optimizer.m=3"):
        descent_direction(objective, theta, batch, opt("msam", m=3), chunk_size=64)


# ---- ascent-gd: exact gradient of x -> L(x + rho g(x)/||g(x)||) ---------------------------------

def central_differences(f, x, h):
    out = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def test_ascent_gd_matches_finite_differences_on_mlp(mlp_setup):
    module, objective, theta, batch = mlp_setup
    ref = ModuleRef(module)
    rho = 0.1

    def ascent_loss(x):
        g = ref.grad(x, batch.inputs, batch.targets)
        return ref.loss(x + rho * g / g.norm(), batch.inputs, batch.targets).item()

    fd = central_differences(ascent_loss, theta, 1e-5)
    result = descent_direction(objective, theta, batch, opt("ascent-gd", rho=rho), chunk_size=3)
    assert_close(result.direction, fd, rtol=1e-6, atol=1e-8)
    # The Jacobian term is not negligible here: SAM's direction is far from the FD gradient.
    sam = ref.sam(theta, batch.inputs, batch.targets, rho)
    assert (sam - fd).norm() > 1e3 * (result.direction - fd).norm()


def test_ascent_gd_least_squares_closed_form(linreg):
    """grad = g' + (rho/||g||) H (I - n n^T) g' with constant H = A^T A / n, and FD agrees."""
    objective, data, x = linreg
    A, y = data.inputs, data.targets
    rho = 0.4
    g = linreg_grad(A, y, x)
    n = g / g.norm()
    g_prime = linreg_grad(A, y, x + rho * n)
    H = linreg_hessian(A)
    closed = g_prime + (rho / g.norm()) * H @ (g_prime - n * (n @ g_prime))
    result = descent_direction(objective, x, data, opt("ascent-gd", rho=rho), chunk_size=4)
    assert_close(result.direction, closed, rtol=1e-11, atol=1e-13)

    def ascent_loss(z):
        gz = linreg_grad(A, y, z)
        return linreg_loss(A, y, z + rho * gz / gz.norm()).item()
    assert_close(result.direction, central_differences(ascent_loss, x, 1e-5), rtol=1e-7, atol=1e-9)


# ---- the g = 0 guard ----------------------------------------------------------------------------

@pytest.fixture
def stationary():
    """Least squares with an exact, representable zero gradient: y = A x* with small integers."""
    A = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0], [2.0, 2.0]], dtype=DT)
    x_star = torch.tensor([1.0, -2.0], dtype=DT)
    return linreg_objective(2), Batch(A, A @ x_star), x_star


def test_grad_eps_is_documented_and_positive():
    cfg = OptimizerConfig()
    assert 0 < cfg.grad_eps <= 1e-8
    import inspect
    import samcli.config as config
    (line,) = [ln for ln in inspect.getsource(config.OptimizerConfig).splitlines() if "grad_eps:" in ln]
    assert "||g||" in line and "#" in line     # the field's comment says where the epsilon enters


@pytest.mark.parametrize("method,extra", [("sam", {}), ("usam", {}), ("ascent-gd", {}), ("msam", {"m": 2})])
def test_stationary_point_gives_a_finite_zero_direction(stationary, method, extra):
    objective, data, x = stationary
    assert torch.equal(linreg_grad(data.inputs, data.targets, x), torch.zeros(2, dtype=DT))
    result = descent_direction(objective, x, data, opt(method, rho=0.05, **extra), chunk_size=64)
    assert torch.isfinite(result.direction).all()
    assert_close(result.direction, torch.zeros(2, dtype=DT), rtol=0, atol=1e-14)
    assert result.grad_norm == 0.0


def test_without_the_guard_the_normalized_step_is_undefined(stationary):
    """grad_eps = 0 at g = 0 gives 0/0 = NaN: the epsilon is what keeps the direction finite."""
    objective, data, x = stationary
    result = descent_direction(objective, x, data, opt("sam", grad_eps=0.0), chunk_size=64)
    assert torch.isnan(result.direction).all()


def test_guarded_step_never_exceeds_rho():
    for scale in (0.0, 1e-300, 1e-20, 1e-6, 1.0, 1e6):
        g = torch.tensor([scale, -scale], dtype=DT)
        step = ascent_step(g, 0.05, OptimizerConfig().grad_eps)
        assert torch.isfinite(step).all() and step.norm() <= 0.05 * (1 + 1e-12)


# ---- BatchNorm: running statistics from the first (unperturbed) pass only ---------------------

def bn_mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(DT)


def reference_stats(module, theta, data, chunk_size):
    """Running statistics after ONE training-mode forward pass (chunk by chunk) at theta."""
    ref = ModuleRef(module)
    for chunk in data.chunks(chunk_size):
        ref.loss(theta, chunk.inputs, chunk.targets, train=True)
    return {k: v.clone() for k, v in ref.module.named_buffers()}


@pytest.mark.parametrize("method", ["sgd", "sam", "usam", "ascent-gd"])
@pytest.mark.parametrize("chunk_size", [8, 3])
def test_batchnorm_stats_come_from_the_unperturbed_pass(method, chunk_size):
    module = bn_mlp()
    objective, theta = Objective.from_module(module)
    data = mlp_batch(8)
    expected = reference_stats(module, theta, data, chunk_size)
    # Non-vacuous: statistics gathered at the perturbed point would differ.
    g = ModuleRef(module).grad(theta, data.inputs, data.targets)
    perturbed = reference_stats(module, theta + 0.5 * g / g.norm(), data, chunk_size)
    assert not torch.allclose(perturbed["1.running_mean"], expected["1.running_mean"], rtol=0, atol=1e-8)
    objective.set_training(True)
    descent_direction(objective, theta, data, opt(method, rho=0.5), chunk_size=chunk_size)
    for name, value in expected.items():
        assert_close(objective.buffers[name], value, rtol=1e-12, atol=1e-14)


def test_batchnorm_sam_direction_uses_batch_statistics_at_perturbed_point():
    module = bn_mlp()
    objective, theta = Objective.from_module(module)
    data = mlp_batch(8)
    objective.set_training(True)
    result = descent_direction(objective, theta, data, opt("sam", rho=0.3), chunk_size=8)
    expected = ModuleRef(module).sam(theta, data.inputs, data.targets, 0.3)
    assert_close(result.direction, expected, rtol=1e-10, atol=1e-12)


def test_batchnorm_ascent_gd_matches_finite_differences():
    module = bn_mlp()
    objective, theta = Objective.from_module(module)
    data = mlp_batch(8)
    ref = ModuleRef(module)
    rho = 0.2

    def ascent_loss(x):
        g = ref.grad(x, data.inputs, data.targets)
        return ref.loss(x + rho * g / g.norm(), data.inputs, data.targets).item()

    objective.set_training(True)
    result = descent_direction(objective, theta, data, opt("ascent-gd", rho=rho), chunk_size=8)
    assert_close(result.direction, central_differences(ascent_loss, theta, 1e-5), rtol=1e-6, atol=1e-8)


def test_batchnorm_tiny_cnn_sam_step():
    """cnn with norm: batch on 1x4x4 images: one SAM step leaves the first pass's statistics."""
    torch.manual_seed(4)
    module = cnn(1, [2], 2, "batch", nn.Tanh).to(DT)
    objective, theta = Objective.from_module(module)
    gen = torch.Generator().manual_seed(5)
    data = Batch(torch.randn(6, 1, 4, 4, generator=gen, dtype=DT), torch.randint(0, 2, (6,), generator=gen))
    expected = reference_stats(module, theta, data, 6)
    objective.set_training(True)
    result = descent_direction(objective, theta, data, opt("sam", rho=0.5), chunk_size=6)
    for name, value in expected.items():
        assert_close(objective.buffers[name], value, rtol=1e-12, atol=1e-14)
    assert int(objective.buffers["1.num_batches_tracked"]) == 1
    assert_close(result.direction, ModuleRef(module).sam(theta, data.inputs, data.targets, 0.5),
                               rtol=1e-10, atol=1e-12)


def test_msam_refuses_batchnorm():
    objective, theta = Objective.from_module(bn_mlp())
    with pytest.raises(ConfigError, match="BatchNorm"):
        descent_direction(objective, theta, mlp_batch(8), opt("msam", m=2), chunk_size=8)


# ---- the batch sampler ------------------------------------------------------------------------

def test_sampler_epochs_visit_every_example_once_and_drop_the_tail():
    n, b = 10, 3
    data = Batch(torch.arange(n, dtype=DT)[:, None], torch.arange(n))
    sampler = BatchSampler(data, b, seed=0)
    for _ in range(3):                       # 3 epochs of floor(10/3) = 3 batches
        seen = torch.cat([sampler.next().targets for _ in range(n // b)])
        assert len(seen) == 9 and len(set(seen.tolist())) == 9
        assert all(0 <= i < n for i in seen.tolist())
    full = BatchSampler(data, "full", seed=0).next()
    assert torch.equal(full.targets, data.targets)


def test_sampler_is_seeded():
    data = Batch(torch.arange(20, dtype=DT)[:, None], torch.arange(20))
    a = [BatchSampler(data, 4, seed=7).next().targets.tolist() for _ in range(2)]
    c = BatchSampler(data, 4, seed=8).next().targets.tolist()
    assert a[0] == a[1] and a[0] != c


def test_ascent_gd_with_a_loss_linear_in_theta():
    """L(x) = mean_k a_k . x: g is constant, so L(x + rho n) has gradient exactly mean_k a_k (H = 0)."""
    def per_example(params, buffers, inputs, targets):
        return inputs @ params["x"]
    objective = Objective(per_example, {"x": torch.Size([2])}, {})
    A = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-0.5, 1.0]], dtype=DT)
    data = Batch(A, torch.zeros(3, dtype=DT))
    result = descent_direction(objective, torch.tensor([0.3, -0.7], dtype=DT), data, opt("ascent-gd", rho=0.5),
                               chunk_size=2)
    assert_close(result.direction, A.mean(0), rtol=1e-14, atol=1e-15)


def test_msam_with_squared_error_on_class_labels(mlp_setup):
    """mse on integer labels (one-hot targets) also vmaps over groups; reference: 0.5 ||f - e_y||^2."""
    module, _, theta, batch = mlp_setup
    objective, _ = Objective.from_module(module, "mse")

    def mse(outputs, targets):
        return 0.5 * ((outputs - torch.eye(2, dtype=DT)[targets]) ** 2).sum(1).mean()
    ref = ModuleRef(module, loss=mse)
    groups = [batch.take(slice(j, j + 4)) for j in (0, 4)]
    expected = sum(ref.sam(theta, g.inputs, g.targets, 0.1) for g in groups) / 2
    result = descent_direction(objective, theta, batch, opt("msam", m=4, rho=0.1), chunk_size=64)
    assert_close(result.direction, expected, rtol=1e-10, atol=1e-12)


# ---- the registry -----------------------------------------------------------------------------------

def test_the_registry_lists_exactly_the_methods():
    assert method_names() == ("sgd", "sam", "usam", "msam", "ascent-gd", "asam", "gsam", "looksam", "fsam", "wsam",
                              "momentum-sam", "esam", "rwp")
    for name in method_names():
        method = get_method(name)
        assert method.name == name and method.help and "\n" not in method.help


DECLARED = {"sgd": set(), "sam": {"rho", "grad_eps"}, "usam": {"rho"}, "msam": {"rho", "m", "grad_eps"},
            "ascent-gd": {"rho", "grad_eps"}, "asam": {"rho", "eta", "asam_biases", "grad_eps"},
            "gsam": {"rho", "alpha", "grad_eps"}, "looksam": {"rho", "k", "alpha", "grad_eps"},
            "fsam": {"rho", "sigma", "lmbda", "grad_eps"}, "wsam": {"rho", "wsam_gamma", "wsam_decouple", "grad_eps"},
            "momentum-sam": {"rho", "grad_eps"}, "esam": {"rho", "esam_beta", "esam_gamma", "grad_eps"},
            "rwp": {"rwp_sigma", "alpha"}}
# a value per parameter for the base settings, and a different one; looksam's k and alpha and fsam's
# sigma and lmbda first act at steps 2 and 3, so each run takes three steps
BASE = {"rho": 0.1, "grad_eps": 1e-12, "m": 2, "eta": 0.01, "asam_biases": False, "alpha": 0.4, "k": 5,
        "sigma": 1.0, "lmbda": 0.9, "wsam_gamma": 0.7, "wsam_decouple": False, "esam_beta": 0.5, "esam_gamma": 0.5, "rwp_sigma": 0.05}
CHANGES = {"rho": 0.3, "grad_eps": 1.0, "m": 4, "eta": 0.5, "asam_biases": True, "alpha": 0.9, "k": 2,
           "sigma": 0.3, "lmbda": 0.2, "wsam_gamma": 0.2, "wsam_decouple": True, "esam_beta": 0.9, "esam_gamma": 1.0, "rwp_sigma": 0.5}


@pytest.mark.parametrize("name", list(DECLARED))
def test_declared_parameters_are_exactly_those_that_move_the_direction(mlp_setup, name):
    """Each parameter changed alone: the directions move if and only if the method declares it."""
    module, objective, theta, batch = mlp_setup
    assert applicable_parameters(name) == DECLARED[name]
    assert unused_parameters(name) == set(CHANGES) - DECLARED[name]
    assert set(CHANGES) == set(PARAMETERS)
    buffer = torch.randn(theta.shape, generator=torch.Generator().manual_seed(3), dtype=theta.dtype)

    def directions(**values):
        cfg = OptimizerConfig(method=name, momentum=0.9, **values)
        step = direction_for(objective, cfg, momentum=lambda: buffer)
        return torch.cat([step(objective, theta, batch, cfg, 64).direction.clone() for _ in range(3)])
    base = {k: v for k, v in BASE.items() if k in DECLARED[name] or PARAMETERS[k].default is not None}
    reference = directions(**base)
    for key, value in CHANGES.items():
        moved = directions(**{**base, key: value})
        assert ((moved - reference).norm() > 1e-8) == (key in DECLARED[name]), key


def test_ascent_step_on_named_tensors_is_the_flat_step_split_by_name(mlp_setup):
    module, objective, theta, batch = mlp_setup
    g = objective.grad(theta, batch, 64)
    named = ascent_step(objective.unflatten(g), 0.3, 1e-3)
    flat = torch.cat([named[name].reshape(-1) for name in objective.names])
    assert_close(flat, ascent_step(g, 0.3, 1e-3), **TIGHT)
    assert ascent_step(g, 0.3, 1e-3).norm().item() == pytest.approx(0.3 * g.norm().item() / (g.norm().item() + 1e-3))
    unnormalized = ascent_step(objective.unflatten(g), 0.3, 1e-3, normalized=False)
    assert_close(torch.cat([unnormalized[n].reshape(-1) for n in objective.names]), 0.3 * g, **TIGHT)


def msam_config(**kw) -> OptimizerConfig:
    return OptimizerConfig(**{"method": "msam", "m": 4, "batch_size": 8, **kw})


@pytest.mark.parametrize("cfg,context,message", [
    (msam_config(m=None), {}, "optimizer.m is required for method msam; set it to a divisor of batch_size"),
    (msam_config(m=0), {}, "optimizer.m=0 must be >= 1"),
    (msam_config(m=3), {}, "optimizer.m=3 does not divide optimizer.batch_size=8; pick m that divides it"),
    (msam_config(batch_size="full"), {"train_size": 18},
     "optimizer.m=4 does not divide the 18 training examples (full batch); pick m that divides it"),
    (msam_config(), {"train_size": 6}, "optimizer.batch_size=8 exceeds the 6 training examples; lower it or use 'full'"),
    (msam_config(), {"has_batchnorm": True}, "optimizer.method=msam cannot update BatchNorm statistics (its groups "
     "run under vmap); use model.norm: group or none, or one of sgd, sam, usam, ascent-gd, asam, gsam, looksam, "
     "fsam, wsam, esam, rwp"),
    (OptimizerConfig(method="sam", m=4), {}, "optimizer.m=4 only applies to method msam; remove it or set method: msam"),
    (OptimizerConfig(method="samm"), {},
     "optimizer.method='samm' is unknown (did you mean sam?); choose one of sgd, sam, usam, msam, ascent-gd, "
     "asam, gsam, looksam, fsam, wsam, momentum-sam, esam, rwp"),
    (OptimizerConfig(method="lion"), {}, "optimizer.method='lion' is unknown; choose one of sgd, sam, usam, msam, "
     "ascent-gd, asam, gsam, looksam, fsam, wsam, momentum-sam, esam, rwp"),
])
def test_validate_optimizer_refuses_with_one_line(cfg, context, message):
    with pytest.raises(ConfigError) as info:
        validate_optimizer(cfg, **context)
    assert str(info.value) == message


def test_validate_optimizer_accepts_what_fits():
    assert validate_optimizer(msam_config(batch_size="full"), train_size=16, has_batchnorm=False).name == "msam"
    assert validate_optimizer(OptimizerConfig(method="sam", batch_size=8), train_size=8, has_batchnorm=True).name == "sam"
    with pytest.raises(ConfigError, match="did you mean msam"):
        get_method("msma")


def test_a_new_registry_entry_is_validated_and_stepped_like_the_others(mlp_setup):
    """A spec and a direction are all a method needs: validation reads its parameters, the loop its rule."""
    module, objective, theta, batch = mlp_setup

    def doubled_gradient(objective, theta, batch, cfg, chunk_size):
        loss, g = objective.value_and_grad(theta, batch, chunk_size)
        return StepResult(2 * cfg.m * g, loss.item(), g.norm().item())

    methods.register(MethodSpec("fake", "twice m times the gradient", frozenset({"m"}), batchnorm=False),
                     doubled_gradient)
    try:
        _check_the_fake_method(objective, theta, batch)
    finally:
        methods.unregister("fake")
    assert "fake" not in method_names() and "fake" not in methods.DIRECTIONS


def _check_the_fake_method(objective, theta, batch):
    assert "fake" in method_names() and applicable_parameters("fake") == {"m"}
    assert "rho" in unused_parameters("fake")
    with pytest.raises(ConfigError, match="optimizer.m is required for method fake"):
        validate_optimizer(OptimizerConfig(method="fake", batch_size=8))
    with pytest.raises(ConfigError, match="optimizer.m=2 only applies to method fake or msam"):
        validate_optimizer(OptimizerConfig(method="sam", m=2))
    with pytest.raises(ConfigError, match="one of sgd, sam, usam, ascent-gd, asam, gsam, looksam, fsam, wsam, esam, rwp$"):
        validate_optimizer(OptimizerConfig(method="fake", m=2, batch_size=8), has_batchnorm=True)
    result = descent_direction(objective, theta, batch, opt("fake", m=2), chunk_size=64)
    assert_close(result.direction, 4 * objective.grad(theta, batch, 64), **TIGHT)


def test_iid_sampler_draws_uniformly_and_independently():
    """sampling: iid (Eq. 17): every example equally likely at every step, batches independent, so
    an example can come back at once (an epoch never repeats one before visiting all)."""
    n, draws = 5, 20000
    data = Batch(torch.arange(n, dtype=DT)[:, None], torch.arange(n))
    sampler = BatchSampler(data, 1, seed=0, sampling="iid")
    seq = torch.cat([sampler.next().targets for _ in range(draws)])
    counts = torch.bincount(seq, minlength=n).double()
    assert torch.allclose(counts / draws, torch.full((n,), 1 / n, dtype=torch.float64), atol=0.015)
    repeats = (seq[1:] == seq[:-1]).double().mean().item()        # i.i.d.: P(k_t = k_{t-1}) = 1/n
    assert abs(repeats - 1 / n) < 0.015
    pairs = BatchSampler(data, 2, seed=3, sampling="iid")
    for _ in range(50):
        batch = pairs.next().targets
        assert len(batch) == 2 and batch[0] != batch[1]          # a batch holds b distinct examples
    epoch = BatchSampler(data, 1, seed=0)
    first_epoch = [epoch.next().targets.item() for _ in range(n)]
    assert sorted(first_epoch) == list(range(n))                  # the default still visits each once
