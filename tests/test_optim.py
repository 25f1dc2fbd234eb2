"""samcli.optim.SAM in a user's own loop: the same update as samcli.train for every rule-based method,
pytorch-optimizer's SAM-family optimizers where their definitions match (and the stated difference
where they do not), BatchNorm's first-pass statistics, rho = 0 as the base optimizer bit for bit,
autocast, GradScaler, gradient accumulation, schedulers and one-line refusals."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import samcli
from samcli.config import ConfigError, TrainConfig
from samcli.optim import SAM
from samcli.task import build_task

RULE_METHODS = [("sam", {}), ("usam", {"rho": 0.01}), ("asam", {}), ("gsam", {}), ("looksam", {"k": 3}),
                ("fsam", {}), ("wsam", {"wsam_gamma": 0.6, "wsam_decouple": False}), ("wsam", {}),
                ("momentum-sam", {}), ("esam", {"esam_gamma": 1.0}),
                ("rwp", {"rwp_sigma": 0.05})]


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("method,values", RULE_METHODS)
def test_the_update_is_samcli_trains_on_the_same_batches(method, values):
    """Full batch, so both see the same batches: samcli.train's run and a plain loop with SAM agree to 1e-12."""
    raw = {"seed": 4, "dtype": "float64", "steps": 8, "eval_every": 8,
           "data": {"name": "synthetic", "n_train": 32, "n_test": 8, "dim": 5, "classes": 3},
           "model": {"name": "mlp", "widths": [6]},
           "optimizer": {"method": method, "batch_size": "full", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3,
                         **values}}
    cfg = TrainConfig.from_dict(raw)
    reference = samcli.train(cfg, write=False)
    task = build_task(cfg)
    model, (x, y) = task.objective.module, (task.train.inputs, task.train.targets)
    kwargs = {k: v for k, v in cfg.optimizer.__dict__.items()
              if k in samcli.spec.methods.METHODS[method].parameters}
    opt = SAM(model.parameters(), torch.optim.SGD, method=method, model=model, seed=cfg.seed,
              lr=0.05, momentum=0.9, weight_decay=1e-3, **kwargs)
    for _ in range(cfg.steps):
        if SAM_NEEDS_CLEAN[method]:
            F.cross_entropy(model(x), y).backward()
        opt.first_step(zero_grad=True)
        F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
    torch.testing.assert_close(flat(model), reference.theta, rtol=0, atol=1e-12)


SAM_NEEDS_CLEAN = {m: m != "momentum-sam" for m, _ in RULE_METHODS}


def _peer_run(net, make, steps=20):
    torch.manual_seed(0)
    xs, ys = torch.randn(32, 5, dtype=torch.float64), torch.randint(0, 3, (32,))
    model = copy.deepcopy(net)
    opt = make(model)
    for i in range(steps):
        xb, yb = xs[(i * 8) % 32:][:8], ys[(i * 8) % 32:][:8]
        F.cross_entropy(model(xb), yb).backward()

        def closure(xb=xb, yb=yb):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            return loss
        opt.step(closure)
        opt.zero_grad()
    return flat(model)


def _mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _one_tensor():
    torch.manual_seed(1)
    return nn.Linear(5, 3, bias=False).double()


BASE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


def _peers():
    po = pytest.importorskip("pytorch_optimizer")
    return {
        "sam": (lambda m: SAM(m.parameters(), torch.optim.SGD, rho=0.05, **BASE),
                lambda m: po.SAM(m.parameters(), torch.optim.SGD, rho=0.05, **BASE)),
        # ASAM with eta = 0 scaling every tensor is pytorch-optimizer's (and davda54's) adaptive SAM
        "asam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.5, "asam", eta=0.0, asam_biases=True, **BASE),
                 lambda m: po.SAM(m.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, **BASE)),
        "fsam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "fsam", sigma=1.0, lmbda=0.9, **BASE),
                 lambda m: po.FriendlySAM(m.parameters(), torch.optim.SGD, rho=0.05, sigma=1.0, lmbda=0.9, **BASE)),
        "wsam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "wsam", wsam_gamma=0.9, wsam_decouple=False,
                               **BASE),
                 lambda m: po.WSAM(m, m.parameters(), torch.optim.SGD, rho=0.05, gamma=0.9, decouple=False, **BASE)),
        "wsam-decoupled": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "wsam", wsam_gamma=0.9,
                                         wsam_decouple=True, **BASE),
                           lambda m: po.WSAM(m, m.parameters(), torch.optim.SGD, rho=0.05, gamma=0.9, decouple=True,
                                             **BASE)),
        "looksam": (lambda m: SAM(m.parameters(), torch.optim.SGD, 0.05, "looksam", k=5, alpha=0.7, **BASE),
                    lambda m: po.LookSAM(m.parameters(), torch.optim.SGD, rho=0.05, k=5, alpha=0.7, **BASE)),
    }


@pytest.mark.parametrize("name", ["sam", "asam", "fsam", "wsam", "wsam-decoupled"])
def test_equals_pytorch_optimizer_where_the_definitions_match(name):
    ours, theirs = _peers()[name]
    torch.testing.assert_close(_peer_run(_mlp(), ours), _peer_run(_mlp(), theirs), rtol=0, atol=1e-8)


