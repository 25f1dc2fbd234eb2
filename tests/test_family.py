"""The SAM family (samcli/family.py) against closed forms: per-example quadratics
L_k(x) = 0.5 (x - c_k)^T A (x - c_k), whose gradients are linear, so every variant's direction has a
formula written here in numpy from the papers, independently of the code under test."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samcli.config import ConfigError, TrainConfig
from samcli.methods import direction_for
from samcli.objective import Batch, Objective
from samcli.spec.methods import validate_optimizer

SHAPES = {"layer.weight": torch.Size([2, 2]), "layer.bias": torch.Size([2])}
RNG = np.random.default_rng(0)
M = RNG.normal(size=(6, 6))
A = M @ M.T / 6 + np.eye(6)                    # symmetric positive definite
C = RNG.normal(size=(8, 6))                    # one centre per example
X0 = RNG.normal(size=6)


def quadratic() -> Objective:
    a = torch.tensor(A)

    def per_example(params, buffers, inputs, targets):
        x = torch.cat([params["layer.weight"].reshape(-1), params["layer.bias"]])
        r = x - inputs
        return 0.5 * ((r @ a) * r).sum(1)
    return Objective(per_example, SHAPES, {})


def grad(x, centres=C):
    return A @ (x - centres.mean(0))


def settings(method, **values):
    return TrainConfig.from_dict({"optimizer": {"method": method, "batch_size": 8, **values}}).optimizer


def directions(method, xs, buffer=lambda: None, **values):
    """The method's directions at the points xs, one step each, in order (one run: memory carries)."""
    objective, o = quadratic(), settings(method, **values)
    step = direction_for(objective, o, seed=0, momentum=buffer)
    batch = Batch(torch.tensor(C), torch.zeros(8))
    return [step(objective, torch.tensor(x), batch, o, 1024).direction.numpy() for x in xs]


def unit(v):
    return v / np.linalg.norm(v)


def test_sam_is_the_gradient_at_the_normalized_ascent_point():
    g = grad(X0)
    np.testing.assert_allclose(directions("sam", [X0], rho=0.1)[0], grad(X0 + 0.1 * unit(g)), rtol=1e-12)


@pytest.mark.parametrize("biases", [False, True])
def test_asam_scales_weights_by_their_magnitude_plus_eta(biases):
    rho, eta = 0.5, 0.01
    t = np.abs(X0) + eta
    if not biases:
        t[4:] = 1.0                             # the bias entries: T = 1
    g = grad(X0)
    e = rho * t ** 2 * g / np.linalg.norm(t * g)
    got = directions("asam", [X0], rho=rho, eta=eta, asam_biases=biases)[0]
    np.testing.assert_allclose(got, grad(X0 + e), rtol=1e-12)


def test_gsam_removes_alpha_times_the_part_of_g_orthogonal_to_g_p():
    rho, alpha = 0.2, 0.4
    g = grad(X0)
    g_p = grad(X0 + rho * unit(g))
    g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
    np.testing.assert_allclose(directions("gsam", [X0], rho=rho, alpha=alpha)[0], g_p - alpha * g_perp, rtol=1e-10)


def test_looksam_reuses_the_orthogonal_part_between_its_sam_steps():
    rho, alpha, k = 0.2, 0.7, 3
    xs = [X0, X0 + 0.1, X0 - 0.2, X0 + 0.3]
    got = directions("looksam", xs, rho=rho, alpha=alpha, k=k)
    g1 = grad(xs[0])
    g_s = grad(xs[0] + rho * unit(g1))
    g_v = g_s - (g_s @ g1) / (g1 @ g1) * g1
    np.testing.assert_allclose(got[0], g_s, rtol=1e-12)
    for x, d in zip(xs[1:3], got[1:3]):
        g = grad(x)
        np.testing.assert_allclose(d, g + alpha * np.linalg.norm(g) / np.linalg.norm(g_v) * g_v, rtol=1e-8)
    np.testing.assert_allclose(got[3], grad(xs[3] + rho * unit(grad(xs[3]))), rtol=1e-12)   # step k + 1: SAM again


def test_fsam_ascends_along_the_gradient_minus_its_running_average():
    rho, sigma, lmbda = 0.2, 0.8, 0.6
    xs = [X0, X0 + 0.1, X0 - 0.3]
    got = directions("fsam", xs, rho=rho, sigma=sigma, lmbda=lmbda)
    g = [grad(x) for x in xs]
    average = g[0]                                   # starts at the first gradient, which ascends unchanged
    expected = [grad(xs[0] + rho * unit(g[0]))]
    for x, gt in zip(xs[1:], g[1:]):
        expected.append(grad(x + rho * unit(gt - sigma * average)))
        average = lmbda * average + (1 - lmbda) * gt
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-10)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9])
def test_wsam_weights_the_sharpness_term(gamma):
    rho = 0.2
    g = grad(X0)
    g_p = grad(X0 + rho * unit(g))
    loss_plus_weighted_sharpness = g + gamma / (1 - gamma) * (g_p - g)
    got = directions("wsam", [X0], rho=rho, wsam_gamma=gamma, wsam_decouple=False)[0]
    np.testing.assert_allclose(got, loss_plus_weighted_sharpness, rtol=1e-9, atol=1e-9)   # 9 g_p - 8 g cancels


def test_decoupled_wsam_hands_g_to_the_base_optimizer_and_steps_the_sharpness_term_after_it():
    rho, gamma = 0.2, 0.9
    objective, o = quadratic(), settings("wsam", rho=rho, wsam_gamma=gamma, wsam_decouple=True)
    result = direction_for(objective, o)(objective, torch.tensor(X0), Batch(torch.tensor(C), torch.zeros(8)), o, 1024)
    g = grad(X0)
    np.testing.assert_allclose(result.direction.numpy(), g, rtol=1e-12)
    np.testing.assert_allclose(result.decoupled.numpy(), gamma / (1 - gamma) * (grad(X0 + rho * unit(g)) - g),
                               rtol=1e-9, atol=1e-9)


def test_momentum_sam_takes_its_one_gradient_ahead_along_the_momentum_buffer():
    rho = 0.3
    v = RNG.normal(size=6)
    got = directions("momentum-sam", [X0], buffer=lambda: torch.tensor(v), rho=rho, momentum=0.9)[0]
    np.testing.assert_allclose(got, grad(X0 - rho * unit(v)), rtol=1e-12)
    first = directions("momentum-sam", [X0], rho=rho, momentum=0.9)[0]     # no buffer yet: the plain gradient
    np.testing.assert_allclose(first, grad(X0), rtol=1e-12)


def test_esam_selects_the_examples_whose_loss_rose_most():
    rho, gamma = 0.5, 0.5
    g = grad(X0)
    point = X0 + rho * unit(g)                        # esam_beta = 1: every tensor perturbed, scale 1/1

    def losses(x):
        r = x - C
        return 0.5 * np.einsum("ki,ij,kj->k", r, A, r)
    rise = losses(point) - losses(X0)
    chosen = np.argsort(-rise)[:4]
    got = directions("esam", [X0], rho=rho, esam_beta=1.0, esam_gamma=gamma)[0]
    np.testing.assert_allclose(got, grad(point, C[chosen]), rtol=1e-10)


def test_esam_perturbs_a_random_set_of_tensors_scaled_by_one_over_beta():
    rho, beta = 0.3, 0.5
    objective, o = quadratic(), settings("esam", rho=rho, esam_beta=beta, esam_gamma=1.0)
    step = direction_for(objective, o, seed=1)
    batch = Batch(torch.tensor(C), torch.zeros(8))
    g = grad(X0)
    kept_counts = np.zeros(2)
    for _ in range(400):
        d = step(objective, torch.tensor(X0), batch, o, 1024).direction.numpy()
        e = np.linalg.solve(A, d - g)                  # g_p = g + A e on a quadratic
        kept = np.array([np.abs(e[:4]).max() > 1e-9, np.abs(e[4:]).max() > 1e-9])
        mask = np.repeat(kept, [4, 2]).astype(float)
        expected = (rho / beta) * mask * g / np.linalg.norm(mask * g) if kept.any() else np.zeros(6)
        np.testing.assert_allclose(e, expected, atol=1e-9)
        kept_counts += kept
    assert np.all(np.abs(kept_counts / 400 - beta) < 0.1)      # 5 standard errors at 400 draws