def test_looksam_differs_from_pytorch_optimizer_only_by_its_per_tensor_projections():
    """pytorch-optimizer projects and rescales per tensor; the paper (and samcli) on the whole vector.
    On a one-tensor model the two are the same rule (their 1e-8 in a norm's denominator aside)."""
    ours, theirs = _peers()["looksam"]
    torch.testing.assert_close(_peer_run(_one_tensor(), ours), _peer_run(_one_tensor(), theirs), rtol=0, atol=1e-6)
    assert (_peer_run(_mlp(), ours) - _peer_run(_mlp(), theirs)).abs().max() > 1e-3


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.bn(self.a(x))))


@pytest.mark.parametrize("method", ["sam", "asam", "gsam", "fsam", "esam"])
def test_batchnorm_statistics_after_a_step_are_those_of_the_first_pass(method):
    torch.manual_seed(0)
    net = BatchNormNet().double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    first_pass_only = copy.deepcopy(net)
    first_pass_only(x)
    opt = SAM(net.parameters(), torch.optim.SGD, method=method, model=net, lr=0.1,
              **({"esam_gamma": 1.0} if method == "esam" else {}))
    F.cross_entropy(net(x), y).backward()
    opt.first_step(zero_grad=True)
    F.cross_entropy(net(x), y).backward()
    opt.second_step(zero_grad=True)
    for (name, mine), (_, expected) in zip(net.named_buffers(), first_pass_only.named_buffers()):
        assert torch.equal(mine, expected), name


def test_rho_zero_is_the_base_optimizer_bit_for_bit():
    torch.manual_seed(0)
    xs, ys = torch.randn(32, 5), torch.randint(0, 3, (32,))
    a, b = _mlp().float(), _mlp().float()
    sam = SAM(a.parameters(), torch.optim.SGD, rho=0.0, **BASE)
    sgd = torch.optim.SGD(b.parameters(), **BASE)
    for i in range(10):
        xb, yb = xs[i % 4 * 8:][:8], ys[i % 4 * 8:][:8]
        F.cross_entropy(a(xb), yb).backward()
        sam.first_step(zero_grad=True)
        F.cross_entropy(a(xb), yb).backward()
        sam.second_step(zero_grad=True)
        F.cross_entropy(b(xb), yb).backward()
        sgd.step()
        sgd.zero_grad()
    assert torch.equal(flat(a), flat(b))


def test_autocast_bfloat16_and_a_gradscaler_with_clipping_run_and_stay_finite():
    torch.manual_seed(0)
    model = _mlp().float()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, model=model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for _ in range(5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        opt.first_step(zero_grad=True, unscale=scaler)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)                                   # once per step, then clipping
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    assert torch.isfinite(flat(model)).all() and loss.isfinite()


def test_a_gradscaler_step_equals_the_unscaled_step():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    a, b = _mlp(), _mlp()
    plain = SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    scaled = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    for _ in range(3):
        F.cross_entropy(a(x), y).backward()
        plain.first_step(zero_grad=True)
        F.cross_entropy(a(x), y).backward()
        plain.second_step(zero_grad=True)
        scaler.scale(F.cross_entropy(b(x), y)).backward()
        scaled.first_step(zero_grad=True, unscale=scaler)
        scaler.scale(F.cross_entropy(b(x), y)).backward()
        scaler.step(scaled)
        scaler.update()
        scaled.zero_grad()
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-12)


def test_a_skipped_step_leaves_no_perturbation_behind():
    model = _mlp()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    start = flat(model)
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    assert not torch.equal(flat(model), start)          # at x + e; the scaler then skips the step
    opt.restore()
    assert torch.equal(flat(model), start)


def test_gradient_accumulation_equals_the_full_batch_step():
    torch.manual_seed(0)
    x, y = torch.randn(32, 5, dtype=torch.float64), torch.randint(0, 3, (32,))
    a, b = _mlp(), _mlp()
    whole = SAM(a.parameters(), torch.optim.SGD, 0.05, "gsam", lr=0.1, momentum=0.9)
    parts = SAM(b.parameters(), torch.optim.SGD, 0.05, "gsam", lr=0.1, momentum=0.9)
    for _ in range(3):
        F.cross_entropy(a(x), y).backward()
        whole.first_step(zero_grad=True)
        F.cross_entropy(a(x), y).backward()
        whole.second_step(zero_grad=True)
        for xb, yb in zip(x.chunk(4), y.chunk(4)):             # accumulate the first gradient ...
            (F.cross_entropy(b(xb), yb) / 4).backward()
        parts.first_step(zero_grad=True)
        for xb, yb in zip(x.chunk(4), y.chunk(4)):             # ... and the second, on the same micro-batches
            (F.cross_entropy(b(xb), yb) / 4).backward()
        parts.second_step(zero_grad=True)
    torch.testing.assert_close(flat(a), flat(b), rtol=0, atol=1e-12)