def test_rwp_mixes_the_clean_gradient_with_one_at_per_filter_gaussian_noise():
    sigma, alpha = 0.1, 0.5
    objective, o = quadratic(), settings("rwp", rwp_sigma=sigma, alpha=alpha)
    step = direction_for(objective, o, seed=2)
    batch = Batch(torch.tensor(C), torch.zeros(8))
    g = grad(X0)
    noise = []
    for _ in range(3000):
        d = step(objective, torch.tensor(X0), batch, o, 1024).direction.numpy()
        noise.append(np.linalg.solve(A, (d - g) / alpha))      # d = (1 - alpha) g + alpha (g + A e)
    std = np.array(noise).std(0)
    w = X0[:4].reshape(2, 2)
    expected = np.concatenate([np.repeat(sigma * np.linalg.norm(w, axis=1), 2), [sigma * np.linalg.norm(X0[4:])] * 2])
    np.testing.assert_allclose(std, expected, rtol=0.08)       # ~13 standard errors of a std at 3000 draws
    assert np.all(np.abs(np.array(noise).mean(0)) < 4 * expected / np.sqrt(3000))


@pytest.mark.parametrize("optimizer,fragment", [
    ({"method": "asam", "eta": -1.0}, "optimizer.eta=-1.0 must be >= 0"),
    ({"method": "fsam", "lmbda": 1.0}, "optimizer.lmbda=1.0 must be < 1"),
    ({"method": "wsam", "wsam_gamma": 1.0}, "optimizer.wsam_gamma=1.0 must be < 1"),
    ({"method": "esam", "esam_beta": 0.0}, "optimizer.esam_beta=0.0 must be > 0"),
    ({"method": "esam", "esam_gamma": 1.5}, "optimizer.esam_gamma=1.5 must be <= 1"),
    ({"method": "looksam", "k": 0}, "optimizer.k=0 must be >= 1"),
    ({"method": "rwp", "alpha": 1.5}, "optimizer.alpha=1.5 must be <= 1 for method rwp"),
    ({"method": "sam", "eta": 0.01}, "optimizer.eta=0.01 only applies to method asam"),
    ({"method": "gsam", "k": 3}, "optimizer.k=3 only applies to method looksam"),
    ({"method": "momentum-sam"}, "optimizer.method=momentum-sam perturbs along the momentum buffer"),
    ({"method": "looksam", "k": 2.5}, "optimizer.k=2.5"),
])
def test_each_new_parameter_is_validated_in_one_line(optimizer, fragment):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"optimizer": optimizer})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_each_method_fills_its_own_defaults():
    o = TrainConfig.from_dict({"optimizer": {"method": "asam"}}).optimizer
    assert (o.rho, o.eta, o.asam_biases) == (0.5, 0.01, False)
    o = TrainConfig.from_dict({"optimizer": {"method": "looksam", "alpha": 0.2}}).optimizer
    assert (o.k, o.alpha, o.rho) == (5, 0.2, 0.05)


def test_momentum_sam_refuses_batchnorm_with_the_reason():
    o = settings("momentum-sam", momentum=0.9)
    with pytest.raises(ConfigError, match=r"^optimizer.method=momentum-sam cannot update BatchNorm statistics "
                                          r"\(its only pass is at the perturbed point\)"):
        validate_optimizer(o, has_batchnorm=True)


# ---- several steps on an MLP against a reference loop written here (plain autograd on the module) --------

def _reference_directions(method: str, cfg, model, x, y, state: dict, momentum_buffer):
    """The method's direction at the module's current parameters, from the papers' formulas."""
    params = list(model.parameters())

    def grad_at(shift=None, keep=None):
        with torch.no_grad():
            if shift is not None:
                for p, s in zip(params, shift):
                    p.add_(s)
        xs, ys = (x, y) if keep is None else (x[keep], y[keep])
        gs = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xs), ys), params)
        with torch.no_grad():
            if shift is not None:
                for p, s in zip(params, shift):
                    p.sub_(s)
        return torch.cat([t.reshape(-1) for t in gs])

    def split(v):
        out, i = [], 0
        for p in params:
            out.append(v[i:i + p.numel()].view_as(p))
            i += p.numel()
        return out
    o, step = cfg.optimizer, state.setdefault("step", 0) + 1
    state["step"] = step
    g = None if method == "momentum-sam" else grad_at()
    if method == "gsam":
        g_p = grad_at(split(o.rho * g / g.norm()))
        return g_p - o.alpha * (g - (g @ g_p) / (g_p @ g_p) * g_p)
    if method == "looksam":
        if (step - 1) % o.k == 0:
            g_s = grad_at(split(o.rho * g / g.norm()))
            state["g_v"] = g_s - (g_s @ g) / (g @ g) * g
            return g_s
        return g + o.alpha * g.norm() / state["g_v"].norm() * state["g_v"]
    if method == "momentum-sam":
        if momentum_buffer is None:
            return grad_at()
        return grad_at(split(-o.rho * momentum_buffer / momentum_buffer.norm()))
    if method == "esam":          # esam_beta = 1: every tensor perturbed; the top half of the examples by loss rise
        e = split(o.rho * g / g.norm())
        with torch.no_grad():
            before = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            for p, s in zip(params, e):
                p.add_(s)
            after = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            for p, s in zip(params, e):
                p.sub_(s)
        keep = torch.topk(after - before, round(o.esam_gamma * len(y))).indices
        return grad_at(e, keep)
    raise AssertionError(method)