def test_a_scheduler_attaches_to_it_and_moves_the_base_learning_rate():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()
    opt.step(lambda: F.cross_entropy(model(x), y).backward())
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_looksam_between_its_sam_steps_needs_no_second_pass():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, 0.05, "looksam", k=2, lr=0.1)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    needs = []
    for _ in range(4):
        F.cross_entropy(model(x), y).backward()
        needs.append(opt.first_step(zero_grad=True))
        if needs[-1]:
            F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
    assert needs == [True, False, True, False]


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "adm"}, r"^samcli.optim.SAM: method='adm' is unknown \(did you mean sam\?\)"),
    ({"method": "msam", "m": 2}, r"^samcli.optim.SAM: method=msam needs the whole batch's per-example structure"),
    ({"method": "esam"}, r"^samcli.optim.SAM: method=esam's data selection picks the examples of the second pass"),
    ({"method": "asam", "model": None}, r"^samcli.optim.SAM: method=asam scales the tensors named 'weight': pass "
                                        r"model="),
    ({"rho": -0.1}, r"^samcli.optim.SAM: rho=-0.1 must be >= 0$"),
    ({"rho": "big"}, r"^samcli.optim.SAM: rho='big' must be a number$"),
    ({"method": "fsam", "lmbda": 1.5}, r"^samcli.optim.SAM: lmbda=1.5 must be < 1$"),
    ({"method": "sam", "eta": 0.1}, r"^samcli.optim.SAM: eta=0.1 only applies to method asam"),
    ({"method": "momentum-sam"}, r"^samcli.optim.SAM: method=momentum-sam perturbs along the momentum buffer; "
                                 r"set momentum > 0$"),
])
def test_bad_input_is_one_line_in_the_optimizers_words(kwargs, message):
    model = _mlp()
    with pytest.raises(ConfigError, match=message) as info:
        SAM(model.parameters(), torch.optim.SGD, lr=0.1, **kwargs)
    assert "\n" not in str(info.value)


def test_momentum_sam_refuses_a_batchnorm_model():
    net = BatchNormNet()
    with pytest.raises(ConfigError, match=r"^samcli.optim.SAM: method=momentum-sam cannot honour BatchNorm's "):
        SAM(net.parameters(), torch.optim.SGD, method="momentum-sam", model=net, lr=0.1, momentum=0.9)


def test_gsam_equals_pytorch_optimizers_gsam_at_a_constant_radius():
    """pytorch-optimizer's GSAM takes its radius from a scheduler and runs its own closure; at a
    constant radius (min = max) it is the rule samcli implements."""
    po = pytest.importorskip("pytorch_optimizer")
    torch.manual_seed(0)
    xs, ys = torch.randn(32, 5, dtype=torch.float64), torch.randint(0, 3, (32,))

    def ours():
        model = _mlp()
        opt = SAM(model.parameters(), torch.optim.SGD, 0.05, "gsam", alpha=0.4, **BASE)
        for i in range(20):
            xb, yb = xs[(i * 8) % 32:][:8], ys[(i * 8) % 32:][:8]
            F.cross_entropy(model(xb), yb).backward()
            opt.first_step(zero_grad=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.second_step(zero_grad=True)
        return flat(model)

    def theirs():
        model = _mlp()
        base = torch.optim.SGD(model.parameters(), **BASE)
        constant = torch.optim.lr_scheduler.LambdaLR(base, lambda step: 1.0)
        radius = po.ProportionScheduler(constant, max_lr=BASE["lr"], min_lr=0.0, max_value=0.05, min_value=0.05)
        opt = po.GSAM(model.parameters(), base, model, radius, alpha=0.4)
        for i in range(20):
            opt.set_closure(F.cross_entropy, xs[(i * 8) % 32:][:8], ys[(i * 8) % 32:][:8])
            opt.step()
            opt.update_rho_t()
        return flat(model)
    torch.testing.assert_close(ours(), theirs(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("method,values", [("sam", {}), ("looksam", {"k": 3}), ("fsam", {}), ("rwp", {})])
def test_a_resumed_loop_continues_the_same_steps(method, values, tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))

    def steps(model, opt, n):
        for _ in range(n):
            F.cross_entropy(model(x), y).backward()
            if opt.first_step(zero_grad=True):
                F.cross_entropy(model(x), y).backward()
            opt.second_step(zero_grad=True)

    def make(model):
        return SAM(model.parameters(), torch.optim.SGD, method=method, lr=0.1, momentum=0.9, **values)
    straight = _mlp()
    steps(straight, make(straight), 8)
    first = _mlp()
    opt = make(first)
    steps(first, opt, 4)
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    resumed = _mlp()
    resumed.load_state_dict(saved["model"])
    again = make(resumed)
    again.load_state_dict(saved["opt"])
    steps(resumed, again, 4)
    assert torch.equal(flat(resumed), flat(straight))


def test_a_first_step_without_gradients_is_refused_not_plain_sgd():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.raises(samcli.SamcliError, match=r"^samcli.optim.SAM: first_step found no gradients in .grad; "
                                                 r"call loss.backward\(\) before first_step"):
        opt.step(lambda: F.cross_entropy(model(x), y).backward())