@pytest.mark.parametrize("method,values", [("gsam", {}), ("looksam", {"k": 3}), ("momentum-sam", {}),
                                           ("esam", {"esam_beta": 1.0})])
def test_several_steps_on_an_mlp_equal_a_reference_loop(method, values):
    import samcli
    from samcli.task import build_task
    raw = {"seed": 1, "dtype": "float64", "steps": 7, "eval_every": 7,
           "data": {"name": "synthetic", "n_train": 24, "n_test": 8, "dim": 4, "classes": 3},
           "model": {"name": "mlp", "widths": [5]},
           "optimizer": {"method": method, "batch_size": "full", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3,
                         **values}}
    cfg = TrainConfig.from_dict(raw)
    trained = samcli.train(cfg, write=False).theta
    task = build_task(cfg)
    model, x, y = task.objective.module, task.train.inputs, task.train.targets
    params = list(model.parameters())
    base = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)
    state: dict = {}
    for _ in range(cfg.steps):
        buffers = [base.state.get(p, {}).get("momentum_buffer") for p in params]
        buffer = None if any(b is None for b in buffers) else torch.cat([b.reshape(-1) for b in buffers])
        d = _reference_directions(method, cfg, model, x, y, state, buffer)
        i = 0
        for p in params:
            p.grad = d[i:i + p.numel()].view_as(p).clone()
            i += p.numel()
        base.step()
    reference = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(trained, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["asam", "gsam", "looksam", "fsam", "wsam", "esam", "rwp"])
def test_only_the_clean_pass_updates_batchnorm_statistics(method):
    from samcli.config import ModelConfig
    from samcli.models import build_model
    torch.manual_seed(0)
    module = build_model(ModelConfig(name="cnn", channels=[4], norm="batch"), (1, 12), 3).double()
    objective, theta = Objective.from_module(module, "cross-entropy")
    batch = Batch(torch.randn(16, 1, 12, dtype=torch.float64), torch.randint(0, 3, (16,)))
    initial = {k: v.clone() for k, v in objective.buffers.items()}
    expected = {k: v.clone() for k, v in objective.buffers.items()}
    objective.set_training(True)
    objective.per_example_losses(theta, batch, expected)         # one forward at x, on copies
    assert any(not torch.equal(expected[k], initial[k]) for k in initial)     # the statistics do move
    o = settings(method, batch_size=16)
    direction_for(objective, o)(objective, theta, batch, o, 1024)
    for name, value in objective.buffers.items():
        assert torch.equal(value, expected[name]), name


def test_a_grid_gives_each_variants_parameters_as_axes_only_to_it():
    from samcli.study.grid import load_study
    study = load_study({"name": "g", "seeds": [0], "base": {"data": {"name": "synthetic"}},
                        "grid": {"method": ["sam", "looksam", "asam"], "optimizer.k": [2, 5],
                                 "optimizer.eta": [0.0, 0.01]}})
    assert study.labels == ("sam", "looksam k=2", "looksam k=5", "asam eta=0.0", "asam eta=0.01")
    looksam = [r.config.optimizer for r in study.runs if r.config.optimizer.method == "looksam"]
    assert [o.k for o in looksam] == [2, 5] and all(o.eta is None and o.alpha == 0.7 for o in looksam)


def test_the_variants_study_runs_each_method_at_its_papers_settings():
    from samcli.study.grid import load_study
    study = load_study("variants")
    by_label = {r.label: r.config.optimizer for r in study.runs}
    assert len(by_label) == 10 and len(study.runs) == 30
    assert (by_label["ASAM"].rho, by_label["ASAM"].eta) == (0.5, 0.01)
    assert (by_label["LookSAM"].k, by_label["LookSAM"].alpha) == (5, 0.7)
    assert by_label["WSAM"].wsam_decouple is True and by_label["momentum-SAM"].rho == 0.3
    assert {o.batch_size for o in by_label.values()} == {128}
